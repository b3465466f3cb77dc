"""Expectation maximisation for any model that exposes an exact E-step and a closed-form M-step.

EM maximises the lower bound ``L(q, θ) = E_q[log p(x, z | θ)] - E_q[log q(z)]`` by alternating

* E-step: ``q(z) = p(z | x, θ)``, so that ``L(q, θ) = log p(x | θ)`` (the KL gap closes), and
* M-step: ``θ = argmax_θ E_q[log p(x, z | θ)]`` (plus ``log p(θ)`` for MAP),

so the objective never decreases.  A model takes part through two methods (the *EM protocol*)::

    stats, objective = model.e_step(*data)   # expected sufficient statistics; log p(x | θ) (+ log p(θ)) at θ
    model.m_step(stats, *data)               # closed-form update of θ in place

``objective`` is the total over the data set (a Python float or 0-dim tensor), evaluated at the parameters *before*
the M-step, which is what makes monotonicity checkable. A model whose M-step reads only expected sufficient statistics
may also offer ``model.expected_statistics(*data) -> (stats, objective)``, an E-step fused with that reduction (the
mixture's works in chunks of rows, in memory independent of N); :func:`fit_em` then calls it instead of ``e_step``.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .._validation import check_positive_int, first_tensor
from ..errors import ConfigError, NonFiniteLossError


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the change in the objective fell below ``tol``."""


class SupportsEM(Protocol):
    def e_step(self, *data): ...

    def m_step(self, stats, *data) -> None: ...


@dataclass
class EMResult:
    """Outcome of :func:`fit_em`.

    ``log_likelihood_history[i]`` is the objective (total, nats) at the parameters after ``i`` M-steps;
    ``seconds_history[i]`` the wall-clock time when it was computed, from the start of the fit.
    """

    log_likelihood_history: list[float] = field(default_factory=list)
    seconds_history: list[float] = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0
    num_data: int = 0

    @property
    def log_likelihood(self) -> float:
        """Final total objective."""
        return self.log_likelihood_history[-1]

    @property
    def lower_bound(self) -> float:
        """Final objective per data item (scikit-learn's ``lower_bound_``)."""
        return self.log_likelihood_history[-1] / max(self.num_data, 1)


def fit_em(
    model: SupportsEM,
    *data,
    max_iter: int = 100,
    tol: float = 1e-6,
    num_data: int | None = None,
    callback: Callable[[int, float], None] | None = None,
    warn: bool = True,
) -> EMResult:
    """Run EM until the per-item objective changes by less than ``tol`` or ``max_iter`` M-steps were taken.

    The final E-step is always evaluated so ``log_likelihood`` belongs to the returned parameters. ``callback`` is
    called with ``(iteration, objective)`` after every E-step. Raises :class:`emvi.errors.NonFiniteLossError` when
    the objective stops being finite and :class:`emvi.errors.ConfigError` for a negative ``max_iter`` or ``tol``.
    """
    check_positive_int(max_iter, "max_iter", minimum=0)
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ConfigError(f"tol must be a number >= 0, got {tol!r}")
    num_data = num_data if num_data is not None else int(data[0].shape[0])
    result = EMResult(num_data=num_data)
    start = time.perf_counter()
    previous = -math.inf
    expectation = getattr(model, "expected_statistics", None) or model.e_step
    with torch.no_grad():
        for iteration in range(max_iter + 1):
            stats, objective = expectation(*data)
            objective = float(objective)
            result.log_likelihood_history.append(objective)
            result.seconds_history.append(time.perf_counter() - start)
            if callback is not None:
                callback(iteration, objective)
            if not math.isfinite(objective):
                raise NonFiniteLossError(
                    f"EM objective became {objective} at iteration {iteration}; check the data scale or raise the "
                    "variance floor / prior strength"
                )
            if abs(objective - previous) / num_data < tol:
                result.converged = True
                break
            if iteration == max_iter:
                break
            model.m_step(stats, *data)
            result.n_iter = iteration + 1
            previous = objective
    if not result.converged and warn and len(result.log_likelihood_history) >= 2:
        last_change = (result.log_likelihood_history[-1] - result.log_likelihood_history[-2]) / num_data
        warnings.warn(
            f"EM did not converge in max_iter={max_iter} iterations (last change {last_change:.3g} per item > "
            f"tol={tol}); raise max_iter or tol",
            ConvergenceWarning,
            stacklevel=2,
        )
    return result


# -- registry hooks: ``emvi fit MODEL --method em`` for models that implement the EM protocol ------------------------

EM_CHECKPOINT = "checkpoint.pt"


def registry_fit_em(model, guide, train_data, *, method: str, train_config, valid_data=None, run_dir=None,
                    extra_config=None) -> dict:
    """The ``fit`` hook of a model with the EM protocol whose ``m_step(resp, x)`` takes responsibilities ``(N, K)``.

    Starts as scikit-learn's ``init_params="kmeans"`` does: hard assignments to k-means++ centres (seeded by
    ``train_config.seed``) and one M-step; then :func:`fit_em` for at most ``train_config.epochs`` iterations, in
    float64. The fitted parameters are stored in the model's own dtype in ``run_dir/checkpoint.pt``.
    """
    import json
    from pathlib import Path

    from .checkpoint import save_checkpoint
    from .initialization import hard_assignments, kmeans_plusplus

    if method != "em":
        raise ConfigError(f"this hook fits by em, got method {method!r}")
    dtype = next(model.parameters()).dtype
    x = first_tensor(train_data).to(torch.float64)
    num_components = model.config.num_components
    if num_components > x.shape[0]:
        raise ConfigError(f"num_components={num_components} exceeds the {x.shape[0]} items; lower it")
    model.to(torch.float64)
    with torch.no_grad():
        centres = kmeans_plusplus(x, num_components, torch.Generator().manual_seed(int(train_config.seed)))
        model.m_step(hard_assignments(x, centres), x)
    with warnings.catch_warnings():
        warnings.simplefilter("always", ConvergenceWarning)
        result = fit_em(model, x, max_iter=max(int(train_config.epochs), 1), tol=1e-6)
    summary = {"method": method, "converged": result.converged, "n_iter": result.n_iter,
               "objective_per_item": result.lower_bound, "seconds": result.seconds_history[-1]}
    with torch.no_grad():
        if hasattr(model, "log_likelihood"):
            summary["log_likelihood_per_item"] = float(model.log_likelihood(x).mean())
            if valid_data is not None:
                held_out = first_tensor(valid_data).to(torch.float64)
                summary["valid_log_likelihood_per_item"] = float(model.log_likelihood(held_out).mean())
    model.to(dtype)
    if run_dir is not None:
        save_checkpoint({"model": model.state_dict(), "summary": dict(summary),
                         "config": json.dumps(extra_config or {}, default=str)}, Path(run_dir) / EM_CHECKPOINT)
    summary["history"] = [{"epoch": i, "train_loss": -value / result.num_data}
                          for i, value in enumerate(result.log_likelihood_history)]
    return summary


def registry_load_em(model, guide, run_dir, device) -> None:
    """Restore what :func:`registry_fit_em` saved."""
    from pathlib import Path

    from .checkpoint import load_checkpoint

    model.load_state_dict(load_checkpoint(Path(run_dir) / EM_CHECKPOINT, map_location=device)["model"])
    model.to(device)
