"""What a model's sites are, found by tracing it once: the discrete latents a guide leaves to enumeration.

Trace_ELBO samples a discrete latent the guide does not cover from the model's prior: an unbiased but noisy ELBO
whose gradient never reaches that site's parameters through the draw. TraceEnum_ELBO sums it out exactly, EM's
E-step in the ELBO. The runner and :func:`emvi.inference.auto.prepare_model` use :func:`hidden_discrete_sites` to
choose between them and :class:`EnumeratedModel` to mark the sites for parallel enumeration; the runner also
chooses TraceEnum_ELBO for a guide whose own discrete sites are marked for enumeration (both from the one trace
of :func:`discrete_sites`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.poutine.util import site_is_subsample


def is_enumerable(site: dict) -> bool:
    fn = site["fn"]
    return bool(getattr(fn, "has_enumerate_support", False)) and not getattr(fn, "has_rsample", False)


class DiscreteSites(NamedTuple):
    """What one trace of a guide and of the model replayed against it says about their discrete sites."""

    hidden: tuple[str, ...]
    """The model's unobserved discrete sites that the guide does not sample."""
    guide_enumerated: tuple[str, ...]
    """The guide's discrete sites marked for enumeration (``infer={"enumerate": ...}``, e.g. M2's unlabelled y):
    only TraceEnum_ELBO sums them out; Trace_ELBO would sample them, with a score-function gradient."""
    max_plate_nesting: int
    """The deepest stack of vectorised plates in the model."""


def discrete_sites(model: Callable, guide: Callable, *batch, **kwargs) -> DiscreteSites:
    """:class:`DiscreteSites` from one trace of ``guide`` and of ``model`` replayed against it."""
    with torch.no_grad(), pyro.validation_enabled(False), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*batch, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*batch, **kwargs)
    hidden, nesting = [], 0
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        nesting = max(nesting, sum(1 for frame in site["cond_indep_stack"] if frame.vectorized))
        if not site["is_observed"] and name not in guide_trace.nodes and is_enumerable(site):
            hidden.append(name)
    marked = tuple(name for name, site in guide_trace.nodes.items()
                   if site["type"] == "sample" and not site["is_observed"] and site["infer"].get("enumerate")
                   and is_enumerable(site))
    return DiscreteSites(tuple(hidden), marked, nesting)


def hidden_discrete_sites(model: Callable, guide: Callable, *batch, **kwargs) -> tuple[tuple[str, ...], int]:
    """``(names, max_plate_nesting)``: the model's unobserved discrete sites that the guide does not sample, and the
    deepest stack of vectorised plates (:func:`discrete_sites`)."""
    sites = discrete_sites(model, guide, *batch, **kwargs)
    return sites.hidden, sites.max_plate_nesting


class EnumeratedModel(torch.nn.Module):
    """``model`` with its discrete sites marked for parallel enumeration (``config_enumerate``), still an
    ``nn.Module`` whose ``parameters()`` are the model's: a plain ``config_enumerate`` wrapper is a function, and an
    optimiser built from its parameters would silently leave the model untrained."""

    def __init__(self, model: Callable):
        super().__init__()
        self.model = model  # registered as a submodule when it is one
        self._enumerated = config_enumerate(model, default="parallel")

    def forward(self, *args, **kwargs):
        return self._enumerated(*args, **kwargs)


def enumerate_discrete(model: Callable) -> Callable:
    """``model`` with discrete sites marked for enumeration, keeping it a module when it is one."""
    if isinstance(model, torch.nn.Module):
        return EnumeratedModel(model)
    return config_enumerate(model, default="parallel")


__all__ = ["DiscreteSites", "EnumeratedModel", "discrete_sites", "enumerate_discrete", "hidden_discrete_sites",
           "is_enumerable"]
