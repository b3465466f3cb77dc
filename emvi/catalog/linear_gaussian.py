"""Probabilistic PCA and factor analysis, wired: builders, closed-form EM fits into a run directory, exact
evaluation (and the SVI guide's gap), sampling, ArviZ."""

from __future__ import annotations

import torch

from ..analysis.ppca import ppca_inference_data
from ..data import DataInfo
from ..errors import DataError
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


def build_linear_gaussian(config: LinearGaussianConfig, data_info: DataInfo):
    """``(model, guide)`` of PPCA or factor analysis (the config's noise model decides), guide per ``config.guide``."""
    num_features = data_info.event_shape[-1]
    if len(data_info.event_shape) != 1:
        raise DataError(f"PPCA/FA needs flat observations (items, features), got event shape {data_info.event_shape}; "
                        "flatten the data first")
    if config.latent_dim >= num_features:
        raise DataError(f"latent_dim={config.latent_dim} must be below the number of features D={num_features}; "
                        "lower --latent-dim")
    model = LinearGaussianModel(config, num_features)
    return model, make_guide(config, model, num_features)


def check_linear_gaussian_fit_data(config: LinearGaussianConfig, data, method: str = "em") -> None:
    """Flat finite observations, at least 2 items, latent_dim below the number of features."""
    check_linear_gaussian_data(first_tensor(data), config.latent_dim)


def fit_linear_gaussian(model: LinearGaussianModel, guide, train_data, *, method: str, config, valid_data=None,
                        run=None) -> dict:
    """Closed-form EM (:class:`emvi.inference.em.EMConfig`) through the :class:`~emvi.estimators.PPCA` /
    :class:`~emvi.estimators.FactorAnalysis` facade; the parameters go to ``run``'s checkpoint."""
    from ..estimators.ppca import PPCA, FactorAnalysis  # scikit-learn loads with the estimators, not ``import emvi``

    x = first_tensor(train_data).double()
    estimator_class = PPCA if model.config.noise == "isotropic" else FactorAnalysis
    estimator = estimator_class(model.config.latent_dim, max_iter=config.max_iter, tol=config.tol, seed=config.seed)
    try:
        estimator.fit(x)
    except torch.linalg.LinAlgError as exc:
        raise DataError(f"EM hit a singular covariance ({' '.join(str(exc).split())[:120]}); the data has "
                        "constant or duplicated features: drop them, or fit by --method svi") from None
    model.to(dtype=torch.float64)
    model.load_state_dict(estimator.model_.state_dict())
    model.fitted_by = "em"
    summary = {"method": method, "converged": estimator.converged_, "n_iter": estimator.n_iter_,
               "log_likelihood_per_item": estimator.score(x), "bic": estimator.bic(x)}
    if valid_data is not None:
        summary["valid_log_likelihood_per_item"] = estimator.score(first_tensor(valid_data).double())
    if run is not None:
        run.save_checkpoint({"model": model.state_dict(), "summary": dict(summary)})
    summary["history"] = [{"epoch": i, "train_loss": -ll} for i, ll in enumerate(estimator.history_)]
    return summary


def load_linear_gaussian(model: LinearGaussianModel, guide, run, device) -> None:
    model.to(device=device, dtype=torch.float64)
    model.load_state_dict(run.load_checkpoint(map_location=device)["model"])
    model.fitted_by = "em"


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


_HOOKS = dict(fit=fit_linear_gaussian, load=load_linear_gaussian, evaluate=evaluate_linear_gaussian,
              sample=sample_linear_gaussian, inference_data=ppca_inference_data,
              check_data=check_linear_gaussian_fit_data, elbo="trace", max_plate_nesting=1)

ENTRIES = (
    ModelEntry("ppca", PPCAConfig, build_linear_gaussian, methods=("em", "svi"),
               description="probabilistic PCA: Normal latent, linear Gaussian decoder with isotropic noise", **_HOOKS),
    ModelEntry("fa", FactorAnalysisConfig, build_linear_gaussian, methods=("em", "svi"),
               description="factor analysis: Normal latent, linear Gaussian decoder with diagonal noise", **_HOOKS),
)
