"""The exact E-step shared by the models whose only latent is one enumerated discrete site per item.

For such a model, ``model(x)`` states ``z_n ~ Categorical(π)`` (site ``"z"``, enumerated) and ``x_n ~ F(θ_{z_n})``
(site ``"x"``, observed) inside the data plate. Tracing it with ``z`` enumerated in parallel puts the K values of
``z`` on a batch dimension of their own, so the joint log p(x_n, z_n = k) comes from the model's own sample
statements, not from a second hand-written density.
"""

from __future__ import annotations

import pyro.poutine as poutine
import torch


def enumerated_log_joint(model, x: torch.Tensor) -> torch.Tensor:
    """``(K, N)`` log π_k + log F(x_n | θ_k), read off a trace of ``model(x)`` with its site ``"z"`` enumerated; the
    component dimension comes first, as enumeration produces it."""
    trace = poutine.trace(poutine.enum(model, first_available_dim=-2)).get_trace(x)
    z, obs = trace.nodes["z"], trace.nodes["x"]
    return obs["fn"].log_prob(obs["value"]) + z["fn"].log_prob(z["value"])  # (K, N) + (K, 1 or N)


def normalise_log_joint(joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(responsibilities (N, K), log p(x_n) (N,))`` from the joint ``(K, N)``, which is overwritten.

    The log-sum-exp over k is fused with the normalisation (one exp pass over (K, N) instead of two), and the
    responsibilities are a transposed view, so an M-step's ``resp.T @ statistics`` reads contiguous memory.
    """
    peak = joint.amax(0, keepdim=True)  # (1, N)
    resp = joint.sub_(peak).exp_()
    total = resp.sum(0, keepdim=True)  # Σ_k exp(joint - peak) >= 1
    log_norm = (peak + total.log())[0]
    return resp.div_(total).T, log_norm
