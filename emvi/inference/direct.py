"""Direct maximisation of an exact log-likelihood over a model's unconstrained parameters (L-BFGS).

EM's M-step is exact only when the expected complete-data log-likelihood has a closed-form maximiser. Under a
constraint that couples parameters, e.g. an HMM whose initial distribution is the stationary distribution of its
transition matrix, the step is a generalised one and EM stalls short of the constrained optimum. Finishing with
L-BFGS on log p(x | θ) itself (the forward algorithm is differentiable) climbs the rest of the way: the same
objective, so monotonicity is kept by accepting the result only when it is higher.
"""

from __future__ import annotations

import math

import torch


def maximise_log_likelihood(model: torch.nn.Module, *data, max_iter: int = 500,
                            tolerance_grad: float = 1e-9) -> tuple[float, float]:
    """Climb ``model.log_likelihood(*data).sum()`` by L-BFGS (strong Wolfe line search) over ``model.parameters()``
    (unconstrained: constrained parameters are PyroParams); returns ``(before, after)``, totals in nats. The
    parameters are restored when the climb does not end higher (e.g. a line search that met a non-finite value)."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        before = float(model.log_likelihood(*data).sum())
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=tolerance_grad,
                                  tolerance_change=1e-14, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -model.log_likelihood(*data).sum()
        if torch.isfinite(loss):
            loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        after = float(model.log_likelihood(*data).sum())
        if not (math.isfinite(after) and after >= before):
            for param, value in zip(params, saved, strict=True):
                param.copy_(value)
            after = before
    return before, after


__all__ = ["maximise_log_likelihood"]
