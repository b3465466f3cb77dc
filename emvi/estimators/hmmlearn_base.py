"""What :mod:`emvi.estimators.hmmlearn_api`'s classes share: hmmlearn 0.3's HMM interface over emvi's HMM.

Same data layout (``X`` ``(n_samples, n_features)``, the sequences concatenated and cut by ``lengths``), same fitted
attributes (settable: a model scores, decodes and samples from given parameters without ``fit``), same start
(hmmlearn's recipe and, for the same ``random_state``, its draws), same EM loop and ``monitor_``, same MAP M-step
(:mod:`emvi.models.hmm_map`).

The E-step, scores and decoding are :class:`emvi.models.hmm.HMMModel`'s exact recursions on ``device`` (float64).
Where hmmlearn 0.3.3 has a known bug, emvi returns the correct value: ``decode(algorithm="map")``'s log-probability
is Σ_t log max_k γ_tk (hmmlearn sums the probabilities, its issue #188); the spherical ``covars_`` is ``(K, D, D)``;
a covariance update with the means frozen (``"c"`` in ``params`` without ``"m"``) uses the expected counts, which
hmmlearn leaves at zero. ``implementation`` ("log"/"scaling") is accepted and checked; both run emvi's scaled
recursion, which agrees with either to rounding.
"""

from __future__ import annotations

import logging
import sys
from collections import deque

import numpy as np
import torch
from sklearn.utils import check_random_state

from ..errors import ConfigError, DataError
from ..models.hmm import HMMModel
from ..models.hmm_map import map_m_step
from ..validation import check_choice, check_positive_int, resolve_device
from .base import EmviEstimator, NotFittedError, as_input, check_shape, to_numpy

_log = logging.getLogger(__name__)
COVARIANCE_TYPES = ("spherical", "diag", "full", "tied")


class ConvergenceMonitor:
    """hmmlearn's monitor: ``history`` (the log-probability of each iteration, computed before its M-step), ``iter``
    (EM iterations run), ``converged`` (``iter == n_iter`` or the last gain below ``tol``); ``verbose`` prints each
    iteration to stderr, and a decrease beyond √eps is logged. Subclass it and set ``monitor_`` to change the rule."""

    def __init__(self, tol, n_iter, verbose):
        self.tol, self.n_iter, self.verbose = tol, n_iter, verbose
        self.history = deque()
        self.iter = 0

    def __repr__(self):
        return f"{type(self).__name__}(tol={self.tol}, n_iter={self.n_iter}, iter={self.iter}, history={list(self.history)})"

    def _reset(self):
        self.iter = 0
        self.history.clear()

    def report(self, log_prob: float) -> None:
        delta = log_prob - self.history[-1] if self.history else np.nan
        if self.verbose:
            print(f"{self.iter + 1:>10d} {log_prob:>16.8f} {delta:>+16.8f}", file=sys.stderr)
        if self.history and delta < -np.finfo(float).eps ** 0.5:
            _log.warning("Model is not converging. Current: %s is not greater than %s. Delta is %s", log_prob,
                         self.history[-1], delta)
        self.history.append(log_prob)
        self.iter += 1

    @property
    def converged(self) -> bool:
        return self.iter == self.n_iter or (len(self.history) >= 2 and self.history[-1] - self.history[-2] < self.tol)


