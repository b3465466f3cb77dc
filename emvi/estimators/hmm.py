"""``HMM``: an hmmlearn-style estimator over :class:`emvi.models.hmm.HMMModel`, fit by Baum-Welch EM, SVI or NUTS.

    model = HMM(num_states=3, emission="gaussian", seed=0).fit(x, lengths)     # x (N, T, D) padded, lengths (N,)
    model.score(x, lengths), model.decode(x, lengths), model.predict_proba(x, lengths), model.sample(5, 100)

``x`` is padded sequences ``(N, T, D)`` with ``lengths`` ``(N,)`` (None: all of length T), one sequence ``(T, D)``,
or a list of ``(T_i, D)`` (or ``(T_i,)``) arrays, which is padded for you. Inputs are array-likes (numpy, lists,
torch); outputs are numpy arrays and Python numbers. Unlike hmmlearn, whose 2-D ``X`` concatenates the sequences
that ``lengths`` cut, a 2-D ``x`` here is one sequence and several sequences are padded along a first axis.
"""

from __future__ import annotations

import math
import time
from functools import partial

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..inference.convergence import warn_not_converged
from ..inference.direct import maximise_log_likelihood
from ..inference.em import EMConfig, fit_em
from ..inference.initialization import initialise_hmm
from ..inference.mcmc import MCMCConfig
from ..inference.methods import EM, MCMC, SVI
from ..inference.restarts import best_of_restarts
from ..models.hmm import HMMConfig, HMMGuide, HMMModel, check_sequences
from ..validation import check_choice, check_positive_int, resolve_device
from .base import EmviEstimator, as_input, check_shape, resolve_dtype, to_numpy


