"""ArviZ InferenceData for models whose only latents are per item and continuous, fit by SVI with an amortised guide:
the VAE and composed models with a Gaussian latent. (prodLDA is not served: its batch norm and its per-document
word totals do not vectorise over draws as written.)

Their global parameters are network weights, point estimates with no posterior; what a guide gives is a posterior over
each item's latent, q(t_n | x_n). So the export draws S latents per item from the guide (Pyro's vectorised replay,
as :mod:`emvi.inference.likelihood` does for log p(x)) and records, for the first ``max_items`` items:

* ``posterior``: each latent site ``(chain=1, draw=S, obs, <site>_dim)``, t_{n,s} ~ q(t | x_n);
* ``log_likelihood`` ``x`` ``(1, S, obs)``: log p(x_n | t_{n,s}), conditional on each draw (what Pyro's Predictive
  gives). Averaged over draws it is the reconstruction term of the ELBO; it is not a marginal, so LOO and WAIC
  over it do not estimate predictive accuracy, and :func:`emvi.analysis.report.compare_fits` does not use them;
* ``sample_stats`` ``log_importance_weight`` ``(1, S, obs)``: log p(x_n, t_{n,s}) - log q(t_{n,s} | x_n). Its mean over
  draws is the ELBO of item n, its log-mean-exp the importance-sampled log p(x_n) (a tighter bound), and their
  difference shrinks with S: the lower bound at work, per item;
* ``posterior_predictive`` ``x`` ``(1, R, obs, feature)``: x ~ p(x | t_{n,s}) for the first R = min(S, 20) draws
  (replicated data sets are as large as the data);
* ``observed_data`` ``x``.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..errors import ConfigError
from ..inference.likelihood import importance_traces, site_log_probs
from .arviz_io import to_inference_data

MAX_ITEMS = 256
"""Items exported by default: every draw of every item is stored, and a replicated data set is as large as the data."""
MAX_REPLICATED_DRAWS = 20
LOCAL_LATENTS = "local"
"""``attrs["latent_posterior"]`` of such an export (see :func:`emvi.analysis.report.loo_applies`)."""


def _observations(data) -> torch.Tensor:
    if hasattr(data, "tensors"):
        return data.tensors[0]
    return data[0] if isinstance(data, (tuple, list)) else torch.as_tensor(data)


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
    x = _observations(data)
    total = x.shape[0]
    if total == 0:
        raise ConfigError("no items to analyse: the data set is empty")
    x = x[:max_items]
    if getattr(data, "binarize", None) == "dynamic":
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(binarize_seed))
    device = next(model.parameters()).device
    x = x.to(device)
    was_training = model.training, guide.training
    model.eval(), guide.eval()  # batch norm and dropout as at test time
    try:
        guide_trace, model_trace = importance_traces(model, guide, x, num_samples)
    finally:
        model.train(was_training[0]), guide.train(was_training[1])
    batch = x.shape[0]
    conditional = site_log_probs(model_trace, num_samples, batch, observed=True)  # (S, N)
    log_weight = site_log_probs(model_trace, num_samples, batch) - site_log_probs(guide_trace, num_samples, batch)
    posterior, coords = {}, {"obs": list(range(batch))}
    dims = {"x": ["obs", "feature"], "log_importance_weight": ["obs"]}
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or type(site["fn"]).__name__ == "_Subsample":
            continue
        value = site["value"].reshape(num_samples, batch, -1)  # (S, N, latent size)
        posterior[name] = value[None]
        dims[name] = ["obs", f"{name}_dim"]
        coords[f"{name}_dim"] = list(range(value.shape[-1]))
    if not posterior:
        raise ConfigError("the guide draws no latent site; nothing to export")
    observed_sites = [site for site in model_trace.nodes.values() if site["type"] == "sample" and site["is_observed"]]
    replicas = min(num_samples, MAX_REPLICATED_DRAWS)
    replicated = observed_sites[0]["fn"].sample().reshape(num_samples, batch, -1)[:replicas]
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


def held_out_log_likelihood(idata) -> float:
    """Total held-out log-likelihood (nats) of an export: the importance-sampled log p(x_n) summed over items for
    a local-latent export, else the pointwise log-likelihood of a point fit's single draw."""
    if "sample_stats" in idata.groups() and "log_importance_weight" in idata.sample_stats:
        weights = torch.as_tensor(idata.sample_stats["log_importance_weight"].values).flatten(0, 1)  # (S, N)
        return float((torch.logsumexp(weights, 0) - math.log(weights.shape[0])).sum())
    return float(idata.log_likelihood.to_array().sum())
