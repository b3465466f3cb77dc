"""ArviZ InferenceData for models whose only latents are per item and continuous, fit by SVI with an amortised guide:
the VAE, prodLDA, and composed models with a Gaussian latent.

Their global parameters are network weights, point estimates with no posterior; what a guide gives is a posterior over
each item's latent, q(t_n | x_n). So the export draws S latents per item from the guide (one guide pass and one
replayed model pass per draw, so batch-normalised networks see the ``(N, D)`` batches they were trained on) and
records, for the first ``max_items`` items:

* ``posterior``: each latent site ``(chain=1, draw=S, obs, <site>_dim)``, t_{n,s} ~ q(t | x_n);
* ``log_likelihood`` ``x`` ``(1, S, obs)``: log p(x_n | t_{n,s}), conditional on each draw (what Pyro's Predictive
  gives). Averaged over draws it is the reconstruction term of the ELBO; it is not a marginal, so LOO and WAIC
  over it do not estimate predictive accuracy, and :func:`emvi.analysis.report.compare_fits` does not use them;
* ``sample_stats`` ``log_importance_weight`` ``(1, S, obs)``: log p(x_n, t_{n,s}) - log q(t_{n,s} | x_n). Its mean over
  draws is the ELBO of item n, its log-mean-exp the importance-sampled log p(x_n) (a tighter bound), and their
  difference shrinks with S: the lower bound at work, per item;
* ``posterior_predictive`` ``x`` ``(1, R, obs, feature)``: x ~ p(x | t_{n,s}) for the first R = min(S, 20) draws
  (replicated data sets are as large as the data); a multinomial observation (a document's word counts) is
  replicated with that document's own length;
* ``observed_data`` ``x``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from ..data.binarize import evaluation_draw
from ..errors import ConfigError
from ..inference.likelihood import importance_traces, site_log_probs
from ..validation import first_tensor
from .arviz_io import to_inference_data

MAX_ITEMS = 256
"""Items exported by default: every draw of every item is stored, and a replicated data set is as large as the data."""
MAX_REPLICATED_DRAWS = 20
LOCAL_LATENTS = "local"
"""``attrs["latent_posterior"]`` of such an export (see :func:`emvi.analysis.report.loo_applies`)."""


@torch.no_grad()
def local_latent_inference_data(model, guide, data, *, method: str = "svi", num_samples: int = 100, run_dir=None,
                                max_items: int = MAX_ITEMS, model_name: str | None = None, binarize_seed: int = 0):
    """``arviz.InferenceData`` for the first ``max_items`` items of ``data`` with S = ``num_samples`` guide draws per
    item; groups as in the module docstring. A dynamically binarised data set is evaluated on one fixed Bernoulli
    draw (seed ``binarize_seed``), as :func:`emvi.analysis.vae.evaluate_vae` does."""
    if method != "svi":
        raise ConfigError(f"models with per-item latents are fit by svi, got method {method!r}")
    if num_samples < 1 or max_items < 1:
        raise ConfigError(f"num_samples and max_items must be >= 1, got {num_samples} and {max_items}")
    x = first_tensor(data)
    total = x.shape[0]
    if total == 0:
        raise ConfigError("no items to analyse: the data set is empty")
    x = x[:max_items]
    if getattr(data, "binarize", None) == "dynamic":
        x = evaluation_draw(x, binarize_seed)
    device = next(model.parameters()).device
    x = x.to(device)
    was_training = model.training, guide.training
    model.eval(), guide.eval()  # batch norm and dropout as at test time
    batch, replicas = x.shape[0], min(num_samples, MAX_REPLICATED_DRAWS)
    draws: dict[str, list[torch.Tensor]] = {}
    conditional, log_weight, replicated = [], [], []
    try:
        for s in range(num_samples):
            guide_trace, model_trace = importance_traces(model, guide, x, None)
            conditional.append(site_log_probs(model_trace, 1, batch, observed=True)[0])  # (N,)
            log_weight.append((site_log_probs(model_trace, 1, batch) - site_log_probs(guide_trace, 1, batch))[0])
            for name, site in guide_trace.nodes.items():
                if site["type"] == "sample" and not site["is_observed"] and type(site["fn"]).__name__ != "_Subsample":
                    draws.setdefault(name, []).append(site["value"].reshape(batch, -1))  # (N, latent size)
            if s < replicas:
                observed = next(site for site in model_trace.nodes.values()
                                if site["type"] == "sample" and site["is_observed"])
                replicated.append(_replicate(observed["fn"], observed["value"]).reshape(batch, -1))
    finally:
        model.train(was_training[0]), guide.train(was_training[1])
    if not draws:
        raise ConfigError("the guide draws no latent site; nothing to export")
    conditional, log_weight, replicated = torch.stack(conditional), torch.stack(log_weight), torch.stack(replicated)
    posterior, coords = {}, {"obs": list(range(batch))}
    dims = {"x": ["obs", "feature"], "log_importance_weight": ["obs"]}
    for name, values in draws.items():
        posterior[name] = torch.stack(values)[None]  # (1, S, N, latent size)
        dims[name] = ["obs", f"{name}_dim"]
        coords[f"{name}_dim"] = list(range(values[0].shape[-1]))
    coords["feature"] = list(range(replicated.shape[-1]))
    elbo = log_weight.mean(0)
    importance = torch.logsumexp(log_weight, 0) - math.log(num_samples)
    config = getattr(model, "config", None)
    return to_inference_data(
        posterior=posterior,
        log_likelihood={"x": conditional[None]},
        sample_stats={"log_importance_weight": log_weight[None]},
        observed_data={"x": x.reshape(batch, -1)},
        posterior_predictive={"x": replicated[None]},
        coords=coords,
        dims=dims,
        attrs={"model": model_name or type(model).__name__, "method": method,
               "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else str(config),
               "latent_posterior": LOCAL_LATENTS,
               "items": f"the first {batch} of {total}",
               "elbo_per_item": float(elbo.mean()), "importance_log_likelihood_per_item": float(importance.mean()),
               "log_likelihood": "log p(x_n | t_n,s), conditional on each guide draw; not a marginal, so LOO/WAIC "
                                 "do not apply; logmeanexp of sample_stats.log_importance_weight over draws is the "
                                 "importance-sampled log p(x_n)",
               "note": "network weights are point estimates; the posterior holds draws of each item's latent from "
                       "the amortised guide q(t | x)"},
    )


def _replicate(fn, observed: torch.Tensor) -> torch.Tensor:
    """A draw from the observation distribution ``fn`` (batch ``(1, N)`` or ``(N,)``). A multinomial's
    ``total_count`` is only an upper bound on the counts in emvi's topic models (its log-density uses each row's own
    total), so it is replicated with each row's observed total instead: that many categorical draws per row."""
    base = fn.base_dist if isinstance(fn, torch.distributions.Independent) else fn
    if not isinstance(base, torch.distributions.Multinomial):
        return fn.sample()
    logits = base.logits.reshape(-1, base.logits.shape[-1])  # (N, V)
    totals = observed.reshape(logits.shape).sum(-1).round().long()  # (N,)
    words = torch.distributions.Categorical(logits=logits).sample((int(totals.max().item()),))  # (L, N)
    keep = (torch.arange(words.shape[0], device=words.device)[:, None] < totals).to(logits.dtype)
    return torch.zeros_like(logits).scatter_add_(1, words.T, keep.T)


