"""``PPCA`` and ``FactorAnalysis``: scikit-learn-style estimators over :class:`emvi.models.ppca.LinearGaussianModel`.

    fa = FactorAnalysis(latent_dim=3).fit(x)          # closed-form EM to convergence
    fa.score(x), fa.transform(x), fa.components_, fa.noise_variance_, fa.bic(x), fa.sample(10)

``method="svi"`` fits the same model by the shared runner with a guide (``guide="mlp" | "linear" | "linear-full" |
"exact"``) instead, and reports the gap between its ELBO and the exact log-likelihood (``elbo_gap_``, nats per item).
``fit_guide`` fits only a guide to the fitted parameters; ``elbo`` gives any guide's closed-form ELBO per item and
``mean_field_gap`` the smallest gap a diagonal-covariance guide can reach. Outputs are numpy arrays, as in
scikit-learn; ``model_`` is the underlying :class:`~emvi.models.ppca.LinearGaussianModel`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..inference.em import ConvergenceWarning, fit_em
from ..inference.factor_analysis import fit_factor_analysis
from ..models.ppca import (
    FactorAnalysisConfig,
    LinearGaussianConfig,
    LinearGaussianModel,
    PPCAConfig,
    check_linear_gaussian_data,
    closed_form_elbo,
    make_guide,
)
from ..validation import check_choice, check_positive_int, resolve_device


def _numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy()


class _LinearGaussianEstimator:
    config_class: type[LinearGaussianConfig] = LinearGaussianConfig

    def __init__(self, latent_dim: int = 2, *, method: str = "em", max_iter: int = 1000, tol: float = 1e-6,
                 epochs: int = 100, batch_size: int = 128, learning_rate: float = 1e-2, guide: str = "mlp",
                 hidden_dims=(64,), seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float64):
        self.config = self.config_class(latent_dim=latent_dim, guide=guide, hidden_dims=tuple(hidden_dims))
        self.method = check_choice(method, "method", ("em", "svi"))
        self.max_iter = check_positive_int(max_iter, "max_iter")
        if not tol >= 0:
            raise ConfigError(f"tol must be >= 0, got {tol}")
        self.tol, self.epochs, self.batch_size, self.learning_rate = tol, epochs, batch_size, learning_rate
        self.seed, self.device, self.dtype = seed, resolve_device(device), dtype

    def _data(self, x) -> torch.Tensor:
        x = check_linear_gaussian_data(x, self.config.latent_dim, dtype=self.dtype)
        if hasattr(self, "model_") and x.shape[1] != self.model_.mean.shape[0]:
            raise DataError(f"data has {x.shape[1]} features but the model was fit on {self.model_.mean.shape[0]}")
        return x.to(device=self.device, dtype=self.dtype)

    def fit(self, x, y=None):
        """Fit to ``x`` ``(N, D)`` by EM (exact) or SVI (amortised guide). Returns self."""
        x = self._data(x)
        generator = torch.Generator().manual_seed(self.seed)
        model = LinearGaussianModel(self.config, x.shape[1], dtype=self.dtype).to(self.device)
        model.initialise(x, generator)
        if self.method == "em":
            if self.config.noise == "diagonal":  # W exactly maximised given Ψ each step: tens of iterations
                result = fit_factor_analysis(model, x, max_iter=self.max_iter, tol=self.tol, warn=False)
            else:
                result = fit_em(model, x, max_iter=self.max_iter, tol=self.tol, warn=False)
            self.converged_, self.n_iter_ = result.converged, result.n_iter
            self.history_ = [ll / x.shape[0] for ll in result.log_likelihood_history]
            if not self.converged_:
                warnings.warn(f"EM did not converge in {self.max_iter} iterations (tol={self.tol}); raise max_iter",
                              ConvergenceWarning, stacklevel=2)
        else:
            from ..inference.runner import TrainConfig, train

            guide = make_guide(self.config, model, x.shape[1]).to(device=self.device, dtype=self.dtype)
            result = train(model, guide, x, config=TrainConfig(epochs=self.epochs, batch_size=self.batch_size,
                                                                learning_rate=self.learning_rate, seed=self.seed,
                                                                device=str(self.device), progress=False))
            self.guide_ = guide
            self.history_ = [-h["train_loss"] for h in result.history]
            self.converged_, self.n_iter_ = True, result.epochs_run
            # The guide's ELBO in closed form (every guide here is Gaussian), so the gap carries no Monte Carlo noise.
            self.elbo_ = float(closed_form_elbo(model, guide, x).mean())
        model.fitted_by = self.method
        self.model_ = model
        with torch.no_grad():
            self.lower_bound_ = float(model.log_likelihood(x).mean())
        if self.method == "svi":
            self.elbo_gap_ = self.lower_bound_ - self.elbo_
        return self

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise ConfigError(f"this {type(self).__name__} is not fitted yet; call fit(x) first")

    def fit_guide(self, x, guide: str = "linear", *, epochs: int | None = None, learning_rate: float | None = None,
                  num_particles: int = 1):
        """Fit only a guide q(z | x) by SVI to this fitted model, whose parameters stay fixed; returns the guide.

        The runner steps the guide alone (the model's parameters are frozen for the fit), with a cosine learning-rate
        schedule so the final guide is not dominated by gradient noise. Measure it with :meth:`elbo`.
        """
        from ..inference.runner import TrainConfig, train

        self._check_fitted()
        x = self._data(x)
        config = self.config_class(latent_dim=self.config.latent_dim, guide=guide, hidden_dims=self.config.hidden_dims)
        q = make_guide(config, self.model_, x.shape[1]).to(device=self.device, dtype=self.dtype)
        frozen = [p for p in self.model_.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            train(self.model_, q, x, config=TrainConfig(
                epochs=epochs or self.epochs, batch_size=self.batch_size, learning_rate=learning_rate or self.learning_rate,
                lr_schedule="cosine", num_particles=num_particles, seed=self.seed, device=str(self.device), progress=False))
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return q

    def elbo(self, x, guide=None) -> np.ndarray:
        """``(N,)`` closed-form ELBO of ``guide`` (default: the SVI fit's own) at the fitted parameters; it equals
        ``score_samples(x) - KL(q(z | x) ‖ p(z | x))``."""
        self._check_fitted()
        guide = guide if guide is not None else getattr(self, "guide_", None)
        if guide is None:
            raise ConfigError("an EM fit has no guide of its own (its E-step is exact); pass guide= from fit_guide()")
        return _numpy(closed_form_elbo(self.model_, guide, self._data(x)))

    def mean_field_gap(self) -> float:
        """½ (Σ_i log M_ii - log det M), M = I + Wᵀ Ψ⁻¹ W: the smallest gap of any diagonal-covariance guide, per item."""
        self._check_fitted()
        with torch.no_grad():
            _, covariance = self.model_.posterior_moments(self.model_.mean[None])
            precision = torch.linalg.inv(covariance)
            return float(0.5 * (torch.diagonal(precision).log().sum() - torch.logdet(precision)))

    @torch.no_grad()
    def score_samples(self, x) -> np.ndarray:
        """``(N,)`` exact log p(x_n) = log Normal(x_n | μ, W Wᵀ + Ψ)."""
        self._check_fitted()
        return _numpy(self.model_.log_likelihood(self._data(x)))

    def score(self, x) -> float:
        """Average exact log-likelihood per item (scikit-learn's ``score``)."""
        return float(self.score_samples(x).mean())

    @torch.no_grad()
    def transform(self, x) -> np.ndarray:
        """``(N, q)`` posterior means E[z_n | x_n] = M⁻¹ Wᵀ Ψ⁻¹ (x_n - μ)."""
        self._check_fitted()
        return _numpy(self.model_.posterior_moments(self._data(x))[0])

    def sample(self, num_samples: int = 1) -> np.ndarray:
        """``(num_samples, D)`` draws from the fitted model."""
        self._check_fitted()
        return _numpy(self.model_.sample(num_samples))

    def get_covariance(self) -> np.ndarray:
        """``(D, D)`` model covariance W Wᵀ + Ψ (rotation-invariant, unlike ``components_``)."""
        self._check_fitted()
        return _numpy(self.model_.covariance())

    def bic(self, x) -> float:
        """-2 log p(x) + k log N, k free parameters (W counted up to rotation)."""
        n = len(x)
        return -2 * self.score(x) * n + self.model_.num_parameters() * math.log(n)

    def aic(self, x) -> float:
        """-2 log p(x) + 2 k."""
        return -2 * self.score(x) * len(x) + 2 * self.model_.num_parameters()

    @property
    def components_(self) -> np.ndarray:
        """``(q, D)`` loadings Wᵀ (scikit-learn's layout); identified up to a rotation of z."""
        self._check_fitted()
        return _numpy(self.model_.weight.T)

    @property
    def noise_variance_(self) -> float | np.ndarray:
        """σ² (PPCA, a float) or ψ ``(D,)`` (factor analysis)."""
        self._check_fitted()
        noise = _numpy(self.model_.noise_variance)
        return float(noise[0]) if self.config.noise == "isotropic" else noise

    @property
    def mean_(self) -> np.ndarray:
        """``(D,)`` μ, the data mean for EM fits."""
        self._check_fitted()
        return _numpy(self.model_.mean)


class PPCA(_LinearGaussianEstimator):
    """Probabilistic PCA (isotropic noise σ² I), fit by EM or SVI."""

    config_class = PPCAConfig


class FactorAnalysis(_LinearGaussianEstimator):
    """Factor analysis (diagonal noise), fit by EM or SVI."""

    config_class = FactorAnalysisConfig
