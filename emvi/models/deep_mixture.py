"""VAEs with an enumerated discrete latent, stated as declarations: ``gmvae`` and ``ssvae``'s configs and models.

* ``gmvae`` — the mixture-prior VAE, unsupervised clustering with a generative model::

      z_n ~ Categorical(π),   t_n | z_n ~ Normal(μ_{z_n}, Σ_{z_n}),   x_n | t_n ~ Bernoulli(f(t_n))

  Σ_k = L_k L_kᵀ, L_k ``(q, q)`` lower triangular (``prior_covariance="full"``, the ``mvnormal`` family) or diag σ_k²
  (``"diag"``, VaDE's); μ and the scales are tables ``(K, q)`` or ``(K, q²)``; x ``(batch, D)``. π is fixed uniform
  unless ``learn_weights`` (against cluster collapse). ``cluster_posterior="exact"``: z summed out in the model,
  guide q(t | x), the cluster the exact p(z | x, t) (VaDE); ``"amortised"``: q(z | x) q(t | x, z), z enumerated in
  the guide, t ``(K, batch, q)``.
* ``ssvae`` — the semi-supervised VAE (Kingma et al. 2014, M2)::

      y_n ~ Categorical(1/C),   t_n ~ Normal(0, I),   x_n | y_n, t_n ~ Bernoulli(f(t_n, y_n))

  or, ``likelihood="normal"``, x_n | y_n, t_n ~ Normal(f(t_n, y_n), diag g(t_n, y_n)²) (g through exp): M2 on
  real-valued features, e.g. on the codes z1 of a trained VAE, M1+M2 (Kingma et al. 2014);

  guide q(y_n | x_n) q(t_n | x_n, y_n): y observed where ``y_mask`` holds, enumerated in the guide elsewhere, plus
  the classification term c · Σ_labelled log q(y_n | x_n), tagged as a training term: c = α N / N_l with the
  paper's scaling (``classify_alpha``; α = 0.1 is their α = 0.1 · N) or c given (``classify_weight``).

The starts before SVI (``pretrain_*``) are training procedure, configured by :mod:`emvi.inference.starts`'s start
configs; ssvae's stratified SVI steps are its entry's default ``stratify``. Why each default (uniform π, full covariance, the t-SNE start, q = 2 for M2, the size of
c, stratified steps) is recorded with its measurements in ``docs/experiments/deep_mixture.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..declaration import Declaration, declare, latent, learned, mlp, observed, table
from ..validation import check_choice, check_number, check_positive_int

"""gmvae's default autoencoder epochs before SVI (measurements: docs/experiments/deep_mixture.md)."""


@dataclass(frozen=True)
class _EncoderDecoderSizes:
    latent_dim: int = 10
    """q, the size of the continuous latent t."""
    hidden_dims: tuple[int, ...] = (256,)
    """Hidden sizes of the decoder and of the encoders (q of the discrete site given x, q(t | x, that site))."""

    def _check_sizes(self, values: str) -> None:
        check_positive_int(getattr(self, values), values, minimum=2)
        check_positive_int(self.latent_dim, "latent_dim")
        for h in self.hidden_dims:
            check_positive_int(h, "hidden_dims")


@dataclass(frozen=True)
class GMVAEConfig(_EncoderDecoderSizes):
    """The mixture-prior VAE (see :mod:`emvi.models.deep_mixture`)."""

    num_components: int = 10
    """K, the number of clusters (enumerated exactly)."""
    learn_weights: bool = False
    """Learn the mixture weights π (default: fixed uniform, against cluster collapse)."""
    cluster_posterior: str = "exact"
    """exact: z summed out in the model, guide q(t | x), clusters from the exact p(z | x, t); amortised: guide
    q(z | x) q(t | x, z), z enumerated in the guide."""
    prior_covariance: str = "full"
    """full: t | z ~ Normal(μ_z, L_z L_zᵀ), L_z ``(q, q)`` lower triangular (the ``mvnormal`` family), so a cluster
    may be an elongated, tilted ellipsoid in t; diag: t | z ~ Normal(μ_z, diag σ_z²). See
    docs/experiments/deep_mixture.md for the measurements behind the default."""
    cli_aliases = {"num_components": ("-k",)}

    def __post_init__(self):
        self._check_sizes("num_components")
        check_choice(self.cluster_posterior, "cluster_posterior", ("exact", "amortised"))
        check_choice(self.prior_covariance, "prior_covariance", ("diag", "full"))


