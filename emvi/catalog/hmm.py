"""The hidden Markov model, wired: builder, Baum-Welch/NUTS fits into a run directory, exact evaluation, sampling,
ArviZ."""

from __future__ import annotations

import torch

from ..analysis.hmm import hmm_inference_data
from ..data import DataInfo
from ..errors import DataError
from ..models.hmm import HMMConfig, HMMGuide, HMMModel, check_sequences
from ..registry import ModelEntry

SAMPLED_LENGTH = 100
"""Steps of each sequence ``emvi sample`` draws."""


def build_hmm(config: HMMConfig, data_info: DataInfo):
    return HMMModel(config, data_info.event_shape[-1]), HMMGuide()


def _sequences(data):
    x = data.x if hasattr(data, "x") else torch.as_tensor(data)
    return x, getattr(data, "lengths", None)


def check_hmm_data(config: HMMConfig, data, method: str = "em") -> None:
    """Sequences and lengths (1..T each), the emission's support, K <= the number of observations; SVI needs
    padded sequences with lengths (Baum-Welch and NUTS also take one ``(T, D)`` sequence)."""
    x, lengths = _sequences(data)
    x, lengths = check_sequences(x, lengths, config)
    if int(lengths.sum()) < config.num_states:
        raise DataError(f"num_states={config.num_states} exceeds the {int(lengths.sum())} observations; lower -k")
    if method == "svi" and getattr(data, "lengths", None) is None:
        raise DataError("HMM training by SVI needs sequences: an .npz file with x of shape (N, T, D) and lengths "
                        "(N,); a single (T, D) sequence can be fit by --method em")


def fit_hmm(model: HMMModel, guide, train_data, *, method: str, config, valid_data=None, run=None) -> dict:
    """Baum-Welch (:class:`emvi.inference.em.EMConfig`) or NUTS (:class:`emvi.inference.mcmc.MCMCConfig`, started
    from Baum-Welch) on the data's sequences (one ``(T, D)`` table is one sequence), through the
    :class:`~emvi.estimators.HMM` facade; the state (and the draws) go to ``run``'s checkpoint."""
    from ..estimators.hmm import HMM  # scikit-learn loads with the estimators, not with ``import emvi``

    cfg = model.config
    options = dict(method=method, initial=cfg.initial, num_categories=cfg.num_categories, floor=cfg.floor,
                   seed=config.seed, device=config.device, verbose=config.progress)
    if method == "em":
        options.update(max_iter=config.max_iter, tol=config.tol, n_init=config.n_init)
    else:
        options.update(num_samples=config.num_samples, warmup_steps=config.warmup_steps, num_chains=config.num_chains)
    estimator = HMM(cfg.num_states, cfg.emission, **options)
    x, lengths = _sequences(train_data)
    estimator.fit(x, lengths)
    model.to(dtype=torch.float64)
    model.load_state_dict(estimator.model_.state_dict())
    summary = {"method": method, "converged": estimator.converged_, "n_iter": estimator.n_iter_,
               "log_likelihood": estimator.log_likelihood_, "bic": estimator.bic(x, lengths),
               "seconds": estimator.fit_seconds_}
    if valid_data is not None:
        summary["valid_log_likelihood"] = estimator.score(*_sequences(valid_data))
    state = {"model": model.state_dict(), "summary": dict(summary)}
    if estimator.mcmc_ is not None:
        state |= estimator.mcmc_.checkpoint_entries()
        summary = {k: v for k, v in summary.items() if k not in ("converged", "n_iter")} | estimator.mcmc_.summary()
    if run is not None:
        run.save_checkpoint(state)
    summary["history"] = [{"epoch": i, "train_loss": -ll} for i, ll in enumerate(estimator.history_)]
    return summary


def load_hmm(model: HMMModel, guide, run, device) -> None:
    model.to(device=device, dtype=torch.float64)
    model.load_state_dict(run.load_checkpoint(map_location=device)["model"])


def evaluate_hmm(model: HMMModel, guide, data, *, num_samples: int = 0) -> dict:
    """Exact log-likelihood of the held-out sequences (the forward algorithm needs no samples)."""
    x, lengths = check_sequences(*_sequences(data), model.config)
    x = x.to(next(model.parameters()).dtype)
    with torch.no_grad():
        log_likelihood = model.log_likelihood(x, lengths)
    return {"log_likelihood": float(log_likelihood.sum()),
            "log_likelihood_per_step": float(log_likelihood.sum() / lengths.sum()), "num_sequences": int(x.shape[0])}


def sample_hmm(model: HMMModel, guide, num_samples: int) -> torch.Tensor:
    """``num_samples`` sequences of :data:`SAMPLED_LENGTH` steps ``(num_samples, T, D)``."""
    return model.sample(num_samples, SAMPLED_LENGTH)[0].float()


ENTRIES = (
    ModelEntry(
        "hmm", HMMConfig, build_hmm, methods=("em", "svi", "mcmc"),
        description="hidden Markov model (gaussian, poisson, categorical emissions), states enumerated",
        fit=fit_hmm, load=load_hmm, evaluate=evaluate_hmm, sample=sample_hmm, inference_data=hmm_inference_data,
        check_data=check_hmm_data,
        elbo="enum", max_plate_nesting=1, sequential=True,
    ),
)
