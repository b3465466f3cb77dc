"""Summed prior log-densities Σ log p(θ) of a Bayesian view's sample sites, with their constants precomputed.

NUTS evaluates a model's log joint thousands of times; a torch distribution's ``log_prob`` re-derives its constants
(log σ, lgamma(α), ...) and checks shapes on every call. :func:`summed_log_density` returns, for the families the
Bayesian views use (Normal, Gamma, InverseGamma, Dirichlet, Beta, behind ``expand`` and ``to_event``), a function
``value -> Σ log p(value)`` of a few tensor operations, equal to ``prior.log_prob(value).sum()``; any other prior
keeps its own ``log_prob``. :class:`PriorDensity` does this for every site of a module's ``PyroSample`` priors.
:func:`summed_log_density_and_grad` adds the gradient ∂/∂value written out (no autograd), for the same families.
"""

from __future__ import annotations

import math
import types
import weakref

import numpy as np
import pyro.distributions as dist
import torch

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _numpy_logsumexp(a, axis, keepdims=False):
    top = a.max(axis, keepdims=True)
    total = np.log(np.exp(a - top).sum(axis, keepdims=True)) + top
    return total if keepdims else total.squeeze(axis)


NUMPY_OPS = types.SimpleNamespace(
    exp=np.exp, log=np.log, sigmoid=lambda a: 0.5 * (1 + np.tanh(0.5 * a)), log_sigmoid=lambda a: -np.logaddexp(0, -a),
    cumprod=np.cumprod, reverse_cumsum=lambda a, axis: np.flip(np.flip(a, axis).cumsum(axis), axis),
    logsumexp=_numpy_logsumexp, concatenate=np.concatenate, arange=lambda *args, like: np.arange(*args, dtype=like.dtype),
    pad=lambda a, before, after, value: np.concatenate([np.full((*a.shape[:-1], before), value), a,
                                                        np.full((*a.shape[:-1], after), value)], -1),
    convert=lambda t: t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t))
"""The array operations of the written-out densities and gradients, on float64 numpy arrays (about a microsecond per
operation on the CPU, against several for a torch dispatch); :data:`TORCH_OPS` the same on tensors (any device)."""

TORCH_OPS = types.SimpleNamespace(
    exp=torch.exp, log=torch.log, sigmoid=torch.sigmoid, log_sigmoid=torch.nn.functional.logsigmoid,
    cumprod=lambda a, axis: a.cumprod(axis), reverse_cumsum=lambda a, axis: a.flip(axis).cumsum(axis).flip(axis),
    logsumexp=lambda a, axis, keepdims=False: a.logsumexp(axis, keepdims),
    concatenate=torch.cat, arange=lambda *args, like: torch.arange(*args, dtype=like.dtype, device=like.device),
    pad=lambda a, before, after, value: torch.nn.functional.pad(a, [before, after], value=value), convert=lambda t: t)


def array_ops(array):
    """:data:`NUMPY_OPS` for a numpy array, else :data:`TORCH_OPS`."""
    return NUMPY_OPS if isinstance(array, np.ndarray) else TORCH_OPS


def _unwrap(prior):
    """The elementwise distribution under ``Independent`` and ``expand``: summing over every entry makes the batch
    and event reinterpretations irrelevant (the parameters broadcast against the value)."""
    while isinstance(prior, (dist.Independent, torch.distributions.Independent, dist.ExpandedDistribution)):
        prior = prior.base_dist
    return prior


def summed_log_density(prior):
    """``value -> prior.log_prob(value).sum()`` for ``value`` of the prior's full shape (see the module docstring)."""
    base = _unwrap(prior)
    if isinstance(base, torch.distributions.Normal):
        loc, scale = base.loc, base.scale
        constant = -scale.log() - HALF_LOG_2PI  # log N(v | m, s) = c - ½ ((v - m) / s)²
        return lambda value: (constant - 0.5 * ((value - loc) / scale) ** 2).sum()
    if isinstance(base, torch.distributions.InverseGamma):
        a, b = base.base_dist.concentration, base.base_dist.rate  # Gamma(a, b) of 1 / v
        constant = a * b.log() - torch.lgamma(a)
        return lambda value: (constant - (a + 1) * value.log() - b / value).sum()
    if isinstance(base, torch.distributions.Gamma):
        a, b = base.concentration, base.rate
        constant = a * b.log() - torch.lgamma(a)
        return lambda value: (constant + torch.xlogy(a - 1, value) - b * value).sum()
    if isinstance(base, torch.distributions.Dirichlet):
        alpha = base.concentration
        constant = torch.lgamma(alpha.sum(-1)) - torch.lgamma(alpha).sum(-1)
        return lambda value: (torch.xlogy(alpha - 1, value).sum(-1) + constant).sum()
    if isinstance(base, torch.distributions.Beta):
        a, b = base.concentration1, base.concentration0
        constant = torch.lgamma(a + b) - torch.lgamma(a) - torch.lgamma(b)
        return lambda value: (constant + torch.xlogy(a - 1, value) + torch.xlogy(b - 1, 1 - value)).sum()
    return lambda value: prior.log_prob(value).sum()