@dataclass(frozen=True)
class SSVAEConfig(_EncoderDecoderSizes):
    """The semi-supervised VAE, M2 (see :mod:`emvi.models.deep_mixture`)."""

    latent_dim: int = 2
    """q, the size of the style latent t. Small on purpose: a decoder that can draw the digit from t alone leaves y
    to style, and M2's unlabelled term then pulls q(y | x) off the classes (docs/experiments/deep_mixture.md)."""
    num_classes: int = 10
    """C, the number of label values."""
    classify_weight: float = 300000.0
    """c: weight of log q(y_n | x_n) per labelled item in the training loss, used when ``classify_alpha`` is unset;
    see docs/experiments/deep_mixture.md for why it is far above the paper's scaling."""
    classify_alpha: float | None = None
    """α with Kingma et al.'s scaling (their α = 0.1 · N is ``classify_alpha = 0.1``): the training objective is
    J + α N · (1/N_l) Σ_labelled log q(y_n | x_n), N the training items, N_l = C · ``labels_per_class`` (or N), so
    c = α N / N_l per labelled item (``SSVAEConfig.classification_weight``); set, it replaces ``classify_weight``.
    Unset by default: on images, α in {0.1, 1, 10} let SVI pull q(y | x) below its start on MNIST's validation labels
    (the smaller α the further) where c held it (docs/experiments/deep_mixture.md); M1+M2 on a VAE's codes uses it."""
    labels_per_class: int | None = 10
    """Labels kept per class (a seeded class-balanced subset; the others hidden); none: every label."""
    label_seed: int = 0
    """Seed of the labelled subset."""
    likelihood: str = "bernoulli"
    """bernoulli: x | y, t ~ Bernoulli(f(t, y)), for images in [0, 1]; normal: x | y, t ~ Normal(f(t, y),
    diag g(t, y)²), for real-valued features such as the codes of a trained VAE (M1+M2, Kingma et al. 2014)."""

    def __post_init__(self):
        self._check_sizes("num_classes")
        check_choice(self.likelihood, "likelihood", ("bernoulli", "normal"))
        check_number(self.classify_weight, "classify_weight", minimum=0)
        if self.classify_alpha is not None:
            check_number(self.classify_alpha, "classify_alpha", minimum=0)
        if self.labels_per_class is not None:
            check_positive_int(self.labels_per_class, "labels_per_class")
        check_positive_int(self.label_seed, "label_seed", minimum=0)

    def classification_weight(self, num_data: int) -> float:
        """c, the weight of log q(y_n | x_n) per labelled item for ``num_data`` (N) training items: α N / N_l with
        N_l = C · ``labels_per_class`` (N when every label is kept) if ``classify_alpha`` is set, else
        ``classify_weight``. Summed over the N_l labelled items, c log q gives the paper's α N · E_labelled log q."""
        if self.classify_alpha is None:
            return self.classify_weight
        num_labelled = num_data if self.labels_per_class is None else self.num_classes * self.labels_per_class
        return self.classify_alpha * num_data / min(num_labelled, num_data)


def gmvae_declaration(config: GMVAEConfig) -> Declaration:
    weights = learned() if config.learn_weights else 0.0  # logits 0: π = 1/K
    return declare(
        "gmvae",
        latent("z", "categorical", categories=config.num_components, logits=weights,
               summed_in="model" if config.cluster_posterior == "exact" else "auto"),
        (latent("t", "mvnormal", dim=config.latent_dim, loc=table("z"), scale_tril=table("z"))
         if config.prior_covariance == "full" else
         latent("t", "normal", dim=config.latent_dim, loc=table("z"), scale=table("z"))),
        observed("x", "bernoulli", logits=mlp("t", hidden=config.hidden_dims)),
        description="mixture-prior VAE: cluster z enumerated exactly, t | z ~ N(mu_z, Sigma_z), x | t Bernoulli",
    )


def ssvae_declaration(config: SSVAEConfig, classify: float = 0.0) -> Declaration:
    return declare(
        "ssvae",
        observed("y", "categorical", categories=config.num_classes, mask="y_mask", classify=classify, logits=0.0),
        latent("t", "normal", dim=config.latent_dim, guide_given=("y",)),
        (observed("x", "bernoulli", logits=mlp("t", "y", hidden=config.hidden_dims)) if config.likelihood == "bernoulli"
         else observed("x", "normal", loc=mlp("t", "y", hidden=config.hidden_dims),
                       scale=mlp("t", "y", hidden=config.hidden_dims))),
        description="semi-supervised VAE (M2): label y given for a subset, else enumerated in q(y | x) q(t | x, y)",
    )


__all__ = ["GMVAEConfig", "SSVAEConfig", "gmvae_declaration", "ssvae_declaration"]
