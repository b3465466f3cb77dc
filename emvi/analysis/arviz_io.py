"""Building InferenceData, relabelling components, comparing models: the ArviZ data layer.

ArviZ is called from two files only: this one (arviz 0.23's ``from_dict``, ``loo``, ``compare``; every model's
export goes through :func:`to_inference_data`) and :mod:`emvi.analysis.report` (``summary`` and the trace, forest,
posterior-predictive plots), so a port to arviz 1.x touches those two. Inputs are tensors or arrays shaped ``(chain, draw, *site_shape)``.

Why emvi builds InferenceData itself: ``az.from_pyro`` accepts only MCMC objects, and for enumerated models it
records the log-likelihood conditional on assignments drawn from the prior. emvi records the *marginal* pointwise
log-likelihood instead, log p(x_n | θ) = logsumexp_k [log π_k + log p(x_n | θ_k)] (per sequence for HMMs), which is
what LOO and WAIC need.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping

import numpy as np
import torch


def _arviz():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning)
        import arviz as az
    return az


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return np.asarray(value)


def _group(values: Mapping | None) -> dict | None:
    return None if values is None else {name: _numpy(v) for name, v in values.items()}


def to_inference_data(
    *,
    posterior: Mapping,
    log_likelihood: Mapping | None = None,
    observed_data: Mapping | None = None,
    posterior_predictive: Mapping | None = None,
    sample_stats: Mapping | None = None,
    constant_data: Mapping | None = None,
    coords: Mapping | None = None,
    dims: Mapping | None = None,
    attrs: Mapping | None = None,
):
    """Assemble an ``arviz.InferenceData``.

    Args:
        posterior: name -> draws ``(chain, draw, *shape)``.
        log_likelihood: observed-site name -> pointwise log-likelihood ``(chain, draw, num_obs)``.
        observed_data: observed-site name -> data ``(num_obs, *shape)``.
        posterior_predictive: observed-site name -> replicated data ``(chain, draw, num_obs, *shape)``.
        sample_stats: name -> ``(chain, draw)`` diagnostics (e.g. ``diverging``, ``lp``).
        constant_data: name -> values held fixed in the fit (point estimates beside sampled parameters).
        coords, dims: ArviZ coordinate names and values, e.g. ``{"component": [0, 1, 2]}`` and
            ``{"means": ["component", "feature"]}``.
        attrs: stored in every group's attributes; non-scalar values are stored as JSON strings so the result
            survives a netCDF round trip.
    """
    az = _arviz()
    safe_attrs = {}
    for key, value in (attrs or {}).items():
        safe_attrs[key] = value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else json.dumps(value, default=str)
    idata = az.from_dict(
        posterior=_group(posterior),
        log_likelihood=_group(log_likelihood),
        observed_data=_group(observed_data),
        posterior_predictive=_group(posterior_predictive),
        sample_stats=_group(sample_stats),
        constant_data=_group(constant_data),
        coords=dict(coords or {}),
        dims=dict(dims or {}),
        attrs=safe_attrs,
    )
    for group in idata.groups():  # ArviZ keeps ``attrs`` on the container; each group gets a copy for netCDF readers
        getattr(idata, group).attrs.update(safe_attrs)
    return idata


def compare(inference_data: Mapping[str, object], *, ic: str = "loo"):
    """ArviZ's comparison table (``elpd_loo`` or ``elpd_waic``, weights, standard errors) for several fits."""
    az = _arviz()
    return az.compare(dict(inference_data), ic=ic)


def loo(idata, *, pointwise: bool = False):
    """ArviZ's Pareto-smoothed importance-sampling leave-one-out estimate (``elpd_loo``, its standard error, ``p_loo``)
    of an InferenceData with a ``log_likelihood`` group; ``pointwise`` keeps the per-item values."""
    return _arviz().loo(idata, pointwise=pointwise)
