"""Guides for linear Gaussian models (probabilistic PCA, factor analysis), whose exact posterior is Gaussian.

For ``z ~ Normal(0, I_q)``, ``x | z ~ Normal(W z + μ, Ψ)`` the posterior is

    p(z_n | x_n) = Normal(z_n | M⁻¹ Wᵀ Ψ⁻¹ (x_n - μ), M⁻¹),        M = I_q + Wᵀ Ψ⁻¹ W,

a mean linear in ``x_n`` and one covariance shared by every item. Two guides bracket it:

* :class:`ExactPosteriorGuide`: q(z | x) = p(z | x) recomputed from the model's current parameters — the E-step
  written as a guide. Then log p(x, z) - log q(z | x) = log p(x) for every draw z, so each single-sample ELBO equals
  the log-likelihood exactly (the KL gap is zero).
* :class:`LinearGaussianGuide`: q(z_n | x_n) = Normal(A x_n + b, S) with learned ``A`` ``(D, q)``, ``b`` ``(q,)`` and
  a shared covariance ``S``: diagonal (mean-field; its best fit leaves the gap ½ (Σ_i log M_ii - log det M) per item)
  or full (``full_covariance=True``; the family contains the exact posterior, so the gap can close).

The amortised MLP guide of :mod:`emvi.guides.amortised` is the third, general-purpose choice.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..plates import data_plate

MIN_SCALE = 1e-5
"""Floor on the guide's standard deviations, so log q stays finite."""


class ExactPosteriorGuide(nn.Module):
    """q(z | x) = p(z | x) from ``model.posterior(x)`` (batch ``(batch,)``, event ``(q,)``); no parameters of its own.

    The model is held in a list so that its parameters are not registered (and optimised) a second time through
    the guide. Gradients of the ELBO with this guide are gradients of the exact log-likelihood.
    """

    def __init__(self, model: nn.Module, site: str = "z"):
        super().__init__()
        self._model = [model]
        self.site = site

    @property
    def model(self) -> nn.Module:
        """The model whose posterior this guide is."""
        return self._model[0]

    def forward(self, x: torch.Tensor, *rest, num_data: int | None = None):
        posterior = self.model.posterior(x)
        with data_plate(x, num_data):
            return pyro.sample(self.site, posterior)


class LinearGaussianGuide(nn.Module):
    """q(z_n | x_n) = Normal(A x_n + b, S): an amortised Gaussian whose encoder is linear, as the exact one is.

    Args:
        num_features: D.
        latent_dim: q.
        full_covariance: S = L Lᵀ with a learned lower-triangular ``L`` ``(q, q)``; otherwise S = diag(s²).

    Shapes: ``x`` ``(batch, D)``; the site has batch shape ``(batch,)`` and event shape ``(q,)``.
    """

    def __init__(self, num_features: int, latent_dim: int, *, full_covariance: bool = False, site: str = "z"):
        super().__init__()
        self.site, self.latent_dim, self.full_covariance = site, latent_dim, full_covariance
        self.encoder = nn.Linear(num_features, latent_dim)
        with torch.no_grad():
            self.encoder.weight.mul_(0.1)  # start near the prior: small means
        # Unconstrained scale parameters: softplus on the diagonal keeps it positive; the strict lower triangle of
        # a full L is free.
        self.raw_scale = nn.Parameter(torch.full((latent_dim,), 0.5413))  # softplus(0.5413) = 1
        if full_covariance:
            self.lower = nn.Parameter(torch.zeros(latent_dim, latent_dim))

    def scale_tril(self) -> torch.Tensor:
        """The shared ``L`` ``(q, q)`` with S = L Lᵀ (diagonal unless ``full_covariance``)."""
        diagonal = torch.diag(nn.functional.softplus(self.raw_scale) + MIN_SCALE)
        if self.full_covariance:
            return diagonal + torch.tril(self.lower, diagonal=-1)
        return diagonal

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(batch, q)`` and shared covariance ``(q, q)`` of q(z | x)."""
        tril = self.scale_tril()
        return self.encoder(x.to(self.encoder.weight.dtype)), tril @ tril.T

    def distribution(self, x: torch.Tensor) -> dist.Distribution:
        loc = self.encoder(x.to(self.encoder.weight.dtype))
        if self.full_covariance:
            return dist.MultivariateNormal(loc, scale_tril=self.scale_tril())
        return dist.Normal(loc, nn.functional.softplus(self.raw_scale) + MIN_SCALE).to_event(1)

    def forward(self, x: torch.Tensor, *rest, num_data: int | None = None):
        posterior = self.distribution(x)
        with data_plate(x, num_data):
            return pyro.sample(self.site, posterior)
