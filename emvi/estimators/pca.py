"""``PCA``: scikit-learn's ``sklearn.decomposition.PCA`` with its probabilistic surface, over emvi's PPCA model.

    from emvi.estimators import PCA                      # for: from sklearn.decomposition import PCA
    pca = PCA(n_components=3).fit(x)                     # x (N, D)
    pca.explained_variance_ratio_, pca.transform(x), pca.score(x), pca.get_precision()

The fit is the SVD of the centred data, X - x̄ = U S Vᵀ, as scikit-learn's exact solver (signs: the largest entry of
each row of ``components_`` = Vᵀ is positive): ``explained_variance_`` λ = S² / (N - 1), ``noise_variance_`` σ² the
mean of the discarded λ (0 when none is), ``n_components`` None (min(N, D)), an int or a fraction of the variance
in (0, 1). The probabilistic model is Tipping & Bishop's probabilistic PCA at those values,
x ~ Normal(x̄, W Wᵀ + σ² I) with W = Vᵀ_qᵀ diag(λ - σ²)₊^½ (scikit-learn's ``get_covariance``; with ``whiten`` its
components are scaled by √λ first, as scikit-learn's): :class:`~emvi.models.ppca.LinearGaussianModel` (``model_``)
scores data through the Woodbury identities. ``svd_solver``, ``tol``, ``iterated_power``, ``n_oversamples``,
``power_iteration_normalizer`` and ``random_state`` are accepted; the SVD is always exact. ``device``: emvi's extra.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin

from ..errors import ConfigError, DataError
from ..models.ppca import LinearGaussianModel, PPCAConfig
from ..validation import as_float_tensor, resolve_device
from .base import EmviEstimator, as_input, check_shape, to_numpy


class PCA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, EmviEstimator):
    """Principal component analysis with scikit-learn's parameters and attributes (see the module docstring)."""

    def __init__(self, n_components=None, *, copy=True, whiten=False, svd_solver="auto", tol=0.0,
                 iterated_power="auto", n_oversamples=10, power_iteration_normalizer="auto", random_state=None,
                 device="cpu"):
        self.n_components = n_components
        self.copy = copy
        self.whiten = whiten
        self.svd_solver = svd_solver
        self.tol = tol
        self.iterated_power = iterated_power
        self.n_oversamples = n_oversamples
        self.power_iteration_normalizer = power_iteration_normalizer
        self.random_state = random_state
        self.device = device

    def _data(self, x, fitting: bool = False) -> torch.Tensor:
        x = check_shape(as_input(x))
        dtype = torch.float32 if x.dtype == torch.float32 else torch.float64
        x = as_float_tensor(x, "X", dtype=dtype)
        if not fitting:
            self._check_fitted()
            self._check_num_features(x.shape[1])
            return x.to(self.model_.mean)
        if x.shape[0] < 2:
            raise DataError(f"PCA needs at least 2 items (n_samples={x.shape[0]}); pass more rows")
        return x.to(resolve_device(self.device))

    def _number_kept(self, ratios: torch.Tensor, n: int, d: int) -> int:
        """q from ``n_components``: None -> min(N, D); an int in [0, min(N, D)]; a fraction f in (0, 1) -> the
        fewest components whose explained-variance ratios add up to more than f."""
        value = self.n_components
        if value is None:
            return min(n, d)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value <= min(n, d):
            return int(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < 1:
            return int(torch.searchsorted(ratios.cumsum(0), torch.tensor(float(value), dtype=ratios.dtype),
                                          right=True)) + 1
        raise ConfigError(f"n_components={value!r} must be None, an int between 0 and min(n_samples, n_features)="
                          f"{min(n, d)} or a float in (0, 1) ('mle' is not supported)")

    @torch.no_grad()
    def fit(self, X, y=None) -> PCA:
        """SVD of ``X`` ``(N, D)`` centred (``y`` is ignored); sets the attributes and ``model_``. Returns self."""
        x = self._data(X, fitting=True)
        n, d = x.shape
        mean = x.mean(0)
        _, singular, vt = torch.linalg.svd(x - mean, full_matrices=False)
        largest = vt.gather(1, vt.abs().argmax(1, keepdim=True))  # scikit-learn's sign convention
        vt = vt * torch.where(largest < 0, -1.0, 1.0).to(vt)
        variances = singular**2 / (n - 1)
        ratios = variances / variances.sum()
        q = self._number_kept(ratios.cpu(), n, d)
        noise = variances[q:].mean() if q < min(n, d) else variances.new_zeros(())
        self.n_components_, self.n_samples_, self.n_features_in_ = q, n, d
        self.mean_, self.components_ = to_numpy(mean), to_numpy(vt[:q])
        self.explained_variance_, self.explained_variance_ratio_ = to_numpy(variances[:q]), to_numpy(ratios[:q])
        self.singular_values_, self.noise_variance_ = to_numpy(singular[:q]), float(noise)
        components = vt[:q] * variances[:q, None].sqrt() if self.whiten else vt[:q]
        model = LinearGaussianModel(PPCAConfig(latent_dim=max(q, 1)), d, dtype=x.dtype).to(x.device)
        weight = components.T * (variances[:q] - noise).clamp_min(0).sqrt()  # (D, q)
        model.weight.copy_(torch.cat([weight, weight.new_zeros(d, 1)], 1) if q == 0 else weight)
        model.mean.copy_(mean)
        model.log_noise.copy_(noise.log().reshape(1))
        self.model_ = model
        return self

    @property
    def _n_features_out(self) -> int:
        return self.n_components_

    def _covariance(self) -> torch.Tensor:
        model = self.model_
        return model.weight @ model.weight.T + float(self.noise_variance_) * torch.eye(
            model.mean.shape[0], dtype=model.mean.dtype, device=model.mean.device)

    def get_covariance(self) -> np.ndarray:
        """``(D, D)`` W Wᵀ + σ² I (scikit-learn's ``get_covariance``)."""
        self._check_fitted()
        return to_numpy(self._covariance())

    @torch.no_grad()
    def get_precision(self) -> np.ndarray:
        """``(D, D)`` (W Wᵀ + σ² I)⁻¹: Woodbury, σ⁻² (I - W (σ² I + Wᵀ W)⁻¹ Wᵀ), or the inverse when σ² = 0."""
        self._check_fitted()
        weight, noise = self.model_.weight, float(self.noise_variance_)
        if noise == 0:
            return to_numpy(torch.linalg.inv(self._covariance()))
        eye = torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)
        capacitance = noise * torch.eye(weight.shape[1], dtype=weight.dtype, device=weight.device) + weight.T @ weight
        return to_numpy((eye - weight @ torch.linalg.solve(capacitance, weight.T)) / noise)

    @torch.no_grad()
    def score_samples(self, X) -> np.ndarray:
        """``(N,)`` log Normal(x_n | x̄, W Wᵀ + σ² I) of ``X`` ``(N, D)``."""
        x = self._data(X)
        if float(self.noise_variance_) > 0:
            return to_numpy(self.model_.log_likelihood(x))
        normal = torch.distributions.MultivariateNormal(self.model_.mean, covariance_matrix=self._covariance())
        return to_numpy(normal.log_prob(x))

    def score(self, X, y=None) -> float:
        """Average log-likelihood per item of ``X`` ``(N, D)`` (nats)."""
        return float(self.score_samples(X).mean())

    @torch.no_grad()
    def transform(self, X) -> np.ndarray:
        """``(N, q)`` (x_n - x̄) Vᵀ_qᵀ, divided by √λ with ``whiten``."""
        x = self._data(X)
        projected = (x - self.model_.mean) @ torch.as_tensor(self.components_).to(x).T
        if self.whiten:
            scale = torch.as_tensor(self.explained_variance_).to(x).sqrt()
            projected = projected / torch.where(scale == 0, 1.0, scale)
        return to_numpy(projected)

    def inverse_transform(self, X) -> np.ndarray:
        """``(N, D)`` z Vᵀ_q + x̄ (z √λ Vᵀ_q + x̄ with ``whiten``) of scores ``X`` ``(N, q)``."""
        self._check_fitted()
        z = np.asarray(to_numpy(X), dtype=self.components_.dtype)
        components = np.sqrt(self.explained_variance_)[:, None] * self.components_ if self.whiten \
            else self.components_
        return z @ components + self.mean_


__all__ = ["PCA"]
