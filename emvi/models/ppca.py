"""Probabilistic PCA and factor analysis: a continuous latent and a linear Gaussian decoder.

Generative story, for each data item n (plate ``"data"``)::

    z_n ~ Normal(0, I_q)
    x_n | z_n ~ Normal(W z_n + μ, Ψ)          Ψ = σ² I_D (PPCA, Tipping & Bishop) or diag(ψ) (factor analysis)

Shapes: ``x`` ``(batch, D)``, ``z`` ``(batch, q)``, ``W`` ``(D, q)``, ``μ`` and ``ψ`` ``(D,)``.

Everything is Gaussian, so the model is solvable in closed form — the seed's step from discrete to continuous
latents without giving up exactness:

* marginal ``x_n ~ Normal(μ, C)``, ``C = W Wᵀ + Ψ``;
* posterior ``z_n | x_n ~ Normal(M⁻¹ Wᵀ Ψ⁻¹ (x_n - μ), M⁻¹)`` with ``M = I_q + Wᵀ Ψ⁻¹ W``;
* EM (Tipping & Bishop 1999; Rubin & Thayer 1982) with ``E[z_n]`` and ``E[z_n z_nᵀ]`` from that posterior:
  ``W ← [Σ (x_n - μ) E[z_n]ᵀ] [Σ E[z_n z_nᵀ]]⁻¹``, ``ψ ← diag(S - W (1/N) Σ E[z_n] (x_n - μ)ᵀ)`` (FA) or
  ``σ² ← tr(S - W (1/N) Σ E[z_n] (x_n - μ)ᵀ) / D`` (PPCA), S the sample covariance; μ is the data mean.

The same model is also fit by SVI through the shared runner with a guide q(z | x) (``LinearGaussianConfig.guide``:
amortised MLP, linear mean-field, linear full-covariance, or the exact posterior, see
:mod:`emvi.guides.linear_gaussian`). Every such q is Gaussian, so its ELBO is a closed form too
(:meth:`LinearGaussianModel.gaussian_elbo`), and the gap log p(x) - ELBO = KL(q(z | x) ‖ p(z | x)) is reported exactly.

Registered as ``"ppca"`` and ``"fa"`` (methods ``em`` and ``svi``); the EM fit, evaluate, load and sample hooks live
in :mod:`emvi.estimators.ppca` and are attached by :mod:`emvi.analysis.ppca`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..guides.amortised import AmortisedNormalGuide
from ..guides.linear_gaussian import ExactPosteriorGuide, LinearGaussianGuide
from ..plates import data_plate
from ..validation import as_float_tensor, check_choice, check_positive_int

NOISE_MODELS = ("isotropic", "diagonal")
GUIDES = ("mlp", "linear", "linear-full", "exact")
MIN_VARIANCE = 1e-8


@dataclass(frozen=True)
class LinearGaussianConfig:
    """Latent size and SVI guide of a linear Gaussian model; the noise model is fixed by the subclass."""

    noise: ClassVar[str] = "isotropic"
    """isotropic (σ² I: probabilistic PCA) or diagonal (diag ψ: factor analysis)."""

    latent_dim: int = 2
    """Size q of the latent z (must be below the number of features D)."""
    guide: str = "mlp"
    """Guide used by SVI: mlp (amortised MLP encoder, diagonal Normal), linear (linear encoder, diagonal Normal:
    the mean-field gap remains), linear-full (linear encoder, full shared covariance: contains the exact
    posterior) or exact (the closed-form posterior: ELBO = log-likelihood)."""
    hidden_dims: tuple[int, ...] = (64,)
    """Hidden sizes of the mlp guide's encoder."""

    def __post_init__(self):
        check_positive_int(self.latent_dim, "latent_dim")
        for size in self.hidden_dims:
            check_positive_int(size, "hidden_dims entries")
        check_choice(self.guide, "guide", GUIDES)
        check_choice(self.noise, "noise", NOISE_MODELS)


@dataclass(frozen=True)
class PPCAConfig(LinearGaussianConfig):
    """Probabilistic PCA: x ~ Normal(W z + μ, σ² I)."""

    cli_aliases: ClassVar[dict] = {"latent_dim": ("-q",)}
    noise: ClassVar[str] = "isotropic"


