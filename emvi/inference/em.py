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

import dataclasses
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..errors import ConfigError, NonFiniteLossError
from ..validation import check_choice, check_positive_int, check_seed
from .initialization import INITS, hard_assignments, initial_centres
from .restarts import best_of_restarts


@dataclass(frozen=True)
class EMConfig:
    """What controls an EM fit (the model's own hyper-parameters live in its config)."""

    max_iter: int = 1000
    """M-steps at most; EM stops earlier once the objective per item changes by less than tol."""
    tol: float = 1e-6
    """Convergence threshold on the change of the objective per item (nats)."""
    n_init: int = 1
    """Restarts from different starting points; the fit with the highest objective is kept."""
    init: str = "kmeans++"
    """Starting points: kmeans++ (greedy k-means++ centres) or random (distinct data points)."""
    seed: int = 0
    device: str = "cpu"
    """cpu, cuda, cuda:N or auto."""
    progress: bool = True
    """Report progress (only on a terminal)."""

    def __post_init__(self):
        check_positive_int(self.max_iter, "max_iter", minimum=0)
        check_positive_int(self.n_init, "n_init")
        check_choice(self.init, "init", INITS)
        check_seed(self.seed)
        if not (isinstance(self.tol, (int, float)) and self.tol >= 0 and math.isfinite(self.tol)):
            raise ConfigError(f"tol must be a finite number >= 0, got {self.tol!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def fit_em_with_restarts(model, x: torch.Tensor, config: EMConfig) -> EMResult:
    """EM on ``x`` ``(N, D)`` for a model whose ``m_step(responsibilities (N, K), x)`` takes responsibilities, from
    ``config.n_init`` starts; ``model`` ends with the parameters of the start that reached the highest objective.

    Each start is scikit-learn's ``init_params="kmeans"``: hard assignments to k-means++ (or random) centres and
    one M-step, then :func:`fit_em` for at most ``config.max_iter`` iterations.
    """
    import copy

    num_components = model.config.num_components
    if num_components > x.shape[0]:
        raise ConfigError(f"num_components={num_components} exceeds the {x.shape[0]} items; lower it")
    initial_state = copy.deepcopy(model.state_dict())

    def fit_once(generator: torch.Generator):
        model.load_state_dict(initial_state)
        with torch.no_grad():
            model.m_step(hard_assignments(x, initial_centres(x, num_components, config.init, generator)), x)
        result = fit_em(model, x, max_iter=config.max_iter, tol=config.tol, warn=False)
        return result, copy.deepcopy(model.state_dict())

    result, state = best_of_restarts(fit_once, config.n_init, seed=config.seed,
                                     objective=lambda outcome: outcome[0].log_likelihood)
    model.load_state_dict(state)
    return result
