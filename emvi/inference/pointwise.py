"""Pointwise log-likelihoods of any Pyro model, with discrete local sites summed out exactly.

For a model whose data plate holds observed sites and (optionally) discrete latent sites, the pointwise marginal
log-likelihood of item n is

    log p(x_n | θ) = log Σ_{z_n} p(z_n | θ) p(x_n | z_n, θ),

which :func:`pointwise_log_likelihood` computes by tracing the model under parallel enumeration, adding the
log-densities of every site in the data plate (broadcast over the enumeration dimensions) and taking ``logsumexp``
over the enumeration dimensions. Sites outside the data plate (priors of global parameters) are left out: this is the
likelihood, not the joint. This is exact for independent local discrete sites (mixtures, the composed model); models
with chains of discrete sites (HMMs) provide their own forward algorithm.

:func:`posterior_predictive` draws replicated data by *unconditioning* the observed sites.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.poutine.util import site_is_subsample

from ..errors import ConfigError
from .sites import is_enumerable


def pointwise_log_likelihood(
    model: Callable, *data, max_plate_nesting: int = 1, plate_name: str = "data", **kwargs
) -> torch.Tensor:
    """``(N,)`` tensor of log p(x_n | θ) at the model's current parameters (see the module docstring)."""
    enumerated = poutine.enum(config_enumerate(model, default="parallel"), first_available_dim=-1 - max_plate_nesting)
    with torch.no_grad():
        trace = poutine.trace(enumerated).get_trace(*data, **kwargs)
        trace.compute_log_prob()
    total = None
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if not any(frame.name == plate_name for frame in site["cond_indep_stack"]):
            continue
        if not site["is_observed"] and not is_enumerable(site):
            # A continuous local drawn from its prior would make this a one-sample prior Monte Carlo estimate.
            raise ConfigError(
                f"site {name!r} is a continuous latent inside the {plate_name!r} plate: the pointwise likelihood "
                "cannot sum it out; use emvi.inference.likelihood.estimate_log_likelihood with a guide")
        log_prob = site["log_prob"]
        total = log_prob if total is None else total + log_prob
    if total is None:
        raise ValueError(f"the model has no sample sites inside a plate named {plate_name!r}")
    # Dimensions left of the plates are enumeration dimensions: sum them out.
    enum_dims = total.dim() - max_plate_nesting
    if enum_dims > 0:
        total = torch.logsumexp(total.reshape(-1, *total.shape[enum_dims:]), dim=0)
    return total.reshape(-1)


def posterior_predictive(model: Callable, *data, observed_site: str = "x", **kwargs) -> torch.Tensor:
    """One replicated data set from ``model`` with its observed site sampled instead of observed."""
    with torch.no_grad():
        trace = poutine.trace(poutine.uncondition(model)).get_trace(*data, **kwargs)
    return trace.nodes[observed_site]["value"]
