"""A scikit-learn-like facade over :class:`emvi.models.mixture.MixtureModel`: one model, fit by EM, SVI or NUTS.

>>> est = Mixture(3, "poisson", n_init=3).fit(counts)            # EM          # counts: (N, D)
>>> est.predict(counts), est.predict_proba(counts), est.bic(counts)

Inputs are array-likes (numpy, lists, torch); outputs are numpy arrays and Python numbers. Fitted attributes end in
``_``: ``weights_`` ``(K,)``, ``means_`` ``(K, D)`` (E[x | z = k] for every family), ``covariances_`` ``(K, D)``
(diag), ``(K, D, D)`` (full), ``(D, D)`` (tied) or ``(K,)`` (spherical), ``rates_`` ``(K, D)`` (poisson) / ``probs_`` ``(K, D)`` (bernoulli) or
``(K, D, C)`` (categorical), ``n_features_in_`` (D), ``converged_``, ``n_iter_``, ``lower_bound_`` (final objective
per item, nats), ``history_`` (one dict per iteration/epoch), ``fit_seconds_``, ``model_`` (the fitted Pyro model),
``guide_`` and ``mcmc_`` (the :class:`~emvi.inference.mcmc.MCMCResult` draws of a NUTS fit, else None).
"""

from __future__ import annotations

import math
import time
from functools import partial

import numpy as np
import torch
from sklearn.base import DensityMixin

from ..errors import ConfigError, DataError
from ..inference.convergence import warn_not_converged
from ..inference.em import EMConfig, fit_em
from ..inference.initialization import INITS, initialise_mixture
from ..inference.mcmc import MCMCConfig
from ..inference.methods import EM, MCMC, SVI
from ..inference.natural_gradient import natural_gradient_svi
from ..inference.restarts import best_of_restarts
from ..models.mixture import FAMILIES, MixtureConfig, MixtureGuide, MixtureModel, check_mixture_data
from ..models.mixture_covariances import GAUSSIAN_FAMILIES, covariance_matrices, covariance_name
from ..validation import check_choice, check_number, check_positive_int, check_seed, resolve_device
from .base import EmviEstimator, as_input, check_shape, resolve_dtype, to_numpy

SVI_STEPS = ("natural", "adam")


