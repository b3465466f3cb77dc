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
What that E-step reads of the data at every iteration may be computed once per fit by ``model.em_constants(*data)``
(e.g. the mixture's data cast to its product dtype); :func:`fit_em` then passes it back as
``model.expected_statistics(*data, constants=...)`` (None: the E-step computes it itself).

On several processes (a ``torch.distributed`` process group, see :mod:`emvi.inference.distributed`) each rank
holds a contiguous part of the items, and a model takes part through two more methods that cut the M-step in two::

    statistics = model.additive_statistics(stats, *data)   # tensors (dict, tuple or one) that add over items
    model.m_step_from_statistics(statistics)                # the M-step from the statistics of all items

Between them :func:`fit_em` sums the statistics and the objective over the ranks with one all-reduce; a prior term
of the objective is the model's ``log_prior()`` (counted once, not once per rank). emvi's models compute the same
M-step from the same statistics in one process, so both fits are the same arithmetic up to the order of the sums.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from ..errors import ConfigError, NonFiniteLossError
from ..validation import check_choice, check_positive_int, check_seed
from . import distributed
from .convergence import ConvergenceWarning, warn_not_converged  # noqa: F401  (ConvergenceWarning: re-exported)
from .enumerated_em import em_protocol
from .initialization import INITS, hard_assignments, initial_centres
from .methods.names import EM
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


class SupportsEM(Protocol):
    def e_step(self, *data): ...

    def m_step(self, stats, *data) -> None: ...


@dataclass(frozen=True)
class EMResult:
    """Outcome of :func:`fit_em`, built once at the end of the fit.

    ``log_likelihood_history[i]`` is the objective (total, nats) at the parameters after ``i`` M-steps;
    ``seconds_history[i]`` the wall-clock time when it was computed, from the start of the fit. ``seed`` is the seed
    of the generator that drew the starting point (None when the caller started EM from its own parameters).
    """

    log_likelihood_history: tuple[float, ...] = ()
    seconds_history: tuple[float, ...] = ()
    converged: bool = False
    n_iter: int = 0
    num_data: int = 0
    seed: int | None = None
    method: str = EM

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
    seed: int | None = None,
    local_shard: bool = False,
    previous: float = -math.inf,
) -> EMResult:
    """Run EM until the per-item objective changes by less than ``tol`` or ``max_iter`` M-steps were taken.

    The final E-step is always evaluated so ``log_likelihood`` belongs to the returned parameters. ``callback`` is
    called with ``(iteration, objective)`` after every E-step. ``seed`` is only recorded in the result (EM itself
    draws nothing): pass the seed that chose the starting point. Raises :class:`emvi.errors.NonFiniteLossError` when
    the objective stops being finite and :class:`emvi.errors.ConfigError` for a negative ``max_iter`` or ``tol``.
    ``previous`` is the total objective before this fit (a continued fit's last one, as scikit-learn's
    ``warm_start``): the first E-step's change is measured against it.

    With a process group of several ranks, ``data`` is the whole data set on every rank and each rank keeps its
    part (``local_shard=True``: ``data`` is already this rank's part, and ``num_data`` defaults to the total over
    the ranks); every rank starts from rank 0's parameters and ends with the same ones (see the module docstring).
    """
    check_positive_int(max_iter, "max_iter", minimum=0)
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ConfigError(f"tol must be a number >= 0, got {tol!r}")
    start = time.perf_counter()  # the model's data constants (built by the reducer) count as fit time
    if distributed.is_distributed():
        data, num_data = _this_ranks_part(model, data, num_data, local_shard)
        reducer = _AllReduceStep(model, data)
    else:
        num_data = num_data if num_data is not None else int(data[0].shape[0])
        reducer = _LocalStep(model, data)
    history, seconds = [], []
    converged, n_iter = False, 0
    with torch.no_grad():
        for iteration in range(max_iter + 1):
            stats, objective = reducer.expect(data, iteration)
            history.append(objective)
            seconds.append(time.perf_counter() - start)
            if callback is not None:
                callback(iteration, objective)
            if not math.isfinite(objective):
                raise NonFiniteLossError(
                    f"EM objective became {objective} at iteration {iteration}; check the data scale or raise the "
                    "variance floor / prior strength"
                )
            if abs(objective - previous) / num_data < tol:
                converged = True
                break
            if iteration == max_iter:
                break
            reducer.maximise(stats, data)
            n_iter = iteration + 1
            previous = objective
    _warn_if_not_converged(history, converged, warn, max_iter, tol, num_data)
    return EMResult(tuple(history), tuple(seconds), converged, n_iter, num_data, seed=seed)


