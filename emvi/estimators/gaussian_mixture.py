"""``GaussianMixture``: scikit-learn's ``sklearn.mixture.GaussianMixture`` over emvi's mixture model and EM loop.

    from emvi.estimators import GaussianMixture          # for: from sklearn.mixture import GaussianMixture
    gm = GaussianMixture(3, covariance_type="tied", random_state=0).fit(x)            # x (N, D)
    gm.means_, gm.covariances_, gm.predict(x), gm.score(x), gm.bic(x), gm.sample(10)

The same parameters, fitted attributes (``weights_`` ``(K,)``, ``means_`` ``(K, D)``, ``covariances_``,
``precisions_``, ``precisions_cholesky_`` in scikit-learn's layout per ``covariance_type``, ``converged_``,
``n_iter_``, ``lower_bound_``, ``lower_bounds_``, ``n_features_in_``) and methods. The model is
:class:`~emvi.models.mixture.MixtureModel` of family ``gaussian-{full,tied,diag,spherical}`` (closed-form M-steps:
:mod:`emvi.models.mixture_covariances`), stepped by :func:`emvi.inference.em.fit_em`. Contract: from the same start
every output equals scikit-learn's up to round-off. Each iteration is an E-step, an M-step, then the change of the
lower bound (the log-likelihood per item at the parameters before that M-step) against ``tol``; ``n_iter_`` counts
M-steps; ``max_iter=0`` keeps the start (``lower_bound_ = -inf``, no warning); ``warm_start`` continues the last
fit; ``n_init`` keeps the start with the highest lower bound. ``random_state`` is scikit-learn's: "random" and
"random_from_data" starts draw the same numbers as scikit-learn, :meth:`sample` the same draws; "kmeans" (Lloyd's)
and "k-means++" are emvi's torch k-means (:mod:`emvi.inference.initialization`), seeded from it. float32 data gives
float32 attributes, as scikit-learn. Extras: ``device`` (cpu, cuda, auto) and ``model_`` (the fitted Pyro model).
"""

from __future__ import annotations

import math
import numbers
import time

import numpy as np
import torch
from sklearn.base import DensityMixin
from sklearn.utils import check_random_state

from ..errors import ConfigError, DataError, NonFiniteLossError
from ..inference.convergence import warn_not_converged
from ..inference.em import fit_em
from ..inference.initialization import kmeans_plusplus_indices, lloyd_kmeans
from ..models.mixture import MixtureConfig, MixtureModel, check_mixture_data
from ..models.mixture_covariances import (
    COVARIANCE_TYPES,
    covariance_from_precisions,
    covariance_matrices,
    covariance_name,
    precision_cholesky,
)
from ..validation import resolve_device
from .base import EmviEstimator, NotFittedError, as_input, check_shape, to_numpy

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")
ILL_DEFINED = ("Fitting the mixture model failed because some components have ill-defined empirical covariance (for "
               "instance caused by singleton or collapsed samples). Try to decrease the number of components, increase "
               "reg_covar, or scale the input data.")
"""scikit-learn's message when a covariance is not positive definite."""


