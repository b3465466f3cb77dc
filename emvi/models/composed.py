"""A latent-variable model stated declaratively: a latent, a mapping from latent to observation parameters, and a
likelihood family.

Generative story, for each data item n (plate ``"data"``)::

    t_n ~ Normal(0, I_q)                          latent = "gaussian"  (continuous, amortised guide)
    z_n ~ Categorical(π),  π ~ Dirichlet(α)       latent = "discrete"  (enumerated exactly, MAP globals)
    η_n = f(t_n | θ)                              mapping = "linear" | "mlp" | "conv"   (or η_n = θ_{z_n}: "index")
    x_n ~ p(x | η_n)                              likelihood = "bernoulli" | "normal" | "poisson" | "categorical"

Shapes: ``x`` is ``(batch, D)`` (categorical: integer codes ``(batch, D)`` with values in ``[0, num_categories)``);
``η`` is ``(batch, D * P)`` with ``P`` raw parameters per feature (1 for Bernoulli logits and Poisson log-rates, 1 for
Normal means plus a learned per-feature log-scale, ``num_categories`` logits for categorical). Sites: ``"t"`` or
``"z"`` with batch shape ``(batch,)``, ``"x"`` with event shape ``(D,)``.

The seed's VAE is ``latent="gaussian", mapping="mlp", likelihood="bernoulli"``; a Poisson mixture is
``latent="discrete", mapping="index", likelihood="poisson"``; probabilistic PCA is ``gaussian/linear/normal``.

A discrete latent with the index mapping also fits by EM (:meth:`ComposedModel.e_step` / :meth:`ComposedModel.m_step`,
the protocol of :func:`emvi.inference.em.fit_em`): the E-step reads p(z_n = k | x_n) off a trace of :meth:`forward`
with ``z`` enumerated, and every likelihood has a closed-form M-step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..declaration import Declaration, conv, declare, latent, learned, linear, mlp, observed, param, table
from ..distributions import BernoulliLogits, StandardNormal
from ..errors import ConfigError
from ..nn import make_decoder
from ..plates import data_plate
from ..validation import check_choice, check_positive_int
from ._enumeration import enumerated_log_joint, normalise_log_joint

LATENTS = ("gaussian", "discrete")
MAPPINGS = ("index", "linear", "mlp", "conv")
LIKELIHOODS = ("bernoulli", "normal", "poisson", "categorical")


@dataclass(frozen=True)
class ComposedConfig:
    """The declarative description of a model; every field is a choice or a size."""

    latent: str = "gaussian"
    """gaussian (t ~ Normal(0, I), amortised Gaussian guide) or discrete (z ~ Categorical(π), enumerated)."""
    latent_dim: int = 2
    """Size q of a gaussian latent."""
    num_components: int = 3
    """Number of values K of a discrete latent."""
    mapping: str = "mlp"
    """index (a parameter table per component; discrete latents), linear, mlp or conv (gaussian latents; conv needs
    images with sides divisible by 4)."""
    hidden_dims: tuple[int, ...] = (64,)
    """Hidden layer sizes of the amortised MLP encoder; the mlp decoder mirrors them."""
    likelihood: str = "bernoulli"
    """bernoulli, normal, poisson or categorical."""
    num_categories: int = 2
    """Number of categories per feature of a categorical likelihood."""
    weight_concentration: float = 1.0
    """Dirichlet concentration α of the mixture weights' prior (discrete latents); 1 is flat."""

    def __post_init__(self):
        check_choice(self.latent, "latent", LATENTS)
        check_choice(self.mapping, "mapping", MAPPINGS)
        check_choice(self.likelihood, "likelihood", LIKELIHOODS)
        check_positive_int(self.latent_dim, "latent_dim")
        check_positive_int(self.num_components, "num_components")
        check_positive_int(self.num_categories, "num_categories", minimum=2)
        for size in self.hidden_dims:
            check_positive_int(size, "hidden_dims entries")
        if not 1.0 <= self.weight_concentration < math.inf:  # the EM M-step needs the MAP mode to exist
            raise ConfigError(f"weight_concentration must be a finite number >= 1 (1 is flat), got "
                              f"{self.weight_concentration}")
        if (self.latent == "discrete") != (self.mapping == "index"):
            raise ConfigError(
                f"mapping {self.mapping!r} does not fit latent {self.latent!r}: use mapping 'index' with a discrete "
                "latent, and 'linear', 'mlp' or 'conv' with a gaussian one"
            )


    def declaration(self, name: str = "composed") -> Declaration:
        """The same model as a declaration (:mod:`emvi.declaration`): composed is one case of declared models.
        With the same parameters, :class:`emvi.models.declared.DeclaredModel` built from it gives the same ELBO
        (tested); parameter names differ (``decoder`` is ``networks["x__<param>"]``, ``component_params`` the
        table ``learned["x__<param>"]``, ``log_scale`` the learned ``x__scale``, the weights the global ``pi``)."""
        param_name = {"bernoulli": "logits", "poisson": "rate", "normal": "loc", "categorical": "logits"}[
            self.likelihood]
        extra = {"scale": learned()} if self.likelihood == "normal" else {}
        categories = {"categories": self.num_categories} if self.likelihood == "categorical" else {}
        if self.latent == "discrete":
            return declare(
                name,
                param("pi", "dirichlet", shape=(self.num_components,), concentration=self.weight_concentration),
                latent("z", "categorical", categories=self.num_components, probs="pi"),
                observed("x", self.likelihood, **categories, **{param_name: table("z")}, **extra))
        mapping = {"linear": linear("t"), "conv": conv("t"),
                   "mlp": mlp("t", hidden=tuple(reversed(self.hidden_dims)))}[self.mapping]
        return declare(name, latent("t", "normal", dim=self.latent_dim),
                       observed("x", self.likelihood, **categories, **{param_name: mapping}, **extra))


