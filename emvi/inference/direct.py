"""Direct maximisation of an exact objective over a model's unconstrained parameters (L-BFGS).

EM's M-step is exact only when the expected complete-data log-likelihood has a closed-form maximiser. Under a
constraint that couples parameters, e.g. an HMM whose initial distribution is the stationary distribution of its
transition matrix, the step is a generalised one and EM stalls short of the constrained optimum. Finishing with
L-BFGS on log p(x | θ) itself (the forward algorithm is differentiable) climbs the rest of the way: the same
objective, so monotonicity is kept by accepting the result only when it is higher. The same climb finds the MAP a
declared model's NUTS chains start from (:func:`emvi.inference.mcmc.fit_map`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch


def climb(objective: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], *, max_iter: int = 500,
          tolerance_grad: float = 1e-9, tolerance_change: float = 1e-14) -> tuple[float, float]:
    """Maximise the scalar ``objective()`` (differentiable in ``params``) by L-BFGS with a strong Wolfe line search;
    returns ``(before, after)``. A probe whose objective is not finite gets no gradient, so the line search backs
    off; the parameters are restored when the climb does not end higher."""
    params = list(params)
    saved = [p.detach().clone() for p in params]
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=tolerance_grad,
                                  tolerance_change=tolerance_change, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -objective()
        if torch.isfinite(loss):
            loss.backward()
        return loss

    with torch.enable_grad():  # some objectives (Pyro's differentiable ELBOs) refuse to run without autograd
        before = float(objective().detach())
        optimizer.step(closure)
        after = float(objective().detach())
    if not (math.isfinite(after) and after >= before):
        with torch.no_grad():
            for param, value in zip(params, saved, strict=True):
                param.copy_(value)
        after = before
    return before, after


def maximise_log_likelihood(model: torch.nn.Module, *data, max_iter: int = 500,
                            tolerance_grad: float = 1e-9) -> tuple[float, float]:
    """Climb ``model.log_likelihood(*data).sum()`` by :func:`climb` over ``model.parameters()`` (unconstrained:
    constrained parameters are PyroParams); returns ``(before, after)``, totals in nats."""
    params = [p for p in model.parameters() if p.requires_grad]
    return climb(lambda: model.log_likelihood(*data).sum(), params, max_iter=max_iter, tolerance_grad=tolerance_grad)


__all__ = ["climb", "maximise_log_likelihood"]
