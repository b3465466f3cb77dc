"""ArviZ InferenceData for a fitted composed model: a discrete latent's MAP parameters as one draw, or guide draws of
a Gaussian latent per item (see :mod:`emvi.analysis.local_latents`)."""

from __future__ import annotations

import torch

from ..inference.pointwise import pointwise_log_likelihood, posterior_predictive
from .arviz_io import to_inference_data
from .local_latents import local_latent_inference_data

NUM_REPLICATIONS = 100
"""Replicated data sets drawn for the posterior predictive group of a point fit (plug-in predictive)."""


def composed_inference_data(model, guide, data, *, method, num_samples, run_dir=None):
    """InferenceData for a composed model. With a discrete latent (a mixture): its MAP parameters as one draw; with a
    Gaussian latent (per item, amortised guide): guide draws of each item's latent, see
    :func:`emvi.analysis.local_latents.local_latent_inference_data`."""
    config = model.config
    if config.latent != "discrete":
        return local_latent_inference_data(model, guide, data, method=method, num_samples=num_samples,
                                           model_name="composed")
    x = data.tensors[0]
    with torch.no_grad():
        params = model.component_params.detach()
        family = config.likelihood
        if family == "poisson":
            named = {"rates": params.exp()}
        elif family == "bernoulli":
            named = {"probs": torch.sigmoid(params)}
        elif family == "normal":
            named = {"means": params, "scales": model.likelihood.log_scale.exp().expand_as(params)}
        else:
            k, d, c = params.shape[0], x.shape[-1], config.num_categories
            named = {"probs": torch.softmax(params.reshape(k, d, c), -1)}
        posterior = {"weights": model.weights.detach()[None, None], **{k: v[None, None] for k, v in named.items()}}
        log_lik = pointwise_log_likelihood(model, x)
        replicated = torch.stack([posterior_predictive(model, x) for _ in range(NUM_REPLICATIONS)])
    dims = {"weights": ["component"], "x": ["obs", "feature"]}
    for name, value in named.items():
        dims[name] = ["component", "feature"] + (["category"] if value.dim() == 3 else [])
    return to_inference_data(
        posterior=posterior,
        log_likelihood={"x": log_lik[None, None]},
        observed_data={"x": x},
        posterior_predictive={"x": replicated[None]},
        coords={"component": list(range(config.num_components)), "feature": list(range(x.shape[-1])),
                "obs": list(range(x.shape[0]))},
        dims=dims,
        attrs={"model": "composed", "method": method, "config": vars(config) if hasattr(config, "__dict__") else str(config),
               "num_parameters": int(sum(v.numel() for v in posterior.values())),
               "note": "point fit: one draw of the MAP parameters; posterior_predictive is the plug-in predictive"},
    )
