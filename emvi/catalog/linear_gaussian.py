"""Probabilistic PCA and factor analysis, wired: builders (the model with the EM protocol), exact evaluation (and
the SVI guide's gap), sampling, ArviZ."""

from __future__ import annotations

import torch

from ..analysis.ppca import ppca_inference_data
from ..data import DataInfo
from ..errors import DataError
from ..inference.factor_analysis import profile_steps
from ..inference.methods.em import NAME as EM
from ..models.ppca import (
    FactorAnalysisConfig,
    LinearGaussianConfig,
    LinearGaussianModel,
    PPCAConfig,
    check_linear_gaussian_data,
    closed_form_elbo,
    make_guide,
)
from ..registry import ModelEntry
from ..validation import first_tensor


class LinearGaussian(LinearGaussianModel):
    """PPCA / factor analysis with the EM method's protocol: PPCA's closed-form EM is the model's own; factor
    analysis is stepped on the sample covariance (:func:`~emvi.inference.factor_analysis.profile_steps`: W exactly
    maximised given Ψ each step)."""

    fitted_dtype = torch.float64
    """EM and NUTS fits keep the float64 they are computed in."""

    def em_inputs(self, data) -> tuple[torch.Tensor]:
        return (first_tensor(data),)

    def em_steps(self, x: torch.Tensor):
        return self if self.config.noise == "isotropic" else profile_steps(self, x)


def build_linear_gaussian(config: LinearGaussianConfig, data_info: DataInfo):
    """``(model, guide)`` of PPCA or factor analysis (the config's noise model decides), guide per ``config.guide``."""
    num_features = data_info.event_shape[-1]
    if len(data_info.event_shape) != 1:
        raise DataError(f"PPCA/FA needs flat observations (items, features), got event shape {data_info.event_shape}; "
                        "flatten the data first")
    if config.latent_dim >= num_features:
        raise DataError(f"latent_dim={config.latent_dim} must be below the number of features D={num_features}; "
                        "lower --latent-dim")
    model = LinearGaussian(config, num_features)
    return model, make_guide(config, model, num_features)


def check_linear_gaussian_fit_data(config: LinearGaussianConfig, data, method: str | None = None) -> None:
    """Flat finite observations, at least 2 items, latent_dim below the number of features."""
    check_linear_gaussian_data(first_tensor(data), config.latent_dim)


def evaluate_linear_gaussian(model: LinearGaussianModel, guide, data, *, num_samples: int = 1000) -> dict:
    """Exact held-out log-likelihood per item; for an SVI fit also its guide's ELBO (closed form) and the gap."""
    dtype = model.mean.dtype
    x = check_linear_gaussian_data(first_tensor(data), model.config.latent_dim).to(dtype)
    model.eval()
    with torch.no_grad():
        exact = float(model.log_likelihood(x).mean())
        metrics = {"num_items": int(x.shape[0]), "log_likelihood_per_item": exact}
        # An EM fit's guide is the exact posterior (the E-step), whatever module the builder paired it with.
        if guide is not None and getattr(model, "fitted_by", "svi") == "svi":
            elbo = float(closed_form_elbo(model, guide, x).mean())
            metrics.update({"elbo_nats_per_item": elbo, "elbo_gap_nats": exact - elbo})
    return metrics


def sample_linear_gaussian(model: LinearGaussianModel, guide, num_samples: int) -> torch.Tensor:
    return model.sample(num_samples).float()


_HOOKS = dict(default_method=EM, evaluate=evaluate_linear_gaussian,
              sample=sample_linear_gaussian, inference_data=ppca_inference_data,
              check_data=check_linear_gaussian_fit_data, elbo="trace", max_plate_nesting=1)

ENTRIES = (
    ModelEntry("ppca", PPCAConfig, build_linear_gaussian,
               description="probabilistic PCA: Normal latent, linear Gaussian decoder with isotropic noise", **_HOOKS),
    ModelEntry("fa", FactorAnalysisConfig, build_linear_gaussian,
               description="factor analysis: Normal latent, linear Gaussian decoder with diagonal noise", **_HOOKS),
)
