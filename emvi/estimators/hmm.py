"""``HMM``: an hmmlearn-style estimator over :class:`emvi.models.hmm.HMMModel`, fit by Baum-Welch EM, SVI or NUTS.

    model = HMM(num_states=3, emission="gaussian", seed=0).fit(x, lengths)     # x (N, T, D) padded, lengths (N,)
    model.score(x, lengths), model.decode(x, lengths), model.predict_proba(x, lengths), model.sample(5, 100)

A single sequence may be given as ``(T, D)``; a list of ``(T_i, D)`` arrays is padded for you.
"""

from __future__ import annotations

import math
import time
import warnings

import torch

from ..errors import ConfigError, DataError
from ..inference.em import ConvergenceWarning, fit_em
from ..inference.initialization import initial_centres
from ..inference.mcmc import MIN_DRAWS
from ..inference.relabel import relabel_hmm_draws
from ..inference.restarts import best_of_restarts
from ..models.hmm import HMMConfig, HMMGuide, HMMModel, check_sequences
from ..validation import check_choice, check_number, check_positive_int, check_seed, resolve_device


def pad_sequences(sequences) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of ``(T_i, D)`` arrays -> padded ``(N, max T, D)`` and lengths ``(N,)``."""
    tensors = [torch.as_tensor(s) for s in sequences]
    if not tensors:
        raise DataError("no sequences given; pass at least one (T, D) array")
    tensors = [t[:, None] if t.dim() == 1 else t for t in tensors]
    lengths = torch.tensor([t.shape[0] for t in tensors])
    padded = torch.zeros(len(tensors), int(lengths.max()), tensors[0].shape[1], dtype=torch.float64)
    for i, t in enumerate(tensors):
        padded[i, : t.shape[0]] = t
    return padded, lengths


def initialise_hmm(model: HMMModel, x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> None:
    """Uniform start and near-uniform transitions (a little mass on staying), emissions from k-means++ centres of
    the observations, as hmmlearn's default initialisation."""
    cfg = model.config
    k = cfg.num_states
    valid = torch.arange(x.shape[1]) < lengths[:, None]
    observations = x[valid]
    model.set_parameter("initial_probs", torch.full((k,), 1.0 / k, dtype=x.dtype))
    model.set_parameter("transition", torch.full((k, k), 0.5 / k, dtype=x.dtype) + 0.5 * torch.eye(k, dtype=x.dtype))
    if cfg.emission == "categorical":
        probs = torch.rand(k, x.shape[-1], cfg.num_categories, generator=generator, dtype=x.dtype) + 1.0
        model.set_parameter("probs", probs / probs.sum(-1, keepdim=True))
        return
    centres = initial_centres(observations, k, "kmeans++", generator)
    if cfg.emission == "gaussian":
        model.set_parameter("means", centres)
        model.set_parameter("variances", (observations.var(0, unbiased=False) + cfg.floor).expand(k, -1).clone())
    else:
        model.set_parameter("rates", centres.clamp_min(cfg.floor))


METHODS = ("em", "svi", "mcmc")


