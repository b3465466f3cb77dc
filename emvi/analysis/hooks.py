"""ArviZ export hooks for the built-in models, attached to their registry entries.

Models may not import analysis code (layers point one way), so the hooks are attached here, when the registry
loads the built-in models.
"""

from __future__ import annotations

import torch

from .. import models as _builtin_models  # noqa: F401  (registers the entries the hooks attach to)
from ..inference.em import registry_fit_em, registry_load_em
from ..inference.pointwise import pointwise_log_likelihood, posterior_predictive
from ..registry import attach_hooks
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


def _named_local_export(name: str):
    def export(model, guide, data, *, method, num_samples, run_dir=None):
        return local_latent_inference_data(model, guide, data, method=method, num_samples=num_samples, model_name=name)

    export.__name__ = f"{name}_inference_data"
    export.__doc__ = f"InferenceData of a {name} fit: guide draws of each item's latent (see emvi.analysis.local_latents)."
    return export


attach_hooks("composed", inference_data=composed_inference_data, fit=registry_fit_em, load=registry_load_em)
attach_hooks("vae", inference_data=_named_local_export("vae"))
attach_hooks("prodlda", inference_data=_named_local_export("prodlda"))

from . import hmm as _hmm_hooks  # noqa: E402, F401  (HMM fit, load, evaluate, sample)
from . import lda as _lda_hooks  # noqa: E402, F401  (LDA / prodLDA evaluate and InferenceData)
from . import mixture as _mixture_hooks  # noqa: E402, F401  (the mixture's InferenceData hook)
from . import ppca as _ppca_hooks  # noqa: E402, F401  (PPCA / factor analysis fit, load, evaluate, sample)
from . import vae as _vae_hooks  # noqa: E402, F401  (attaches the VAE's plots/evaluate/sample hooks)
