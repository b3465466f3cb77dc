"""hmmlearn 0.3's ``hmm.GaussianHMM``, ``hmm.PoissonHMM`` and ``hmm.CategoricalHMM``, computed by emvi: change only the
import (``from emvi.estimators import GaussianHMM``). Each class docstring maps hmmlearn's names to emvi's; what they
share (data layout, EM loop, ``monitor_``, hmmlearn 0.3.3's bugs not reproduced) is in
:mod:`emvi.estimators.hmmlearn_base`.

    model = GaussianHMM(n_components=3, covariance_type="full", n_iter=100, random_state=0).fit(X, lengths)
    model.score(X, lengths), model.predict(X, lengths), model.decode(X, lengths, algorithm="map"), model.sample(50)

``X`` is ``(n_samples, n_features)`` (CategoricalHMM: ``(n_samples, 1)`` integer symbols), the sequences concatenated,
``lengths`` ``(n_sequences,)`` (None: one sequence). Every class also takes ``device`` (cpu, cuda, auto), where the
recursions run (float64).
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

from ..errors import DataError
from ..models.hmm import HMMConfig
from ..models.hmm_map import HMMPrior
from ..validation import check_choice
from .hmmlearn_base import COVARIANCE_TYPES, ConvergenceMonitor, HMMLearnHMM, check_counts


class GaussianHMM(HMMLearnHMM):
    """hmmlearn's ``GaussianHMM`` (same parameters and defaults), over :class:`emvi.models.hmm.HMMModel`:

    * ``n_components`` -> ``HMMConfig.num_states``; ``covariance_type`` -> ``HMMConfig.covariance_type``
    * ``startprob_`` ``(K,)`` -> ``initial_probs``; ``transmat_`` ``(K, K)`` -> ``transition``; ``means_`` ``(K, D)``
      -> ``means``
    * ``covars_`` (always ``(K, D, D)`` when read; set in the type's shape: spherical ``(K,)``, diag ``(K, D)``, full
      ``(K, D, D)``, tied ``(D, D)``) -> ``variances`` (spherical, diag) or ``covariances`` (full, tied)
    * ``min_covar`` -> added to the data covariance that starts ``covars_`` (as hmmlearn 0.3: not in the M-step)
    * ``startprob_prior``, ``transmat_prior``, ``means_prior``, ``means_weight``, ``covars_prior``,
      ``covars_weight`` -> :class:`emvi.models.hmm_map.HMMPrior`
    * ``params``/``init_params`` letters s, t, m, c; ``monitor_`` -> :class:`ConvergenceMonitor`
    """

    _letters = {"s": "startprob_", "t": "transmat_", "m": "means_", "c": "_covars_"}

    def __init__(self, n_components=1, covariance_type="diag", min_covar=1e-3, startprob_prior=1.0,
                 transmat_prior=1.0, means_prior=0, means_weight=0, covars_prior=1e-2, covars_weight=1,
                 algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, verbose=False, params="stmc",
                 init_params="stmc", implementation="log", *, device="cpu"):
        self._base_init(n_components, startprob_prior, transmat_prior, algorithm, random_state, n_iter, tol, verbose,
                        params, init_params, implementation, device)
        self.covariance_type, self.min_covar = covariance_type, min_covar
        self.means_prior, self.means_weight = means_prior, means_weight
        self.covars_prior, self.covars_weight = covars_prior, covars_weight

    @property
    def covars_(self) -> np.ndarray:
        """``(K, D, D)`` covariance matrices, whatever ``covariance_type`` (hmmlearn's reading)."""
        covars, k = self._covars_, self.n_components
        d = np.shape(self.means_)[1] if hasattr(self, "means_") else getattr(self, "n_features", covars.shape[-1])
        if self.covariance_type == "full":
            return covars.copy()
        if self.covariance_type == "diag":
            return np.stack([np.diag(row) for row in covars])
        if self.covariance_type == "tied":
            return np.tile(covars, (k, 1, 1))
        return covars[:, None, None] * np.eye(d)

    @covars_.setter
    def covars_(self, covars) -> None:
        self._covars_ = self._checked_covars(np.array(covars, dtype=float, copy=True))

    def _checked_covars(self, covars: np.ndarray) -> np.ndarray:
        check_choice(self.covariance_type, "covariance_type", COVARIANCE_TYPES)
        kind, k = self.covariance_type, self.n_components
        if kind == "spherical" and covars.ndim == 2:  # hmmlearn keeps spherical variances tiled over the features
            covars = covars.mean(1)
        expected = {"spherical": 1, "diag": 2, "full": 3, "tied": 2}[kind]
        if covars.ndim != expected or (kind != "tied" and len(covars) != k):
            raise DataError(f"{kind!r} covars must have shape {_covars_layout(kind)} with K={k}, got {covars.shape}")
        if kind in ("spherical", "diag"):
            if (covars <= 0).any():
                raise DataError(f"{kind!r} covars must be positive; raise the smallest variance")
            return covars
        matrices = covars[None] if kind == "tied" else covars
        if matrices.shape[-1] != matrices.shape[-2] or not np.allclose(matrices, matrices.swapaxes(-1, -2)) or (
                np.linalg.eigvalsh(matrices) <= 0).any():
            raise DataError(f"{kind!r} covars must be symmetric positive-definite {_covars_layout(kind)} matrices")
        return covars

    def _check_emissions(self) -> None:
        check_choice(self.covariance_type, "covariance_type", COVARIANCE_TYPES)
        self.means_ = np.asarray(self.means_, dtype=float)
        if self.means_.ndim != 2 or len(self.means_) != self.n_components:
            raise DataError(f"means_ must have shape (n_components, n_features) with n_components="
                            f"{self.n_components}, got {self.means_.shape}")
        self.n_features = self.means_.shape[1]
        d = self.n_features
        self._covars_ = self._checked_covars(np.asarray(self._covars_, dtype=float))
        if self.covariance_type in ("diag", "full", "tied") and self._covars_.shape[-1] != d:
            raise DataError(f"covars_ have {self._covars_.shape[-1]} features but means_ {d}; give both the same")

    def _init_emissions(self, x: np.ndarray, lengths: np.ndarray) -> None:
        """k-means centres (scikit-learn's ``KMeans(n_init=10)`` with ``random_state``) and the data covariance
        plus ``min_covar`` I, in the type's shape."""
        if self._needs_init("m", "means_"):
            from sklearn.cluster import KMeans

            self.means_ = KMeans(n_clusters=self.n_components, random_state=self.random_state, n_init=10).fit(
                x).cluster_centers_
        if self._needs_init("c", "_covars_"):
            covariance = np.atleast_2d(np.cov(x.T)) + self.min_covar * np.eye(x.shape[1])
            k = self.n_components
            self.covars_ = {"spherical": np.full(k, covariance.mean()), "diag": np.tile(np.diag(covariance), (k, 1)),
                            "full": np.tile(covariance, (k, 1, 1)), "tied": covariance}[self.covariance_type]

    def _emission_parameters(self) -> dict:
        name = "variances" if self.covariance_type in ("spherical", "diag") else "covariances"
        return {"means": self.means_, name: self._covars_}

    def _emission_attribute(self, name: str) -> str:
        return "means_" if name == "means" else "_covars_"

    def _emission_scalars(self) -> dict[str, int]:
        k, d = self.n_components, self.n_features
        covariances = {"spherical": k, "diag": k * d, "full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2}
        return {"m": k * d, "c": covariances[self.covariance_type]}

    def _prior(self) -> HMMPrior:
        return HMMPrior(startprob=self.startprob_prior, transmat=self.transmat_prior, means=self.means_prior,
                        means_weight=self.means_weight, covars=self.covars_prior, covars_weight=self.covars_weight)

    def _covariance_type(self) -> str:
        return self.covariance_type

    def _config(self) -> HMMConfig:
        return HMMConfig(num_states=self.n_components, emission="gaussian", covariance_type=self.covariance_type)

    def _draw(self, state: int, random_state: np.random.RandomState) -> np.ndarray:
        return random_state.multivariate_normal(self.means_[state], self.covars_[state])


def _covars_layout(kind: str) -> str:
    return {"spherical": "(K,)", "diag": "(K, D)", "full": "(K, D, D)", "tied": "(D, D)"}[kind]


class PoissonHMM(HMMLearnHMM):
    """hmmlearn's ``PoissonHMM`` (same parameters and defaults), over :class:`emvi.models.hmm.HMMModel` with
    ``emission="poisson"``:

    * ``n_components`` -> ``HMMConfig.num_states``; ``startprob_`` -> ``initial_probs``; ``transmat_`` ->
      ``transition``; ``lambdas_`` ``(K, D)`` -> ``rates``
    * ``lambdas_prior``, ``lambdas_weight`` -> the Gamma(a, b) of :class:`emvi.models.hmm_map.HMMPrior` (``lambdas``,
      ``lambdas_weight``); ``params``/``init_params`` letters s, t, l
    """

    _letters = {"s": "startprob_", "t": "transmat_", "l": "lambdas_"}

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0, lambdas_prior=0.0,
                 lambdas_weight=0.0, algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, verbose=False,
                 params="stl", init_params="stl", implementation="log", *, device="cpu"):
        self._base_init(n_components, startprob_prior, transmat_prior, algorithm, random_state, n_iter, tol, verbose,
                        params, init_params, implementation, device)
        self.lambdas_prior, self.lambdas_weight = lambdas_prior, lambdas_weight

    def _validate_symbols(self, x: np.ndarray) -> None:
        check_counts(x, "PoissonHMM's X (counts)")

    def _check_emissions(self) -> None:
        self.lambdas_ = np.atleast_2d(np.asarray(self.lambdas_, dtype=float))
        n_features = getattr(self, "n_features", self.lambdas_.shape[1])
        if self.lambdas_.shape != (self.n_components, n_features):
            raise DataError(f"lambdas_ must have shape (n_components, n_features) = {(self.n_components, n_features)}, "
                            f"got {self.lambdas_.shape}")
        if (self.lambdas_ <= 0).any():
            raise DataError("lambdas_ must be positive rates; raise the zero or negative ones")
        self.n_features = n_features

    def _init_emissions(self, x: np.ndarray, lengths: np.ndarray) -> None:
        """Gamma draws matching the data's mean and variance (method of moments), from a fresh ``random_state``."""
        random_state = check_random_state(self.random_state)
        if self._needs_init("l", "lambdas_"):
            mean, variance = x.mean(), x.var()
            self.lambdas_ = random_state.gamma(shape=mean**2 / variance, scale=variance / mean,
                                               size=(self.n_components, self.n_features))

    def _emission_parameters(self) -> dict:
        return {"rates": self.lambdas_}

    def _emission_attribute(self, name: str) -> str:
        return "lambdas_"

    def _emission_scalars(self) -> dict[str, int]:
        return {"l": self.n_components * self.n_features}

    def _prior(self) -> HMMPrior:
        return HMMPrior(startprob=self.startprob_prior, transmat=self.transmat_prior, lambdas=self.lambdas_prior,
                        lambdas_weight=self.lambdas_weight)

    def _config(self) -> HMMConfig:
        return HMMConfig(num_states=self.n_components, emission="poisson")

    def _draw(self, state: int, random_state: np.random.RandomState) -> np.ndarray:
        return random_state.poisson(self.lambdas_[state])


class CategoricalHMM(HMMLearnHMM):
    """hmmlearn's ``CategoricalHMM`` (same parameters and defaults), over :class:`emvi.models.hmm.HMMModel` with
    ``emission="categorical"`` and one feature:

    * ``n_components`` -> ``HMMConfig.num_states``; ``n_features`` (symbols; inferred as max(X) + 1 when None) ->
      ``HMMConfig.num_categories``
    * ``startprob_`` -> ``initial_probs``; ``transmat_`` -> ``transition``; ``emissionprob_`` ``(K, n_features)`` ->
      ``probs[:, 0, :]``
    * ``emissionprob_prior`` -> :class:`emvi.models.hmm_map.HMMPrior` ``emissionprob``; letters s, t, e
    """

    _letters = {"s": "startprob_", "t": "transmat_", "e": "emissionprob_"}

    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0, *, emissionprob_prior=1.0,
                 n_features=None, algorithm="viterbi", random_state=None, n_iter=10, tol=1e-2, verbose=False,
                 params="ste", init_params="ste", implementation="log", device="cpu"):
        self._base_init(n_components, startprob_prior, transmat_prior, algorithm, random_state, n_iter, tol, verbose,
                        params, init_params, implementation, device)
        self.emissionprob_prior, self.n_features = emissionprob_prior, n_features

    def _validate_symbols(self, x: np.ndarray) -> None:
        if x.shape[1] != 1:
            raise DataError(f"CategoricalHMM's X must be (n_samples, 1) symbols, got {x.shape}; encode each "
                            "observation as one integer (sklearn.preprocessing.LabelEncoder)")
        check_counts(x, "CategoricalHMM's symbols")

    def _check_and_set_n_features(self, x: np.ndarray) -> None:
        if self.n_features is None:
            self.n_features = int(x.max()) + 1
        self._check_num_features_of(x)

    def _check_num_features_of(self, x: np.ndarray) -> None:
        if self.n_features is not None and x.max() >= self.n_features:
            raise DataError(f"Largest symbol is {int(x.max())} but the model only emits symbols up to "
                            f"{self.n_features - 1}; raise n_features")

    def _check_emissions(self) -> None:
        self.emissionprob_ = np.atleast_2d(np.asarray(self.emissionprob_, dtype=float))
        if self.n_features is None:
            self.n_features = self.emissionprob_.shape[1]
        if self.emissionprob_.shape != (self.n_components, self.n_features):
            raise DataError(f"emissionprob_ must have shape (n_components, n_features) = "
                            f"{(self.n_components, self.n_features)}, got {self.emissionprob_.shape}")
        sums = self.emissionprob_.sum(1)
        if not np.allclose(sums, 1) or (self.emissionprob_ < 0).any():
            raise DataError(f"emissionprob_ rows must be probabilities summing to 1 (got {np.round(sums, 4)})")
        if self.n_features < 2:
            raise DataError("CategoricalHMM needs n_features >= 2 symbols; a single symbol carries no information")

    def _init_emissions(self, x: np.ndarray, lengths: np.ndarray) -> None:
        """Uniform draws per state, normalised, from a fresh ``random_state``."""
        random_state = check_random_state(self.random_state)
        if self._needs_init("e", "emissionprob_"):
            probs = random_state.rand(self.n_components, self.n_features)
            self.emissionprob_ = probs / probs.sum(1, keepdims=True)

    def _emission_parameters(self) -> dict:
        return {"probs": np.asarray(self.emissionprob_)[:, None, :]}

    def _emission_attribute(self, name: str) -> str:
        return "emissionprob_"

    def _assign(self, new: dict[str, np.ndarray]) -> None:
        super()._assign({name: value[:, 0] if name == "probs" else value for name, value in new.items()})

    def _emission_scalars(self) -> dict[str, int]:
        return {"e": self.n_components * (self.n_features - 1)}

    def _prior(self) -> HMMPrior:
        return HMMPrior(startprob=self.startprob_prior, transmat=self.transmat_prior,
                        emissionprob=self.emissionprob_prior)

    def _config(self) -> HMMConfig:
        return HMMConfig(num_states=self.n_components, emission="categorical", num_categories=self.n_features)

    def _model_features(self) -> int:
        return 1

    def _draw(self, state: int, random_state: np.random.RandomState) -> list[int]:
        return [(np.cumsum(self.emissionprob_[state]) > random_state.rand()).argmax()]


__all__ = ["CategoricalHMM", "ConvergenceMonitor", "GaussianHMM", "PoissonHMM"]
