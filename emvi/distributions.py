"""Vector-valued distributions with the VAE's densities in closed form, cheaper per call than ``Independent(...)``
wrappers around torch's scalar families.

A VAE step evaluates three log-densities, each built anew per mini-batch; through ``Normal(...).to_event(1)`` and
``Bernoulli(logits=...).to_event(1)`` every one pays for argument broadcasting, an ``Independent`` wrapper and extra
autograd nodes (why it matters: docs/experiments/vae.md). These classes compute the same values directly, with
event shape ``(D,)`` built in:

* :class:`DiagonalNormal` — N(μ, diag σ²). Its own reparameterised draw t = μ + σ ε is scored as
  ``-½ Σ ε² - Σ log σ - (D/2) log 2π``: the same value as ``-½ Σ ((t - μ)/σ)² - ...`` and, since (t - μ)/σ = ε
  whatever μ and σ are, the same total derivative; any other value takes the general formula.
* :class:`StandardNormal` — N(0, I), the VAE's prior.
* :class:`BernoulliLogits` — independent Bernoulli(sigmoid(η_d)); log p(x) = -Σ_d BCE-with-logits(η_d, x_d).

The KL divergence between the first two is registered, so ``TraceMeanField_ELBO`` still uses it in closed form.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints, register_kl
from torch.nn import functional

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class _VectorDistribution(TorchDistribution):
    """Shared by the classes below: ``expand`` to an unchanged batch shape returns the distribution itself (Pyro's
    plates expand every site), any other shape goes to the class's :meth:`_expand_to`."""

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return self if batch_shape == self.batch_shape else self._expand_to(batch_shape)

    def _expand_to(self, batch_shape: torch.Size) -> TorchDistribution:
        raise NotImplementedError


class DiagonalNormal(_VectorDistribution):
    """N(loc, diag scale²) with event shape ``loc.shape[-1:]``; ``loc`` and ``scale`` ``(..., D)``."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale) if loc.shape != scale.shape else (loc, scale)
        self._last_draw: tuple[torch.Tensor, torch.Tensor] | None = None  # (value, noise) of the latest rsample
        super().__init__(self.loc.shape[:-1], self.loc.shape[-1:], validate_args=validate_args)

    def _expand_to(self, batch_shape):
        shape = batch_shape + self.event_shape
        return DiagonalNormal(self.loc.expand(shape), self.scale.expand(shape), validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return self.scale.pow(2)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        noise = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        value = self.loc + self.scale * noise
        self._last_draw = (value, noise)
        return value

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        if self._last_draw is not None and value is self._last_draw[0]:
            standardised = self._last_draw[1]
        else:
            standardised = (value - self.loc) / self.scale
        return -0.5 * standardised.pow(2).sum(-1) - self.scale.log().sum(-1) - self.event_shape[0] * HALF_LOG_2PI

    def entropy(self) -> torch.Tensor:
        return self.scale.log().sum(-1) + self.event_shape[0] * (0.5 + HALF_LOG_2PI)


class StandardNormal(_VectorDistribution):
    """N(0, I) over vectors of size ``dim``, with the given batch shape, dtype and device."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 1)
    has_rsample = True

    def __init__(self, dim: int, batch_shape=torch.Size(), *, dtype=None, device=None, validate_args=None):
        self.dtype, self.device = dtype or torch.get_default_dtype(), device
        super().__init__(torch.Size(batch_shape), torch.Size([dim]), validate_args=validate_args)

    def _expand_to(self, batch_shape):
        return StandardNormal(self.event_shape[0], batch_shape, dtype=self.dtype, device=self.device, validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self.batch_shape + self.event_shape, dtype=self.dtype, device=self.device)

    @property
    def variance(self) -> torch.Tensor:
        return torch.ones(self.batch_shape + self.event_shape, dtype=self.dtype, device=self.device)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return torch.randn(self._extended_shape(sample_shape), dtype=self.dtype, device=self.device)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_prob = -0.5 * value.pow(2).sum(-1) - self.event_shape[0] * HALF_LOG_2PI
        if log_prob.shape == self.batch_shape:
            return log_prob
        return log_prob.expand(torch.broadcast_shapes(log_prob.shape, self.batch_shape))


class BernoulliLogits(_VectorDistribution):
    """Independent Bernoulli(sigmoid(logits_d)) over vectors; ``logits`` ``(..., D)``, event shape ``(D,)``.

    ``log_prob`` is the cross-entropy ``x log σ(η) + (1 - x) log(1 - σ(η))``, the Bernoulli log-mass at binary
    ``x`` and its relaxation at grey levels ``x ∈ [0, 1]`` read as Bernoulli means (the Keras VAE loss). The support
    is therefore [0, 1], so that validated evaluation accepts exactly what training scores; ``sample`` draws 0/1.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.independent(constraints.unit_interval, 1)
    has_rsample = False

    def __init__(self, logits: torch.Tensor, validate_args=None):
        self.logits = logits
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    def _expand_to(self, batch_shape):
        return BernoulliLogits(self.logits.expand(batch_shape + self.event_shape), validate_args=False)

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def mean(self) -> torch.Tensor:
        return self.probs

    @property
    def variance(self) -> torch.Tensor:
        probs = self.probs
        return probs * (1 - probs)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return torch.bernoulli(self.probs.expand(self._extended_shape(sample_shape)))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        if logits.shape != value.shape:
            logits, value = torch.broadcast_tensors(logits, value)
        return -functional.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


@register_kl(DiagonalNormal, StandardNormal)
def _kl_diagonal_standard(q: DiagonalNormal, p: StandardNormal) -> torch.Tensor:
    """KL(N(μ, diag σ²) || N(0, I)) = ½ Σ_d (μ_d² + σ_d² - 1 - 2 log σ_d): the seed's closed form."""
    return 0.5 * (q.loc.pow(2) + q.scale.pow(2) - 1.0 - 2.0 * q.scale.log()).sum(-1)


@register_kl(DiagonalNormal, DiagonalNormal)
def _kl_diagonal_diagonal(q: DiagonalNormal, p: DiagonalNormal) -> torch.Tensor:
    ratio = (q.scale / p.scale).pow(2)
    return 0.5 * (ratio + ((q.loc - p.loc) / p.scale).pow(2) - 1.0 - ratio.log()).sum(-1)
