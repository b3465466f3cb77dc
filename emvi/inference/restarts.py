"""Restarts: fit from several starting points and keep the best, as scikit-learn's ``n_init`` does.

EM, natural-gradient SVI and the runner all climb to a local optimum of a multimodal objective (a mixture's
likelihood has at least K! equivalent modes and usually worse ones besides), so the start matters. Every restart
draws its starting point from one generator seeded once, which makes the whole sequence reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from ..validation import check_positive_int

Outcome = TypeVar("Outcome")


@dataclass(frozen=True)
class Restarts(Generic[Outcome]):
    """The kept outcome of ``n_init`` restarts, its index and every restart's objective, in order."""

    best: Outcome
    chosen: int
    objectives: tuple[float, ...]


def run_restarts(fit_once: Callable[[int], Outcome], n_init: int, *,
                 objective: Callable[[Outcome], float]) -> Restarts[Outcome]:
    """Call ``fit_once(r)`` for r = 0 .. ``n_init``-1 and keep the outcome with the highest ``objective(outcome)``
    (the first one on ties; a non-finite objective never wins over a finite one). Only the best outcome so far is
    held, so a restart's memory is freed once a better one comes."""
    check_positive_int(n_init, "n_init")
    best, chosen, best_value, objectives = None, 0, -math.inf, []
    for restart in range(n_init):
        outcome = fit_once(restart)
        value = float(objective(outcome))
        objectives.append(value)
        if restart == 0 or (math.isfinite(value) and value > best_value):
            best, chosen, best_value = outcome, restart, value if math.isfinite(value) else -math.inf
    return Restarts(best, chosen, tuple(objectives))


def best_of_restarts(fit_once: Callable[[torch.Generator], Outcome], n_init: int, *, seed: int,
                     objective: Callable[[Outcome], float]) -> Outcome:
    """Call ``fit_once(generator)`` ``n_init`` times with one generator seeded by ``seed``; return the outcome with
    the highest ``objective(outcome)`` (:func:`run_restarts`'s rule)."""
    generator = torch.Generator().manual_seed(int(seed))
    return run_restarts(lambda _: fit_once(generator), n_init, objective=objective).best


__all__ = ["Restarts", "best_of_restarts", "run_restarts"]