def pad_sequences(sequences) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of ``(T_i, D)`` (or ``(T_i,)``) arrays -> padded ``(N, max T, D)`` float64 and lengths ``(N,)``."""
    tensors = [as_input(s, "each sequence") for s in sequences]
    if not tensors:
        raise DataError("no sequences given; pass at least one (T, D) array")
    tensors = [t[:, None] if t.dim() == 1 else t for t in tensors]
    if any(t.dim() != 2 or t.shape[1] != tensors[0].shape[1] for t in tensors):
        raise DataError(f"each sequence must be (T_i, D) with the same D, got shapes {[tuple(t.shape) for t in tensors][:5]}")
    lengths = torch.tensor([t.shape[0] for t in tensors])
    padded = torch.zeros(len(tensors), int(lengths.max()), tensors[0].shape[1], dtype=torch.float64)
    for i, t in enumerate(tensors):
        padded[i, : t.shape[0]] = t
    return padded, lengths


class HMM(EmviEstimator):
    """Hidden Markov model with K states (see :class:`emvi.models.hmm.HMMConfig`); hmmlearn's interface.

    Parameters are stored as given and checked by :meth:`fit` (scikit-learn's convention). ``num_states`` K,
    ``emission`` gaussian (``covariance_type`` diag, full, tied or spherical), poisson or categorical
    (``num_categories`` C), ``initial`` free or stationary;
    ``floor`` > 0 is the numerical floor of the emission parameters: it is added to every Gaussian variance at each
    M-step (hmmlearn's ``min_covar``) and is the smallest Poisson rate and categorical probability.

    ``method``: ``em`` (Baum-Welch, ``max_iter``/``tol`` on the change of the total log-likelihood per sequence,
    ``n_init`` restarts), ``svi`` (gradient ascent on the enumerated marginal, ``epochs``/``batch_size``/
    ``learning_rate``) or ``mcmc`` (NUTS on the Bayesian HMM of :meth:`~emvi.models.hmm.HMMModel.bayesian` with the states summed out,
    started from the EM fit: ``num_samples`` draws after ``warmup_steps`` per chain, ``num_chains`` chains; the draws
    are relabelled to the EM fit's state order, the fitted parameters are their mean, and ``mcmc_`` holds them for
    :func:`emvi.analysis.hmm.hmm_inference_data` and LOO). ``seed`` seeds every random draw; ``dtype`` "float64" or
    "float32"; ``device`` cpu, cuda or auto.

    Fitted attributes: ``startprob_`` ``(K,)``, ``transmat_`` ``(K, K)``, ``params_`` (every parameter by name as
    numpy: ``means`` ``(K, D)`` and ``variances`` ``(K, D)`` (spherical ``(K,)``) or ``covariances`` ``(K, D, D)``
    (tied ``(D, D)``), ``rates`` ``(K, D)`` or ``probs`` ``(K, D, C)``), ``n_features_in_``
    (D), ``converged_``, ``n_iter_``, ``log_likelihood_`` (total, nats), ``history_`` (total log-likelihood per
    iteration / epoch), ``fit_seconds_``, ``model_`` (the fitted :class:`~emvi.models.hmm.HMMModel`) and ``mcmc_``.
    """

    def __init__(self, num_states: int = 3, emission: str = "gaussian", *, method: str = EM,
                 initial: str = "free", num_categories: int = 2, floor: float = 1e-6, max_iter: int = EMConfig.max_iter,
                 tol: float = EMConfig.tol, n_init: int = EMConfig.n_init, epochs: int = 100, batch_size: int = 64, learning_rate: float = 0.05,
                 num_samples: int = MCMCConfig.num_samples, warmup_steps: int = MCMCConfig.warmup_steps, num_chains: int = MCMCConfig.num_chains, seed: int = 0,
                 device: str = "cpu", dtype: str = "float64", verbose: bool = False, covariance_type: str = "diag"):
        self.num_states = num_states
        self.emission = emission
        self.method = method
        self.initial = initial
        self.num_categories = num_categories
        self.floor = floor
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.num_samples = num_samples
        self.warmup_steps = warmup_steps
        self.num_chains = num_chains
        self.seed = seed
        self.device = device
        self.dtype = dtype
        self.verbose = verbose
        self.covariance_type = covariance_type

    def _config(self) -> HMMConfig:
        """Check every parameter (one-line :class:`~emvi.errors.ConfigError`) and build the model's config."""
        config = HMMConfig(num_states=self.num_states, emission=self.emission, num_categories=self.num_categories,
                           initial=self.initial, floor=self.floor, covariance_type=self.covariance_type)
        if not (isinstance(self.floor, (int, float)) and self.floor > 0):
            raise ConfigError(f"floor must be a number > 0, got {self.floor!r}")
        check_choice(self.method, "method", (EM, SVI, MCMC))
        for name in ("max_iter", "n_init", "epochs", "batch_size", "num_samples", "num_chains"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.warmup_steps, "warmup_steps", minimum=0)
        from ..inference.mcmc import MIN_DRAWS  # split R-hat needs 4 draws per chain

        check_positive_int(self.num_samples, "num_samples", minimum=MIN_DRAWS)
        if not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            raise ConfigError(f"tol must be a number >= 0, got {self.tol!r}")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ConfigError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        return config

    def _data(self, x, lengths, config: HMMConfig) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(x, (list, tuple)) and not _is_nested_numbers(x):
            if lengths is not None:
                raise DataError("pass either a list of sequences or a padded array with lengths, not both")
            x, lengths = pad_sequences(x)
        x = check_shape(as_input(x), (3, 2), layout="(sequences, time, features) or one (time, features) sequence")
        x, lengths = check_sequences(x, None if lengths is None else as_input(lengths, "lengths"), config)
        self._check_num_features(x.shape[-1])
        return x.to(device=self._device, dtype=self._dtype), lengths.to(self._device)

    def _fitted_data(self, x, lengths) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_fitted()
        return self._data(x, lengths, self.model_.config)

    def fit(self, x, lengths=None) -> HMM:
        """Fit to padded sequences ``x`` ``(N, T, D)`` with ``lengths`` ``(N,)`` (or one ``(T, D)`` sequence, or a list
        of sequences); keeps the best of ``n_init`` starts (highest final log-likelihood). Warns
        scikit-learn's ``ConvergenceWarning`` when Baum-Welch stops at ``max_iter``. Returns self."""
        config = self._config()
        self._device, self._dtype = resolve_device(self.device), resolve_dtype(self.dtype)
        for name in ("n_features_in_", "model_"):  # a refit starts afresh
            self.__dict__.pop(name, None)
        x, lengths = self._data(x, lengths, config)
        if int(lengths.sum()) < config.num_states:
            raise DataError(f"num_states={config.num_states} exceeds the number of observations, "
                            f"n_samples={int(lengths.sum())}; lower num_states or pass more data")

        def fit_once(generator: torch.Generator) -> dict:
            model = HMMModel(config, x.shape[-1], dtype=self._dtype).to(self._device)
            initialise_hmm(model, x, lengths, generator)
            start = time.perf_counter()
            outcome = {"model": model, "draws": None}
            if self.method == MCMC:
                outcome.update(draws=self._fit_mcmc(model, x, lengths), history=[], converged=True,
                               n_iter=self.num_samples)
            elif self.method == EM:
                result = fit_em(model, x, lengths, max_iter=self.max_iter, tol=self.tol, warn=False, seed=self.seed)
                history = list(result.log_likelihood_history)
                if model.config.initial == "stationary":
                    # The transition step under π = stationary(A) is a generalised M-step: finish at the
                    # constrained optimum by climbing the exact likelihood directly.
                    history.append(maximise_log_likelihood(model, x, lengths)[1])
                outcome.update(history=history, converged=result.converged, n_iter=result.n_iter)
            else:
                from ..inference.runner import TrainConfig, train

                result = train(model, HMMGuide(), (x, lengths), config=TrainConfig(
                    epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate, elbo="enum",
                    max_plate_nesting=1, seed=self.seed, device=str(self._device), progress=False))
                outcome.update(history=[-h["train_loss"] * x.shape[0] for h in result.history], converged=True,
                               n_iter=result.epochs_run)
            with torch.no_grad():
                outcome["log_likelihood"] = float(model.log_likelihood(x, lengths).sum())
            return outcome | {"seconds": time.perf_counter() - start}

        best = best_of_restarts(fit_once, self.n_init, seed=self.seed, objective=lambda o: o["log_likelihood"])
        self.model_, self.mcmc_, self.history_ = best["model"], best["draws"], best["history"]
        self.n_features_in_ = int(x.shape[-1])
        self.converged_, self.n_iter_ = bool(best["converged"]), int(best["n_iter"])
        self.fit_seconds_, self.log_likelihood_ = float(best["seconds"]), float(best["log_likelihood"])
        if self.method == EM and not self.converged_:
            warn_not_converged(f"Baum-Welch did not converge in {self.max_iter} iterations (tol={self.tol}); raise "
                               "max_iter or tol", stacklevel=2)
        return self

    def _fit_mcmc(self, model: HMMModel, x: torch.Tensor, lengths: torch.Tensor):
        from ..inference.mcmc import MCMCConfig, fit_posterior

        # The chain samples a Bayesian copy of the same model, started from the EM fit to shorten warm-up.
        fit_em(model, x, lengths, max_iter=self.max_iter, tol=self.tol, warn=False)
        bayesian = HMMModel(model.config, x.shape[-1], dtype=self._dtype).to(self._device)
        valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
        observed = x[valid]  # (sum of lengths, D)
        bayesian.bayesian(observed.mean(0), observed.var(0, unbiased=False))
        names = bayesian.sampled_names()
        key = model.parameter_names()[2]  # means / rates / probs: the states' labels are matched on them

        def posterior_mean(samples):
            for name in names:
                model.set_parameter(name, samples[name].flatten(0, 1).mean(0))

        view = {"model": bayesian, "init_values": {name: getattr(model, name).detach().clone() for name in names},
                "kwargs": {"sum_states_by": "recursion"}, "posterior_mean": posterior_mean,
                "log_density": partial(bayesian.bayesian_log_density, x, lengths),
                "log_density_and_grad": bayesian.bayesian_log_density_and_grad(x, lengths),
                "relabel": (key, getattr(model, key).detach(), {n: (0, 1) if n == "transition" else (0,) for n in names})}
        config = MCMCConfig(num_samples=self.num_samples, warmup_steps=self.warmup_steps, num_chains=self.num_chains,
                            seed=self.seed, progress=self.verbose)
        return fit_posterior(model, x, lengths, config=config, view=view)

    @torch.no_grad()
    def score_samples(self, x, lengths=None) -> np.ndarray:
        """``(N,)`` exact log p(x_n) per sequence (the forward algorithm)."""
        data = self._fitted_data(x, lengths)
        return to_numpy(self.model_.log_likelihood(*data))

    def score(self, x, lengths=None) -> float:
        """Total log-likelihood of all sequences (hmmlearn's ``score``), nats."""
        return float(self.score_samples(x, lengths).sum())

    @torch.no_grad()
    def decode(self, x, lengths=None) -> tuple[float, np.ndarray]:
        """``(log p(x, z*), z*)``: the Viterbi paths ``(N, T)`` (-1 at padding) and their total log joint."""
        data = self._fitted_data(x, lengths)
        path, log_prob = self.model_.viterbi(*data)
        return float(log_prob.sum()), to_numpy(path)

    def predict(self, x, lengths=None) -> np.ndarray:
        """``(N, T)`` Viterbi states (-1 at padding)."""
        return self.decode(x, lengths)[1]

    @torch.no_grad()
    def predict_proba(self, x, lengths=None) -> np.ndarray:
        """``(N, T, K)`` posterior state marginals p(z_nt = k | x_n)."""
        data = self._fitted_data(x, lengths)
        return to_numpy(self.model_.forward_backward(*data)[1])

    def sample(self, n_samples: int = 1, length: int = 100, random_state: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(x (n_samples, length, D), z (n_samples, length))``: ``n_samples`` sequences of ``length`` steps and
        their states, seeded by ``random_state`` (default: ``seed``). hmmlearn's ``sample(n_samples)`` draws one
        sequence of ``n_samples`` steps; here ``n_samples`` counts sequences, the items :meth:`score_samples`
        scores."""
        self._check_fitted()
        check_positive_int(n_samples, "n_samples")
        check_positive_int(length, "length")
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # seeded draws leave the global stream alone
            torch.manual_seed(self.seed if random_state is None else random_state)
            x, z = self.model_.sample(n_samples, length)
        return to_numpy(x), to_numpy(z)

    def bic(self, x, lengths=None) -> float:
        """-2 log p(x) + p log(number of observations), p free parameters (lower is better)."""
        x, lengths = self._fitted_data(x, lengths)
        return -2 * self.score(x, lengths) + self.model_.num_parameters() * math.log(int(lengths.sum()))

    def aic(self, x, lengths=None) -> float:
        """-2 log p(x) + 2 p."""
        return -2 * self.score(x, lengths) + 2 * self.model_.num_parameters()

    @property
    def transmat_(self) -> np.ndarray:
        """``(K, K)`` transition probabilities A[i, j] = p(z_t = j | z_{t-1} = i)."""
        self._check_fitted()
        return to_numpy(self.model_.transition)

    @property
    def startprob_(self) -> np.ndarray:
        """``(K,)`` distribution of the first state (the stationary one for ``initial="stationary"``)."""
        self._check_fitted()
        return to_numpy(self.model_.start_probs())

    @property
    def params_(self) -> dict[str, np.ndarray]:
        """Every parameter of the fitted model by name, as numpy arrays (shapes in the class docstring)."""
        self._check_fitted()
        return {name: to_numpy(getattr(self.model_, name)) for name in self.model_.parameter_names()}


def _is_nested_numbers(x) -> bool:
    """A list that is one array written as nested lists (``[[1.0, 2.0], ...]``), not a list of sequences."""
    try:
        array = np.asarray(x)
    except ValueError:  # ragged: a list of sequences of different lengths
        return False
    return array.dtype != object and array.ndim in (2, 3) and not any(isinstance(s, (np.ndarray, torch.Tensor)) for s in x)