class HMM:
    """Hidden Markov model with K states (see :class:`emvi.models.hmm.HMMConfig`).

    ``method``: ``em`` (Baum-Welch, ``max_iter``/``tol``), ``svi`` (gradient ascent on the enumerated marginal,
    ``epochs``/``batch_size``/``learning_rate``) or ``mcmc`` (NUTS on the Bayesian HMM of
    :meth:`HMMModel.bayesian` with the states summed out, started from the EM fit: ``num_samples`` draws after
    ``warmup_steps`` per chain; the draws are relabelled to the EM fit's state order, the fitted parameters are their
    mean, and ``mcmc_`` holds them for :func:`emvi.analysis.hmm.hmm_inference_data` and LOO).
    """

    def __init__(self, num_states: int = 3, emission: str = "gaussian", *, method: str = "em",
                 initial: str = "free", num_categories: int = 2, floor: float = 1e-6, max_iter: int = 100,
                 tol: float = 1e-4, n_init: int = 1, epochs: int = 100, batch_size: int = 64, learning_rate: float = 0.05,
                 num_samples: int = 500, warmup_steps: int = 300, num_chains: int = 1, seed: int = 0,
                 device: str = "cpu", dtype: torch.dtype = torch.float64, verbose: bool = False):
        self.config = HMMConfig(num_states=num_states, emission=emission, num_categories=num_categories,
                                initial=initial, floor=floor)
        self.method = check_choice(method, "method", METHODS)
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.tol = check_number(tol, "tol", minimum=0)
        self.epochs = check_positive_int(epochs, "epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.learning_rate = check_number(learning_rate, "learning_rate", minimum=0, exclusive_minimum=True)
        self.n_init = check_positive_int(n_init, "n_init")
        self.num_samples = check_positive_int(num_samples, "num_samples", minimum=MIN_DRAWS)
        self.warmup_steps = check_positive_int(warmup_steps, "warmup_steps", minimum=0)
        self.num_chains = check_positive_int(num_chains, "num_chains")
        self.seed, self.device, self.dtype, self.verbose = check_seed(seed), resolve_device(device), dtype, verbose

    def _data(self, x, lengths):
        if isinstance(x, (list, tuple)):
            if lengths is not None:
                raise DataError("pass either a list of sequences or a padded array with lengths, not both")
            x, lengths = pad_sequences(x)
        x, lengths = check_sequences(x, lengths, self.config)
        if hasattr(self, "model_") and x.shape[-1] != self.model_.num_features:
            raise DataError(f"data has {x.shape[-1]} features but the HMM was fit on {self.model_.num_features}")
        return x.to(device=self.device, dtype=self.dtype), lengths.to(self.device)

    def fit(self, x, lengths=None) -> HMM:
        """Fit to padded sequences ``x`` ``(N, T, D)`` with ``lengths`` ``(N,)`` (or one ``(T, D)`` sequence); keeps
        the best of ``n_init`` starts (highest final log-likelihood). Returns self."""
        x, lengths = self._data(x, lengths)
        if int(lengths.sum()) < self.config.num_states:
            raise DataError(f"num_states={self.config.num_states} exceeds the {int(lengths.sum())} observations")

        def fit_once(generator: torch.Generator) -> dict:
            model = HMMModel(self.config, x.shape[-1], dtype=self.dtype).to(self.device)
            initialise_hmm(model, x, lengths, generator)
            start = time.perf_counter()
            outcome = {"model": model, "mcmc": None}
            if self.method == "mcmc":
                outcome.update(mcmc=self._fit_mcmc(model, x, lengths), history=[], converged=True,
                               n_iter=self.num_samples)
            elif self.method == "em":
                result = fit_em(model, x, lengths, max_iter=self.max_iter, tol=self.tol, warn=False)
                outcome.update(history=list(result.log_likelihood_history), converged=result.converged,
                               n_iter=result.n_iter)
            else:
                from ..inference.runner import TrainConfig, train

                result = train(model, HMMGuide(), (x, lengths), config=TrainConfig(
                    epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate, elbo="enum",
                    max_plate_nesting=1, seed=self.seed, device=str(self.device), progress=False))
                outcome.update(history=[-h["train_loss"] * x.shape[0] for h in result.history], converged=True,
                               n_iter=result.epochs_run)
            with torch.no_grad():
                outcome["log_likelihood"] = float(model.log_likelihood(x, lengths).sum())
            return outcome | {"seconds": time.perf_counter() - start}

        best = best_of_restarts(fit_once, self.n_init, seed=self.seed, objective=lambda o: o["log_likelihood"])
        self.model_, self.mcmc_, self.history_ = best["model"], best["mcmc"], best["history"]
        self.converged_, self.n_iter_, self.fit_seconds_ = best["converged"], best["n_iter"], best["seconds"]
        self.log_likelihood_ = best["log_likelihood"]
        if self.method == "em" and not self.converged_:
            warnings.warn(f"Baum-Welch did not converge in {self.max_iter} iterations (tol={self.tol}); raise "
                          "max_iter or tol", ConvergenceWarning, stacklevel=2)
        return self

    def _fit_mcmc(self, model: HMMModel, x: torch.Tensor, lengths: torch.Tensor):
        from ..inference.mcmc import fit_mcmc

        # The chain samples a Bayesian copy of the same model, started from the EM fit to shorten warm-up.
        fit_em(model, x, lengths, max_iter=self.max_iter, tol=self.tol, warn=False)
        bayesian = HMMModel(self.config, x.shape[-1], dtype=self.dtype).to(self.device)
        valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]
        observed = x[valid]  # (sum of lengths, D)
        bayesian.bayesian(observed.mean(0), observed.var(0, unbiased=False))
        names = bayesian.sampled_names()
        start = {name: getattr(model, name).detach().clone() for name in names}
        result = fit_mcmc(bayesian, x, lengths, num_samples=self.num_samples, warmup_steps=self.warmup_steps,
                          num_chains=self.num_chains, seed=self.seed, init_values=start, max_plate_nesting=1,
                          progress=self.verbose, sum_states_by="recursion")
        result.samples = relabel_hmm_draws(result.samples, model)
        for name in names:
            model.set_parameter(name, result.samples[name].flatten(0, 1).mean(0))
        return result

    def _check_fitted(self):
        if not hasattr(self, "model_"):
            raise ConfigError("this HMM is not fitted yet; call fit(x, lengths) first")

    @torch.no_grad()
    def score_samples(self, x, lengths=None) -> torch.Tensor:
        """``(N,)`` exact log p(x_n) per sequence."""
        self._check_fitted()
        return self.model_.log_likelihood(*self._data(x, lengths)).cpu()

    def score(self, x, lengths=None) -> float:
        """Total log-likelihood of all sequences (hmmlearn's ``score``)."""
        return float(self.score_samples(x, lengths).sum())

    @torch.no_grad()
    def decode(self, x, lengths=None) -> tuple[float, torch.Tensor]:
        """``(log p(x, z*), z*)``: the Viterbi path ``(N, T)`` (-1 at padding) and its total log joint."""
        self._check_fitted()
        path, log_prob = self.model_.viterbi(*self._data(x, lengths))
        return float(log_prob.sum()), path.cpu()

    def predict(self, x, lengths=None) -> torch.Tensor:
        return self.decode(x, lengths)[1]

    @torch.no_grad()
    def predict_proba(self, x, lengths=None) -> torch.Tensor:
        """``(N, T, K)`` posterior state marginals p(z_nt = k | x_n)."""
        self._check_fitted()
        return self.model_.forward_backward(*self._data(x, lengths))[1].cpu()

    def sample(self, num_sequences: int = 1, length: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x (num_sequences, length, D), z (num_sequences, length))`` drawn from the fitted HMM."""
        self._check_fitted()
        return tuple(t.cpu() for t in self.model_.sample(num_sequences, length))

    def bic(self, x, lengths=None) -> float:
        x, lengths = self._data(x, lengths) if not isinstance(x, (list, tuple)) else pad_sequences(x)
        return -2 * self.score(x, lengths) + self.model_.num_parameters() * math.log(int(lengths.sum()))

    def aic(self, x, lengths=None) -> float:
        return -2 * self.score(x, lengths) + 2 * self.model_.num_parameters()

    @property
    def transmat_(self) -> torch.Tensor:
        self._check_fitted()
        return self.model_.transition.detach().cpu()

    @property
    def startprob_(self) -> torch.Tensor:
        self._check_fitted()
        return self.model_.start_probs().detach().cpu()

    @property
    def params_(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {name: getattr(self.model_, name).detach().cpu() for name in self.model_.parameter_names()}