def item_bounds(idata) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item of a local-latent export, ``(ELBO (N,), importance-sampled log p(x_n) (N,))``: the mean and the
    log-mean-exp of ``sample_stats.log_importance_weight`` over the S draws."""
    weights = torch.as_tensor(idata.sample_stats["log_importance_weight"].values).flatten(0, 1)  # (S, N)
    return weights.mean(0), torch.logsumexp(weights, 0) - math.log(weights.shape[0])


def item_log_likelihoods(idata) -> np.ndarray:
    """``(N,)`` held-out log-likelihood per item of an export: the importance-sampled log p(x_n) of a local-latent
    export, else the point fit's pointwise log-likelihood (each observed variable averaged over the draws and summed
    over its dimensions after the item's; several observed variables added)."""
    if "sample_stats" in idata.groups() and "log_importance_weight" in idata.sample_stats:
        return item_bounds(idata)[1].numpy().astype(np.float64)
    total = None
    for name in idata.log_likelihood.data_vars:
        values = np.asarray(idata.log_likelihood[name].values, dtype=np.float64)  # (chain, draw, N, ...)
        values = values.mean(axis=(0, 1)).reshape(values.shape[2], -1).sum(1)
        if total is not None and total.shape != values.shape:
            raise ConfigError(f"the observed variables of the export disagree on the number of items "
                              f"({total.shape[0]} and {values.shape[0]}); compare them one by one")
        total = values if total is None else total + values
    return total


def held_out_log_likelihood(idata) -> float:
    """Total held-out log-likelihood (nats) of an export: :func:`item_log_likelihoods` summed over the items."""
    return float(item_log_likelihoods(idata).sum())
