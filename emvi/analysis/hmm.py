"""ArviZ InferenceData for a fitted :class:`emvi.models.hmm.HMMModel` (Baum-Welch EM, SVI or NUTS), and the HMM's
registry hooks (fitting lives in the estimator facade; models may not import it).

Groups: ``posterior`` (``start_probs`` ``(state,)``, ``transition`` ``(state, next_state)``, emission parameters
``(state, feature[, category])``: one draw for the point fits em/svi, the NUTS draws for mcmc, relabelled);
``log_likelihood`` ``x`` ``(chain, draw, sequence)``: log p(x_n | θ), the states summed out exactly by the forward
algorithm, so the pointwise values add up to the model's log-likelihood and ``az.loo`` leaves out whole sequences;
``observed_data`` ``x`` ``(sequence, time, feature)`` with NaN on padding and ``lengths`` ``(sequence,)``;
``posterior_predictive`` ``x`` ``(chain, draw, sequence, time, feature)`` with the observed lengths (one replicated
data set per draw; the plug-in predictive of a point fit); for mcmc, ``sample_stats`` (``diverging``).
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from ..inference.mcmc import saved_draws
from ..inference.methods import check_method_name
from ..inference.relabel import relabel_hmm_draws
from ..models.hmm import check_sequences
from .arviz_io import to_inference_data

NUM_REPLICATIONS = 20
"""Replicated data sets drawn for the posterior predictive group of a point fit (plug-in predictive)."""


def hmm_inference_data(model, guide, data, *, method, num_samples=NUM_REPLICATIONS, run_dir=None,
                       samples: dict[str, torch.Tensor] | None = None, diverging: torch.Tensor | None = None):
    """``arviz.InferenceData`` of a fitted HMM on ``data`` (``.x`` ``(N, T, D)`` padded and ``.lengths`` ``(N,)``, or
    one ``(T, D)`` sequence); groups as in the module docstring.

    Posterior draws ``{site: (chain, draw, *shape)}`` come from ``samples`` (e.g. a NUTS fit's ``HMM.mcmc_.samples``)
    or from ``run_dir/checkpoint.pt`` when it holds some; they are relabelled to
    ``model``'s state order (Hungarian assignment on the emission parameters), which ``attrs["relabelled"]`` records.
    Point fits give one draw and ``num_samples`` replicated data sets.
    """
    check_method_name(method)
    if samples is None:
        samples, diverging = saved_draws(run_dir)
    sampled = samples is not None
    x, lengths = (data.x, getattr(data, "lengths", None)) if hasattr(data, "x") else (data, None)
    x, lengths = check_sequences(x, lengths, model.config)
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    x, lengths = x.to(device=device, dtype=dtype), lengths.to(device)
    valid = (torch.arange(x.shape[1], device=device) < lengths[:, None])[..., None]
    emission_names = model.parameter_names()[2:]
    attrs = {"model": "hmm", "method": method, "config": dataclasses.asdict(model.config),
             "num_parameters": model.num_parameters(),
             "log_likelihood": "per sequence, states summed out exactly by the forward algorithm"}
    if sampled:
        draws = relabel_hmm_draws({n: v.to(device=device, dtype=dtype) for n, v in samples.items()}, model)
        attrs["relabelled"] = (f"states permuted per draw to match the fitted model's (Hungarian assignment on "
                               f"{emission_names[0]})")
        attrs["note"] = "padded steps are NaN"
    else:
        draws = {n: getattr(model, n).detach()[None, None] for n in model.parameter_names()}
        attrs["relabelled"] = "no: a point fit has no label switching to undo"
        attrs["note"] = ("point fit: one draw of the fitted parameters; LOO/WAIC are not meaningful, use held-out "
                         "log-likelihood; posterior_predictive is the plug-in predictive; padded steps are NaN")
    chains, num_draws = draws["transition"].shape[:2]
    replications = num_draws if sampled else max(int(num_samples), 1)

    # Evaluate every draw with a scratch copy of the same model: the pointwise likelihood is the model's own.
    scratch = copy.deepcopy(model)
    start_probs = torch.empty(chains, num_draws, model.config.num_states, dtype=dtype, device=device)
    log_lik = torch.empty(chains, num_draws, x.shape[0], dtype=dtype, device=device)
    replicated = torch.empty(chains, replications, *x.shape, dtype=dtype, device=device)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for c in range(chains):
            for d in range(num_draws):
                for name, value in draws.items():
                    scratch.set_parameter(name, value[c, d])
                start_probs[c, d] = scratch.start_probs()
                log_lik[c, d] = scratch.log_likelihood(x, lengths)
                if sampled:
                    replicated[c, d] = scratch.sample(x.shape[0], x.shape[1], generator=generator)[0].to(x)
            if not sampled:
                for r in range(replications):
                    replicated[c, r] = scratch.sample(x.shape[0], x.shape[1], generator=generator)[0].to(x)
    nan = torch.tensor(float("nan"), dtype=x.dtype, device=device)
    posterior = {"start_probs": start_probs, "transition": draws["transition"],
                 **{name: draws[name] for name in emission_names}}
    k, d = model.config.num_states, x.shape[-1]
    dims = {"start_probs": ["state"], "transition": ["state", "next_state"], "x": ["sequence", "time", "feature"],
            "lengths": ["sequence"]}
    for name in emission_names:
        dims[name] = ["state", "feature"] + (["category"] if posterior[name].dim() == 5 else [])
    coords = {"state": list(range(k)), "next_state": list(range(k)), "feature": list(range(d)),
              "sequence": list(range(x.shape[0])), "time": list(range(x.shape[1]))}
    if model.config.emission == "categorical":
        coords["category"] = list(range(model.config.num_categories))
    sample_stats = None
    if sampled and diverging is not None:
        sample_stats = {"diverging": diverging.reshape(chains, num_draws).bool()}
    return to_inference_data(
        posterior=posterior,
        log_likelihood={"x": log_lik},
        observed_data={"x": torch.where(valid, x, nan), "lengths": lengths},
        posterior_predictive={"x": torch.where(valid, replicated, nan)},
        sample_stats=sample_stats,
        coords=coords,
        dims=dims,
        attrs=attrs,
    )