class GaussianMixture(DensityMixin, EmviEstimator):
    """A K-component Gaussian mixture fit by EM: scikit-learn's class, parameter for parameter (module docstring).

    ``covariance_type`` full, tied, diag or spherical; ``reg_covar`` >= 0 added to every variance; ``tol`` on the
    change of the lower bound (nats per item); ``init_params`` kmeans, k-means++, random or random_from_data, or
    ``weights_init`` ``(K,)``, ``means_init`` ``(K, D)`` and ``precisions_init`` (full ``(K, D, D)``, tied
    ``(D, D)``, diag ``(K, D)``, spherical ``(K,)``); ``verbose`` 1 or 2 prints scikit-learn's progress lines every
    ``verbose_interval`` iterations. ``device`` (emvi's): where the model computes.
    """

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6, max_iter=100, n_init=1,
                 init_params="kmeans", weights_init=None, means_init=None, precisions_init=None, random_state=None,
                 warm_start=False, verbose=0, verbose_interval=10, device="cpu"):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.device = device

    # -- checks (scikit-learn's wording) ----------------------------------------------------------------------------

    def _check_parameters(self) -> MixtureConfig:
        name = type(self).__name__

        def refuse(parameter: str, what: str):
            raise ConfigError(f"The {parameter!r} parameter of {name} must be {what}. Got "
                              f"{getattr(self, parameter)!r} instead.")

        for parameter, low in (("n_components", 1), ("max_iter", 0), ("n_init", 1), ("verbose_interval", 1)):
            value = getattr(self, parameter)
            if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low):
                refuse(parameter, f"an int in the range [{low}, inf)")
        for parameter in ("tol", "reg_covar"):
            value = getattr(self, parameter)
            if not (isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < math.inf):
                refuse(parameter, "a float in the range [0.0, inf)")
        for parameter, choices in (("covariance_type", tuple(COVARIANCE_TYPES)), ("init_params", INIT_PARAMS)):
            if getattr(self, parameter) not in choices:
                refuse(parameter, f"a str among {{{', '.join(map(repr, sorted(choices)))}}}")
        if not isinstance(self.warm_start, (bool, np.bool_)):
            refuse("warm_start", "an instance of 'bool'")
        if not isinstance(self.verbose, (numbers.Integral, np.bool_)):
            refuse("verbose", "an int or a bool")
        return MixtureConfig(num_components=int(self.n_components), family=COVARIANCE_TYPES[self.covariance_type],
                             floor=float(self.reg_covar))

    def _initial_values(self, num_features: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """``weights_init``, ``means_init`` and ``precisions_init`` checked as scikit-learn checks them."""
        k, d, kind = self.n_components, num_features, self.covariance_type
        given = {}
        shapes = {"weights": (k,), "means": (k, d),
                  f"{kind} precision": {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[kind]}
        for (label, shape), value in zip(shapes.items(), (self.weights_init, self.means_init, self.precisions_init),
                                         strict=True):
            if value is None:
                continue
            array = np.asarray(to_numpy(value), dtype=np.float64)
            if array.shape != shape:
                raise DataError(f"The parameter '{label}' should have the shape of {shape}, but got {array.shape}")
            if not np.isfinite(array).all():
                raise DataError(f"The parameter '{label}' contains NaN or infinity; pass finite numbers")
            given[label.split()[-1]] = array
        weights = given.get("weights")
        if weights is not None:
            if (weights < 0).any() or (weights > 1).any():
                raise DataError(f"The parameter 'weights' should be in the range [0, 1], but got max value "
                                f"{weights.max():.5f}, min value {weights.min():.5f}")
            if abs(1 - weights.sum()) > (1e-6 if dtype == torch.float32 else 1e-8):
                raise DataError(f"The parameter 'weights' should be normalized, but got sum(weights) = "
                                f"{weights.sum():.5f}")
        precision = given.get("precision")
        if precision is not None:
            if kind in ("diag", "spherical") and (precision <= 0).any():
                raise DataError(f"'{kind} precision' should be positive")
            matrices = precision.reshape(-1, d, d) if kind in ("full", "tied") else np.empty((0, d, d))
            for matrix in matrices:
                if not (np.allclose(matrix, matrix.T) and (np.linalg.eigvalsh(matrix) > 0).all()):
                    raise DataError(f"'{kind} precision' should be symmetric, positive-definite")
        return {key: torch.as_tensor(value, dtype=dtype, device=self._device) for key, value in given.items()}

    def _data(self, x, *, fitting: bool = False) -> torch.Tensor:
        """``x`` ``(N, D)`` as a tensor on the device: float32 stays float32, anything else becomes float64."""
        x = check_shape(as_input(x))
        dtype = torch.float32 if x.dtype == torch.float32 else torch.float64
        x = check_mixture_data(x.to(dtype), MixtureConfig(family="gaussian-diag"), fitting=False)
        self._check_num_features(x.shape[1])
        if fitting and x.shape[0] < 2:
            raise DataError(f"Found array with {x.shape[0]} sample(s) (shape={tuple(x.shape)}) while a minimum of 2 "
                            f"is required by {type(self).__name__}.")
        if fitting and x.shape[0] < self.n_components:
            raise DataError(f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                            f"n_samples = {x.shape[0]}")
        return x.to(self._device if fitting else self.model_.means.device)

    # -- fitting ------------------------------------------------------------------------------------------------------

    def fit(self, X, y=None) -> GaussianMixture:
        """Fit by EM to ``X`` ``(N, D)`` (``y`` is ignored): the best of ``n_init`` starts. Returns self."""
        self.fit_predict(X, y)
        return self

    def fit_predict(self, X, y=None) -> np.ndarray:
        """Fit to ``X`` ``(N, D)`` and return its ``(N,)`` labels, those of :meth:`predict` after the fit.
        Warns scikit-learn's ``ConvergenceWarning`` when the best start stops at ``max_iter`` (> 0)."""
        config = self._check_parameters()
        self._device = resolve_device(self.device)
        continued = bool(self.warm_start) and hasattr(self, "converged_") and hasattr(self, "model_")
        if not continued:
            self.__dict__.pop("n_features_in_", None)  # a refit starts afresh
        x = self._data(X, fitting=True)
        if continued:
            fitted = self.model_.config
            if (fitted.num_components, fitted.family) != (config.num_components, config.family):
                raise ConfigError(f"warm_start continues the last fit ({fitted.num_components} components, "
                                  f"{self.model_.config.family}): keep n_components and covariance_type, or set "
                                  "warm_start=False")
            x = x.to(self.model_.means)
        initial = self._initial_values(x.shape[1], x.dtype)
        random_state = check_random_state(self.random_state)
        self.converged_ = False
        best = None
        for init in range(1 if continued else self.n_init):
            self._say(f"Initialization {init}", start=True)
            if continued:
                model, previous, offset = self.model_, float(self.lower_bound_), 0.0
                model.config = config  # reg_covar may have changed; K and the covariance type may not
            else:
                (model, offset), previous = self._start(x, config, initial, random_state), -math.inf
            outcome = self._run_em(model, x, previous, offset)
            if best is None or self.max_iter == 0 or outcome["lower_bound"] > best["lower_bound"] \
                    or best["lower_bound"] == -math.inf:
                best = outcome
        self.converged_ = bool(best["converged"]) if self.max_iter > 0 else False
        if not self.converged_ and self.max_iter > 0:
            warn_not_converged("Best performing initialization did not converge. Try different init parameters, or "
                               "increase max_iter, tol, or check for degenerate data.", stacklevel=2)
        numpy_float = np.dtype(str(x.dtype).removeprefix("torch.")).type
        self.model_ = best["model"]
        self.n_features_in_ = int(x.shape[1])
        self.n_iter_ = int(best["n_iter"])
        self.lower_bound_ = numpy_float(best["lower_bound"])
        self.lower_bounds_ = [numpy_float(value) for value in best["lower_bounds"]]
        self._set_attributes()
        with torch.no_grad():
            return to_numpy(self.model_.responsibilities(x).argmax(-1))

    def _start(self, x: torch.Tensor, config: MixtureConfig, initial: dict, random_state):
        """scikit-learn's start: an M-step from the responsibilities of ``init_params`` (skipped when all three
        initial values are given), then the given initial values replace what it set. Returns the model and the
        offset of scikit-learn's first lower bound: its start weights N_k / N sum to s = Σ_k N_k / N, below 1 for
        the seed-only starts, so its first lower bound is log s plus the log-likelihood (the normalised weights')."""
        model = MixtureModel(config, x.shape[1], dtype=x.dtype).to(x.device)
        offset = 0.0
        with torch.no_grad():
            if len(initial) < 3:
                resp = self._initial_responsibilities(x, random_state)
                model.m_step(resp, x)
                offset = 0.0 if "weights" in initial else math.log(float(resp.sum()) / x.shape[0])
                if config.family == "gaussian-tied":
                    self._count_unheld_items(model, x, resp)
            if "weights" in initial:
                model.set_parameter("weights", initial["weights"])
            if "means" in initial:
                model.set_parameter("means", initial["means"])
            if "precision" in initial:
                model.set_parameter(covariance_name(config.family),
                                    self._guard(covariance_from_precisions, config.family, initial["precision"]))
        return model, offset

    @staticmethod
    def _count_unheld_items(model: MixtureModel, x: torch.Tensor, resp: torch.Tensor) -> None:
        """scikit-learn's tied covariance is (Σ_n x_n x_nᵀ - Σ_k N_k μ_k μ_kᵀ) / Σ_k N_k + ε I, which is the pooled
        scatter only when every row of ``resp`` sums to 1. The seed-only starts (k-means++, random_from_data) leave
        the other items unheld, and scikit-learn's start then also counts their uncentred Σ x_n x_nᵀ: added here,
        so the start and every iterate equal scikit-learn's."""
        unheld = (1 - resp.sum(1)).clamp_min(0)  # (N,)
        if bool(unheld.any()):
            tril = model.scale_tril.detach()
            extra = (x * unheld[:, None]).T @ x / resp.sum()
            model.set_parameter("scale_tril", torch.linalg.cholesky(tril @ tril.mT + extra))

    def _initial_responsibilities(self, x: torch.Tensor, random_state) -> torch.Tensor:
        """``(N, K)``: one-hot k-means labels (kmeans), the seeds alone (k-means++, random_from_data: each component
        starts at one item), or uniform draws normalised per row (random); numpy draws from ``random_state``."""
        n, k = x.shape[0], self.n_components
        if self.init_params == "random":
            resp = torch.as_tensor(random_state.uniform(size=(n, k))).to(x)
            return resp / resp.sum(1, keepdim=True)
        if self.init_params == "random_from_data":
            indices = torch.as_tensor(random_state.choice(n, size=k, replace=False), device=x.device)
        else:
            generator = torch.Generator().manual_seed(int(random_state.randint(np.iinfo(np.int32).max)))
            if self.init_params == "kmeans":
                return torch.nn.functional.one_hot(lloyd_kmeans(x, k, generator), k).to(x.dtype)
            indices = kmeans_plusplus_indices(x, k, generator)
        resp = x.new_zeros(n, k)
        resp[indices, torch.arange(k, device=x.device)] = 1
        return resp

    def _run_em(self, model: MixtureModel, x: torch.Tensor, previous: float, offset: float) -> dict:
        """At most ``max_iter`` scikit-learn iterations: :func:`fit_em` runs the first ``max_iter - 1`` with their
        convergence checks (its history is the lower bounds), then the M-step that follows every E-step. ``offset``
        is added to the reported first lower bound (see :meth:`_start`; the second iteration's convergence check
        reads the log-likelihood itself, larger by -log s > 0: the two differ only for a tol above that change)."""
        n = x.shape[0]
        if self.max_iter == 0:
            return {"model": model, "lower_bound": -math.inf, "lower_bounds": [], "n_iter": 0, "converged": False}
        last = [previous]

        def report(iteration: int, objective: float) -> None:
            if (iteration + 1) % self.verbose_interval == 0:
                self._say(f"  Iteration {iteration + 1}", change=objective / n - last[0])
            last[0] = objective / n

        result = self._guard(fit_em, model, x, max_iter=self.max_iter - 1, tol=self.tol, warn=False,
                             callback=report if self.verbose else None, previous=previous * n)
        with torch.no_grad():
            self._guard(lambda: model.m_step(model.expected_statistics(x)[0], x))
        bounds = [value / n for value in result.log_likelihood_history]
        bounds[0] += offset
        status = "converged" if result.converged else "did not converge"
        self._say(f"Initialization {status}.", lower_bound=bounds[-1])
        return {"model": model, "lower_bound": bounds[-1], "lower_bounds": bounds, "n_iter": result.n_iter + 1,
                "converged": result.converged}

    @staticmethod
    def _guard(function, *args, **kwargs):
        """``function(...)`` with a covariance that is not positive definite reported in scikit-learn's words."""
        try:
            return function(*args, **kwargs)
        except (torch.linalg.LinAlgError, NonFiniteLossError):
            raise DataError(ILL_DEFINED) from None

    def _say(self, line: str, *, start: bool = False, change: float | None = None,
             lower_bound: float | None = None) -> None:
        """scikit-learn's progress lines: ``verbose`` 1 the bare line, 2 with times, changes and the lower bound."""
        if not self.verbose:
            return
        now = time.time()
        if start:
            self._init_time = self._iteration_time = now
        if self.verbose >= 2 and change is not None:
            line += f"\t time lapse {now - self._iteration_time:.5f}s\t ll change {change:.5f}"
            self._iteration_time = now
        elif self.verbose >= 2 and lower_bound is not None:
            line = line[:-1] + f". time lapse {now - self._init_time:.5f}s\t lower bound {lower_bound:.5f}."
        print(line)

    def _set_attributes(self) -> None:
        model, family = self.model_, self.model_.config.family
        with torch.no_grad():
            covariance = getattr(model, covariance_name(family)).detach()
            cholesky = precision_cholesky(family, covariance)
            self.weights_ = to_numpy(model.weights)
            self.means_ = to_numpy(model.means)
            covariances = covariance_matrices(family, covariance)
            if covariances.dim() > 1 and covariances.shape[-1] == covariances.shape[-2] and family != "gaussian-diag":
                covariances = 0.5 * (covariances + covariances.mT)  # exactly symmetric (numpy's sampler checks)
            self.covariances_ = to_numpy(covariances)
            self.precisions_cholesky_ = to_numpy(cholesky)
            self.precisions_ = to_numpy(cholesky @ cholesky.mT if family in ("gaussian-full", "gaussian-tied")
                                        else cholesky.square())

    # -- using the fit ----------------------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                                 "arguments before using this estimator.")

    def _fitted_data(self, X) -> torch.Tensor:
        self._check_fitted()
        return self._data(X).to(self.model_.means)

    @torch.no_grad()
    def score_samples(self, X) -> np.ndarray:
        """``(N,)`` log p(x_n) = log Σ_k π_k Normal(x_n | μ_k, Σ_k) of ``X`` ``(N, D)``."""
        x = self._fitted_data(X)
        return to_numpy(self.model_.log_likelihood(x))

    def score(self, X, y=None) -> float:
        """Average log-likelihood per item of ``X`` ``(N, D)`` (nats)."""
        return float(self.score_samples(X).mean())

    @torch.no_grad()
    def predict_proba(self, X) -> np.ndarray:
        """``(N, K)`` responsibilities p(z_n = k | x_n) of ``X`` ``(N, D)``."""
        x = self._fitted_data(X)
        return to_numpy(self.model_.responsibilities(x))

    def predict(self, X) -> np.ndarray:
        """``(N,)`` most probable component of each item of ``X`` ``(N, D)``."""
        return self.predict_proba(X).argmax(-1)

    def sample(self, n_samples=1) -> tuple[np.ndarray, np.ndarray]:
        """``(X (n_samples, D) float64, y (n_samples,) int64)``, grouped by component, drawn as scikit-learn draws
        them from ``check_random_state(random_state)``: the counts per component from a multinomial, then each
        component's items (so an integer ``random_state`` gives the same draws on every call, as scikit-learn)."""
        self._check_fitted()
        if not (isinstance(n_samples, numbers.Integral) and n_samples >= 1):
            raise ConfigError(f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least one "
                              "sample.")
        rng = check_random_state(self.random_state)
        counts = rng.multinomial(n_samples, self.weights_)
        kind, d = self.covariance_type, self.means_.shape[1]
        draws = []
        for k, (mean, count) in enumerate(zip(self.means_, counts, strict=True)):
            if kind in ("full", "tied"):
                draws.append(rng.multivariate_normal(mean, self.covariances_[k] if kind == "full" else
                                                     self.covariances_, int(count)))
            else:
                draws.append(mean + rng.standard_normal(size=(count, d)) * np.sqrt(self.covariances_[k]))
        labels = np.concatenate([np.full(int(count), k, dtype=np.int64) for k, count in enumerate(counts)])
        return np.vstack(draws).astype(np.float64), labels

    def _n_parameters(self) -> int:
        """Free parameters: K - 1 weights, K D means and the covariances (scikit-learn's count)."""
        return int(self.model_.num_parameters())

    def bic(self, X) -> float:
        """-2 log p(X) + p log N of ``X`` ``(N, D)`` (lower is better)."""
        log_likelihood = self.score_samples(X)  # X read and checked once
        n = len(log_likelihood)
        return float(-2 * log_likelihood.mean() * n + self._n_parameters() * math.log(n))

    def aic(self, X) -> float:
        """-2 log p(X) + 2 p of ``X`` ``(N, D)``."""
        log_likelihood = self.score_samples(X)
        return float(-2 * log_likelihood.mean() * len(log_likelihood) + 2 * self._n_parameters())


__all__ = ["GaussianMixture"]
