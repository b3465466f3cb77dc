"""The data plate every emvi model and guide puts around its per-item sites, and the tag of training-only sites."""

from __future__ import annotations

import pyro
import torch


def data_plate(batch: torch.Tensor, num_data: int | None = None, *, name: str = "data", dim: int | None = None):
    """``pyro.plate(name, N)`` over a mini-batch whose first dimension holds ``batch.shape[0]`` of the N items.

    The runner has already drawn the mini-batch, so the plate only has to scale log-densities by N / batch (making
    mini-batch ELBOs unbiased for the full data). Passing the positions ``0..batch-1`` as ``subsample`` gives that
    scale without Pyro drawing its own ``randperm(N)`` on every call, which costs O(N) time per step and would
    consume random numbers the runner's reproducibility accounts for.
    """
    size = batch.shape[0]
    return pyro.plate(name, num_data or size, subsample=torch.arange(size, device=batch.device), dim=dim,
                      device=batch.device)


TRAINING_TERM = "training_term"
"""``infer`` key of guide factors that shape training only (e.g. M2's classification term α log q(y | x)): they are
no part of p(x) or of the ELBO, so :func:`emvi.inference.likelihood.without_training_terms` hides them from every
estimate."""