def _warn_if_not_converged(history, converged: bool, warn: bool, max_iter: int, tol: float, num_data: int) -> None:
    if not converged and warn and len(history) >= 2:
        last_change = (history[-1] - history[-2]) / num_data
        warn_not_converged(
            f"EM did not converge in max_iter={max_iter} iterations (last change {last_change:.3g} per item > "
            f"tol={tol}); raise max_iter or tol",
            stacklevel=3,
        )


class _LocalStep:
    """One process: the model's (fused) E-step, with its data constants computed once, and its M-step."""

    def __init__(self, model, data: tuple):
        self.model = model
        fused = getattr(model, "expected_statistics", None)
        self.expectation = fused or model.e_step
        prepare = getattr(model, "em_constants", None) if fused is not None else None
        constants = prepare(*data) if callable(prepare) else None
        self.options = {} if constants is None else {"constants": constants}

    def expect(self, data, iteration: int):
        stats, objective = self.expectation(*data, **self.options)
        return stats, float(objective)

    def maximise(self, stats, data) -> None:
        self.model.m_step(stats, *data)


class _AllReduceStep(_LocalStep):
    """Several ranks: this rank's E-step, its additive statistics and objective summed over the ranks with one
    all-reduce, and the M-step from the sums (the same on every rank)."""

    def __init__(self, model, data: tuple):
        super().__init__(model, data)
        self.log_prior = getattr(model, "log_prior", None)
        self.is_main = distributed.is_main_process()

    def expect(self, data, iteration: int):
        stats, objective = self.expectation(*data)
        statistics = self.model.additive_statistics(stats, *data)
        tensors = _tensors_of(statistics)
        # The prior term belongs to the parameters, not to the items: rank 0 alone contributes it.
        prior = float(self.log_prior()) if callable(self.log_prior) and not self.is_main else 0.0
        total = torch.tensor([float(objective) - prior], dtype=torch.float64, device=tensors[0].device)
        distributed.all_reduce_sum_([*tensors, total], what=f"EM iteration {iteration}'s all-reduce")
        return statistics, float(total.item())

    def maximise(self, statistics, data) -> None:
        self.model.m_step_from_statistics(statistics)


def _this_ranks_part(model, data: tuple, num_data: int | None, local_shard: bool) -> tuple[tuple, int]:
    """This rank's items and the total item count; every rank starts from rank 0's parameters."""
    for method in ("additive_statistics", "m_step_from_statistics"):
        if not callable(getattr(model, method, None)):
            raise ConfigError(f"{type(model).__name__} has no {method}() for EM on several processes; fit it in one "
                              "process (without torchrun)")
    if not local_shard:
        num_data = num_data if num_data is not None else int(data[0].shape[0])
        data = distributed.shard(*data)
    elif num_data is None:
        count = torch.tensor([float(data[0].shape[0])], dtype=torch.float64)
        distributed.all_reduce_sum_([count], what="EM's item count")
        num_data = int(count.item())
    distributed.broadcast_module_(model)  # the same start on every rank, whatever each computed
    return data, num_data


def _tensors_of(statistics) -> list[torch.Tensor]:
    if isinstance(statistics, torch.Tensor):
        return [statistics]
    values = statistics.values() if isinstance(statistics, dict) else statistics
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors:
        raise ConfigError("additive_statistics() must return tensors (one, or a dict/tuple of them)")
    return tensors


