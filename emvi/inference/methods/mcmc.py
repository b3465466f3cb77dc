"""mcmc: NUTS as a method of the table (:func:`emvi.inference.mcmc.fit_posterior`), for any model with a Bayesian
view (``bayesian_view(*data)``; optional ``mcmc_ready``, ``load_posterior_mean``). The chains start from a point
fit: EM (the model's EM protocol, :class:`~emvi.inference.em.EMConfig`'s defaults) or, when the view asks for
``start="map"`` or the model has no EM protocol, the MAP (:func:`~emvi.inference.mcmc.map_start`), moved a little toward
the prior mean (:func:`~emvi.inference.mcmc.interior_start`); a view's ``log_density`` is NUTS's potential."""

from __future__ import annotations

import time
import warnings

import torch

from ...errors import ConfigError
from ..em import EMConfig, fit_em_from_starts
from ..enumerated_em import em_protocol
from ..mcmc import MCMCConfig, fit_posterior, map_start
from . import EM, MCMC, FitResult, Method
from . import em as em_method
from .common import fitted_dtype, likelihood_metrics, load_point, model_dtype, model_inputs, save_point

NAME = MCMC


def ready(model, guide=None) -> str | None:
    if not callable(getattr(model, "bayesian_view", None)):
        return f"{type(model).__name__} has no Bayesian view (bayesian_view) for NUTS; fit it by em or svi"
    hook = getattr(model, "mcmc_ready", None)
    return hook() if callable(hook) else None


LARGE_FOR_LOCALS = 2_000
"""Items above which sampling every item's continuous latent by NUTS earns a note of its cost."""


def fit(model, guide, train_data, config: MCMCConfig, *, valid_data=None, run=None, resume=False) -> FitResult:
    """Point fit, then NUTS on the model's Bayesian view, relabelled; the fitted parameters are the posterior mean
    (or the point fit, for a model without ``load_posterior_mean``); the checkpoint keeps them and the draws."""
    reason = ready(model, guide)
    if reason is not None:
        raise ConfigError(f"cannot fit by mcmc: {reason}")
    dtype = model_dtype(model)
    data = model_inputs(model, train_data)
    started = time.perf_counter()
    start = getattr(model, "mcmc_start", EM)
    if start == "as built":  # every parameter has a prior: NUTS itself finds the posterior, from the prior's median
        model.to(torch.float64)
        metrics = {}
        if data[0].shape[0] > LARGE_FOR_LOCALS:
            warnings.warn(f"NUTS samples the per-item latents of all {data[0].shape[0]} items jointly with the "
                          "globals: each leapfrog step costs a pass over the data and the dimension grows with N; "
                          "expect minutes per chain (SVI scales to many items)", UserWarning, stacklevel=2)
    elif start == "map" or em_method.ready(model) is not None:
        metrics = map_start(model, data, seed=config.seed)  # L-BFGS in float64, the result in the model's dtype
        model.to(torch.float64)
    else:
        model.to(torch.float64)
        fit_em_from_starts(model, data, EMConfig(seed=config.seed, device=config.device, progress=False))
        metrics = {}
    result = fit_posterior(model, *data, config=config)
    seconds = time.perf_counter() - started
    if em_method.ready(model) is None:
        metrics |= likelihood_metrics(em_protocol(model), data, valid_data)
    metrics |= result.summary()
    model.to(fitted_dtype(model, dtype))
    fitted = FitResult(NAME, config.seed, None, config.num_samples, (), metrics, seconds)
    save_point(run, model, fitted.summary(), result.checkpoint_entries())
    return fitted


def load(model, guide, run, device) -> None:
    load_point(model, run, device)


def convergence_note(config: MCMCConfig, summary: dict) -> str | None:
    r_hat = summary.get("max_r_hat")
    if r_hat is not None and r_hat == r_hat and r_hat > 1.01:
        return (f"note: NUTS chains disagree (max R-hat {r_hat:.3f} > 1.01); raise --num-samples and --warmup-steps "
                "or --num-chains")
    return None


METHOD = Method(NAME, MCMCConfig, fit, load, ready=ready, convergence_note=convergence_note, single_process=True)