class HMMLearnHMM(EmviEstimator):
    """What the three classes share: data layout, the fitted check, EM, scoring, decoding, sampling, criteria."""

    _letters: dict[str, str] = {"s": "startprob_", "t": "transmat_"}
    """hmmlearn's letter -> attribute (for ``params``/``init_params``)."""

    def _base_init(self, n_components, startprob_prior, transmat_prior, algorithm, random_state, n_iter, tol, verbose,
                   params, init_params, implementation, device):
        self.n_components, self.startprob_prior, self.transmat_prior = n_components, startprob_prior, transmat_prior
        self.algorithm, self.random_state, self.n_iter, self.tol = algorithm, random_state, n_iter, tol
        self.verbose, self.params, self.init_params = verbose, params, init_params
        self.implementation, self.device = implementation, device
        self.monitor_ = ConvergenceMonitor(tol, n_iter, verbose)  # as hmmlearn: replaceable before fit

    # -- checks and data ------------------------------------------------------------------------------------------

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "startprob_")

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"this {type(self).__name__} has no startprob_ yet; call fit or set its parameters")

    def _check_settings(self) -> None:
        check_positive_int(self.n_components, "n_components")
        check_positive_int(self.n_iter, "n_iter", minimum=0)
        check_choice(self.algorithm, "algorithm", ("viterbi", "map"))
        check_choice(self.implementation, "implementation", ("log", "scaling"))
        if not isinstance(self.tol, (int, float)):
            raise ConfigError(f"tol must be a number, got {self.tol!r}")
        for name in ("params", "init_params"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string of parameter letters, got {getattr(self, name)!r}")

    def _check(self) -> None:
        """The parameters' shapes and sums (hmmlearn's ``_check``): one-line :class:`DataError` naming the attribute."""
        k = self.n_components
        self.startprob_ = np.asarray(self.startprob_, dtype=float)
        self.transmat_ = np.asarray(self.transmat_, dtype=float)
        if self.startprob_.shape != (k,) or self.transmat_.shape != (k, k):
            raise DataError(f"startprob_ must have shape ({k},) and transmat_ ({k}, {k}), got "
                            f"{self.startprob_.shape} and {self.transmat_.shape}; set n_components to match")
        for name in ("startprob_", "transmat_"):
            sums = getattr(self, name).sum(-1)
            if not np.allclose(sums, 1) or (getattr(self, name) < 0).any():
                raise DataError(f"{name} must hold probabilities summing to 1 (got sums {np.round(sums, 4)}); "
                                "normalise it")
        self._check_emissions()

    def _data(self, X, lengths) -> tuple[np.ndarray, np.ndarray]:
        """``X`` as a float64 ``(n_samples, n_features)`` array and ``lengths`` as integers that sum to n_samples."""
        x = to_numpy(check_shape(as_input(X), (2,), layout="(n_samples, n_features), the sequences concatenated"))
        lengths = np.array([len(x)]) if lengths is None else np.asarray(to_numpy(lengths))
        if (lengths.ndim != 1 or not len(lengths) or lengths.dtype.kind not in "iuf"
                or (lengths != np.round(lengths)).any() or (lengths < 1).any() or lengths.sum() != len(x)):
            raise DataError(f"lengths must be whole numbers >= 1 that sum to the {len(x)} rows of X, got "
                            f"{lengths.tolist()[:5]}; pass one length per concatenated sequence")
        if not np.isfinite(x).all():
            raise DataError("X contains NaN or infinite values; drop or impute them")
        return x.astype(np.float64), lengths.astype(np.int64)

    def _tensors(self, x: np.ndarray, lengths: np.ndarray):
        """Padded ``(N, max length, D)`` sequences, lengths ``(N,)`` and the valid steps ``(N, T)`` on the device."""
        device = resolve_device(self.device)
        valid = np.arange(lengths.max()) < lengths[:, None]
        padded = np.zeros((len(lengths), lengths.max(), x.shape[1]))
        padded[valid] = x  # row-major: sequence by sequence, as concatenated
        return (torch.as_tensor(padded, device=device), torch.as_tensor(lengths, device=device),
                torch.as_tensor(valid, device=device))

    def _model(self) -> HMMModel:
        """The emvi model carrying the current parameters (built once per shape; parameters written each call)."""
        self._check()
        config = self._config()
        key = (config, self._model_features(), str(resolve_device(self.device)))
        if getattr(self, "_cached", (None,))[0] != key:
            with torch.random.fork_rng(devices=[]):  # building draws random starts: leave the user's stream alone
                model = HMMModel(config, self._model_features(), dtype=torch.float64).to(resolve_device(self.device))
            self._cached = (key, model)
        model = self._cached[1]
        for name, value in self._current().items():
            model.set_parameter(name, value)
        return model

    def _current(self) -> dict[str, torch.Tensor]:
        """The parameters by emvi's names, as float64 tensors on the device."""
        device = resolve_device(self.device)
        values = {"initial_probs": self.startprob_, "transition": self.transmat_, **self._emission_parameters()}
        return {name: torch.as_tensor(np.asarray(v, dtype=float), device=device) for name, v in values.items()}

    # -- fit ------------------------------------------------------------------------------------------------------

    def _needs_init(self, code: str, name: str) -> bool:
        if code in self.init_params:
            if hasattr(self, name):
                _log.warning("Even though the %r attribute is set, it will be overwritten during initialization "
                             "because 'init_params' contains %r", name, code)
            return True
        return not hasattr(self, name)

    def _init(self, x: np.ndarray, lengths: np.ndarray) -> None:
        """hmmlearn's start: π and each row of A from Dirichlet(1/K) draws of ``random_state``; then the emissions."""
        self._check_and_set_n_features(x)
        k = self.n_components
        random_state = check_random_state(self.random_state)
        if self._needs_init("s", "startprob_"):
            self.startprob_ = random_state.dirichlet(np.full(k, 1.0 / k))
        if self._needs_init("t", "transmat_"):
            self.transmat_ = random_state.dirichlet(np.full(k, 1.0 / k), size=k)
        self._init_emissions(x, lengths)
        scalars = sum(count for letter, count in self._scalars().items() if letter in self.params)
        if x.size < scalars:
            _log.warning("Fitting a model with %d free scalar parameters with only %d data points will result in a "
                         "degenerate solution.", scalars, x.size)

    def fit(self, X, lengths=None):
        """Start (``init_params``, hmmlearn's recipe), then at most ``n_iter`` EM iterations: each computes the
        log-probability and the expected counts at the current parameters, updates those in ``params`` by
        :func:`~emvi.models.hmm_map.map_m_step`, and reports to ``monitor_``. Returns self."""
        self._check_settings()
        x, lengths = self._data(X, lengths)
        self._validate_symbols(x)
        self._init(x, lengths)
        self._check()
        monitor = self.monitor_
        monitor.tol, monitor.n_iter, monitor.verbose = self.tol, self.n_iter, self.verbose
        monitor._reset()
        padded, lengths_t, _ = self._tensors(x, lengths)
        updated = {self._letters[c] for c in self.params if c in self._letters}
        for _ in range(self.n_iter):
            model = self._model()
            with torch.no_grad():
                stats, log_prob = model.e_step(padded, lengths_t)
                statistics = model.additive_statistics(stats, padded, lengths_t)
                current = self._current()
                names = {n for n in current if self._attribute(n) in updated}
                new = map_m_step(statistics, current, self._prior(), names, self._covariance_type())
            self._assign({name: to_numpy(value) for name, value in new.items()})
            monitor.report(float(log_prob))
            if monitor.converged:
                break
        return self

    # -- scoring and decoding -------------------------------------------------------------------------------------

    def _prepared(self, X, lengths):
        self._check_fitted()
        self._check_settings()
        self._check()
        x, lengths = self._data(X, lengths)
        self._validate_symbols(x)
        self._check_num_features_of(x)
        return self._model(), self._tensors(x, lengths)

    @torch.no_grad()
    def score_samples(self, X, lengths=None) -> tuple[float, np.ndarray]:
        """``(log p(X), posteriors (n_samples, n_components))``: the forward-backward recursion per sequence."""
        model, (padded, lengths_t, valid) = self._prepared(X, lengths)
        log_likelihood, gamma, _ = model.forward_backward(padded, lengths_t)
        return float(log_likelihood.sum()), to_numpy(gamma[valid])

    @torch.no_grad()
    def score(self, X, lengths=None) -> float:
        """log p(X) = Σ over the sequences of the forward recursion's log-likelihood, nats."""
        model, (padded, lengths_t, _) = self._prepared(X, lengths)
        return float(model.log_likelihood(padded, lengths_t).sum())

    def predict_proba(self, X, lengths=None) -> np.ndarray:
        """``(n_samples, n_components)`` posterior state probabilities p(z_t = k | the sequence of t)."""
        return self.score_samples(X, lengths)[1]

    @torch.no_grad()
    def decode(self, X, lengths=None, algorithm=None) -> tuple[float, np.ndarray]:
        """``(log_prob, states (n_samples,))``. ``"viterbi"``: the most probable paths and Σ log p(x, z*);
        ``"map"``: each step's most probable state and Σ_t log max_k γ_tk. Default: the ``algorithm`` parameter."""
        algorithm = algorithm or self.algorithm
        check_choice(algorithm, "algorithm", ("viterbi", "map"))
        if algorithm == "map":
            _, posteriors = self.score_samples(X, lengths)
            return float(np.log(posteriors.max(1)).sum()), posteriors.argmax(1)
        model, (padded, lengths_t, valid) = self._prepared(X, lengths)
        paths, log_prob = model.viterbi(padded, lengths_t)
        return float(log_prob.sum()), to_numpy(paths[valid])

    def predict(self, X, lengths=None) -> np.ndarray:
        """``(n_samples,)`` states decoded by ``algorithm``."""
        return self.decode(X, lengths)[1]

    def sample(self, n_samples: int = 1, random_state=None, currstate=None) -> tuple[np.ndarray, np.ndarray]:
        """``(X (n_samples, n_features), states (n_samples,))``: one sequence of ``n_samples`` steps, from
        ``currstate`` (default: drawn from ``startprob_``); hmmlearn's draws for the same ``random_state`` (default:
        the ``random_state`` parameter)."""
        self._check_fitted()
        self._check()
        check_positive_int(n_samples, "n_samples")
        random_state = check_random_state(self.random_state if random_state is None else random_state)
        transition_cdf = np.cumsum(self.transmat_, axis=1)
        if currstate is None:
            currstate = (np.cumsum(self.startprob_) > random_state.rand()).argmax()
        states, samples = [currstate], [self._draw(currstate, random_state)]
        for _ in range(n_samples - 1):
            currstate = (transition_cdf[currstate] > random_state.rand()).argmax()
            states.append(currstate)
            samples.append(self._draw(currstate, random_state))
        return np.atleast_2d(samples), np.array(states, dtype=int)

    def _num_free_parameters(self) -> int:
        return int(sum(self._scalars().values()))

    def bic(self, X, lengths=None) -> float:
        """-2 log p(X) + p log(n_samples), p the free scalars of every parameter (lower is better)."""
        return -2 * self.score(X, lengths) + self._num_free_parameters() * np.log(len(as_input(X)))

    def aic(self, X, lengths=None) -> float:
        """-2 log p(X) + 2 p."""
        return -2 * self.score(X, lengths) + 2 * self._num_free_parameters()

    def get_stationary_distribution(self) -> np.ndarray:
        """π with π A = π: the eigenvector of Aᵀ for its largest eigenvalue, summing to one."""
        if not hasattr(self, "transmat_"):
            raise NotFittedError(f"this {type(self).__name__} has no transmat_ yet; call fit or set it")
        values, vectors = np.linalg.eig(np.asarray(self.transmat_, dtype=float).T)
        vector = np.real_if_close(vectors[:, np.argmax(values.real)])
        return vector / vector.sum()

    def _scalars(self) -> dict[str, int]:
        k = self.n_components
        return {"s": k - 1, "t": k * (k - 1), **self._emission_scalars()}

    def _attribute(self, emvi_name: str) -> str:
        return {"initial_probs": "startprob_", "transition": "transmat_"}.get(emvi_name) or self._emission_attribute(
            emvi_name)

    def _assign(self, new: dict[str, np.ndarray]) -> None:
        for name, value in new.items():
            setattr(self, self._attribute(name), value)

    # -- hooks of the emission families ---------------------------------------------------------------------------

    def _check_and_set_n_features(self, x: np.ndarray) -> None:
        if hasattr(self, "n_features") and self.n_features is not None and self.n_features != x.shape[1]:
            raise DataError(f"X has {x.shape[1]} features but the model has n_features={self.n_features}; pass "
                            "data with the training columns")
        self.n_features = x.shape[1]

    def _check_num_features_of(self, x: np.ndarray) -> None:
        if x.shape[1] != self.n_features:
            raise DataError(f"X has {x.shape[1]} features but the model has n_features={self.n_features}; pass "
                            "data with the training columns")

    def _validate_symbols(self, x: np.ndarray) -> None:
        return None

    def _covariance_type(self) -> str:
        return "diag"

    def _model_features(self) -> int:
        return self.n_features


def check_counts(x: np.ndarray, what: str) -> None:
    if (x < 0).any() or (x != np.round(x)).any():
        raise DataError(f"{what} must be non-negative integers, got values such as {x[(x < 0) | (x != np.round(x))][:3]}")



__all__ = ["COVARIANCE_TYPES", "ConvergenceMonitor", "HMMLearnHMM", "check_counts"]
