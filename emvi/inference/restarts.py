"""Restarts: fit from several starting points and keep the best, as scikit-learn's ``n_init`` does.

EM, natural-gradient SVI and the runner all climb to a local optimum of a multimodal objective (a mixture's
likelihood has at least K! equivalent modes and usually worse ones besides), so the start matters. Every restart
draws its starting point from one generator seeded once, which makes the whole sequence reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch

from ..validation import check_positive_int

Outcome = TypeVar("Outcome")


def best_of_restarts(fit_once: Callable[[torch.Generator], Outcome], n_init: int, *, seed: int,
                     objective: Callable[[Outcome], float]) -> Outcome:
    """Call ``fit_once(generator)`` ``n_init`` times with one generator seeded by ``seed``; return the outcome with
    the highest ``objective(outcome)`` (the first one on ties; a non-finite objective never wins over a finite one)."""
    check_positive_int(n_init, "n_init")
    generator = torch.Generator().manual_seed(int(seed))
    best, best_value = None, -math.inf
    for _ in range(n_init):
        outcome = fit_once(generator)
        value = float(objective(outcome))
        if best is None or (math.isfinite(value) and value > best_value):
            best, best_value = outcome, value
    return best


__all__ = ["best_of_restarts"]
