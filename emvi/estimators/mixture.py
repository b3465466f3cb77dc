"""A scikit-learn-like facade over :class:`emvi.models.mixture.MixtureModel`: one model, fit by EM, SVI or NUTS.

>>> est = Mixture(3, "poisson", method="em", n_init=3).fit(counts)          # counts: (N, D)
>>> est.predict(counts), est.predict_proba(counts), est.bic(counts)

Fitted attributes end in ``_``: ``weights_`` ``(K,)``, ``means_`` ``(K, D)`` (E[x | z = k] for every family),
``covariances_`` ``(K, D)`` (diag) or ``(K, D, D)`` (full), ``rates_``/``probs_`` for the discrete families,
``model_`` (the fitted Pyro model), ``converged_``, ``n_iter_``, ``lower_bound_`` (final objective per item, nats),
``history_`` (one dict per iteration/epoch) and ``mcmc_`` (draws, for ``method="mcmc"``).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.distributions import transform_to

from .._validation import check_choice, check_positive_int, first_tensor, resolve_device
from ..errors import ConfigError, DataError
from ..inference.em import ConvergenceWarning, fit_em
from ..inference.initialization import INITS, hard_assignments, initial_centres
from ..models.mixture import FAMILIES, MixtureConfig, MixtureGuide, MixtureModel, check_mixture_data

METHODS = ("em", "svi", "mcmc")


def initialise_mixture(model: MixtureModel, x: torch.Tensor, init: str, generator: torch.Generator,
                       means_init: torch.Tensor | None = None) -> None:
    """Set ``model``'s parameters from k-means++ or random-subsample centres (or ``means_init`` ``(K, D)``).

    Each item is assigned to its nearest centre and one M-step turns the assignments into parameters; Gaussian
    means are then set to the centres themselves (scikit-learn's ``means_init`` convention). The discrete families
    soften the assignments (90 % nearest centre, 10 % uniform) so no rate or probability starts at the floor.
    """
    k = model.config.num_components
    with torch.no_grad():
        model.data_mean.copy_(x.mean(0).to(model.data_mean))
        if means_init is not None:
            centres = torch.as_tensor(means_init).to(x)
            if centres.shape != (k, x.shape[1]):
                raise DataError(f"means_init must have shape (K, D) = {(k, x.shape[1])}, got {tuple(centres.shape)}")
        else:
            centres = initial_centres(x, k, init, generator)
        resp = hard_assignments(x, centres)
        if not model.config.family.startswith("gaussian"):
            resp = 0.9 * resp + 0.1 / k
        model.m_step(resp, x)
        if model.config.family.startswith("gaussian"):
            model.set_parameter("means", centres)


def natural_gradient_svi(model: MixtureModel, x: torch.Tensor, *, epochs: int, batch_size: int | None = None,
                         step_size: float = 1.0, decay: float | None = None, seed: int = 0,
                         callback=None) -> list[dict]:
    """SVI with natural-gradient steps on the Pyro ELBO (TraceEnum_ELBO, z enumerated, MAP globals).

    Each step differentiates the mixture's exact marginal (mini-batch scaled by the data plate) with respect to the
    components' natural parameters η_k and the log-weights a_k, then moves the *mean* parameters E_k[T(x)]::

        N̂_k = ∂ℓ/∂a_k + π_k (N + K(α - 1)) - (α - 1)                 (expected count: ∂ℓ/∂a_k = N_k - N π_k + prior)
        E_k[T] ← E_k[T] + ρ_t (∂ℓ/∂η_k) / (N̂_k + s)                  π ← π + ρ_t (∂ℓ/∂a) / (N + K(α - 1))

    For an exponential family ∂ℓ/∂η_k = N_k (T̄_k - E_k[T]) (+ the conjugate prior's pseudo-counts s), so with
    ρ_t = 1 on the full batch a step lands exactly on the EM update: this is the natural gradient (Fisher metric of
    the complete-data model; Hoffman et al. 2013) and converges in EM's number of steps, whereas Adam on the same
    loss needs many more. On mini-batches ρ_t = step_size (1 + t)^(-decay) (Robbins-Monro; decay defaults to 0.6,
    or 0 for full batches). Families: gaussian-diag, poisson, bernoulli, categorical.

    Returns one dict per epoch: ``epoch``, ``log_likelihood`` (the average over the epoch's batches of the estimated
    objective per item, at the parameters before each step), ``train_loss`` (its negative) and ``seconds``.
    """
    from torch.func import functional_call

    from ..inference.elbo import make_elbo

    cfg, family = model.config, model.config.family
    if family == "gaussian-full":
        raise ConfigError("natural-gradient SVI supports gaussian-diag, poisson, bernoulli and categorical; use "
                          "svi_steps='adam' for gaussian-full")
    n, k = x.shape[0], cfg.num_components
    batch_size = min(batch_size or n, n)
    decay = (0.0 if batch_size == n else 0.6) if decay is None else decay
    # Conjugate pseudo-counts enter the update's denominator; the Gaussian families carry no component prior.
    alpha, s = cfg.weight_concentration, (0.0 if family == "gaussian-diag" else cfg.prior_strength)
    constraints = {name: transform_to(model._pyro_params[name][0]) for name in model.parameter_names()}
    elbo = make_elbo("enum", max_plate_nesting=1)
    guide = MixtureGuide()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # the mean parameters, the state the steps move
        weights = model.weights.detach().clone()
        if family == "gaussian-diag":
            mean, second = model.means.detach().clone(), (model.variances + model.means**2).detach().clone()
        else:
            mean = getattr(model, model.parameter_names()[1]).detach().clone()

    def natural_leaves():
        if family == "gaussian-diag":
            variance = second - mean**2
            return [mean / variance, -0.5 / variance]
        if family == "poisson":
            return [mean.log()]
        if family == "bernoulli":
            return [mean.log() - (-mean).log1p()]
        return [mean.log()]

    def overrides(log_weights, leaves):
        values = {"weights": torch.softmax(log_weights, 0)}
        if family == "gaussian-diag":
            variance = -0.5 / leaves[1]
            values.update(means=leaves[0] * variance, variances=variance)
        elif family == "poisson":
            values["rates"] = leaves[0].exp()
        elif family == "bernoulli":
            values["probs"] = torch.sigmoid(leaves[0])
        else:
            values["probs"] = torch.softmax(leaves[0], -1)
        return {f"{name}_unconstrained": constraints[name].inv(value) for name, value in values.items()}

    def functional_model(*args, **kwargs):
        return functional_call(model, params, args, kwargs)

    history, step, start = [], 0, time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator).to(x.device) if batch_size < n else None
        total = 0.0
        for begin in range(0, n, batch_size):
            batch = x if order is None else x[order[begin:begin + batch_size]]
            log_weights = weights.log().requires_grad_(True)
            leaves = [leaf.detach().requires_grad_(True) for leaf in natural_leaves()]
            params = overrides(log_weights, leaves)
            objective = -elbo.differentiable_loss(functional_model, guide, batch, num_data=n)
            grads = torch.autograd.grad(objective, [log_weights, *leaves])
            total += float(objective.detach()) * batch.shape[0]
            rho = step_size * (1.0 + step) ** (-decay)
            with torch.no_grad():
                counts = (grads[0] + weights * (n + k * (alpha - 1)) - (alpha - 1)).clamp_min(1e-10)[:, None]
                weights = (weights + rho * grads[0] / (n + k * (alpha - 1))).clamp_min(1e-12)
                weights = weights / weights.sum()
                if family == "categorical":
                    counts = counts[:, :, None]
                if family == "gaussian-diag":
                    mean = mean + rho * grads[1] / (counts + s)
                    # the floor is added to the variance, as EM's M-step does (scikit-learn's reg_covar)
                    second_moment = second + rho * grads[2] / (counts + s)
                    second = mean**2 + (second_moment - mean**2).clamp_min(0) + cfg.floor
                elif family == "poisson":
                    mean = (mean + rho * grads[1] / (counts + s)).clamp_min(cfg.floor)
                elif family == "bernoulli":
                    mean = (mean + rho * grads[1] / (counts + s)).clamp(cfg.floor, 1 - cfg.floor)
                else:
                    mean = (mean + rho * grads[1] / (counts + s)).clamp_min(cfg.floor)
                    mean = mean / mean.sum(-1, keepdim=True)
            step += 1
        record = {"epoch": epoch + 1, "log_likelihood": total / n / n, "train_loss": -total / n / n,
                  "seconds": time.perf_counter() - start}
        history.append(record)
        if callback is not None:
            callback(record)
    with torch.no_grad():
        model.set_parameter("weights", weights)
        if family == "gaussian-diag":
            model.set_parameter("means", mean)
            model.set_parameter("variances", second - mean**2)
        else:
            model.set_parameter(model.parameter_names()[1], mean)
    return history


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
                                    floor=floor, init=init, n_init=n_init, tol=tol)
        self.method = check_choice(method, "method", METHODS)
        self.init = check_choice(init, "init", INITS)
        self.n_init = check_positive_int(n_init, "n_init")
        self.max_iter = check_positive_int(max_iter, "max_iter")
        if not tol >= 0:
            raise ConfigError(f"tol must be >= 0, got {tol}")
        self.tol, self.means_init = tol, means_init
        self.svi_steps = check_choice(svi_steps, "svi_steps", ("natural", "adam"))
        if self.svi_steps == "natural" and family == "gaussian-full":
            self.svi_steps = "adam"  # natural steps are written for the diagonal and discrete families
        self.learning_rate = learning_rate if learning_rate is not None else (1.0 if self.svi_steps == "natural" else 0.05)
        self.epochs, self.batch_size = epochs, batch_size
        self.num_samples, self.warmup_steps, self.num_chains = num_samples, warmup_steps, num_chains
        self.dtype, self.device, self.seed, self.verbose = dtype, resolve_device(device), seed, verbose

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
        generator = torch.Generator().manual_seed(self.seed)
        best = None
        for _ in range(self.n_init):
            model = MixtureModel(self.config, x.shape[1], dtype=self.dtype).to(self.device)
            initialise_mixture(model, x, self.init, generator, self.means_init)
            start = time.perf_counter()
            outcome = getattr(self, f"_fit_{self.method}")(model, x)
            outcome["seconds"] = time.perf_counter() - start
            if best is None or outcome["objective"] > best["objective"]:
                best = outcome
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
            history = natural_gradient_svi(model, x, epochs=self.epochs or self.max_iter, batch_size=self.batch_size,
                                           step_size=self.learning_rate, seed=self.seed)
            with torch.no_grad():
                objective = float(model.log_likelihood(x).sum() + model.log_prior())
            changes = [abs(a["log_likelihood"] - b["log_likelihood"]) for a, b in zip(history, history[1:], strict=False)]
            return {"model": model, "objective": objective, "converged": bool(changes) and changes[-1] < self.tol,
                    "n_iter": len(history), "history": history}
        from ..inference.runner import TrainConfig, train

        config = TrainConfig(epochs=self.epochs or self.max_iter, batch_size=self.batch_size or x.shape[0],
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


# -- registry hooks: ``emvi fit mixture --method em|mcmc`` and the run-directory commands ------------------------------

CHECKPOINT = "checkpoint.pt"


def registry_fit(model: MixtureModel, guide, train_data, *, method: str, train_config, valid_data=None, run_dir=None,
                 extra_config=None) -> dict:
    """Fit the CLI's model by ``em`` (``epochs`` = max_iter) or ``mcmc`` (``epochs`` draws after as many warm-up
    steps) with the config's init/n_init/tol; save the state (and MCMC draws) to ``run_dir/checkpoint.pt``."""
    from ..inference.checkpoint import save_checkpoint

    cfg = model.config
    x = first_tensor(train_data)
    est = Mixture(cfg.num_components, cfg.family, method=method, init=cfg.init, n_init=cfg.n_init,
                  max_iter=max(train_config.epochs, 1), tol=cfg.tol, num_categories=cfg.num_categories,
                  weight_concentration=cfg.weight_concentration, prior_strength=cfg.prior_strength, floor=cfg.floor,
                  num_samples=max(train_config.epochs, 1), warmup_steps=max(train_config.epochs, 1),
                  seed=train_config.seed, device=train_config.device, verbose=train_config.progress)
    with warnings.catch_warnings():
        warnings.simplefilter("always", ConvergenceWarning)
        est.fit(x)
    model.to(dtype=est.dtype)
    model.load_state_dict(est.model_.state_dict())
    summary = {"method": method, "converged": est.converged_, "n_iter": est.n_iter_,
               "log_likelihood_per_item": est.score(x), "bic": est.bic(x), "aic": est.aic(x),
               "seconds": est.fit_seconds_}
    if valid_data is not None:
        summary["valid_log_likelihood_per_item"] = est.score(first_tensor(valid_data))
    state = {"model": model.state_dict(), "dtype": str(est.dtype), "summary": dict(summary),
             "config": json.dumps(extra_config or {}, default=str)}
    if est.mcmc_ is not None:
        state["mcmc_samples"] = est.mcmc_.samples
        state["mcmc_diverging"] = est.mcmc_.extra_fields.get("diverging", torch.zeros(0))
        summary["num_divergent"] = est.mcmc_.num_divergent
    if run_dir is not None:
        save_checkpoint(state, Path(run_dir) / CHECKPOINT)
    summary["history"] = est.history_
    return summary


def registry_load(model: MixtureModel, guide, run_dir, device) -> None:
    """Restore the parameters :func:`registry_fit` saved (float64)."""
    from ..inference.checkpoint import load_checkpoint

    state = load_checkpoint(Path(run_dir) / CHECKPOINT, map_location=device)
    model.to(device=device, dtype=getattr(torch, state.get("dtype", "torch.float64").split(".")[-1]))
    model.load_state_dict(state["model"])


def registry_evaluate(model: MixtureModel, guide, data, *, num_samples: int = 0) -> dict:
    """Exact held-out log-likelihood per item (the enumerated marginal needs no importance samples)."""
    x = check_mixture_data(first_tensor(data), model.config, fitting=False)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        log_lik = float(model.log_likelihood(x.to(dtype)).mean())
    return {"log_likelihood_per_item": log_lik, "elbo_nats_per_item": log_lik}


def registry_sample(model: MixtureModel, guide, num_samples: int) -> torch.Tensor:
    """``(num_samples, D)`` new observations."""
    return model.sample(num_samples)[0].float()


__all__ = ["FAMILIES", "METHODS", "Mixture", "initialise_mixture", "natural_gradient_svi"]