@dataclass(frozen=True)
class FactorAnalysisConfig(LinearGaussianConfig):
    """Factor analysis: x ~ Normal(W z + μ, diag ψ)."""

    cli_aliases: ClassVar[dict] = {"latent_dim": ("-q",)}
    noise: ClassVar[str] = "diagonal"


def check_linear_gaussian_data(x, latent_dim: int, *, dtype: torch.dtype | None = None,
                               full_rank: bool = False) -> torch.Tensor:
    """Validate ``x`` ``(N, D)``: numbers, finite, at least 2 items, more features than latent dimensions (or as
    many, with ``full_rank``: factor analysis' q = D, scikit-learn's ``n_components=None``).

    Returns a floating tensor (``dtype`` if given; else float tensors keep theirs and the rest become float64).
    """
    keep = dtype or (x.dtype if isinstance(x, torch.Tensor) and x.is_floating_point() else torch.float64)
    x = as_float_tensor(x, "PPCA/FA data", ndim=2, dtype=keep)
    if x.shape[0] < 2:
        raise DataError(f"PPCA/FA needs at least 2 items to estimate a covariance, got shape {tuple(x.shape)}")
    if latent_dim > x.shape[1] - (0 if full_rank else 1):
        raise DataError(f"latent_dim={latent_dim} must be below the number of features D={x.shape[1]}; "
                        "lower --latent-dim")
    return x


