"""ArviZ InferenceData for a fitted probabilistic PCA / factor analysis model, and the registry hooks of both.

Groups (point fits, em or svi: the parameters as one draw):

* ``posterior``: ``loadings`` W ``(feature, latent)``, ``mean`` μ ``(feature,)`` and ``noise_variance`` diag Ψ
  ``(feature,)`` (the per-item latents are not stored: p(z_n | x_n) is a closed form of these);
* ``log_likelihood``: ``x``, log p(x_n | θ) = log Normal(x_n | μ, W Wᵀ + Ψ) per item — the latent z_n integrated
  out in closed form, the marginal pointwise likelihood that LOO/WAIC need;
* ``posterior_predictive``: ``x``, replicated data sets drawn from the fitted model (the plug-in predictive);
* ``observed_data``: ``x``.

No ``sample_stats`` group: neither EM nor SVI produce per-draw diagnostics. The attrs hold the config, the method,
the exact log-likelihood per item and, for SVI fits, the guide's closed-form ELBO and the gap between them. Loadings
are identified only up to a rotation of the latent space; no relabelling is needed because there are no MCMC draws.
"""

from __future__ import annotations

import dataclasses

import torch

from ..errors import ConfigError
from ..inference.methods import get_method
from ..models.ppca import LinearGaussianModel, check_linear_gaussian_data, closed_form_elbo
from ..validation import first_tensor
from .arviz_io import to_inference_data

MAX_REPLICATIONS = 100
"""Replicated data sets in the plug-in posterior predictive (each is a full data set)."""


def ppca_inference_data(model: LinearGaussianModel, guide, data, *, method: str, num_samples: int = 100,
                        run_dir=None):
    """``arviz.InferenceData`` of a fitted PPCA/FA ``model`` on ``data`` ``(N, D)`` (see the module docstring).

    ``num_samples`` replicated data sets (at most 100) form the posterior predictive. ``run_dir`` is unused: the
    fitted parameters are the model's own.
    """
    reason = get_method(method).why_not(model, guide)
    if reason is not None:
        raise ConfigError(f"PPCA/FA are fit by em or svi, got method {method!r} ({reason}); refit with --method em")
    dtype = model.mean.dtype
    x = check_linear_gaussian_data(first_tensor(data), model.config.latent_dim).to(dtype)
    replications = max(1, min(int(num_samples), MAX_REPLICATIONS))
    with torch.no_grad():
        log_lik = model.log_likelihood(x)
        posterior = {
            "loadings": model.weight.detach()[None, None],
            "mean": model.mean.detach()[None, None],
            "noise_variance": model.noise_variance.detach()[None, None],
        }
        replicated = torch.stack([model.sample(x.shape[0]) for _ in range(replications)])
        attrs = {"model": "ppca" if model.config.noise == "isotropic" else "fa", "method": method,
                 "config": dataclasses.asdict(model.config), "noise": model.config.noise,
                 "log_likelihood": "marginal over the latent z: log Normal(x_n | mu, W W^T + Psi), closed form",
                 "log_likelihood_per_item": float(log_lik.mean()), "num_parameters": model.num_parameters(),
                 "note": "point fit: one draw of the ML parameters; posterior_predictive is the plug-in predictive; "
                         "LOO/WAIC are not meaningful, use held-out log-likelihood",
                 "relabelled": "no (no MCMC draws; W is identified up to a rotation of z)"}
        if method == "svi" and guide is not None and getattr(model, "fitted_by", "svi") == "svi":
            elbo = float(closed_form_elbo(model, guide, x).mean())
            attrs.update({"elbo_per_item": elbo, "elbo_gap_nats": attrs["log_likelihood_per_item"] - elbo})
    d, q = x.shape[1], model.config.latent_dim
    return to_inference_data(
        posterior=posterior,
        log_likelihood={"x": log_lik[None, None]},
        observed_data={"x": x},
        posterior_predictive={"x": replicated[None]},
        coords={"feature": list(range(d)), "latent": list(range(q)), "obs": list(range(x.shape[0]))},
        dims={"loadings": ["feature", "latent"], "mean": ["feature"], "noise_variance": ["feature"],
              "x": ["obs", "feature"]},
        attrs=attrs,
    )