def summed_log_density_and_grad(prior, ops=TORCH_OPS):
    """``value -> (Σ log p(value), ∂ Σ log p / ∂value)`` (the gradient of ``value``'s shape, inside the support) for
    the families of :func:`summed_log_density`, without autograd, on the arrays of ``ops`` (:data:`NUMPY_OPS`: the
    prior's parameters converted once); None for any other prior."""
    base, c, log = _unwrap(prior), ops.convert, ops.log
    if isinstance(base, torch.distributions.Normal):
        loc, precision, constant = c(base.loc), c(base.scale**-2), c(-base.scale.log() - HALF_LOG_2PI)

        def normal(value):
            residual = value - loc
            return (constant - 0.5 * precision * residual * residual).sum(), -precision * residual
        return normal
    if isinstance(base, torch.distributions.InverseGamma):
        a, b = base.base_dist.concentration, base.base_dist.rate
        constant, a, b = c(a * b.log() - torch.lgamma(a)), c(a), c(b)

        def inverse_gamma(value):
            inverse = 1 / value
            return (constant - (a + 1) * log(value) - b * inverse).sum(), (b * inverse - (a + 1)) * inverse
        return inverse_gamma
    if isinstance(base, torch.distributions.Gamma):
        a, b = base.concentration, base.rate
        constant, a, b = c(a * b.log() - torch.lgamma(a)), c(a), c(b)
        return lambda value: ((constant + (a - 1) * log(value) - b * value).sum(), (a - 1) / value - b + 0 * value)
    if isinstance(base, torch.distributions.Dirichlet):
        alpha = base.concentration
        constant, alpha = c(torch.lgamma(alpha.sum(-1)) - torch.lgamma(alpha).sum(-1)), c(alpha)
        # (α - 1) log v is 0 at α = 1 (xlogy in the value): the sites sampled here are inside the simplex.
        return lambda value: ((((alpha - 1) * log(value)).sum(-1) + constant).sum(), (alpha - 1) / value)
    if isinstance(base, torch.distributions.Beta):
        a, b = base.concentration1, base.concentration0
        constant, a, b = c(torch.lgamma(a + b) - torch.lgamma(a) - torch.lgamma(b)), c(a), c(b)
        return lambda value: ((constant + (a - 1) * log(value) + (b - 1) * log(1 - value)).sum(),
                              (a - 1) / value - (b - 1) / (1 - value))
    return None


class PriorDensity:
    """Σ_site log p(values[site]) under ``priors`` {site: distribution}, each by :func:`summed_log_density`; built
    once per set of prior objects (``matches`` says whether they are still those of ``priors``)."""

    def __init__(self, priors: dict):
        self.priors = dict(priors)
        self.densities = {name: summed_log_density(prior) for name, prior in priors.items()}
        self.gradients = {name: summed_log_density_and_grad(prior) for name, prior in priors.items()}
        self.numpy_gradients = {name: summed_log_density_and_grad(prior, NUMPY_OPS) for name, prior in priors.items()}

    def matches(self, priors: dict) -> bool:
        return self.priors.keys() == priors.keys() and all(self.priors[k] is v for k, v in priors.items())

    def __call__(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.densities[name](value) for name, value in values.items())

    def value_and_grad(self, values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """``(Σ_site log p(values[site]), {site: gradient})`` by :func:`summed_log_density_and_grad`, on numpy arrays
        or tensors as ``values`` are; None when a site's prior has no written-out gradient."""
        # np.generic too: a scalar site's value after an elementwise bijection (np.exp of a 0-d array) is a numpy scalar
        numpy = isinstance(next(iter(values.values())), (np.ndarray, np.generic))
        gradients = self.numpy_gradients if numpy else self.gradients
        if any(gradients[name] is None for name in values):
            return None
        parts = {name: gradients[name](value) for name, value in values.items()}
        return sum(part[0] for part in parts.values()), {name: part[1] for name, part in parts.items()}


_MODULE_DENSITIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""module -> its :class:`PriorDensity`, outside the module so that pickling or copying it is unaffected."""


def module_prior_log_prob(module, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_site log p(values[site]) under the priors of ``module``'s ``PyroSample`` sites named in ``values`` (what
    ``LocalPyroModule.prior_log_prob`` computes), by a :class:`PriorDensity` kept for the module until its priors
    change."""
    return module_prior_density(module)(values)


def module_prior_density(module) -> PriorDensity:
    """The :class:`PriorDensity` of ``module``'s ``PyroSample`` priors (kept as :func:`module_prior_log_prob` does)."""
    priors = module.__dict__["_pyro_samples"]  # PyroModule keeps {name: prior} here
    density = _MODULE_DENSITIES.get(module)
    if density is None or not density.matches(priors):
        density = _MODULE_DENSITIES[module] = PriorDensity(priors)
    return density