class LinearGaussianModel(nn.Module):
    """``p(x, z) = Normal(z | 0, I) Normal(x | W z + μ, Ψ)`` with its closed forms and the EM protocol."""

    def __init__(self, config: LinearGaussianConfig, num_features: int, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = config
        q, d = config.latent_dim, num_features
        self.weight = nn.Parameter(0.1 * torch.randn(d, q, dtype=dtype))
        self.mean = nn.Parameter(torch.zeros(d, dtype=dtype))
        self.log_noise = nn.Parameter(torch.zeros(1 if config.noise == "isotropic" else d, dtype=dtype))

    @property
    def noise_variance(self) -> torch.Tensor:
        """Ψ's diagonal ``(D,)``."""
        return self.log_noise.exp().expand(self.mean.shape[0])

    def forward(self, x: torch.Tensor, num_data: int | None = None):
        q = self.config.latent_dim
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(q), 1.0).to_event(1))
            pyro.sample("x", self.observation_distribution(z), obs=x)

    def observation_distribution(self, z: torch.Tensor) -> dist.Distribution:
        """p(x | z) for ``z`` ``(..., q)``: event shape ``(D,)``."""
        return dist.Normal(z @ self.weight.T + self.mean, self.noise_variance.sqrt()).to_event(1)

    # -- closed forms --------------------------------------------------------------------------------------------

    def covariance(self) -> torch.Tensor:
        """``C = W Wᵀ + Ψ`` ``(D, D)``."""
        return self.weight @ self.weight.T + torch.diag(self.noise_variance)

    def marginal(self) -> dist.LowRankMultivariateNormal:
        """p(x) = Normal(μ, W Wᵀ + Ψ): batch ``()``, event ``(D,)``. The low-rank-plus-diagonal form evaluates
        log-densities through the q x q capacitance matrix (Woodbury), O(D q²) instead of a D x D Cholesky."""
        return dist.LowRankMultivariateNormal(self.mean, cov_factor=self.weight, cov_diag=self.noise_variance)

    def _woodbury(self, x: torch.Tensor):
        """The pieces every closed form shares: ``x - μ`` ``(N, D)``, ``u = (x - μ) Ψ⁻¹ W`` ``(N, q)`` and the
        Cholesky factor ``L`` ``(q, q)`` of the posterior precision ``M = I + Wᵀ Ψ⁻¹ W``."""
        centred = x - self.mean
        scaled = self.weight / self.noise_variance[:, None]  # Ψ⁻¹ W  (D, q)
        precision = torch.eye(self.config.latent_dim, dtype=x.dtype, device=x.device) + self.weight.T @ scaled
        return centred, centred @ scaled, torch.linalg.cholesky(precision)

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` exact log p(x_n) = log Normal(x_n | μ, C), through the Woodbury identities

            C⁻¹ = Ψ⁻¹ - Ψ⁻¹ W M⁻¹ Wᵀ Ψ⁻¹,        log det C = log det M + Σ_d log ψ_d,

        so the cost is O(N D q) with no D x D matrix (MNIST: D = 784).
        """
        centred, u, chol = self._woodbury(x)
        return self._log_likelihood(centred * centred, u, chol)

    def _log_likelihood(self, squared, u, chol) -> torch.Tensor:
        psi = self.noise_variance
        v = torch.linalg.solve_triangular(chol, u.T, upper=False)  # L⁻¹ uᵀ  (q, N): uᵀ M⁻¹ u = |v|²
        mahalanobis = squared @ (1 / psi) - (v * v).sum(0)
        log_det = 2 * torch.diagonal(chol).log().sum() + psi.log().sum()
        return -0.5 * (psi.shape[0] * math.log(2 * math.pi) + log_det + mahalanobis)

    def posterior_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``(N, q)`` and the shared covariance ``(q, q)`` of p(z | x): M⁻¹ Wᵀ Ψ⁻¹ (x_n - μ) and M⁻¹."""
        _, u, chol = self._woodbury(x)
        return _posterior_from(u, chol)

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """Exact p(z | x) for ``x`` ``(N, D)``: batch ``(N,)``, event ``(q,)``."""
        loc, covariance = self.posterior_moments(x)
        return dist.MultivariateNormal(loc, covariance_matrix=covariance)

    def gaussian_elbo(self, x: torch.Tensor, loc: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
        """``(N,)`` ELBO of a Gaussian q(z_n) = Normal(loc_n, covariance), in closed form.

        ``loc`` ``(N, q)``, ``covariance`` ``(q, q)`` or ``(N, q, q)``. With r_n = x_n - μ - W m_n::

            E_q[log p(x_n | z_n)] = -½ [D log 2π + Σ log ψ + r_nᵀ Ψ⁻¹ r_n + tr(Wᵀ Ψ⁻¹ W S)]
            E_q[log p(z_n)]       = -½ [q log 2π + m_nᵀ m_n + tr S]
            H[q]                  =  ½ [q log 2πe + log det S]

        It equals log p(x_n) - KL(q ‖ p(z_n | x_n)), and log p(x_n) exactly at q = p(z_n | x_n).
        """
        psi = self.noise_variance
        d, q = psi.shape[0], loc.shape[-1]
        residual = x - self.mean - loc @ self.weight.T
        gram = self.weight.T @ (self.weight / psi[:, None])  # Wᵀ Ψ⁻¹ W  (q, q)
        trace_gram = (gram * covariance).sum((-2, -1))  # tr(Wᵀ Ψ⁻¹ W S), S symmetric
        trace = torch.diagonal(covariance, dim1=-2, dim2=-1).sum(-1)
        log_2pi = math.log(2 * math.pi)
        expected_lik = -0.5 * (d * log_2pi + psi.log().sum() + (residual ** 2 / psi).sum(-1) + trace_gram)
        expected_prior = -0.5 * (q * log_2pi + (loc ** 2).sum(-1) + trace)
        entropy = 0.5 * (q * (log_2pi + 1) + torch.logdet(covariance))
        return expected_lik + expected_prior + entropy

    # -- EM ------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def initialise(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """μ = data mean (its ML value, fixed by EM), small random W, Ψ = the data variances."""
        self.mean.copy_(x.mean(0))
        # drawn on the CPU so a seeded CPU generator serves any device
        noise = torch.randn(self.weight.shape, generator=generator, dtype=x.dtype).to(x.device)
        self.weight.copy_(noise * x.std(0).mean() * 0.1)
        variance = x.var(0, unbiased=False).clamp_min(MIN_VARIANCE)
        self.log_noise.copy_(variance.log() if self.config.noise == "diagonal" else variance.mean().log().reshape(1))

    @torch.no_grad()
    def e_step(self, x: torch.Tensor):
        centred, u, chol = self._woodbury(x)  # shared by the posterior moments and the log-likelihood
        expected_z, covariance = _posterior_from(u, chol)  # (N, q), (q, q)
        squared = centred * centred
        stats = {
            "xz": centred.T @ expected_z,  # Σ (x_n - μ) E[z_n]ᵀ   (D, q)
            "zz": x.shape[0] * covariance + expected_z.T @ expected_z,  # Σ E[z zᵀ]   (q, q)
            "xx_diag": squared.sum(0),  # diag Σ (x_n - μ)(x_n - μ)ᵀ   (D,)
        }
        return stats, self._log_likelihood(squared, u, chol).sum()

    @torch.no_grad()
    def m_step(self, stats, x: torch.Tensor) -> None:
        self.m_step_from_statistics(self.additive_statistics(stats, x))

    @torch.no_grad()
    def additive_statistics(self, stats, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`e_step`'s sums with the item count ``items`` (1,): all add over items (EM on several processes)."""
        return {**stats, "items": torch.tensor([float(x.shape[0])], dtype=stats["zz"].dtype, device=stats["zz"].device)}

    @torch.no_grad()
    def m_step_from_statistics(self, stats: dict[str, torch.Tensor]) -> None:
        n = stats["items"][0]
        weight = torch.linalg.solve(stats["zz"], stats["xz"].T).T  # Σxz (Σzz)⁻¹, Σzz symmetric
        residual = (stats["xx_diag"] - (weight * stats["xz"]).sum(1)) / n  # diag(S - W (1/N) Σ E[z](x-μ)ᵀ)
        residual = residual.clamp_min(MIN_VARIANCE)
        self.weight.copy_(weight)
        self.log_noise.copy_(residual.log() if self.config.noise == "diagonal" else residual.mean().log().reshape(1))

    # -- factor analysis by the profile likelihood ----------------------------------------------------------------

    @torch.no_grad()
    def log_likelihood_from_covariance(self, covariance: torch.Tensor, num_data: int) -> torch.Tensor:
        """Total exact log-likelihood of ``num_data`` items whose (biased, 1/N) sample covariance about μ is
        ``covariance`` ``(D, D)``: ``-N/2 [D log 2π + log det C + tr(C⁻¹ S)]``, by the Woodbury identities
        (``tr(C⁻¹ S) = tr(Ψ⁻¹ S) - tr(M⁻¹ Wᵀ Ψ⁻¹ S Ψ⁻¹ W)``), O(D² q). Valid when μ is the data mean, as in EM."""
        psi = self.noise_variance
        scaled = self.weight / psi[:, None]  # Ψ⁻¹ W  (D, q)
        eye = torch.eye(self.config.latent_dim, dtype=psi.dtype, device=psi.device)
        chol = torch.linalg.cholesky(eye + self.weight.T @ scaled)
        gram = scaled.T @ (covariance @ scaled)  # Wᵀ Ψ⁻¹ S Ψ⁻¹ W  (q, q)
        trace = (torch.diagonal(covariance) / psi).sum() - torch.diagonal(torch.cholesky_solve(gram, chol)).sum()
        log_det = 2 * torch.diagonal(chol).log().sum() + psi.log().sum()
        return -0.5 * num_data * (psi.shape[0] * math.log(2 * math.pi) + log_det + trace)

    @torch.no_grad()
    def profile_update(self, covariance: torch.Tensor) -> None:
        """One step of factor analysis' profile-likelihood ascent from the sample covariance ``S`` ``(D, D)``:

        1. W exactly maximises the likelihood given the current Ψ. With the whitened covariance
           ``S̃ = Ψ^-½ S Ψ^-½ = U Λ Uᵀ`` (eigenvalues λ_1 >= λ_2 >= ...) the problem is PPCA with unit noise, whose
           maximiser is ``W = Ψ^½ U_q (Λ_q - I)₊^½`` (Tipping & Bishop 1999), up to a rotation of z;
        2. ``ψ ← diag(S - W Wᵀ)``, floored at ``MIN_VARIANCE``.

        Step 2 is the EM update of Ψ from the posterior at (W, Ψ): at a W that maximises over W given Ψ,
        ``S C⁻¹ W = W``, so EM's ``diag(S - W M⁻¹ Wᵀ Ψ⁻¹ S)`` equals ``diag(S - W Wᵀ)``. Both steps never lower the
        likelihood, so the ascent is monotone; unlike an EM step, step 1 jumps to W's optimum at once, which is what
        makes it converge in tens of iterations where EM crawls along the ridge of W for thousands.
        Only for diagonal noise (the isotropic case has its closed form).
        """
        self.maximise_weight(covariance)
        self.update_noise(covariance)

    @torch.no_grad()
    def maximise_weight(self, covariance: torch.Tensor) -> None:
        """Step 1 of :meth:`profile_update`: W ← Ψ^½ U_q (Λ_q - I)₊^½, the maximiser given Ψ."""
        if self.config.noise != "diagonal":
            raise ConfigError("profile_update is the factor-analysis (diagonal noise) update; PPCA has a closed form")
        q = self.config.latent_dim
        root = self.noise_variance.sqrt()
        whitened = covariance / root[:, None] / root[None, :]
        eigenvalues, eigenvectors = torch.linalg.eigh(whitened)  # ascending
        top, vectors = eigenvalues[-q:].flip(0), eigenvectors[:, -q:].flip(1)
        self.weight.copy_(root[:, None] * vectors * (top - 1).clamp_min(0).sqrt())

    @torch.no_grad()
    def update_noise(self, covariance: torch.Tensor) -> None:
        """Step 2 of :meth:`profile_update`: ψ ← diag(S - W Wᵀ), floored at ``MIN_VARIANCE``."""
        psi = (torch.diagonal(covariance) - (self.weight * self.weight).sum(1)).clamp_min(MIN_VARIANCE)
        self.log_noise.copy_(psi.log())

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        z = torch.randn(num_samples, self.config.latent_dim, dtype=self.mean.dtype, device=self.mean.device)
        return self.observation_distribution(z).sample()

    def num_parameters(self) -> int:
        """Free parameters for BIC/AIC: W up to rotation (D q - q (q - 1) / 2), μ, and the noise."""
        d, q = self.mean.shape[0], self.config.latent_dim
        return d * q - q * (q - 1) // 2 + d + (1 if self.config.noise == "isotropic" else d)


def _posterior_from(u: torch.Tensor, chol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p(z | x)'s means M⁻¹ uᵀ ``(N, q)`` and covariance M⁻¹ ``(q, q)`` from :meth:`LinearGaussianModel._woodbury`'s
    ``u`` and Cholesky factor of M."""
    return torch.cholesky_solve(u.T, chol).T, torch.cholesky_inverse(chol)


def guide_moments(guide: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(N, q)`` and covariance (``(q, q)`` or ``(N, q, q)``) of any of the SVI guides' q(z | x)."""
    if isinstance(guide, ExactPosteriorGuide):
        return guide.model.posterior_moments(x)
    if isinstance(guide, LinearGaussianGuide):
        return guide.moments(x)
    if isinstance(guide, AmortisedNormalGuide):
        q = guide.distribution(x.to(next(guide.parameters()).dtype))
        return q.loc, torch.diag_embed(q.scale ** 2)
    raise ConfigError(f"no closed-form moments for a {type(guide).__name__}; use an emvi linear Gaussian or amortised guide")


@torch.no_grad()
def closed_form_elbo(model: LinearGaussianModel, guide: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N,)`` exact ELBO of ``guide`` (no Monte Carlo noise): log p(x_n) - KL(q(z_n | x_n) ‖ p(z_n | x_n))."""
    loc, covariance = guide_moments(guide, x)
    dtype = model.mean.dtype
    return model.gaussian_elbo(x.to(dtype), loc.to(dtype), covariance.to(dtype))


def make_guide(config: LinearGaussianConfig, model: LinearGaussianModel, num_features: int) -> nn.Module:
    """The SVI guide named by ``config.guide`` (see :class:`LinearGaussianConfig`)."""
    if config.guide == "exact":
        return ExactPosteriorGuide(model)
    if config.guide in ("linear", "linear-full"):
        return LinearGaussianGuide(num_features, config.latent_dim, full_covariance=config.guide == "linear-full")
    return AmortisedNormalGuide(num_features, config.latent_dim, config.hidden_dims, site="z")