class Likelihood(nn.Module):
    """Turns raw parameters ``η`` of shape ``(..., D * P)`` into a distribution over ``x`` with event shape ``(D,)``."""

    def __init__(self, family: str, num_features: int, num_categories: int = 2):
        super().__init__()
        self.family, self.num_features, self.num_categories = family, num_features, num_categories
        if family == "normal":
            self.log_scale = nn.Parameter(torch.zeros(num_features))

    @property
    def params_per_feature(self) -> int:
        return self.num_categories if self.family == "categorical" else 1

    def forward(self, eta: torch.Tensor) -> dist.Distribution:
        if self.family == "bernoulli":
            return BernoulliLogits(eta)
        if self.family == "poisson":
            return dist.Poisson(eta.clamp(max=30.0).exp()).to_event(1)
        if self.family == "normal":
            return dist.Normal(eta, self.log_scale.exp()).to_event(1)
        logits = eta.reshape(*eta.shape[:-1], self.num_features, self.num_categories)
        return dist.Categorical(logits=logits).to_event(1)


class ComposedModel(nn.Module):
    """``p(x, latent) = p(latent) p(x | mapping(latent))`` from a :class:`ComposedConfig`.

    A plain ``nn.Module`` calling Pyro primitives: its parameters are ordinary module parameters (the weights as
    softmax logits), which the runner's optimiser steps directly. ``PyroModule`` would add per-call parameter
    bookkeeping that module-local parameters make useless — a measurable share of a VAE step's overhead.
    """

    def __init__(self, config: ComposedConfig, num_features: int, image_shape: tuple[int, int, int] | None = None):
        super().__init__()
        self.config = config
        self.likelihood = Likelihood(config.likelihood, num_features, config.num_categories)
        out = num_features * self.likelihood.params_per_feature
        if config.latent == "discrete":
            k = config.num_components
            self.weight_logits = nn.Parameter(torch.zeros(k))
            self.component_params = nn.Parameter(0.1 * torch.randn(k, out))
        elif config.mapping == "linear":
            self.decoder = nn.Linear(config.latent_dim, out)
        else:
            if config.mapping == "conv" and self.likelihood.params_per_feature != 1:
                raise ConfigError("the conv mapping needs one parameter per pixel; use mapping 'mlp' with a categorical likelihood")
            self.decoder = make_decoder(config.mapping, config.latent_dim, out, config.hidden_dims, image_shape)

    @property
    def weights(self) -> torch.Tensor:
        """Mixture weights π ``(K,)`` of a discrete latent."""
        return torch.softmax(self.weight_logits, -1)

    def observation_distribution(self, t: torch.Tensor) -> dist.Distribution:
        """p(x | t) for latents ``t`` of shape ``(..., q)``: event shape ``(D,)``, batch shape ``(...)``."""
        return self.likelihood(self.decoder(t))

    def forward(self, x: torch.Tensor, num_data: int | None = None):
        if self.config.latent == "discrete":
            k = self.config.num_components
            # MAP prior on the weights: a factor log Dirichlet(π | α), outside the data plate.
            prior = dist.Dirichlet(torch.full((k,), self.config.weight_concentration, device=x.device))
            weights = self.weights
            pyro.factor("weights_prior", prior.log_prob(weights))
            with data_plate(x, num_data):
                z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
                pyro.sample("x", self.likelihood(self.component_params[z]), obs=x)
        else:
            q = self.config.latent_dim
            with data_plate(x, num_data):
                dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
                t = pyro.sample("t", StandardNormal(q, dtype=dtype, device=x.device))
                pyro.sample("x", self.observation_distribution(t), obs=x)

    # -- EM for a discrete latent with the index mapping -------------------------------------------------------------

    FLOOR = 1e-6
    """Lower bound on Bernoulli/categorical probabilities, Poisson rates and Normal variances set by the M-step."""

    def em_ready(self) -> str | None:
        """Why EM cannot fit this model (None when it can): EM needs a discrete latent."""
        if self.config.latent != "discrete":
            return ("EM needs a discrete latent (--latent discrete --mapping index); fit a gaussian latent by "
                    "--method svi")
        return None

    def _check_em(self) -> None:
        if self.config.latent != "discrete":
            raise ConfigError("EM needs a discrete latent (latent='discrete', mapping='index'); fit a gaussian latent "
                              "by svi")

    def component_log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """``(K, N)`` log π_k + log p(x_n | θ_k), read off a trace of :meth:`forward` with ``z`` enumerated."""
        self._check_em()
        return enumerated_log_joint(self, x)

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """``(N,)`` exact log p(x_n) = log Σ_k π_k p(x_n | θ_k) of a discrete latent."""
        return torch.logsumexp(self.component_log_joint(x), 0)

    @torch.no_grad()
    def e_step(self, x: torch.Tensor):
        """Responsibilities r ``(N, K)`` = p(z_n = k | x_n) and the objective Σ_n log p(x_n) + log Dirichlet(π | α)."""
        resp, log_norm = normalise_log_joint(self.component_log_joint(x))
        return resp, log_norm.sum() + self.log_prior()

    def log_prior(self) -> torch.Tensor:
        """log Dirichlet(π | α) of a discrete latent's weights."""
        alpha = self.config.weight_concentration
        return dist.Dirichlet(torch.full_like(self.weight_logits, alpha)).log_prob(self.weights)

    @torch.no_grad()
    def m_step(self, resp: torch.Tensor, x: torch.Tensor) -> None:
        """Closed-form maximiser of E_r[log p(x, z | θ)] + log p(π): π_k ∝ n_k + α - 1 and, with n_k = Σ_n r_nk,
        the responsibility-weighted averages x̄_k = Σ_n r_nk x_n / n_k: Bernoulli probabilities x̄_k, Poisson rates
        x̄_k, categorical probabilities (one-hot averages), Normal means x̄_k with the per-feature variance shared by
        the components, σ_d² = (1/N) Σ_nk r_nk (x_nd - x̄_kd)². Raw parameters are written back as logits,
        log-rates, log-scales."""
        self.m_step_from_statistics(self.additive_statistics(resp, x))

    @torch.no_grad()
    def additive_statistics(self, resp: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Σ_n of the M-step's statistics (they add over items, so EM on several processes sums them over ranks):
        ``items`` (1,), ``counts`` Σ_n r_nk (K,), ``sums`` Σ_n r_nk x_n (K, D) or one-hot counts (K, D C), and for
        the normal likelihood ``squares`` Σ_n r_nk x_n² (K, D)."""
        self._check_em()
        cfg = self.config
        stats = {"items": torch.tensor([float(x.shape[0])], dtype=resp.dtype, device=resp.device),
                 "counts": resp.sum(0)}
        if cfg.likelihood == "categorical":
            onehot = torch.nn.functional.one_hot(x.long(), cfg.num_categories).to(resp.dtype).flatten(1)  # (N, D C)
            stats["sums"] = resp.T @ onehot
        else:
            stats["sums"] = resp.T @ x.to(resp.dtype)
            if cfg.likelihood not in ("bernoulli", "poisson"):
                stats["squares"] = resp.T @ (x * x).to(resp.dtype)
        return stats

    @torch.no_grad()
    def m_step_from_statistics(self, stats: dict[str, torch.Tensor]) -> None:
        """The closed-form update of :meth:`m_step` from :meth:`additive_statistics` of all items."""
        cfg, n, counts = self.config, stats["items"][0], stats["counts"]
        alpha = cfg.weight_concentration
        weights = (counts + alpha - 1) / (n + cfg.num_components * (alpha - 1))
        self.weight_logits.copy_(weights.clamp_min(1e-300).log())
        safe = counts.clamp_min(torch.finfo(counts.dtype).tiny)[:, None]
        if cfg.likelihood == "categorical":
            probs = (stats["sums"] / safe).reshape(cfg.num_components, -1, cfg.num_categories).clamp_min(self.FLOOR)
            self.component_params.copy_((probs / probs.sum(-1, keepdim=True)).log().flatten(1))
            return
        means = stats["sums"] / safe  # (K, D)
        if cfg.likelihood == "bernoulli":
            probs = means.clamp(self.FLOOR, 1 - self.FLOOR)
            self.component_params.copy_(probs.log() - (-probs).log1p())
        elif cfg.likelihood == "poisson":
            self.component_params.copy_(means.clamp_min(self.FLOOR).log())
        else:
            self.component_params.copy_(means)
            variance = (stats["squares"] - counts[:, None] * means * means).sum(0) / n  # Σ_k Σ_n r_nk (x_n - x̄_k)² / N
            self.likelihood.log_scale.copy_(0.5 * variance.clamp_min(self.FLOOR).log())


class EmptyGuide(nn.Module):
    """The guide of a model whose only latent is enumerated and whose globals are module parameters (MAP)."""

    def forward(self, x: torch.Tensor, num_data: int | None = None):
        return None
