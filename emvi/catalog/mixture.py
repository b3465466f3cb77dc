"""The finite mixture, wired: builder, EM/NUTS fits into a run directory, exact evaluation, sampling, ArviZ."""

from __future__ import annotations

import torch

from ..analysis.mixture import mixture_inference_data
from ..data import DataInfo
from ..models.mixture import MixtureConfig, MixtureGuide, MixtureModel, check_mixture_data
from ..registry import ModelEntry
from ..validation import first_tensor


def build_mixture(config: MixtureConfig, data_info: DataInfo):
    model = MixtureModel(config, data_info.event_shape[-1])
    model.break_symmetry()
    return model, MixtureGuide()


def check_mixture_fit_data(config: MixtureConfig, data, method: str = "em") -> None:
    """The family's support and K <= N, whatever the method (the estimator applies the same check for em/mcmc)."""
    check_mixture_data(first_tensor(data), config, fitting=True)


def fit_mixture(model: MixtureModel, guide, train_data, *, method: str, config, valid_data=None, run=None) -> dict:
    """EM (:class:`emvi.inference.em.EMConfig`) or NUTS (:class:`emvi.inference.mcmc.MCMCConfig`, started from EM)
    through the :class:`~emvi.estimators.Mixture` facade; the state (and the draws) go to ``run``'s checkpoint."""
    from ..estimators.mixture import Mixture  # scikit-learn loads with the estimators, not with ``import emvi``

    cfg = model.config
    x = first_tensor(train_data)
    options = dict(method=method, num_categories=cfg.num_categories, weight_concentration=cfg.weight_concentration,
                   prior_strength=cfg.prior_strength, floor=cfg.floor, seed=config.seed, device=config.device,
                   verbose=config.progress)
    if method == "em":
        options.update(init=config.init, n_init=config.n_init, max_iter=config.max_iter, tol=config.tol)
    else:
        options.update(num_samples=config.num_samples, warmup_steps=config.warmup_steps, num_chains=config.num_chains)
    estimator = Mixture(cfg.num_components, cfg.family, **options)
    estimator.fit(x)
    dtype = next(estimator.model_.parameters()).dtype
    model.to(dtype=dtype)
    model.load_state_dict(estimator.model_.state_dict())
    summary = {"method": method, "converged": estimator.converged_, "n_iter": estimator.n_iter_,
               "log_likelihood_per_item": estimator.score(x), "bic": estimator.bic(x), "aic": estimator.aic(x),
               "seconds": estimator.fit_seconds_}
    if valid_data is not None:
        summary["valid_log_likelihood_per_item"] = estimator.score(first_tensor(valid_data))
    state = {"model": model.state_dict(), "dtype": str(dtype), "summary": dict(summary)}
    if estimator.mcmc_ is not None:
        state |= estimator.mcmc_.checkpoint_entries()
        summary = {k: v for k, v in summary.items() if k not in ("converged", "n_iter")} | estimator.mcmc_.summary()
    if run is not None:
        run.save_checkpoint(state)
    summary["history"] = estimator.history_
    return summary


def load_mixture(model: MixtureModel, guide, run, device) -> None:
    """Restore the parameters :func:`fit_mixture` saved (in their own dtype, float64 by default)."""
    state = run.load_checkpoint(map_location=device)
    model.to(device=device, dtype=getattr(torch, state.get("dtype", "torch.float64").split(".")[-1]))
    model.load_state_dict(state["model"])


def evaluate_mixture(model: MixtureModel, guide, data, *, num_samples: int = 0) -> dict:
    """Exact held-out log-likelihood per item (the enumerated marginal needs no importance samples)."""
    x = check_mixture_data(first_tensor(data), model.config, fitting=False)
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        log_lik = float(model.log_likelihood(x.to(dtype)).mean())
    return {"log_likelihood_per_item": log_lik, "elbo_nats_per_item": log_lik}


def sample_mixture(model: MixtureModel, guide, num_samples: int) -> torch.Tensor:
    """``(num_samples, D)`` new observations."""
    return model.sample(num_samples)[0].float()


ENTRIES = (
    ModelEntry(
        "mixture", MixtureConfig, build_mixture, methods=("em", "svi", "mcmc"),
        description="finite mixture (gaussian, poisson, bernoulli, categorical) with the assignment enumerated",
        fit=fit_mixture, load=load_mixture, evaluate=evaluate_mixture, sample=sample_mixture,
        inference_data=mixture_inference_data, check_data=check_mixture_fit_data, elbo="enum", max_plate_nesting=1,
    ),
)
