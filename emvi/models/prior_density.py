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
import weakref

import pyro.distributions as dist
import torch

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


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


def summed_log_density_and_grad(prior):
    """``value -> (Σ log p(value), ∂ Σ log p / ∂value)`` (the gradient of ``value``'s shape, inside the support) for
    the families of :func:`summed_log_density`, without autograd; None for any other prior."""
    base, density = _unwrap(prior), summed_log_density(prior)
    if isinstance(base, torch.distributions.Normal):
        loc, precision = base.loc, base.scale**-2
        return lambda value: (density(value), (loc - value) * precision)
    if isinstance(base, torch.distributions.InverseGamma):
        a, b = base.base_dist.concentration, base.base_dist.rate
        return lambda value: (density(value), (b / value - (a + 1)) / value)
    if isinstance(base, torch.distributions.Gamma):
        a, b = base.concentration, base.rate
        return lambda value: (density(value), ((a - 1) / value - b).expand_as(value))
    if isinstance(base, torch.distributions.Dirichlet):
        alpha = base.concentration
        return lambda value: (density(value), ((alpha - 1) / value).expand_as(value))
    if isinstance(base, torch.distributions.Beta):
        a, b = base.concentration1, base.concentration0
        return lambda value: (density(value), ((a - 1) / value - (b - 1) / (1 - value)).expand_as(value))
    return None


class PriorDensity:
    """Σ_site log p(values[site]) under ``priors`` {site: distribution}, each by :func:`summed_log_density`; built
    once per set of prior objects (``matches`` says whether they are still those of ``priors``)."""

    def __init__(self, priors: dict):
        self.priors = dict(priors)
        self.densities = {name: summed_log_density(prior) for name, prior in priors.items()}
        self.gradients = {name: summed_log_density_and_grad(prior) for name, prior in priors.items()}

    def matches(self, priors: dict) -> bool:
        return self.priors.keys() == priors.keys() and all(self.priors[k] is v for k, v in priors.items())

    def __call__(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.densities[name](value) for name, value in values.items())

    def value_and_grad(self, values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """``(Σ_site log p(values[site]), {site: gradient})`` by :func:`summed_log_density_and_grad`; None when a
        site's prior has no written-out gradient."""
        if any(self.gradients[name] is None for name in values):
            return None
        parts = {name: self.gradients[name](value) for name, value in values.items()}
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