def fit_em_with_restarts(model, x: torch.Tensor, config: EMConfig) -> EMResult:
    """EM on ``x`` ``(N, D)`` for a model whose ``m_step(responsibilities (N, K), x)`` takes responsibilities, from
    ``config.n_init`` starts; ``model`` ends with the parameters of the start that reached the highest objective.

    Each start is scikit-learn's ``init_params="kmeans"``: hard assignments to k-means++ (or random) centres and
    one M-step, then :func:`fit_em` for at most ``config.max_iter`` iterations (see :func:`~emvi.inference.em.fit_em_from_starts`).
    """
    return fit_em_from_starts(model, (x,), config)[0]


def em_start(model, data: tuple, config: EMConfig, generator: torch.Generator) -> None:
    """Set ``model``'s starting point: its own ``initialise(*data, generator=..., init=...)`` hook when it has one
    (``init`` only if the hook takes it), else hard assignments of the first array's rows to k-means++ (or random)
    centres and one M-step. The number of components is ``model.em_components()`` or ``model.config.num_components``."""
    import inspect

    hook = getattr(model, "initialise", None)
    with torch.no_grad():
        if callable(hook):
            options = {"generator": generator}
            if "init" in inspect.signature(hook).parameters:
                options["init"] = config.init
            hook(*data, **options)
            return
        x = data[0].reshape(data[0].shape[0], -1)
        model.m_step(hard_assignments(x, initial_centres(x, em_components(model), config.init, generator)), *data)


def em_components(model) -> int:
    """Values of the model's discrete latent (its EM responsibilities' last axis)."""
    hook = getattr(model, "em_components", None)
    return int(hook()) if callable(hook) else int(model.config.num_components)


def fit_em_from_starts(model, data: tuple, config: EMConfig) -> tuple[EMResult, float | None]:
    """:func:`fit_em` on ``data`` from ``config.n_init`` starts (:func:`em_start`), keeping the best; returns the
    result and the value of the model's ``finish_em(*data)`` hook (None without one), a climb past EM's fixed point
    (e.g. the exact likelihood of an HMM whose start is its stationary distribution). A model's ``em_steps(*data)``
    hook replaces it as the object EM steps (its E- and M-step on a sufficient statistic, e.g. factor analysis); a
    model whose ``em_by_enumeration()`` hook is true is stepped (and started) by
    :class:`emvi.inference.enumerated_em.EnumeratedEM`."""
    import copy

    protocol = em_protocol(model)  # the model, or its enumerated E-step and gradient M-step
    if not callable(getattr(protocol, "initialise", None)) and em_components(model) > data[0].shape[0]:
        raise ConfigError(f"num_components={em_components(model)} exceeds the {data[0].shape[0]} items; lower it")
    initial_state = copy.deepcopy(model.state_dict())

    def fit_once(generator: torch.Generator):
        model.load_state_dict(initial_state)
        em_start(protocol, data, config, generator)
        steps = model.em_steps(*data) if callable(getattr(model, "em_steps", None)) else protocol
        if steps is protocol:
            result = fit_em(protocol, *data, max_iter=config.max_iter, tol=config.tol, warn=False, seed=config.seed)
        else:
            with distributed.single_process():  # a sufficient statistic every rank holds: the same updates
                result = fit_em(steps, *data, max_iter=config.max_iter, tol=config.tol, warn=False, seed=config.seed)
        finish = getattr(model, "finish_em", None)
        finished = finish(*data) if callable(finish) else None
        return result, finished, copy.deepcopy(model.state_dict())

    def objective(outcome):
        return outcome[0].log_likelihood if outcome[1] is None else outcome[1]

    result, finished, state = best_of_restarts(fit_once, config.n_init, seed=config.seed, objective=objective)
    model.load_state_dict(state)
    return result, finished
