"""A scikit-learn-like facade over :class:`emvi.models.mixture.MixtureModel`: one model, fit by EM, SVI or NUTS.

>>> est = Mixture(3, "poisson", method="em", n_init=3).fit(counts)          # counts: (N, D)
>>> est.predict(counts), est.predict_proba(counts), est.bic(counts)

Fitted attributes end in ``_``: ``weights_`` ``(K,)``, ``means_`` ``(K, D)`` (E[x | z = k] for every family),
``covariances_`` ``(K, D)`` (diag) or ``(K, D, D)`` (full), ``rates_``/``probs_`` for the discrete families,
``model_`` (the fitted Pyro model), ``converged_``, ``n_iter_``, ``lower_bound_`` (final objective per item, nats),
``history_`` (one dict per iteration/epoch) and ``mcmc_`` (draws, for ``method="mcmc"``).
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..inference.em import ConvergenceWarning, fit_em
from ..inference.initialization import INITS, initialise_mixture
from ..inference.mcmc import MIN_DRAWS
from ..inference.natural_gradient import natural_gradient_svi
from ..inference.restarts import best_of_restarts
from ..models.mixture import FAMILIES, MixtureConfig, MixtureGuide, MixtureModel, check_mixture_data
from ..validation import check_choice, check_number, check_positive_int, check_seed, resolve_device

METHODS = ("em", "svi", "mcmc")


class Mixture:
    """K-component mixture of ``family`` fit by ``method``; scikit-learn's GaussianMixture interface.

    ``tol`` is on the change of the per-item objective (as scikit-learn); ``floor`` is scikit-learn's ``reg_covar``.
    SVI options: ``epochs`` (defaults to ``max_iter``), ``batch_size`` (None = full batch), ``svi_steps``
    ("natural": :func:`natural_gradient_svi`, step size ``learning_rate`` default 1; "adam": the runner
    :func:`emvi.inference.train` with Adam, ``learning_rate`` default 0.05; gaussian-full always uses adam).
    MCMC options: ``num_samples``, ``warmup_steps``, ``num_chains``; the point estimate is the posterior mean.
    """

    def __init__(self, num_components: int = 3, family: str = "gaussian-diag", *, method: str = "em",
                 init: str = "kmeans++", n_init: int = 1, max_iter: int = 100, tol: float = 1e-3,
                 num_categories: int = 2, weight_concentration: float = 1.0, prior_strength: float = 0.0,
                 floor: float = 1e-6, means_init=None, epochs: int | None = None, batch_size: int | None = None,
                 learning_rate: float | None = None, svi_steps: str = "natural", num_samples: int = 200, warmup_steps: int = 200, num_chains: int = 1,
                 dtype: torch.dtype = torch.float64, device="cpu", seed: int = 0, verbose: bool = False):
        self.config = MixtureConfig(num_components=num_components, family=family, num_categories=num_categories,
                                    weight_concentration=weight_concentration, prior_strength=prior_strength,
                                    floor=floor)
        self.method = check_choice(method, "method", METHODS)
        self.init = check_choice(init, "init", INITS)
        self.n_init = check_positive_int(n_init, "n_init")
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.tol = check_number(tol, "tol", minimum=0)
        self.means_init = means_init
        self.svi_steps = check_choice(svi_steps, "svi_steps", ("natural", "adam"))
        if self.svi_steps == "natural" and family == "gaussian-full":
            self.svi_steps = "adam"  # natural steps are written for the diagonal and discrete families
        self.learning_rate = learning_rate if learning_rate is not None else (1.0 if self.svi_steps == "natural" else 0.05)
        check_number(self.learning_rate, "learning_rate", minimum=0, exclusive_minimum=True)
        # epochs=None means max_iter; an explicit 0 is not "use the default" but an error, as is any size < 1.
        self.epochs = None if epochs is None else check_positive_int(epochs, "epochs")
        self.batch_size = None if batch_size is None else check_positive_int(batch_size, "batch_size")
        self.num_samples = check_positive_int(num_samples, "num_samples", minimum=MIN_DRAWS)
        self.warmup_steps = check_positive_int(warmup_steps, "warmup_steps", minimum=0)
        self.num_chains = check_positive_int(num_chains, "num_chains")
        self.dtype, self.device, self.seed, self.verbose = dtype, resolve_device(device), check_seed(seed), verbose

    # -- fitting -----------------------------------------------------------------------------------------------------

    def _data(self, x, *, fitting: bool = False) -> torch.Tensor:
        x = check_mixture_data(x, self.config, fitting=fitting)
        if hasattr(self, "model_") and x.shape[1] != self.model_.num_features:
            raise DataError(f"data has {x.shape[1]} features but the mixture was fit on {self.model_.num_features}; "
                            "pass data with the training columns")
        return x.to(device=self.device, dtype=self.dtype)

    def fit(self, x, y=None) -> Mixture:
        """Fit to ``x`` ``(N, D)``; keeps the best of ``n_init`` starts (highest final objective). Returns self."""
        x = self._data(x, fitting=True)

        def fit_once(generator: torch.Generator) -> dict:
            model = MixtureModel(self.config, x.shape[1], dtype=self.dtype).to(self.device)
            initialise_mixture(model, x, self.init, generator, self.means_init)
            start = time.perf_counter()
            outcome = getattr(self, f"_fit_{self.method}")(model, x)
            return outcome | {"seconds": time.perf_counter() - start}

        best = best_of_restarts(fit_once, self.n_init, seed=self.seed, objective=lambda outcome: outcome["objective"])
        self.model_, self.guide_ = best["model"], MixtureGuide()
        self.converged_, self.n_iter_, self.history_ = best["converged"], best["n_iter"], best["history"]
        self.lower_bound_ = best["objective"] / x.shape[0]
        self.fit_seconds_ = best["seconds"]
        self.mcmc_ = best.get("mcmc")
        self._set_attributes()
        if not self.converged_ and self.method != "mcmc":
            warnings.warn(f"mixture {self.method} did not converge in {self.n_iter_} iterations (tol={self.tol}); "
                          "raise max_iter or tol", ConvergenceWarning, stacklevel=2)
        return self

    def _fit_em(self, model: MixtureModel, x: torch.Tensor) -> dict:
        result = fit_em(model, x, max_iter=self.max_iter, tol=self.tol, warn=False)
        # "epoch"/"train_loss" (the negative objective per item) are the keys the run tools plot.
        history = [{"epoch": i, "log_likelihood": ll / x.shape[0], "train_loss": -ll / x.shape[0], "seconds": s}
                   for i, (ll, s) in enumerate(zip(result.log_likelihood_history, result.seconds_history, strict=True))]
        return {"model": model, "objective": result.log_likelihood, "converged": result.converged,
                "n_iter": result.n_iter, "history": history}

    def _fit_svi(self, model: MixtureModel, x: torch.Tensor) -> dict:
        if self.svi_steps == "natural":
            history = natural_gradient_svi(model, x, epochs=self.max_iter if self.epochs is None else self.epochs, batch_size=self.batch_size,
                                           step_size=self.learning_rate, seed=self.seed)
            with torch.no_grad():
                objective = float(model.log_likelihood(x).sum() + model.log_prior())
            changes = [abs(a["log_likelihood"] - b["log_likelihood"]) for a, b in zip(history, history[1:], strict=False)]
            return {"model": model, "objective": objective, "converged": bool(changes) and changes[-1] < self.tol,
                    "n_iter": len(history), "history": history}
        from ..inference.runner import TrainConfig, train

        config = TrainConfig(epochs=self.max_iter if self.epochs is None else self.epochs, batch_size=self.batch_size or x.shape[0],
                             learning_rate=self.learning_rate, elbo="enum", max_plate_nesting=1, seed=self.seed,
                             device=str(self.device), progress=self.verbose)
        result = train(model, MixtureGuide(), x, config=config)
        history = [{"epoch": h["epoch"], "log_likelihood": -h["train_loss"], "train_loss": h["train_loss"],
                    "seconds": h.get("seconds")} for h in result.history]
        with torch.no_grad():
            objective = float(model.log_likelihood(x).sum() + model.log_prior())
        changes = [abs(a["log_likelihood"] - b["log_likelihood"]) for a, b in zip(history, history[1:], strict=False)]
        return {"model": model, "objective": objective, "converged": bool(changes) and changes[-1] < self.tol,
                "n_iter": result.epochs_run, "history": history}

    def _fit_mcmc(self, model: MixtureModel, x: torch.Tensor) -> dict:
        from ..inference.mcmc import fit_mcmc

        # The chain samples a Bayesian copy of the same model, started from the EM (MAP) fit to shorten warm-up.
        fit_em(model, x, max_iter=self.max_iter, tol=self.tol, warn=False)
        start = {name: getattr(model, name).detach().clone() for name in model.parameter_names()}
        bayesian = MixtureModel(self.config, x.shape[1], dtype=self.dtype).to(self.device)
        bayesian.bayesian(x.mean(0), x.var(0, unbiased=False))
        result = fit_mcmc(bayesian, x, num_samples=self.num_samples, warmup_steps=self.warmup_steps,
                          num_chains=self.num_chains, seed=self.seed, init_values=start, progress=self.verbose)
        model.load_posterior_mean(result.samples)
        with torch.no_grad():
            objective = float(model.log_likelihood(x).sum() + model.log_prior())
        return {"model": model, "objective": objective, "converged": True, "n_iter": self.num_samples,
                "history": [], "mcmc": result}

    def _set_attributes(self) -> None:
        model = self.model_
        with torch.no_grad():
            self.weights_ = model.weights.detach().cpu().numpy()
            self.means_ = model.components().mean.detach().cpu().numpy()
            family = self.config.family
            if family == "gaussian-diag":
                self.covariances_ = model.variances.detach().cpu().numpy()
            elif family == "gaussian-full":
                tril = model.scale_tril.detach()
                self.covariances_ = (tril @ tril.transpose(-1, -2)).cpu().numpy()
            elif family == "poisson":
                self.rates_ = model.rates.detach().cpu().numpy()
            else:
                self.probs_ = model.probs.detach().cpu().numpy()

    # -- using the fit -----------------------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ConfigError("this Mixture is not fitted yet; call fit(x) first")

    @torch.no_grad()
    def score_samples(self, x) -> np.ndarray:
        """``(N,)`` log p(x_n) = log Σ_k π_k F(x_n | θ_k)."""
        self._check_fitted()
        return self.model_.log_likelihood(self._data(x)).cpu().numpy()

    def score(self, x, y=None) -> float:
        """Average log-likelihood per item (nats)."""
        return float(self.score_samples(x).mean())

    @torch.no_grad()
    def predict_proba(self, x) -> np.ndarray:
        """``(N, K)`` responsibilities p(z_n = k | x_n): the E-step's exact posterior."""
        self._check_fitted()
        return self.model_.responsibilities(self._data(x)).cpu().numpy()

    def predict(self, x) -> np.ndarray:
        """``(N,)`` MAP component of each item."""
        return self.predict_proba(x).argmax(-1)

    def fit_predict(self, x, y=None) -> np.ndarray:
        return self.fit(x).predict(x)

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(x (n, D), z (n,))`` drawn from the fitted mixture, seeded by ``seed``."""
        self._check_fitted()
        check_positive_int(n_samples, "n_samples")
        torch.manual_seed(self.seed)
        x, z = self.model_.sample(n_samples)
        return x.cpu().numpy(), z.cpu().numpy()

    def bic(self, x) -> float:
        """-2 log p(x) + p log N with p free parameters (lower is better)."""
        n = check_mixture_data(x, self.config, fitting=False).shape[0]
        return -2 * self.score(x) * n + self.model_.num_parameters() * math.log(n)

    def aic(self, x) -> float:
        """-2 log p(x) + 2 p."""
        n = check_mixture_data(x, self.config, fitting=False).shape[0]
        return -2 * self.score(x) * n + 2 * self.model_.num_parameters()

    def convergence_report(self) -> str:
        """One paragraph: method, iterations, convergence, final objective and its last change."""
        self._check_fitted()
        lines = [f"{self.config.family} mixture, K={self.config.num_components}, fit by {self.method} "
                 f"(best of {self.n_init} start(s), {self.fit_seconds_:.2f} s)"]
        if self.method == "mcmc":
            lines.append(f"NUTS: {self.num_samples} draws x {self.num_chains} chain(s) after {self.warmup_steps} warm-up; "
                         "point estimate = posterior mean")
        else:
            status = "converged" if self.converged_ else "NOT converged"
            last = (self.history_[-1]["log_likelihood"] - self.history_[-2]["log_likelihood"]
                    if len(self.history_) > 1 else float("nan"))
            lines.append(f"{status} after {self.n_iter_} iterations (tol={self.tol}); last change {last:.3g} nats/item")
        lines.append(f"final objective {self.lower_bound_:.6f} nats/item")
        return "\n".join(lines)


__all__ = ["FAMILIES", "METHODS", "Mixture"]