class Mixture(DensityMixin, EmviEstimator):
    """K-component mixture of ``family`` fit by ``method``; scikit-learn's GaussianMixture interface.

    Parameters are stored as given and checked by :meth:`fit` (scikit-learn's convention).

    ``num_components`` K; ``family`` gaussian-diag, gaussian-full, poisson, bernoulli or categorical (with
    ``num_categories`` C); ``weight_concentration`` (Dirichlet α >= 1 on the weights) and ``prior_strength`` (conjugate
    pseudo-counts) make the fit MAP; ``floor`` > 0 is the numerical floor of the component parameters: it is added to
    every Gaussian variance at each M-step (scikit-learn's ``reg_covar``) and is the smallest Poisson rate and
    Bernoulli/categorical probability. ``init`` kmeans++ or random starts, ``n_init`` restarts (the best objective is
    kept), or ``means_init`` ``(K, D)``. ``tol`` is on the change of the per-item objective (as scikit-learn), at most
    ``max_iter`` iterations. ``seed`` seeds every random draw (starts, mini-batches, NUTS, :meth:`sample`); ``dtype``
    "float64" or "float32"; ``device`` cpu, cuda or auto.

    SVI options: ``epochs``, ``batch_size`` (None = full batch), ``svi_steps``
    ("natural": :func:`~emvi.inference.natural_gradient.natural_gradient_svi`, step size ``learning_rate`` default
    1; "adam": the runner :func:`emvi.inference.train` with Adam, ``learning_rate`` default 0.05; gaussian-full always
    uses adam). MCMC options: ``num_samples``, ``warmup_steps``, ``num_chains``; the point estimate is the posterior
    mean.
    """

    def __init__(self, num_components: int = 3, family: str = "gaussian-diag", *, method: str = EM,
                 init: str = EMConfig.init, n_init: int = EMConfig.n_init, max_iter: int = EMConfig.max_iter, tol: float = EMConfig.tol,
                 num_categories: int = 2, weight_concentration: float = 1.0, prior_strength: float = 0.0,
                 floor: float = 1e-6, means_init=None, epochs: int = 100, batch_size: int | None = None,
                 learning_rate: float | None = None, svi_steps: str = "natural", num_samples: int = MCMCConfig.num_samples,
                 warmup_steps: int = MCMCConfig.warmup_steps, num_chains: int = MCMCConfig.num_chains, dtype: str = "float64", device: str = "cpu",
                 seed: int = 0, verbose: bool = False):
        self.num_components = num_components
        self.family = family
        self.method = method
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.num_categories = num_categories
        self.weight_concentration = weight_concentration
        self.prior_strength = prior_strength
        self.floor = floor
        self.means_init = means_init
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.svi_steps = svi_steps
        self.num_samples = num_samples
        self.warmup_steps = warmup_steps
        self.num_chains = num_chains
        self.dtype = dtype
        self.device = device
        self.seed = seed
        self.verbose = verbose

    # -- fitting -----------------------------------------------------------------------------------------------------

    def _config(self) -> MixtureConfig:
        """Check every parameter (one-line :class:`~emvi.errors.ConfigError`) and build the model's config."""
        config = MixtureConfig(num_components=self.num_components, family=self.family,
                               num_categories=self.num_categories, weight_concentration=self.weight_concentration,
                               prior_strength=self.prior_strength, floor=self.floor)
        if not self.floor > 0:  # the model takes 0 for Gaussian families (GaussianMixture's reg_covar=0); not here
            raise ConfigError(f"floor must be a finite number > 0, got {self.floor}")
        check_choice(self.method, "method", (EM, SVI, MCMC))
        check_choice(self.init, "init", INITS)
        check_choice(self.svi_steps, "svi_steps", SVI_STEPS)
        for name in ("n_init", "max_iter", "num_samples", "num_chains"):
            check_positive_int(getattr(self, name), name)
        check_positive_int(self.warmup_steps, "warmup_steps", minimum=0)
        from ..inference.mcmc import MIN_DRAWS  # split R-hat needs 4 draws per chain

        check_positive_int(self.num_samples, "num_samples", minimum=MIN_DRAWS)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name)
        if not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            raise ConfigError(f"tol must be a number >= 0, got {self.tol!r}")
        if self.learning_rate is not None:
            check_number(self.learning_rate, "learning_rate", minimum=0, exclusive_minimum=True)
        check_seed(self.seed)
        return config

    def _data(self, x, config: MixtureConfig, *, fitting: bool = False) -> torch.Tensor:
        x = check_mixture_data(check_shape(as_input(x)), config, fitting=False)
        self._check_num_features(x.shape[1])
        if fitting and x.shape[0] < config.num_components:
            raise DataError(f"num_components={config.num_components} exceeds the number of items, "
                            f"n_samples={x.shape[0]}; lower num_components or pass more items")
        return x.to(device=self._device, dtype=self._dtype)

    def fit(self, x, y=None) -> Mixture:
        """Fit to ``x`` ``(N, D)`` (``y`` is ignored); keeps the best of ``n_init`` starts (highest final objective).
        Warns scikit-learn's ``ConvergenceWarning`` when EM/SVI stops at ``max_iter``. Returns self."""
        config = self._config()
        self._device, self._dtype = resolve_device(self.device), resolve_dtype(self.dtype)
        for name in ("n_features_in_", "model_"):  # a refit starts afresh
            self.__dict__.pop(name, None)
        x = self._data(x, config, fitting=True)
        svi_steps = "adam" if config.family == "gaussian-full" else self.svi_steps  # natural steps: diag, discrete
        learning_rate = self.learning_rate if self.learning_rate is not None else (
            1.0 if svi_steps == "natural" else 0.05)

        def fit_once(generator: torch.Generator) -> dict:
            model = MixtureModel(config, x.shape[1], dtype=self._dtype).to(self._device)
            initialise_mixture(model, x, self.init, generator, self.means_init)
            start = time.perf_counter()
            if self.method == "svi":
                outcome = self._fit_svi(model, x, svi_steps, learning_rate)
            else:
                outcome = getattr(self, f"_fit_{self.method}")(model, x)
            return outcome | {"seconds": time.perf_counter() - start}

        best = best_of_restarts(fit_once, self.n_init, seed=self.seed, objective=lambda outcome: outcome["objective"])
        self.model_, self.guide_ = best["model"], MixtureGuide()
        self.n_features_in_ = int(x.shape[1])
        self.converged_, self.n_iter_, self.history_ = bool(best["converged"]), int(best["n_iter"]), best["history"]
        self.lower_bound_ = float(best["objective"] / x.shape[0])
        self.fit_seconds_ = float(best["seconds"])
        self.mcmc_ = best.get("draws")
        self._set_attributes()
        if not self.converged_ and self.method != MCMC:
            warn_not_converged(f"mixture {self.method} did not converge in {self.n_iter_} iterations "
                               f"(tol={self.tol}); raise max_iter or tol", stacklevel=2)
        return self

    def _fit_em(self, model: MixtureModel, x: torch.Tensor) -> dict:
        result = fit_em(model, x, max_iter=self.max_iter, tol=self.tol, warn=False)
        # "epoch"/"train_loss" (the negative objective per item) are the keys the run tools plot.
        history = [{"epoch": i, "log_likelihood": ll / x.shape[0], "train_loss": -ll / x.shape[0], "seconds": s}
                   for i, (ll, s) in enumerate(zip(result.log_likelihood_history, result.seconds_history, strict=True))]
        return {"model": model, "objective": result.log_likelihood, "converged": result.converged,
                "n_iter": result.n_iter, "history": history}

    def _fit_svi(self, model: MixtureModel, x: torch.Tensor, svi_steps: str, learning_rate: float) -> dict:
        if svi_steps == "natural":
            history = natural_gradient_svi(model, x, epochs=self.epochs, batch_size=self.batch_size,
                                           step_size=learning_rate, seed=self.seed)
            with torch.no_grad():
                objective = float(model.log_likelihood(x).sum() + model.log_prior())
            changes = [abs(a["log_likelihood"] - b["log_likelihood"]) for a, b in zip(history, history[1:], strict=False)]
            return {"model": model, "objective": objective, "converged": bool(changes) and changes[-1] < self.tol,
                    "n_iter": len(history), "history": history}
        from ..inference.runner import TrainConfig, train

        config = TrainConfig(epochs=self.epochs, batch_size=self.batch_size or x.shape[0],
                             learning_rate=learning_rate, elbo="enum", max_plate_nesting=1, seed=self.seed,
                             device=str(self._device), progress=self.verbose)
        result = train(model, MixtureGuide(), x, config=config)
        history = [{"epoch": h["epoch"], "log_likelihood": -h["train_loss"], "train_loss": h["train_loss"],
                    "seconds": h.get("seconds")} for h in result.history]
        with torch.no_grad():
            objective = float(model.log_likelihood(x).sum() + model.log_prior())
        changes = [abs(a["log_likelihood"] - b["log_likelihood"]) for a, b in zip(history, history[1:], strict=False)]
        return {"model": model, "objective": objective, "converged": bool(changes) and changes[-1] < self.tol,
                "n_iter": result.epochs_run, "history": history}

    def _fit_mcmc(self, model: MixtureModel, x: torch.Tensor) -> dict:
        from ..inference.mcmc import fit_posterior

        # The chain samples a Bayesian copy of the same model, started from the EM (MAP) fit to shorten warm-up.
        fit_em(model, x, max_iter=self.max_iter, tol=self.tol, warn=False)
        start = {name: getattr(model, name).detach().clone() for name in model.parameter_names()}
        bayesian = MixtureModel(model.config, x.shape[1], dtype=self._dtype).to(self._device)
        bayesian.bayesian(x.mean(0), x.var(0, unbiased=False))
        config = MCMCConfig(num_samples=self.num_samples, warmup_steps=self.warmup_steps, num_chains=self.num_chains,
                            seed=self.seed, progress=self.verbose)
        view = {"model": bayesian, "init_values": start, "log_density": partial(bayesian.bayesian_log_density, x),
                "log_density_and_grad": bayesian.bayesian_log_density_and_grad(x)}
        result = fit_posterior(model, x, config=config, view=view)
        with torch.no_grad():
            objective = float(model.log_likelihood(x).sum() + model.log_prior())
        return {"model": model, "objective": objective, "converged": True, "n_iter": self.num_samples,
                "history": [], "draws": result}

    def _set_attributes(self) -> None:
        model = self.model_
        with torch.no_grad():
            self.weights_ = to_numpy(model.weights)
            self.means_ = to_numpy(model.components().mean)
            family = model.config.family
            if family in GAUSSIAN_FAMILIES:  # scikit-learn's layout per covariance type
                self.covariances_ = to_numpy(covariance_matrices(family, getattr(model, covariance_name(family))))
            elif family == "poisson":
                self.rates_ = to_numpy(model.rates)
            else:
                self.probs_ = to_numpy(model.probs)

    # -- using the fit -----------------------------------------------------------------------------------------------

    def _fitted_data(self, x) -> torch.Tensor:
        self._check_fitted()
        return self._data(x, self.model_.config)

    @torch.no_grad()
    def score_samples(self, x) -> np.ndarray:
        """``(N,)`` log p(x_n) = log Σ_k π_k F(x_n | θ_k) of ``x`` ``(N, D)``."""
        data = self._fitted_data(x)
        return to_numpy(self.model_.log_likelihood(data))

    def score(self, x, y=None) -> float:
        """Average log-likelihood per item (nats) of ``x`` ``(N, D)``."""
        return float(self.score_samples(x).mean())

    @torch.no_grad()
    def predict_proba(self, x) -> np.ndarray:
        """``(N, K)`` responsibilities p(z_n = k | x_n) of ``x`` ``(N, D)``: the E-step's exact posterior."""
        data = self._fitted_data(x)
        return to_numpy(self.model_.responsibilities(data))

    def predict(self, x) -> np.ndarray:
        """``(N,)`` MAP component of each item of ``x`` ``(N, D)``."""
        return self.predict_proba(x).argmax(-1)

    def fit_predict(self, x, y=None) -> np.ndarray:
        """``(N,)`` :meth:`fit` then :meth:`predict` on the same ``x`` ``(N, D)``."""
        return self.fit(x).predict(x)

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(x (n_samples, D), z (n_samples,))`` drawn from the fitted mixture, seeded by ``random_state`` (default:
        ``seed``, so repeated calls give the same draws, as scikit-learn's with an integer ``random_state``)."""
        self._check_fitted()
        check_positive_int(n_samples, "n_samples")
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # seeded draws leave the global stream alone
            torch.manual_seed(self.seed if random_state is None else random_state)
            x, z = self.model_.sample(n_samples)
        return to_numpy(x), to_numpy(z)

    def bic(self, x) -> float:
        """-2 log p(x) + p log N of ``x`` ``(N, D)``, with p free parameters (lower is better)."""
        log_likelihood = self.score_samples(x)
        return float(-2 * log_likelihood.sum() + self.model_.num_parameters() * math.log(len(log_likelihood)))

    def aic(self, x) -> float:
        """-2 log p(x) + 2 p of ``x`` ``(N, D)``."""
        return float(-2 * self.score_samples(x).sum() + 2 * self.model_.num_parameters())

    def convergence_report(self) -> str:
        """One paragraph: method, iterations, convergence, final objective and its last change."""
        self._check_fitted()
        lines = [f"{self.family} mixture, K={self.num_components}, fit by {self.method} "
                 f"(best of {self.n_init} start(s), {self.fit_seconds_:.2f} s)"]
        if self.method == MCMC:
            lines.append(f"NUTS: {self.num_samples} draws x {self.num_chains} chain(s) after {self.warmup_steps} warm-up; "
                         "point estimate = posterior mean")
        else:
            status = "converged" if self.converged_ else "NOT converged"
            last = (self.history_[-1]["log_likelihood"] - self.history_[-2]["log_likelihood"]
                    if len(self.history_) > 1 else float("nan"))
            lines.append(f"{status} after {self.n_iter_} iterations (tol={self.tol}); last change {last:.3g} nats/item")
        lines.append(f"final objective {self.lower_bound_:.6f} nats/item")
        return "\n".join(lines)


__all__ = ["FAMILIES", "Mixture"]
