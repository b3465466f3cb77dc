"""The amortised Gaussian guide of Auto-Encoding Variational Bayes.

    q(t_n | x_n, φ) = Normal(t_n | g_μ(x_n | φ), diag g_σ(x_n | φ)²),      t_n = g_μ(x_n) + g_σ(x_n) ⊙ ε,  ε ~ Normal(0, I)

One encoder network ``g`` maps a flat observation ``(batch, D)`` to ``(batch, 2 q)``: the mean and an unconstrained
scale (softplus keeps σ positive). Sampling is reparameterised (``rsample`` of
:class:`emvi.distributions.DiagonalNormal`), so Trace_ELBO's gradient flows through ``t`` into φ — the
reparameterisation trick.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..distributions import DiagonalNormal
from ..nn import make_encoder
from ..plates import data_plate

MIN_SCALE = 1e-5
"""Floor on g_σ so log q stays finite however confident the encoder becomes."""


class AmortisedNormalGuide(nn.Module):
    """q(t | x) = Normal(g_μ(x), diag g_σ(x)²) over the site ``site`` (batch shape ``(batch,)``, event ``(q,)``).

    Args:
        num_features: D, the size of a flat observation.
        latent_dim: q.
        hidden_dims: hidden sizes of an MLP encoder.
        architecture: "mlp" or "conv" (images; needs ``image_shape``).
        image_shape: ``(C, H, W)`` of image data.

    A plain ``nn.Module`` (the runner optimises ``parameters()`` directly), which keeps Pyro's per-call module
    bookkeeping out of every step.
    """

    def __init__(self, num_features: int, latent_dim: int, hidden_dims: Sequence[int] = (400,), *,
                 architecture: str = "mlp", image_shape: tuple[int, int, int] | None = None, site: str = "t"):
        super().__init__()
        self.site = site
        self.latent_dim = latent_dim
        self.encoder = make_encoder(architecture, num_features, 2 * latent_dim, tuple(hidden_dims), image_shape)

    def loc_scale(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g_μ(x) and g_σ(x), each ``(batch, q)``, for a batch ``x`` ``(batch, D)``."""
        loc, raw_scale = self.encoder(x if x.is_floating_point() else x.float()).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw_scale) + MIN_SCALE

    def distribution(self, x: torch.Tensor) -> dist.Normal:
        """q(t | x) for a batch ``x`` ``(batch, D)``: a Normal with batch shape ``(batch, q)`` (not yet ``to_event``)."""
        return dist.Normal(*self.loc_scale(x))

    def forward(self, x: torch.Tensor, *rest, num_data: int | None = None):
        loc, scale = self.loc_scale(x)
        with data_plate(x, num_data):
            return pyro.sample(self.site, DiagonalNormal(loc, scale))
