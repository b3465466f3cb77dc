"""The log joint of a declared model's NUTS target as one torch function: no Pyro trace per call.

For :meth:`~emvi.models.declared.DeclaredModel.with_random_globals` at the constrained values θ of the globals
declared with a prior (every other global, table, learned tensor or linear map at its point value)::

    log p(x, θ) = Σ_g log p(θ_g | parents) + Σ_n log Σ_{z_n} exp(Σ_{local site s} log p(s_n | parents, z_n))

The expressions are evaluated by the model's own code (``global_prior``, ``local_distribution``, ``_evaluate``).
The enumerated discrete locals take Pyro's parallel-enumeration values, the first ``(K_1, 1)``, the next
``(K_2, 1, 1)``, ...; every local term broadcasts to ``(K_m, ..., K_1, N)`` and one logsumexp over the leading m
dims sums them out: the exact sum TraceEnum contracts, over the joint values (Π_i K_i per item).

Covered: globals of any family (a prior whose parameters are constants or point values is built once, as
:func:`~emvi.models.prior_density.summed_log_density`), observed sites and covariates, enumerated discrete latents,
partly observed discrete sites (a masked observe plus the enumerated missing values). Not covered, so
:func:`declared_log_density` returns None and NUTS keeps Pyro's traced potential: continuous per-item latents,
discrete sites enumerated in a guide, network parameters (mlp, conv, module).
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import torch

from ..declaration.expressions import NETWORK_KINDS
from .prior_density import summed_log_density

IMPOSSIBLE = -1e30
"""Logit of the values a given (observed) label rules out: finite, so 0 * IMPOSSIBLE stays 0 in enumerated sums."""


def uncovered_reason(model) -> str | None:
    """Why the log joint of ``model`` (a DeclaredModel) cannot be written as :func:`declared_log_density` does, or
    None when it can."""
    decl = model.declaration
    for site in decl.sites:
        if any(e.kind in NETWORK_KINDS for _, e in site.params):
            return f"site {site.name!r} has a network parameter"
        if site.role == "latent" and not site.is_discrete:
            return f"site {site.name!r} is a continuous per-item latent (sampled by NUTS, not summed out)"
        if site.role == "latent" or site.mask is not None:
            if not site.enumerated or decl.guide_enumerated(site.name):
                return f"site {site.name!r} is not enumerated in the model"
    return None


def point_values(model, data: tuple) -> dict:
    """What NUTS holds fixed: ``{"__dtype__", "__device__"}`` of the model on ``data`` and every global without a
    prior at its point value (detached), the ``values`` the model's expression code reads besides the sampled ones."""
    first = data[0]
    random = set(model.prior_globals())
    fixed: dict = {"__dtype__": model.parameter_dtype(data), "__device__": first.device}
    for site in model.order:
        if site.role == "param" and site.name not in random:
            fixed[site.name] = model.global_value(site.name).detach()
    return fixed


def declared_log_density(model, data: tuple) -> Callable[[dict[str, torch.Tensor]], torch.Tensor] | None:
    """``values -> log p(x, θ)`` (a scalar) at ``values`` {global with a prior: constrained value}, for ``model`` (a
    DeclaredModel) on the data arrays ``data`` (its :attr:`~emvi.declaration.Declaration.data_names` order), as the
    module docstring writes it; None for a model it does not cover (:func:`uncovered_reason`). The point values,
    the data cast to the model's dtype and the priors with fixed parameters are taken once, here."""
    if uncovered_reason(model) is not None:
        return None
    arrays = model.bind(data)
    first = data[0]
    dtype = model.parameter_dtype(data)
    random = set(model.prior_globals())
    fixed = point_values(model, data)
    global_sites = [site for site in model.order if site.role == "param"]
    # A prior whose parameters are constants or point values: its summed log-density once, constants precomputed.
    priors = {}
    for site in global_sites:
        if site.name in random and not any(parent in random for parent in site.parents):
            with torch.no_grad():
                priors[site.name] = summed_log_density(model.global_prior(site, fixed))
    local_sites = [site for site in model.order if site.role != "param"]
    observed = {}
    for site in local_sites:
        if site.role == "observed" and site.mask is None:
            raw = arrays[site.name]
            observed[site.name] = (raw, raw.to(dtype) if site.family != "categorical" else raw)
        elif site.mask is not None:
            given = arrays[site.name].long().clamp_min(0)
            observed[site.name] = (arrays[site.mask].bool(), given)
    items = torch.zeros(first.shape[0], dtype=dtype, device=first.device)  # broadcasts every local term to (.., N)

    def log_density(values: dict[str, torch.Tensor]) -> torch.Tensor:
        current = {**fixed, **values}
        total = 0.0
        for site in global_sites:
            if site.name in priors:
                total = total + priors[site.name](values[site.name])
            elif site.name in random:
                total = total + model.global_prior(site, current).log_prob(values[site.name]).sum()
        joint, enumerated = items, 0
        for site in local_sites:
            if site.role == "covariate":
                current[site.name] = arrays[site.name]
            elif site.role == "latent":
                d = model.local_distribution(site, current)
                current[site.name] = _enumerated_values(d, enumerated)
                joint, enumerated = joint + d.log_prob(current[site.name]), enumerated + 1
            elif site.mask is not None:  # observed where the mask is true, enumerated where it is false
                mask, given = observed[site.name]
                d = model.local_distribution(site, current)
                obs = given if site.family == "categorical" else given.to(d.logits.dtype)
                joint = joint + torch.where(mask, d.log_prob(obs), 0.0)
                missing = point_mass_where(d, given, mask)
                current[site.name] = _enumerated_values(missing, enumerated)
                joint, enumerated = joint + missing.log_prob(current[site.name]), enumerated + 1
            else:
                raw, obs = observed[site.name]
                joint = joint + model.local_distribution(site, current, raw).log_prob(obs)
        if enumerated:  # joint (K_m, ..., K_1, N): each enumerated site's log_prob carries its own dim
            joint = joint.logsumexp(tuple(range(enumerated)))
        return total + joint.sum()

    return log_density


def _enumerated_values(d, enumerated: int) -> torch.Tensor:
    """The values ``(K, 1, ..., 1)`` of the ``enumerated``-th (from 0) enumerated site, at its own dim left of the
    data dim and of the earlier ones (Pyro's parallel enumeration with one plate)."""
    return d.enumerate_support(expand=False).reshape((-1,) + (1,) * (enumerated + 1))


def point_mass_where(d: dist.Distribution, given: torch.Tensor, mask: torch.Tensor) -> dist.Distribution:
    """``d`` where ``mask`` is false, a point mass on ``given`` (logits 0 / :data:`IMPOSSIBLE`) where it is true."""
    if isinstance(d, dist.Categorical):
        logits = d.logits
        logits = logits.expand(*torch.broadcast_shapes(logits.shape[:-1], given.shape), logits.shape[-1])
        point = torch.full_like(logits, IMPOSSIBLE).scatter(-1, given.expand(logits.shape[:-1]).unsqueeze(-1), 0.0)
        return dist.Categorical(logits=torch.where(mask.unsqueeze(-1), point, logits))
    point = (2 * given.to(d.logits.dtype) - 1) * -IMPOSSIBLE
    return dist.Bernoulli(logits=torch.where(mask, point, d.logits))
