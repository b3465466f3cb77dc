"""Registry hooks of the HMM: fitting (from the estimator facade; models may not import it) and ArviZ export."""

from __future__ import annotations

import dataclasses

import torch

from .. import models as _builtin_models  # noqa: F401  (registers "hmm")
from ..estimators.hmm import registry_evaluate, registry_fit, registry_load, registry_sample
from ..models.hmm import check_sequences
from ..registry import attach_hooks
from .arviz_io import to_inference_data

NUM_REPLICATIONS = 20
"""Replicated data sets drawn for the posterior predictive group of a point fit (plug-in predictive)."""


def hmm_inference_data(model, guide, data, *, method, num_samples=NUM_REPLICATIONS, run_dir=None):
    """InferenceData for a fitted HMM: its point estimate (EM or SVI: MAP) as one draw of one chain.

    Groups: ``posterior`` (``start_probs`` ``(state,)``, ``transition`` ``(state, next_state)``, emission parameters
    ``(state, feature[, category])``); ``log_likelihood`` ``x`` ``(chain, draw, sequence)``: log p(x_n), the states
    summed out exactly (forward algorithm), so the pointwise values add up to the model's log-likelihood and
    ``az.loo`` leaves out whole sequences; ``observed_data`` ``x`` ``(sequence, time, feature)`` with NaN on padding
    and ``lengths`` ``(sequence,)``; ``posterior_predictive`` ``x`` ``(chain, draw, sequence, time, feature)``:
    ``num_samples`` replicated data sets with the observed lengths. No MCMC draws exist for the HMM (methods em, svi),
    so there is no label switching to undo and no ``sample_stats`` group.
    """
    x, lengths = (data.x, getattr(data, "lengths", None)) if hasattr(data, "x") else (data, None)
    x, lengths = check_sequences(x, lengths, model.config)
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    x, lengths = x.to(device=device, dtype=dtype), lengths.to(device)
    valid = (torch.arange(x.shape[1], device=device) < lengths[:, None])[..., None]
    with torch.no_grad():
        named = {"start_probs": model.start_probs(), "transition": model.transition}
        named.update({name: getattr(model, name) for name in model.parameter_names()[2:]})
        log_lik = model.log_likelihood(x, lengths)
        generator = torch.Generator().manual_seed(0)
        replicated = torch.stack([model.sample(x.shape[0], x.shape[1], generator=generator)[0].to(x)
                                  for _ in range(max(int(num_samples), 1))])
    nan = torch.tensor(float("nan"), dtype=x.dtype, device=device)
    observed = torch.where(valid, x, nan)
    replicated = torch.where(valid, replicated, nan)
    posterior = {name: value.detach()[None, None] for name, value in named.items()}
    k, d = model.config.num_states, x.shape[-1]
    dims = {"start_probs": ["state"], "transition": ["state", "next_state"], "x": ["sequence", "time", "feature"],
            "lengths": ["sequence"]}
    for name in model.parameter_names()[2:]:
        dims[name] = ["state", "feature"] + (["category"] if named[name].dim() == 3 else [])
    coords = {"state": list(range(k)), "next_state": list(range(k)), "feature": list(range(d)),
              "sequence": list(range(x.shape[0])), "time": list(range(x.shape[1]))}
    if model.config.emission == "categorical":
        coords["category"] = list(range(model.config.num_categories))
    return to_inference_data(
        posterior=posterior,
        log_likelihood={"x": log_lik[None, None]},
        observed_data={"x": observed, "lengths": lengths},
        posterior_predictive={"x": replicated[None]},
        coords=coords,
        dims=dims,
        attrs={"model": "hmm", "method": method, "config": dataclasses.asdict(model.config),
               "num_parameters": model.num_parameters(),
               "log_likelihood": "per sequence, states summed out exactly by the forward algorithm",
               "relabelled": "no: a point fit has no label switching to undo",
               "note": "point fit: one draw of the fitted parameters; posterior_predictive is the plug-in predictive; "
                       "padded steps are NaN"},
    )


attach_hooks("hmm", fit=registry_fit, load=registry_load, evaluate=registry_evaluate, sample=registry_sample,
             inference_data=hmm_inference_data)
