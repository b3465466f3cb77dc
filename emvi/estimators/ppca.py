"""``PPCA`` and ``FactorAnalysis``: scikit-learn-style estimators over :class:`emvi.models.ppca.LinearGaussianModel`.

    fa = FactorAnalysis(3).fit(x)          # x (N, D); scikit-learn's FactorAnalysis iteration to convergence
    fa.score(x), fa.transform(x), fa.components_, fa.noise_variance_, fa.bic(x), fa.sample(10)

``method="svi"`` fits the same model by the shared runner with a guide (``guide="mlp" | "linear" | "linear-full" |
"exact"``) instead, and reports the gap between its ELBO and the exact log-likelihood (``elbo_gap_``, nats per item).
``fit_guide`` fits only a guide to the fitted parameters; ``elbo`` gives any guide's closed-form ELBO per item and
``mean_field_gap`` the smallest gap a diagonal-covariance guide can reach. Inputs are array-likes (numpy, lists,
torch); outputs are numpy arrays and Python numbers, as in scikit-learn; ``model_`` is the underlying
:class:`~emvi.models.ppca.LinearGaussianModel`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin

from ..errors import ConfigError, DataError
from ..inference.convergence import warn_not_converged
from ..inference.em import EMConfig, fit_em
from ..inference.factor_analysis import fit_profile_likelihood, rotate_loadings
from ..inference.methods import EM, SVI
from ..models.ppca import (
    FactorAnalysisConfig,
    LinearGaussianConfig,
    LinearGaussianModel,
    PPCAConfig,
    check_linear_gaussian_data,
    closed_form_elbo,
    make_guide,
)
from ..validation import as_float_tensor, check_choice, check_positive_int, resolve_device
from .base import EmviEstimator, as_input, check_shape, resolve_dtype, to_numpy


class _LinearGaussianEstimator(ClassNamePrefixFeaturesOutMixin, TransformerMixin, EmviEstimator):
    """x = W z + μ + ε, z ~ Normal(0, I_q), ε ~ Normal(0, Ψ); Ψ = σ² I (PPCA) or diag ψ (factor analysis).

    Parameters are stored as given and checked by :meth:`fit` (scikit-learn's convention): ``latent_dim`` q (below
    the number of features D); ``method`` em (closed-form EM, at most ``max_iter`` iterations, ``tol`` on the change
    of the log-likelihood per item) or svi (the runner: ``epochs``, ``batch_size``, ``learning_rate``, with
    ``guide`` and ``hidden_dims``); ``seed`` seeds the start, the mini-batches and :meth:`sample`; ``dtype``
    "float64" or "float32"; ``device`` cpu, cuda or auto.

    Fitted attributes: ``components_`` ``(q, D)``, ``noise_variance_`` (float σ², or ``(D,)`` ψ), ``mean_`` ``(D,)``,
    ``n_features_in_`` (D), ``converged_``, ``n_iter_``, ``lower_bound_`` (exact log-likelihood per item),
    ``history_`` (log-likelihood per item per EM iteration, or the ELBO per epoch), ``model_``; for SVI also
    ``guide_``, ``elbo_`` and ``elbo_gap_`` (nats per item).
    """

    config_class: type[LinearGaussianConfig] = LinearGaussianConfig
    full_rank: bool = False
    """Whether q = D is allowed (factor analysis: scikit-learn's ``n_components=None``)."""

    def __init__(self, latent_dim: int = 2, *, method: str = EM, max_iter: int = EMConfig.max_iter, tol: float = EMConfig.tol,
                 epochs: int = 100, batch_size: int = 128, learning_rate: float = 1e-2, guide: str = "mlp",
                 hidden_dims=(64,), seed: int = 0, device: str = "cpu", dtype: str = "float64"):
        self.latent_dim = latent_dim
        self.method = method
        self.max_iter = max_iter
        self.tol = tol
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.guide = guide
        self.hidden_dims = hidden_dims
        self.seed = seed
        self.device = device
        self.dtype = dtype

    def _config(self) -> LinearGaussianConfig:
        """Check every parameter (one-line :class:`~emvi.errors.ConfigError`) and build the model's config."""
        config = self.config_class(latent_dim=self.latent_dim, guide=self.guide, hidden_dims=tuple(self.hidden_dims))
        check_choice(self.method, "method", (EM, SVI))
        for name in ("max_iter", "epochs", "batch_size"):
            check_positive_int(getattr(self, name), name)
        if not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            raise ConfigError(f"tol must be a number >= 0, got {self.tol!r}")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ConfigError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        return config

    def _data(self, x, latent_dim: int, *, fitting: bool = False) -> torch.Tensor:
        x = check_shape(as_input(x))
        self._check_num_features(x.shape[1])
        if not fitting:
            return as_float_tensor(x, "X", dtype=self._dtype).to(self._device)
        if x.shape[0] == 1:
            raise DataError(f"{type(self).__name__} needs at least 2 items to estimate a covariance, got n_samples=1")
        if x.shape[1] < latent_dim + (0 if self.full_rank else 1):
            raise DataError(f"latent_dim={latent_dim} must be {'at most' if self.full_rank else 'below'} the number "
                            f"of features, got {x.shape[1]} feature(s); lower latent_dim")
        return check_linear_gaussian_data(x, latent_dim, dtype=self._dtype, full_rank=self.full_rank).to(self._device)

    def _fitted_data(self, x) -> torch.Tensor:
        self._check_fitted()
        return self._data(x, self.model_.config.latent_dim)

    def fit(self, x, y=None):
        """Fit to ``x`` ``(N, D)`` (``y`` is ignored) by EM (exact) or SVI (amortised guide). Warns
        scikit-learn's ``ConvergenceWarning`` when EM stops at ``max_iter``. Returns self."""
        config = self._config()
        self._device, self._dtype = resolve_device(self.device), resolve_dtype(self.dtype)
        for name in ("n_features_in_", "model_", "guide_", "elbo_", "elbo_gap_"):  # a refit starts afresh
            self.__dict__.pop(name, None)
        x = self._data(x, config.latent_dim, fitting=True)
        generator = torch.Generator().manual_seed(self.seed)
        model = LinearGaussianModel(config, x.shape[1], dtype=self._dtype).to(self._device)
        model.initialise(x, generator)
        if self.method == EM:
            result = self._fit_em(model, x)
            self.converged_, self.n_iter_ = bool(result.converged), int(result.n_iter)
            self.history_ = [ll / x.shape[0] for ll in result.log_likelihood_history]
        else:
            from ..inference.runner import TrainConfig, train

            guide = make_guide(config, model, x.shape[1]).to(device=self._device, dtype=self._dtype)
            result = train(model, guide, x, config=TrainConfig(epochs=self.epochs, batch_size=self.batch_size,
                                                                learning_rate=self.learning_rate, seed=self.seed,
                                                                device=str(self._device), progress=False))
            self.guide_ = guide
            self.history_ = [-h["train_loss"] for h in result.history]
            self.converged_, self.n_iter_ = True, int(result.epochs_run)
            # The guide's ELBO in closed form (every guide here is Gaussian), so the gap carries no Monte Carlo noise.
            self.elbo_ = float(closed_form_elbo(model, guide, x).mean())
        model.fitted_by = self.method
        self.model_ = model
        self.n_features_in_ = int(x.shape[1])
        with torch.no_grad():
            self.lower_bound_ = float(model.log_likelihood(x).mean())
        if self.method == "svi":
            self.elbo_gap_ = self.lower_bound_ - self.elbo_
        if not self.converged_:
            warn_not_converged(self._not_converged_message(), stacklevel=2)
        return self

    def _fit_em(self, model: LinearGaussianModel, x: torch.Tensor):
        return fit_em(model, x, max_iter=self.max_iter, tol=self.tol, warn=False, seed=self.seed)

    def _not_converged_message(self) -> str:
        return f"EM did not converge in {self.max_iter} iterations (tol={self.tol}); raise max_iter"

    @property
    def _n_features_out(self) -> int:
        """q, for ``get_feature_names_out`` (scikit-learn's transformer protocol)."""
        return self.latent_dim

    def fit_guide(self, x, guide: str = "linear", *, epochs: int | None = None, learning_rate: float | None = None,
                  num_particles: int = 1):
        """Fit only a guide q(z | x) by SVI to this fitted model, whose parameters stay fixed; returns the guide.

        The runner steps the guide alone (the model's parameters are frozen for the fit), with a cosine learning-rate
        schedule so the final guide is not dominated by gradient noise. Measure it with :meth:`elbo`.
        """
        from ..inference.runner import TrainConfig, train

        x = self._fitted_data(x)
        fitted = self.model_.config
        config = self.config_class(latent_dim=fitted.latent_dim, guide=guide, hidden_dims=fitted.hidden_dims)
        q = make_guide(config, self.model_, x.shape[1]).to(device=self._device, dtype=self._dtype)
        frozen = [p for p in self.model_.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            train(self.model_, q, x, config=TrainConfig(
                epochs=epochs or self.epochs, batch_size=self.batch_size, learning_rate=learning_rate or self.learning_rate,
                lr_schedule="cosine", num_particles=num_particles, seed=self.seed, device=str(self._device), progress=False))
        finally:
            for p in frozen:
                p.requires_grad_(True)
        return q

    def elbo(self, x, guide=None) -> np.ndarray:
        """``(N,)`` closed-form ELBO of ``guide`` (default: the SVI fit's own) at the fitted parameters; it equals
        ``score_samples(x) - KL(q(z | x) ‖ p(z | x))``."""
        x = self._fitted_data(x)
        guide = guide if guide is not None else getattr(self, "guide_", None)
        if guide is None:
            raise ConfigError("an EM fit has no guide of its own (its E-step is exact); pass guide= from fit_guide()")
        with torch.no_grad():
            return to_numpy(closed_form_elbo(self.model_, guide, x))

    def mean_field_gap(self) -> float:
        """½ (Σ_i log M_ii - log det M), M = I + Wᵀ Ψ⁻¹ W: the smallest gap of any diagonal-covariance guide, per item."""
        self._check_fitted()
        with torch.no_grad():
            _, covariance = self.model_.posterior_moments(self.model_.mean[None])
            precision = torch.linalg.inv(covariance)
            return float(0.5 * (torch.diagonal(precision).log().sum() - torch.logdet(precision)))

    @torch.no_grad()
    def score_samples(self, x) -> np.ndarray:
        """``(N,)`` exact log p(x_n) = log Normal(x_n | μ, W Wᵀ + Ψ) of ``x`` ``(N, D)``."""
        data = self._fitted_data(x)
        return to_numpy(self.model_.log_likelihood(data))

    def score(self, x, y=None) -> float:
        """Average exact log-likelihood per item of ``x`` ``(N, D)`` (scikit-learn's ``score``)."""
        return float(self.score_samples(x).mean())

    @torch.no_grad()
    def transform(self, x) -> np.ndarray:
        """``(N, q)`` posterior means E[z_n | x_n] = M⁻¹ Wᵀ Ψ⁻¹ (x_n - μ) of ``x`` ``(N, D)``."""
        data = self._fitted_data(x)
        return to_numpy(self.model_.posterior_moments(data)[0])

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> np.ndarray:
        """``(n_samples, D)`` draws from the fitted model, seeded by ``random_state`` (default: ``seed``)."""
        self._check_fitted()
        check_positive_int(n_samples, "n_samples")
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # seeded draws leave the global stream alone
            torch.manual_seed(self.seed if random_state is None else random_state)
            return to_numpy(self.model_.sample(n_samples))

    def get_covariance(self) -> np.ndarray:
        """``(D, D)`` model covariance W Wᵀ + Ψ (rotation-invariant, unlike ``components_``)."""
        self._check_fitted()
        return to_numpy(self.model_.covariance())

    @torch.no_grad()
    def get_precision(self) -> np.ndarray:
        """``(D, D)`` C⁻¹ = Ψ⁻¹ - Ψ⁻¹ W M⁻¹ Wᵀ Ψ⁻¹ with M = I + Wᵀ Ψ⁻¹ W (Woodbury: one q x q solve)."""
        self._check_fitted()
        weight, psi = self.model_.weight, self.model_.noise_variance
        scaled = weight / psi[:, None]  # Ψ⁻¹ W  (D, q)
        capacitance = torch.eye(weight.shape[1], dtype=psi.dtype, device=psi.device) + weight.T @ scaled
        return to_numpy(torch.diag(1 / psi) - scaled @ torch.linalg.solve(capacitance, scaled.T))

    def bic(self, x) -> float:
        """-2 log p(x) + k log N of ``x`` ``(N, D)``, k free parameters (W counted up to rotation)."""
        log_likelihood = self.score_samples(x)
        return float(-2 * log_likelihood.sum() + self.model_.num_parameters() * math.log(len(log_likelihood)))

    def aic(self, x) -> float:
        """-2 log p(x) + 2 k of ``x`` ``(N, D)``."""
        return float(-2 * self.score_samples(x).sum() + 2 * self.model_.num_parameters())

    @property
    def components_(self) -> np.ndarray:
        """``(q, D)`` loadings Wᵀ (scikit-learn's layout); identified up to a rotation of z."""
        self._check_fitted()
        return to_numpy(self.model_.weight.T)

    @property
    def noise_variance_(self) -> float | np.ndarray:
        """σ² (PPCA, a float) or ψ ``(D,)`` (factor analysis)."""
        self._check_fitted()
        noise = to_numpy(self.model_.noise_variance)
        return float(noise[0]) if self.model_.config.noise == "isotropic" else noise

    @property
    def mean_(self) -> np.ndarray:
        """``(D,)`` μ, the data mean for EM fits."""
        self._check_fitted()
        return to_numpy(self.model_.mean)


class PPCA(_LinearGaussianEstimator):
    """Probabilistic PCA (isotropic noise σ² I), fit by EM or SVI."""

    config_class = PPCAConfig


class FactorAnalysis(_LinearGaussianEstimator):
    """Factor analysis (diagonal noise) with scikit-learn's ``FactorAnalysis`` parameters, fit by its iteration
    (:func:`~emvi.inference.factor_analysis.fit_profile_likelihood`) or by SVI (``method="svi"``).

    scikit-learn's parameters: ``n_components`` q (None: D), ``tol`` on the change of the total log-likelihood
    (nats), ``max_iter``, ``noise_variance_init`` ``(D,)`` (None: emvi's start, the SMC uniquenesses; ``np.ones(D)``
    is scikit-learn's), ``rotation`` None, "varimax" or "quartimax"; ``copy``, ``svd_method``, ``iterated_power``
    and ``random_state`` are accepted and change nothing (the eigendecomposition is exact and draws nothing).
    Fitted, besides the base class's: ``loglike_`` (the profile log-likelihood, total nats, per iteration) and
    ``n_iter_`` (its evaluations), as scikit-learn. emvi's options follow (``method``, ``epochs``, ... ``dtype``).
    """

    config_class = FactorAnalysisConfig
    full_rank = True

    def __init__(self, n_components=None, *, tol=1e-2, copy=True, max_iter=1000, noise_variance_init=None,
                 svd_method="randomized", iterated_power=3, rotation=None, random_state=0, method: str = EM,
                 epochs: int = 100, batch_size: int = 128, learning_rate: float = 1e-2, guide: str = "mlp",
                 hidden_dims=(64,), seed: int = 0, device: str = "cpu", dtype: str = "float64"):
        # Stored verbatim under the names of the signature (scikit-learn's convention); q is the property below.
        self.n_components = n_components
        self.tol = tol
        self.max_iter = max_iter
        self.method = method
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.guide = guide
        self.hidden_dims = hidden_dims
        self.seed = seed
        self.device = device
        self.dtype = dtype
        self.copy = copy
        self.noise_variance_init = noise_variance_init
        self.svd_method = svd_method
        self.iterated_power = iterated_power
        self.rotation = rotation
        self.random_state = random_state

    @property
    def latent_dim(self) -> int:
        """q: ``n_components``, or the number of features seen by the last :meth:`fit` when it is None."""
        if self.n_components is not None:
            return self.n_components
        return getattr(self, "_num_features", 2)

    def fit(self, x, y=None):
        """Fit to ``x`` ``(N, D)`` (``y`` is ignored); see the class docstring. Returns self."""
        check_choice(self.svd_method, "svd_method", ("lapack", "randomized"))
        if self.rotation is not None:
            check_choice(self.rotation, "rotation", ("varimax", "quartimax"))
        self._num_features = int(check_shape(as_input(x)).shape[1])
        return super().fit(x, y)

    def _fit_em(self, model: LinearGaussianModel, x: torch.Tensor):
        noise_init = None
        if self.noise_variance_init is not None:
            noise_init = as_float_tensor(self.noise_variance_init, "noise_variance_init", ndim=1,
                                         dtype=x.dtype).to(x.device)
            if noise_init.shape != (x.shape[1],):
                raise DataError(f"noise_variance_init has shape {tuple(noise_init.shape)} but the data has "
                                f"{x.shape[1]} features; pass one variance per feature")
        result = fit_profile_likelihood(model, x, max_iter=self.max_iter, tol=self.tol, noise_init=noise_init)
        self.loglike_ = [np.float64(ll) for ll in result.log_likelihood_history]
        history = result.log_likelihood_history
        if not result.converged:  # Ψ moved after the last evaluation (scikit-learn's order): the final parameters' value
            with torch.no_grad():
                history += (float(model.log_likelihood(x).sum()),)
        if self.rotation is not None:
            with torch.no_grad():
                model.weight.copy_(rotate_loadings(model.weight, self.rotation))
        return dataclasses.replace(result, n_iter=len(self.loglike_), log_likelihood_history=history)

    def _not_converged_message(self) -> str:
        return "FactorAnalysis did not converge. You might want to increase the number of iterations."
