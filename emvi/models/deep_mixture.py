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

  guide q(y_n | x_n) q(t_n | x_n, y_n): y observed where ``y_mask`` holds, enumerated in the guide elsewhere, plus
  the classification term c · Σ_labelled log q(y_n | x_n) (``classify_weight``, tagged as a training term).

The ``pretrain_*`` fields configure the starts of :mod:`emvi.inference.starts`; ``labelled_in_every_batch`` the
runner's stratified steps. Why each default (uniform π, full covariance, the t-SNE start, q = 2 for M2, the size of
c, stratified steps) is recorded with its measurements in ``docs/experiments/deep_mixture.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..declaration import Declaration, declare, latent, learned, mlp, observed, table
from ..validation import check_choice, check_number, check_positive_int

PRETRAIN_EPOCHS = 10
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
    pretrain_epochs: int = PRETRAIN_EPOCHS
    """Epochs of the autoencoder start before SVI (:func:`emvi.inference.starts.pretrain_gmvae`): the encoder mean
    and decoder trained as a deterministic autoencoder, then μ_k, σ_k (and π if learned) from the clusters of its
    codes; 0: none."""
    pretrain_clusters: str = "tsne"
    """Where the prior's start comes from after the autoencoder: tsne (the moments of the clusters that a Gaussian
    mixture finds on the codes' t-SNE map, N2D's recipe), spectral (the same from spectral clustering of the codes'
    nearest-neighbour graph) or gmm (a GMM fit to the codes by EM, VaDE's). See docs/experiments/deep_mixture.md for
    the measurements behind the default."""
    pretrain_neighbors: int = 10
    """Nearest neighbours per code in spectral's graph."""
    pretrain_perplexity: float = 30.0
    """t-SNE's perplexity (tsne's map of the codes; capped at (N - 1) / 3)."""
    pretrain_restarts: int = 10
    """k-means++ starts (seeded by the fit's seed) of tsne's GMM on the map, of spectral's k-means or of the GMM; the
    best objective is kept."""

    cli_aliases = {"num_components": ("-k",)}

    def __post_init__(self):
        self._check_sizes("num_components")
        check_choice(self.cluster_posterior, "cluster_posterior", ("exact", "amortised"))
        check_choice(self.prior_covariance, "prior_covariance", ("diag", "full"))
        check_positive_int(self.pretrain_epochs, "pretrain_epochs", minimum=0)
        check_positive_int(self.pretrain_restarts, "pretrain_restarts")
        check_choice(self.pretrain_clusters, "pretrain_clusters", ("tsne", "spectral", "gmm"))
        check_positive_int(self.pretrain_neighbors, "pretrain_neighbors")
        check_number(self.pretrain_perplexity, "pretrain_perplexity", minimum=1)


@dataclass(frozen=True)
class SSVAEConfig(_EncoderDecoderSizes):
    """The semi-supervised VAE, M2 (see :mod:`emvi.models.deep_mixture`)."""

    latent_dim: int = 2
    """q, the size of the style latent t. Small on purpose: a decoder that can draw the digit from t alone leaves y
    to style, and M2's unlabelled term then pulls q(y | x) off the classes (docs/experiments/deep_mixture.md)."""
    num_classes: int = 10
    """C, the number of label values."""
    classify_weight: float = 300000.0
    """c: weight of log q(y_n | x_n) per labelled item in the training loss (Kingma et al.'s α = c · N_labelled); see
    docs/experiments/deep_mixture.md for why it is far above their α = 0.1 · N."""
    labels_per_class: int | None = 10
    """Labels kept per class (a seeded class-balanced subset; the others hidden); none: every label."""
    label_seed: int = 0
    """Seed of the labelled subset."""
    pretrain_epochs: int = 0
    """Epochs of an autoencoder start before SVI (:func:`emvi.inference.starts.pretrain_ssvae`): q(y | x)'s hidden
    layers trained as the encoder of a deterministic autoencoder on every training image, labels unseen; 0: none."""
    pretrain_classifier_epochs: int = 3
    """With ``pretrain_epochs`` > 0: epochs of cross-entropy that train q(y | x) on the clusters of the
    autoencoder's codes (t-SNE map and GMM, as gmvae's start), each cluster named after the labelled items it holds
    (cluster-then-label); 0: only the hidden layer's autoencoder start."""
    pretrain_perplexity: float = 30.0
    """t-SNE's perplexity for those clusters (capped at (N - 1) / 3)."""
    pretrain_restarts: int = 10
    """k-means++ starts of the GMM on the t-SNE map; the best log-likelihood is kept."""
    labelled_in_every_batch: bool = True
    """Stratified SVI steps (``TrainConfig.stratify = "y_mask"``): every step holds up to ``batch_size`` labelled
    images besides ``batch_size`` unlabelled ones, each part scaled by its own count (Kingma et al.'s sampling); off:
    items drawn uniformly, so a step holds a labelled image now and then, with weight c · N / batch_size."""

    def __post_init__(self):
        self._check_sizes("num_classes")
        check_number(self.classify_weight, "classify_weight", minimum=0)
        if self.labels_per_class is not None:
            check_positive_int(self.labels_per_class, "labels_per_class")
        check_positive_int(self.label_seed, "label_seed", minimum=0)
        check_positive_int(self.pretrain_epochs, "pretrain_epochs", minimum=0)
        check_positive_int(self.pretrain_classifier_epochs, "pretrain_classifier_epochs", minimum=0)
        check_number(self.pretrain_perplexity, "pretrain_perplexity", minimum=1)
        check_positive_int(self.pretrain_restarts, "pretrain_restarts")


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
        observed("x", "bernoulli", logits=mlp("t", "y", hidden=config.hidden_dims)),
        description="semi-supervised VAE (M2): label y given for a subset, else enumerated in q(y | x) q(t | x, y)",
    )


__all__ = ["PRETRAIN_EPOCHS", "GMVAEConfig", "SSVAEConfig", "gmvae_declaration", "ssvae_declaration"]
