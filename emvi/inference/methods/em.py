"""em: expectation maximisation (:mod:`emvi.inference.em`) as a method of the table, for any model with the EM
protocol (``e_step``/``m_step``; optional ``initialise``, ``em_inputs``, ``em_steps``, ``finish_em``, ``em_ready``,
``em_by_enumeration``: :mod:`emvi.inference.enumerated_em` steps the model)."""

from __future__ import annotations

import time
import warnings

import torch

from ...errors import ConfigError, DataError
from ..em import EMConfig, fit_em_from_starts
from ..enumerated_em import EnumeratedEM, em_protocol
from . import EM, FitResult, Method
from .common import fitted_dtype, likelihood_metrics, load_point, model_dtype, model_inputs, save_point

NAME = EM


def ready(model, guide=None) -> str | None:
    if not (callable(getattr(model, "e_step", None)) and callable(getattr(model, "m_step", None))):
        return f"{type(model).__name__} has no EM protocol (e_step/m_step); fit it by svi"
    hook = getattr(model, "em_ready", None)
    return hook() if callable(hook) else None


def fit(model, guide, train_data, config: EMConfig, *, valid_data=None, run=None, resume=False) -> FitResult:
    """EM in float64 from ``config.n_init`` starts (the model's ``initialise`` hook, else k-means++ or random hard
    assignments and one M-step); the parameters (in the model's ``fitted_dtype``, else its own) go to ``run``'s
    checkpoint."""
    reason = ready(model, guide)
    if reason is not None:
        raise ConfigError(f"cannot fit by em: {reason}")
    dtype = model_dtype(model)
    model.to(torch.float64)
    data = model_inputs(model, train_data)
    started = time.perf_counter()
    try:
        result, finished = fit_em_from_starts(model, data, config)
    except torch.linalg.LinAlgError as exc:
        raise DataError(f"EM hit a singular covariance ({' '.join(str(exc).split())[:120]}); the data has constant "
                          "or duplicated features: drop them, or fit by --method svi") from None
    seconds = time.perf_counter() - started
    model.fitted_by = NAME  # an EM fit's posterior over the locals is exact, whatever guide was built
    n = max(result.num_data, 1)
    history = [{"epoch": i, "log_likelihood": ll / n, "train_loss": -ll / n, "seconds": s}
               for i, (ll, s) in enumerate(zip(result.log_likelihood_history, result.seconds_history, strict=True))]
    if finished is not None:
        history.append({"epoch": len(history), "log_likelihood": finished / n, "train_loss": -finished / n,
                        "seconds": seconds})
    metrics = {"objective_per_item": result.lower_bound if finished is None else finished / n}
    metrics |= likelihood_metrics(em_protocol(model), data, valid_data)
    warn_if_a_component_emptied(model, train_data, method="EM")
    model.to(fitted_dtype(model, dtype))
    fitted = FitResult(NAME, config.seed, bool(result.converged), int(result.n_iter), tuple(history), metrics, seconds)
    save_point(run, model, fitted.summary())
    return fitted


def load(model, guide, run, device) -> None:
    load_point(model, run, device)
    model.fitted_by = NAME


def convergence_note(config: EMConfig, summary: dict) -> str | None:
    if summary.get("converged") is False:
        return (f"note: EM did not converge in max_iter={config.max_iter} iterations (tol={config.tol}); raise "
                "--max-iter or --tol (inference.max_iter / inference.tol in a spec)")
    return None


def starts_from_data(model) -> bool:
    """The model asks for EM's start before SVI (``svi_data_start``) and has a ready EM protocol."""
    return bool(getattr(model, "svi_data_start", False)) and ready(model, None) is None


def warn_if_a_component_emptied(model, train_data, *, method: str = "SVI") -> None:
    """Warn when a fitted mixture (EM's protocol) gives a component less than 1/(10 K) of the items' weight: a
    start that left it behind, or more components than the data hold. With several discrete sites (EM by
    enumeration) each site's values are checked, K its number of values."""
    if not starts_from_data(model):
        return
    dtype = model_dtype(model)
    protocol = em_protocol(model)
    with torch.no_grad():
        model.to(torch.float64)
        data = model_inputs(model, train_data)
        if isinstance(protocol, EnumeratedEM):
            shares = protocol.site_weights(*data)
        else:
            shares = {"": protocol.e_step(*data)[0].mean(0)}
        model.to(dtype)
    for site, weights in shares.items():
        k = weights.shape[-1]
        low = [(i, float(w)) for i, w in enumerate(weights.tolist()) if w < 1.0 / (10 * k)]
        if low:
            listed = ", ".join(f"{i}: {w:.3g}" for i, w in low)
            where = f" of site {site!r}" if site else ""
            other = "by --method em" if method == "SVI" else "with a larger --n-init"
            warnings.warn(f"after {method}, component(s){where} {listed} hold less than 1/(10 K) = "
                          f"{1 / (10 * k):.3g} of the items; fewer components may fit as well, or refit with another "
                          f"--seed or {other}", UserWarning, stacklevel=2)


METHOD = Method(NAME, EMConfig, fit, load, ready=ready, convergence_note=convergence_note)
