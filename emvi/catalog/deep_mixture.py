"""VAEs with an enumerated discrete latent, built from declarations (their showcase): ``gmvae`` and ``ssvae``.

* ``gmvae`` — the mixture-prior VAE, unsupervised clustering with a generative model::

      z_n ~ Categorical(π),   t_n | z_n ~ Normal(μ_{z_n}, Σ_{z_n}),   x_n | t_n ~ Bernoulli(f(t_n))

  with Σ_k = L_k L_kᵀ, L_k ``(q, q)`` lower triangular (``prior_covariance="full"``, the default; the ``mvnormal``
  family), or Σ_k = diag σ_k² (``"diag"``, VaDE's form).

  Two guides, both exact in z (TraceEnum_ELBO, z never sampled):

  - ``cluster_posterior="exact"`` (default): guide q(t_n | x_n), z summed out in the model, so the ELBO is
    E_q[log p(x_n | t_n) + log Σ_k π_k N(t_n; μ_k, σ_k²) - log q(t_n | x_n)] and the cluster of x_n is the exact
    p(z_n | x_n, t_n) ∝ π_k N(t_n; μ_k, σ_k²) at t_n = the mean of q(t_n | x_n), as in VaDE (Jiang et al. 2017).
    Shapes: t ``(batch, q)``, z ``(K, 1)`` under enumeration, the prior's log-density ``(K, batch)`` summed over K.
  - ``"amortised"``: guide q(z_n | x_n) q(t_n | x_n, z_n), z enumerated in the guide; t ``(K, batch, q)``, one
    reparameterised draw per cluster. Each component can get its own q(t | x, z) close to its prior, so every z is
    about as good and q(z | x) is weakly tied to the images: measured on the digits (K = 10, q = 4, 40 epochs) the
    exact guide reached a clustering accuracy of 0.45 and the amortised one 0.17, at the same log p(x).

  μ and log σ are tables ``(K, q)``; x is ``(batch, D)``.

  **Cluster collapse** (all mass in one or two components) is avoided by the fixed uniform π of Dilokthanakul et al.
  (2016) and Shu's GMVAE. With π learned, a component that loses items loses prior mass, which makes it cheaper
  still to leave empty (rich-get-richer), and here nothing pulls it back: one decoder can explain every image from
  t near any single component, unlike EM on pixels where each component's likelihood is tied to its own items.
  With π = 1/K no component becomes cheap to abandon: every item pays the same log K for whichever cluster it
  takes. ``learn_weights=True`` restores the learned π. Measured on MNIST (15,604 images, q = 10, 500 hidden units,
  10 epochs, 2,000 test images): learned π left 7.6 effective clusters (accuracy 0.377), uniform π 9.2 (0.393); a
  5-epoch KL warm-up on top changed little (0.396). ``tests/test_deep_mixture.py`` checks the claim on the digits:
  after a short fit more than half of the K = 10 clusters are in use (effective number exp H(mean_n p(z | x_n, t_n))
  > 5).

  **Where the clusters come from: an autoencoder, then the clusters of its codes** (``pretrain_epochs``,
  :func:`pretrain_gmvae`). Uniform π keeps the clusters in use but does not make them digits: from random weights
  SVI settles on whatever split of t the first epochs give, and the prior's means barely move afterwards. Of the
  literature's remedies (KL warm-up, fixed π, restarts chosen by the ELBO, pretraining) pretraining is the one that
  changed the clustering: the encoder mean and the decoder are first trained as a deterministic autoencoder
  (VaDE, Jiang et al. 2017), then the prior's μ_k, σ_k (and π if learned) are set from clusters of the codes of the
  training items. Nothing in it sees a label. It runs before SVI from ``emvi fit``, spec files and the benchmark
  (the registry's ``pretrain`` hook, :func:`emvi.runs.run_fit`), never again on ``--resume``. Three ways to cluster
  the codes (``pretrain_clusters``):

  - ``"tsne"`` (default; N2D, McConville et al. 2019, with t-SNE as the manifold learner): a full-covariance
    Gaussian mixture fit by EM to the codes' 2-D t-SNE map (:func:`embedded_clusters`),
    and each component takes the mean, covariance and share of its cluster's codes (:func:`cluster_moments`); see
    the last measurements below for why it replaced the spectral start;
  - ``"spectral"`` (N2D's manifold step in graph form): spectral clustering of the codes' 10-nearest-neighbour graph
    (:func:`emvi.inference.pretraining.spectral_clusters`), the components again from its clusters' moments;
  - ``"gmm"`` (VaDE's): a diagonal GMM fit by EM to the codes, the best of ``pretrain_restarts`` k-means++ starts
    by its log-likelihood.

  A GMM on the codes splits them where their density is Gaussian-like, and MNIST's digits are not Gaussian blobs in
  t: curved, touching, of unequal spread. The neighbour graph follows each digit's manifold instead. Measured on
  MNIST (15,604 images, static binarisation, q = 10, scored on the 10,000 test images):

  - 500 hidden units, learning rate 1e-3, 10 autoencoder epochs then 10 SVI epochs, GMM start: clustering accuracy
    0.583 at the start (NMI 0.556), 0.596 after SVI (NMI 0.585, 9.4 effective clusters), against 0.39 without
    pretraining;
  - the GMM on the codes alone, after 10, 20, 40 autoencoder epochs (learning rate 3e-3): 0.550, 0.597, 0.635 with
    q = 10, 0.485, 0.502, 0.496 with q = 5; with VaDE's 500-500-2000 layers (1e-3) after 5, 10, 20 epochs: 0.519,
    0.576, 0.602, at five times the cost per epoch: a deeper network did not pay for itself in this budget;
  - 500 hidden units, learning rate 2e-3, 40 autoencoder epochs (73 s) then 30 SVI epochs (116 s): with the GMM
    start 0.637 at the start and 0.648 after SVI for seed 0 (NMI 0.650; over seeds 0-2 0.640 ± 0.007 after SVI);
    the spectral start's clusters of the training codes scored 0.793, 0.800, 0.795 for seeds 0-2, and the prior
    set from them 0.747, 0.766, 0.740 on the test images before SVI (16 s more than the GMM), and after SVI
    0.741, 0.736, 0.728 with diagonal covariances (the benchmark, seeds 0-2: 0.735 ± 0.006, NMI 0.662 ± 0.008,
    9.8 effective clusters, log p(x) -89.87 ± 0.51 against the plain VAE's -92.75 ± 0.54). Two forms of the
    spectral step lost: Ng-Jordan-Weiss's K eigenvectors (0.74, 0.68, 0.72 on the training codes, 0.646 after SVI
    for seed 0) and 3 k-means starts instead of 10 (0.71 or 0.80 by the clustering seed);
  - SVI after the start moves the accuracy by about 0.01: the clusters are those of the start. What remains is
    mostly 4 against 9 (the spectral clusters split the 4s and 9s about evenly between two clusters) and 3-5-8.

  **Why the full covariance is the default.** A diagonal Gaussian is a poor summary of a spectral cluster of the
  codes, which is elongated and tilted in t, so the prior's p(z | x, t) at a test image disagrees with the clusters
  it was set from. On the same codes (the 40-epoch autoencoders of seeds 0-2 above), the prior set from the spectral
  clusters scored 0.743, 0.756, 0.734 on the test images with diagonal covariances and 0.791, 0.796, 0.788 with each
  cluster's full covariance (the clusters themselves: 0.793, 0.800, 0.795 on the training codes). Whole fits (40
  autoencoder epochs, 30 SVI epochs; the autoencoder's start differs from the diagonal fit's because the prior's
  tables take other random draws): 0.720, 0.781, 0.750 at the start and 0.744, 0.804, 0.755 after SVI for seeds
  0-2, against 0.741, 0.736, 0.728 diagonal; NMI 0.738, 0.758, 0.747 against 0.671, 0.657, 0.658. The benchmark
  (seeds 0-2, static, 40 autoencoder epochs): clustering accuracy 0.767 ± 0.032, NMI 0.747 ± 0.010, 9.6 effective
  clusters, log p(x) -89.21 ± 0.23 against the plain VAE's -92.75 ± 0.54. The cost is a (q, q) triangular solve per
  cluster in the prior's density, small beside the decoder (the gmvae fit took 79 s and 87 s for seeds 1 and 2 on a
  quiet machine). A longer autoencoder start did not help: 100 epochs instead of 40 gave 0.731 at the start for seed
  0 (0.720 after 40).

  Tried and not adopted (MNIST, seed 0, scored on the test images): input dropout 0.2 in the autoencoder (DEC's
  denoising) gave 0.62, 0.73, 0.64 (GMM start) after 20, 40, 60 epochs, no steadier than without; five epochs
  trained with z observed at the spectral clusters before SVI (to make them Gaussian in t) moved the accuracy by
  0.005; t-SNE of the codes, clustered by a full-covariance GMM, reached 0.82 on the training codes in 142 s, and
  UMAP (umap-learn, 20 neighbours, 10 dimensions) then a GMM 0.84 in 128 s: a little above the graph's 0.74-0.80,
  at eight times the time and with numba as a dependency (on these static codes; on the dynamic codes below the
  t-SNE start won by far and became the default).

  **Train on a fresh Bernoulli draw of each image per step (``--binarize dynamic``), and give the autoencoder
  time.** Every measurement above thresholded the images once (static binarisation). Drawn anew in every step, the
  binary images act as data augmentation, and the codes then gather by digit far better. Measured on MNIST (full
  covariance, 500 hidden units, q = 10, learning rate 2e-3, 30 SVI epochs; accuracy on the thresholded test images,
  then on one fixed Bernoulli draw of them, the draw ``emvi evaluate`` scores):

  - seed 0 with 40 autoencoder epochs (45 s): 0.806 at the start (0.810 on the training codes) and 0.823 after SVI,
    against 0.720 and 0.744 static;
  - 80 epochs, seeds 0-2: 0.850, 0.761, 0.756 at the start; after SVI 0.855, 0.782, 0.763 (0.851, 0.777, 0.760 on
    the drawn test images);
  - 120 epochs (about 115 s), seeds 0-2: 0.871, 0.764, 0.759 at the start; after SVI 0.905, 0.792, 0.766 (0.902,
    0.785, 0.762 drawn; NMI 0.823, 0.785, 0.771). Seeds 1 and 2 keep two digits in one cluster and split another.

  Two remedies for the bad seeds did not hold up. Restarts chosen by the ELBO would pick the wrong fit: the last
  epoch's training loss was 98.17, 97.98 and 97.75 nats per image for seeds 0-2, so the best clustering had the
  worst ELBO. And the neighbour graph's size, 10, 15, 20, 30 or 50 neighbours on the 120-epoch codes, gave 0.768,
  0.775, 0.826, 0.820, 0.814 for seed 1 and 0.774, 0.771, 0.769, 0.763, 0.812 for seed 2 on the training codes: no
  size wins for both.
  The default, 10 epochs, costs about 16 s on those images; the benchmark trains on dynamic draws with 120. The
  benchmark at these settings with the spectral start (seeds 0-2, scored on the drawn test images): clustering
  accuracy 0.816 ± 0.075 (0.902, 0.785, 0.762), NMI 0.786 ± 0.028, 9.6 effective clusters, log p(x) -98.67 ± 0.28
  against the plain VAE's -105.09 ± 0.21 (drawn images are noisier than thresholded ones, hence the lower values).

  **The t-SNE map of the codes separates what the graph merges** (``pretrain_clusters="tsne"``, the default since).
  On the bad seeds' codes the Laplacian's eigenvalues jump after the ninth (0.020 to 0.027 for seed 1): the graph
  itself holds nine well-cut groups, and the normalised cut of spectral's partition (0.49, 0.42 for seeds 1, 2) is
  lower than that of the true digits (0.62, 0.67), so no graph criterion prefers the digits. t-SNE keeps each
  code's neighbourhood but lets touching neighbourhoods drift apart; a full-covariance GMM on the 2-D map (best of
  10 starts by log-likelihood) then finds the digits on the same 120-epoch codes: 0.921, 0.922, 0.916 for seeds 0-2
  on the training codes, against 0.873, 0.768, 0.774 from the graph (68 s of t-SNE for 15,604 codes on a quiet
  machine). The GMM needs a tight tolerance: EM on the map creeps for hundreds of iterations before two blobs
  part, and emvi's default tolerance (1e-3) stopped seed 0 at 0.818. The prior set from these clusters' moments
  classifies the training codes at 0.916 and 0.911 (seeds 1, 2: a full Gaussian per cluster agrees with 96% of the
  map's labels). Whole fits (120 autoencoder epochs, 30 SVI epochs): 0.910, 0.912, 0.900 on the test images at the
  start, 0.913, 0.918, 0.907 after SVI on the drawn test images (NMI 0.829, 0.840, 0.827). The same recipe on the
  static 40-epoch codes had reached only 0.82 on the training codes: it needs codes that gather by digit, which
  dynamic binarisation and a long autoencoder give.

* ``ssvae`` — the semi-supervised VAE (Kingma et al. 2014, M2)::

      y_n ~ Categorical(1/C),   t_n ~ Normal(0, I),   x_n | y_n, t_n ~ Bernoulli(f(t_n, y_n))
      guide q(y_n | x_n) q(t_n | x_n, y_n): y observed where the label is given (``y_mask``), enumerated in the
      guide elsewhere (``guide_given=("y",)``), plus the classification term c · Σ_labelled log q(y_n | x_n)

  **Every step holds the labelled images** (``labelled_in_every_batch``; the runner's stratified steps,
  ``TrainConfig.stratify = "y_mask"``): 128 unlabelled images scaled by N_u / 128, plus the labelled ones (all of
  them, up to ``batch_size``) scaled by N_l / their number. The objective is unchanged and the step is still an
  unbiased estimate of it; only its variance falls. Drawn uniformly, 100 labelled images among 15,604 come less than
  once per step on average, each weighing c · N / 128, so the classification term arrives in rare, heavy kicks.
  Kingma et al. and Pyro's example sample this way too. Measured on MNIST (seed 0, 100 labels, q = 2, c = 300,000,
  30 epochs, test accuracy): 0.842 with uniform steps, 0.871 with stratified ones (0.784, 0.811, 0.826 after 1, 2, 3
  epochs, then rising steadily), at about 1.8 times the cost per epoch (228 items per step instead of 128). The
  benchmark (seeds 0-2, static, 30 epochs): 0.861 ± 0.010 (0.856, 0.873, 0.855), against 0.749 ± 0.014 for the classifier
  trained on the 100 labels alone; the M2 fit took 305-330 s per seed.

  **Dynamic binarisation lifts it further** (``--binarize dynamic``): each step then sees a fresh Bernoulli draw
  of the 100 labelled images, which the classification term would otherwise fit as 100 fixed binary pictures.
  Seed 0, stratified steps, c = 300,000, scored on the thresholded test images: 0.840, 0.860, 0.884 after 5, 10,
  30 epochs (0.871 after 30 static), then 0.891, 0.896, 0.893 after 40, 45, 60 (0.897 on the grey-level test
  images after 60). A cosine learning-rate decay over the 60 epochs ended at 0.892 on one fixed Bernoulli draw of
  the test images: no gain. The benchmark (seeds 0-2, dynamic, 60 epochs, scored on one fixed draw of the test
  images): 0.885 ± 0.006 (0.892, 0.881, 0.882), against 0.751 ± 0.016 for the classifier trained on fresh draws of
  the 100 labelled images alone; the M2 fit took 625-637 s per seed.

  The classification weight c = ``classify_weight`` multiplies log q(y_n | x_n) for each labelled item in the
  training loss (the ELBO is summed over items, so c is on the per-item scale of log p(x_n)). Kingma et al.'s
  α = 0.1 · N is c = α / N_labelled = 50 for 50,000 images and 100 labels; here far more pays: with stratified steps
  c = 10,000, 100,000, 300,000 and 1,000,000 gave 0.838, 0.862, 0.871 and 0.867 (seed 0, 30 epochs). The default is
  300,000; after the cluster-then-label start below, 3,000,000 holds the start (the benchmark's and the example
  spec's setting).

  **The style latent is small (q = 2 by default).** When t has room for the whole digit, the decoder draws it from t
  and uses y for style, and the unlabelled term then rewards a q(y | x) that tracks style. With stratified steps
  (seed 0, c = 300,000), q = 10 stayed at 0.77 over its first seven epochs, while q = 4 reached 0.851 and q = 2 0.871
  after 30.

  **Where M2 ends, and a start that holds above it** (``pretrain_epochs``, :func:`pretrain_ssvae`). M2's own
  objective, not its optimisation, sets where q(y | x) ends. Started from a classifier trained first on every true
  label (0.947 on the test images, a diagnostic that no fit can use), M2 with c = 300,000 fell to 0.900, 0.888,
  0.884, 0.866, 0.893, 0.892 after 2 to 12 epochs (seed 0), back to where it ends from random weights. With
  c = 3,000,000 the same start held: 0.913, 0.911, 0.914, 0.912, 0.911 after 2 to 10 epochs. A start that needs no
  extra label, then:

  - the autoencoder start of q(y | x)'s hidden layer alone does not raise the end: trained on the 100 labels from
    it, the classifier scores 0.818 (0.751 from random weights), and M2 from it 0.870, 0.881, 0.889, 0.893, 0.895,
    0.894 after 5 to 30 epochs (seed 0, 60 autoencoder epochs); for seed 1 (120 epochs) 0.872, 0.879, 0.876, 0.874
    after 10 to 40, where random weights reached 0.881 after 60;
  - cluster-then-label does: the autoencoder's codes clustered as gmvae's start clusters them (their t-SNE map and
    a GMM), each cluster named by the labelled images in it, and q(y | x) trained on those names for 3 epochs.
    Seed 1 (120 autoencoder epochs): the clusters named 87% of the labelled images right, q(y | x) started at
    0.9075, and M2 with c = 3,000,000 kept 0.906, 0.907, 0.905, 0.899 after 5, 10, 15, 20 epochs. The accuracy
    comes from the start; M2's SVI keeps it for about ten epochs, then drifts down towards its own end. The
    benchmark runs this start, then 10 SVI epochs (seeds 0-2, one run, scored on one fixed draw of the test
    images): q(y | x) at the start 0.935, 0.908, 0.901 (labelled agreement of the clusters 0.92, 0.87, 0.94), after
    SVI 0.916, 0.907, 0.899, mean **0.908 ± 0.009**, against 0.751 ± 0.016 for the classifier on the 100 labels
    alone; the start took 250-291 s and the whole ssvae fit 381-434 s per seed.

  **Until this version the benchmark sampled the missing labels.** Scripts that call :func:`emvi.inference.train`
  with the default ``elbo="auto"`` (the benchmark and the notebook among them) trained M2 with Trace_ELBO: "auto"
  looked only for discrete sites that the guide leaves to the model, and M2's guide holds y itself, marked for
  enumeration. ``emvi fit`` and spec files took the model's TraceEnum_ELBO all along. "auto" now sums out the
  guide's marked sites too. The earlier benchmark numbers (uniform steps, sampled y, c = 50,000: 0.732 ± 0.059 with
  q = 10 and 0.790 ± 0.021 with q = 2, against 0.749 ± 0.014 for the classifier on the 100 labels alone) and the
  remedies tried then are in this docstring's history. Of those remedies, two ran with y enumerated and did not
  pay: M1+M2, M2 on the codes of a VAE (q = 50, 600 hidden units, 20 epochs), 0.73, because M1 needs far more
  training than this budget gives; and steps holding all 100 labelled images, as now, but with q = 10 and c = 15.5
  (their α) or 300, whose accuracy fell from 0.71 to 0.56 and from 0.73 to 0.69 within ten epochs (q = 10's failure
  above).

  ``labels_per_class`` keeps a seeded, class-balanced subset of the data set's labels and hides the others
  (-1): the model never sees them; evaluation hides every test label and scores argmax q(y | x).

Both report, on ``emvi evaluate``, the held-out ELBO and importance-sampled log p(x) (the classification term is no
part of either), plus clustering accuracy / NMI / effective number of clusters (``gmvae``) or test accuracy
(``ssvae``); their fits draw conditional samples (one row per cluster or class) and the latent map.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace

import torch

from ..analysis.clustering import effective_num_clusters
from ..analysis.declared import declared_inference_data
from ..analysis.deep_mixture import cluster_probabilities, clustering_metrics, deep_mixture_plots
from ..analysis.vae import evaluation_draw
from ..data import DataInfo
from ..data.labels import balanced_label_mask
from ..declaration import Declaration, declare, latent, learned, mlp, observed, table
from ..errors import ConfigError, DataError
from ..inference.em import ConvergenceWarning
from ..nn import FlatMLP
from ..registry import ModelEntry
from ..validation import check_choice, check_number, check_positive_int, check_unit_interval
from .declared import build_declared, evaluate_declared, sample_declared

PRETRAIN_EPOCHS = 10
"""gmvae's default autoencoder epochs before SVI (see the module docstring for the measurements behind it)."""


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
    """The mixture-prior VAE (see :mod:`emvi.catalog.deep_mixture`)."""

    num_components: int = 10
    """K, the number of clusters (enumerated exactly)."""
    learn_weights: bool = False
    """Learn the mixture weights π (default: fixed uniform, against cluster collapse)."""
    cluster_posterior: str = "exact"
    """exact: z summed out in the model, guide q(t | x), clusters from the exact p(z | x, t); amortised: guide
    q(z | x) q(t | x, z), z enumerated in the guide."""
    prior_covariance: str = "full"
    """full: t | z ~ Normal(μ_z, L_z L_zᵀ), L_z ``(q, q)`` lower triangular (the ``mvnormal`` family), so a cluster
    may be an elongated, tilted ellipsoid in t; diag: t | z ~ Normal(μ_z, diag σ_z²). See the module docstring for
    the measurements behind the default."""
    pretrain_epochs: int = PRETRAIN_EPOCHS
    """Epochs of the autoencoder start before SVI (:func:`pretrain_gmvae`): the encoder mean and decoder trained as
    a deterministic autoencoder, then μ_k, σ_k (and π if learned) from the clusters of its codes; 0: none."""
    pretrain_clusters: str = "tsne"
    """Where the prior's start comes from after the autoencoder: tsne (the moments of the clusters that a Gaussian
    mixture finds on the codes' t-SNE map, N2D's recipe), spectral (the same from spectral clustering of the codes'
    nearest-neighbour graph) or gmm (a GMM fit to the codes by EM, VaDE's). See the module docstring for the
    measurements behind the default."""
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
    """The semi-supervised VAE, M2 (see :mod:`emvi.catalog.deep_mixture`)."""

    latent_dim: int = 2
    """q, the size of the style latent t. Small on purpose: a decoder that can draw the digit from t alone leaves y
    to style, and M2's unlabelled term then pulls q(y | x) off the classes (see the module docstring)."""
    num_classes: int = 10
    """C, the number of label values."""
    classify_weight: float = 300000.0
    """c: weight of log q(y_n | x_n) per labelled item in the training loss (Kingma et al.'s α = c · N_labelled); see
    the module docstring for why it is far above their α = 0.1 · N."""
    labels_per_class: int | None = 10
    """Labels kept per class (a seeded class-balanced subset; the others hidden); none: every label."""
    label_seed: int = 0
    """Seed of the labelled subset."""
    pretrain_epochs: int = 0
    """Epochs of an autoencoder start before SVI (:func:`pretrain_ssvae`): q(y | x)'s hidden layers trained as the
    encoder of a deterministic autoencoder on every training image, labels unseen; 0: none."""
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


def build_gmvae(config: GMVAEConfig, data_info: DataInfo):
    return build_declared(gmvae_declaration(config), config, data_info, hidden_dims=config.hidden_dims)


def build_ssvae(config: SSVAEConfig, data_info: DataInfo):
    return build_declared(ssvae_declaration(config, config.classify_weight), config, data_info,
                          hidden_dims=config.hidden_dims)


# -- pretraining ----------------------------------------------------------------------------------------------------


def gmvae_autoencoder(model, guide):
    """``(encode, decode, parameters)``: x ``(B, D)`` -> the location of q(t | x) ``(B, q)`` -> the decoder's logits
    ``(B, D)``. Under the amortised guide the encoder's cluster input is the uniform vector 1/K (no cluster yet)."""
    encoder, decoder = guide.encoders["t"], model.networks["x__logits"]
    k = model.declaration.by_name["z"].num_values

    def encode(x):
        features = guide.features({"x": x}, x.dtype)
        if guide.declaration.guide_inputs("t"):  # amortised: q(t | x, z)
            features = torch.cat([features, features.new_full((x.shape[0], k), 1.0 / k)], -1)
        return encoder(features).chunk(2, -1)[0]

    return encode, decoder, [*encoder.parameters(), *decoder.parameters()]


def pretrain_gmvae(model, guide, train_data, config: GMVAEConfig, train_config) -> dict:
    """The start before SVI, with ``config.pretrain_epochs`` > 0:

    1. the encoder mean m(x) (the location of q(t | x)) and the decoder f are trained as a deterministic autoencoder,
       min Σ_n BCE(x_n, sigmoid f(m(x_n))) (:func:`emvi.inference.pretraining.pretrain_autoencoder`), with the SVI
       fit's batch size, learning rate and seed (VaDE, Jiang et al. 2017);
    2. the codes m(x_n) ``(N, q)`` of the training items are clustered, without labels: ``pretrain_clusters =
       "tsne"`` by a Gaussian mixture on their t-SNE map with perplexity ``pretrain_perplexity``
       (:func:`embedded_clusters`), ``"spectral"`` by spectral clustering of their
       ``pretrain_neighbors``-nearest-neighbour graph (:func:`emvi.inference.pretraining.spectral_clusters`), each
       component then the mean, (co)variance and share of its cluster's codes (:func:`cluster_moments`); ``"gmm"``
       by a Gaussian mixture fit to the codes by EM (the best log-likelihood of ``pretrain_restarts`` k-means++
       starts);
    3. the prior's tables take that mixture's values: μ_k = its means, log σ_k = ½ log of its variances, and
       π_k = its weights if π is learned.

    Deterministic given ``train_config.seed``; the global random streams are untouched. Runs on the device of the
    model's parameters. Returns what goes into the run's summary: the epochs, the reconstruction nats per item of
    the last epoch, the log-likelihood per item of the codes under the starting mixture
    (``pretrain_start_loglik``), and the seconds taken."""
    from ..estimators import Mixture
    from ..inference.pretraining import encode_in_chunks, pretrain_autoencoder, spectral_clusters

    if config.pretrain_epochs == 0:
        return {}
    device = next(model.parameters()).device
    x = (train_data.tensors[0] if hasattr(train_data, "tensors") else train_data).detach()
    encode, decode, parameters = gmvae_autoencoder(model, guide)
    model.train(), guide.train()
    out = pretrain_autoencoder(encode, decode, parameters, x, epochs=config.pretrain_epochs,
                               batch_size=train_config.batch_size, learning_rate=train_config.learning_rate,
                               seed=train_config.seed, binarize=getattr(train_data, "binarize", None), device=device)
    started = time.perf_counter()
    codes = encode_in_chunks(encode, x, device=device, dtype=parameters[0].dtype).double()
    full = config.prior_covariance == "full"
    if config.pretrain_clusters in ("tsne", "spectral"):
        if config.pretrain_clusters == "tsne":
            labels = embedded_clusters(codes, config.num_components, perplexity=config.pretrain_perplexity,
                                       restarts=config.pretrain_restarts, seed=train_config.seed)
        else:
            labels = spectral_clusters(codes, config.num_components, neighbors=config.pretrain_neighbors,
                                       restarts=config.pretrain_restarts, seed=train_config.seed)
        weights, means, covariances = cluster_moments(codes, labels, config.num_components, floor=1e-4, full=full)
    else:
        with warnings.catch_warnings():  # a GMM that stops at max_iter is still a good start
            warnings.simplefilter("ignore", ConvergenceWarning)
            gmm = Mixture(config.num_components, "gaussian-full" if full else "gaussian-diag",
                          n_init=config.pretrain_restarts, max_iter=300, floor=1e-4, seed=train_config.seed).fit(codes)
        weights, means, covariances = (torch.as_tensor(a) for a in (gmm.weights_, gmm.means_, gmm.covariances_))
    tables, dtype = model.learned, parameters[0].dtype
    with torch.no_grad():
        tables["t__loc"].copy_(means.to(dtype))
        if full:  # the table holds L_k unconstrained (strict lower triangle, log of the diagonal): torch's inverse
            tril = torch.linalg.cholesky(covariances)
            raw = torch.distributions.transform_to(torch.distributions.constraints.lower_cholesky).inv(tril)
            tables["t__scale_tril"].copy_(raw.flatten(1).to(dtype))
            prior = torch.distributions.MultivariateNormal(means, scale_tril=tril)
        else:
            tables["t__scale"].copy_(0.5 * covariances.log().to(dtype))
            prior = torch.distributions.Independent(torch.distributions.Normal(means, covariances.sqrt()), 1)
        if "z__logits" in tables:  # learned π
            tables["z__logits"].copy_(weights.log().to(dtype))
    log_joint = weights.log() + prior.log_prob(codes[:, None])
    return {"pretrain_epochs": config.pretrain_epochs,
            "pretrain_reconstruction_nats": out["pretrain_reconstruction_nats"][-1],
            "pretrain_start_loglik": float(log_joint.logsumexp(-1).mean()),
            "pretrain_seconds": out["pretrain_seconds"] + time.perf_counter() - started}


def pretrain_ssvae(model, guide, train_data, config: SSVAEConfig, train_config) -> dict:
    """The start before SVI, with ``config.pretrain_epochs`` > 0 (cluster-then-label, then M2):

    1. the hidden layers h(x) of the classifier q(y | x) become the encoder of a deterministic autoencoder,

           min Σ_n BCE(x_n, sigmoid g(W h(x_n))),   code c_n = W h(x_n) of size C (one dimension per class),

       trained on every training image (no label read) with the SVI fit's batch size, learning rate, seed and
       binarisation (:func:`emvi.inference.pretraining.pretrain_autoencoder`); W and the decoder g (an MLP with the
       hidden sizes reversed) are discarded after it. Where q(t | x, y) is the default MLP, its first layer's image
       columns take h's trained first layer (its columns for y keep their start);
    2. with ``pretrain_classifier_epochs`` > 0: the codes c_n are clustered as gmvae's start clusters them (a GMM
       on their t-SNE map, :func:`embedded_clusters`, no label), each cluster is named by the one-to-one map of
       clusters to classes that agrees with most labelled items
       (:func:`emvi.analysis.clustering.cluster_names`), and q(y | x) is trained by cross-entropy on y_n where
       labelled and on the name of x_n's cluster elsewhere (:func:`emvi.inference.pretraining.pretrain_classifier`).

    The classifier's hidden features are what its output layer reads (a hook on its last linear layer), so any
    classifier given through the guide's ``parts`` that ends in a linear layer is pretrained too. Deterministic given
    ``train_config.seed``; the global random streams are untouched. Returns the run summary's entries: the epochs,
    the reconstruction nats per item of the last epoch, the classifier's cross-entropy on its targets and the share
    of labelled items whose cluster bears their label (step 2), and the seconds taken."""
    from ..inference.pretraining import encode_in_chunks, pretrain_autoencoder

    if config.pretrain_epochs == 0:
        return {}
    started = time.perf_counter()
    classifier = guide.encoders["y"]
    head = _last_linear(classifier, "q(y | x)")
    device, dtype = head.weight.device, head.weight.dtype
    x = train_data.array("x").detach() if hasattr(train_data, "array") else train_data.detach()
    x = x.reshape(x.shape[0], -1)  # (N, D)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(train_config.seed)
        code = torch.nn.Linear(head.in_features, config.num_classes).to(device, dtype)
        decoder = FlatMLP([config.num_classes, *reversed(config.hidden_dims), x.shape[1]]).to(device, dtype)
    hidden = {}
    hook = head.register_forward_pre_hook(lambda module, args: hidden.__setitem__("h", args[0]))

    def classify(batch):  # q(y | x)'s logits (B, C), as the guide computes them
        return classifier(guide.features({"x": batch}, batch.dtype))

    def encode(batch):
        classify(batch)
        return code(hidden["h"])

    model.train(), guide.train()
    try:
        out = pretrain_autoencoder(encode, decoder, [*classifier.parameters(), *code.parameters(),
                                                     *decoder.parameters()],
                                   x, epochs=config.pretrain_epochs,
                                   batch_size=train_config.batch_size, learning_rate=train_config.learning_rate,
                                   seed=train_config.seed, binarize=getattr(train_data, "binarize", None),
                                   device=device)
        codes = encode_in_chunks(encode, x, device=device, dtype=dtype)
    finally:
        hook.remove()
    _share_first_layer(classifier, guide.encoders["t"])
    summary = {"pretrain_epochs": config.pretrain_epochs,
               "pretrain_reconstruction_nats": out["pretrain_reconstruction_nats"][-1]}
    if config.pretrain_classifier_epochs:
        summary |= _cluster_then_label(classify, classifier.parameters(), train_data, x, codes, config, train_config)
    summary["pretrain_seconds"] = time.perf_counter() - started
    return summary


def _cluster_then_label(classify, parameters, train_data, x, codes, config: SSVAEConfig, train_config) -> dict:
    """q(y | x) trained by cross-entropy on targets y_n where labelled, else the name of x_n's cluster: the codes'
    clusters (:func:`embedded_clusters`, no label) named by the one-to-one map that agrees with most labelled
    items (:func:`emvi.analysis.clustering.cluster_names`)."""
    from ..analysis.clustering import cluster_names
    from ..inference.pretraining import pretrain_classifier

    labels, mask = train_data.array("y").long(), train_data.array("y_mask").bool()
    clusters = embedded_clusters(codes.double(), config.num_classes, perplexity=config.pretrain_perplexity,
                                 restarts=config.pretrain_restarts, seed=train_config.seed)
    names = torch.as_tensor(cluster_names(clusters[mask], labels[mask], config.num_classes, config.num_classes))
    targets = torch.where(mask, labels, names[clusters])
    out = pretrain_classifier(classify, parameters, x, targets,
                              epochs=config.pretrain_classifier_epochs, batch_size=train_config.batch_size,
                              learning_rate=train_config.learning_rate, seed=train_config.seed + 1,
                              binarize=getattr(train_data, "binarize", None), device=codes.device)
    agreement = float((names[clusters[mask]] == labels[mask]).float().mean()) if mask.any() else float("nan")
    return {"pretrain_classifier_nats": out["pretrain_classifier_nats"][-1],
            "pretrain_labelled_cluster_agreement": agreement}


def _last_linear(network: torch.nn.Module, what: str) -> torch.nn.Linear:
    layers = [m for m in network.modules() if isinstance(m, torch.nn.Linear)]
    if not layers:
        raise ConfigError(f"the {what} network has no linear layer to pretrain; give it one or set pretrain_epochs=0")
    return layers[-1]


def _share_first_layer(classifier: torch.nn.Module, style_encoder: torch.nn.Module) -> None:
    """Copy the classifier's first layer into q(t | x, y)'s image columns, when both are the default MLPs (the
    guide's input puts the image features first, then y one-hot)."""
    if not (isinstance(classifier, FlatMLP) and isinstance(style_encoder, FlatMLP)):
        return
    source, target = classifier.net[0], style_encoder.net[0]
    if source.out_features != target.out_features or source.in_features > target.in_features:
        return
    with torch.no_grad():
        target.weight[:, : source.in_features].copy_(source.weight)
        target.bias.copy_(source.bias)


def cluster_moments(codes: torch.Tensor, labels: torch.Tensor, num_clusters: int, *, floor: float = 1e-4,
                    full: bool = False):
    """``(weights (K,), means (K, q), variances (K, q))`` of the codes ``(N, q)`` in each cluster of ``labels``
    ``(N,)``: the M-step of a diagonal Gaussian mixture under hard responsibilities, variances floored at ``floor``;
    ``full``: covariances ``(K, q, q)`` (1/N_k Σ_n (t_n - μ_k)(t_n - μ_k)ᵀ + floor I) in place of the variances.
    A cluster with no code is refused (k-means never leaves one empty)."""
    labels = labels.long()
    counts = torch.bincount(labels, minlength=num_clusters).to(codes.dtype)
    if (counts == 0).any():
        raise DataError(f"cluster {int((counts == 0).nonzero()[0])} has no item; lower num_components")
    one_hot = torch.nn.functional.one_hot(labels, num_clusters).to(codes.dtype)  # (N, K)
    means = (one_hot.T @ codes) / counts[:, None]
    if full:
        centred = codes[None] - means[:, None]  # (K, N, q)
        scatter = torch.einsum("kni,knj->kij", centred * one_hot.T[..., None], centred)
        eye = torch.eye(codes.shape[1], dtype=codes.dtype, device=codes.device)
        return counts / counts.sum(), means, scatter / counts[:, None, None] + floor * eye
    variances = (one_hot.T @ codes.square()) / counts[:, None] - means.square()
    return counts / counts.sum(), means, variances.clamp_min(0) + floor


def embedded_clusters(codes: torch.Tensor, num_clusters: int, *, perplexity: float = 30.0, restarts: int = 10,
                      seed: int = 0) -> torch.Tensor:
    """Cluster labels ``(N,)`` of ``codes`` ``(N, q)`` by a Gaussian mixture on their t-SNE map (N2D's recipe,
    McConville et al. 2019, with t-SNE as the manifold learner)::

        e_n = t-SNE(codes)_n  ``(N, 2)``   (Barnes-Hut, ``perplexity`` neighbours' worth of bandwidth, PCA start)
        labels_n = argmax_k p(k | e_n) under a full-covariance K-component GMM fit to e by EM (best log-likelihood
                   of ``restarts`` k-means++ starts)

    t-SNE keeps each code's neighbourhood and lets distinct neighbourhoods drift apart, so clusters that touch in
    the codes (a 4 and a 9 drawn alike) come out as separate blobs, which a Gaussian mixture then finds. The
    neighbour graph of :func:`emvi.inference.pretraining.spectral_clusters` sees the same neighbourhoods but cuts
    where the graph is thinnest, which for some autoencoders is through a digit rather than between two. Costs
    O(N log N) per t-SNE iteration (68 s for 15,604 codes on a quiet 2-core machine, up to 190 s under load).
    ``perplexity`` is capped at (N - 1) / 3 for small data.
    Deterministic given ``seed``; the global random streams are untouched. Uses no label.
    """
    from sklearn.manifold import TSNE

    from ..estimators import Mixture

    check_positive_int(num_clusters, "num_clusters", minimum=2)
    check_positive_int(restarts, "restarts")
    check_number(perplexity, "perplexity", minimum=0, exclusive_minimum=True)
    points = codes.detach().cpu().double().numpy()
    if points.shape[0] < max(4, 2 * num_clusters):
        raise DataError(f"t-SNE clustering needs at least {max(4, 2 * num_clusters)} items for {num_clusters} "
                        f"clusters, got {points.shape[0]}; lower num_components or use more data")
    perplexity = min(float(perplexity), (points.shape[0] - 1) / 3)
    embedding = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    with warnings.catch_warnings():  # a mixture that stops at max_iter still gives good labels
        warnings.simplefilter("ignore", ConvergenceWarning)
        # a tight tolerance: on the map, EM creeps for hundreds of iterations before two blobs part (measured on
        # MNIST codes: tol 1e-3 stopped at 0.818 accuracy, 1e-6 went on to 0.917 at a higher log-likelihood)
        gmm = Mixture(num_clusters, "gaussian-full", n_init=restarts, max_iter=1000, tol=1e-6, floor=1e-6, seed=seed)
        return torch.as_tensor(gmm.fit_predict(embedding), dtype=torch.long)


# -- data -----------------------------------------------------------------------------------------------------------


def check_images(config, data, method: str = "svi") -> None:
    """Flat observations in [0, 1] (Bernoulli means: grey levels or binarised pixels)."""
    if data.x.dim() != 2:
        raise DataError(f"the model needs flat observations (items, features), got shape {tuple(data.x.shape)}")
    check_unit_interval(data.x, "data")


def label_view(config: SSVAEConfig, dataset, split: str):
    """The data as M2 sees it: ``y`` the labels kept (train: ``labels_per_class`` per class, seeded by
    ``label_seed``; test: none) and -1 elsewhere, ``y_mask`` where they are kept; ``dataset.y`` keeps every true
    label for scoring."""
    if dataset.y is None:
        raise DataError(f"ssvae needs a labelled data set (labels y), and {dataset.name!r} has none; use mnist, "
                        "fashion-mnist, digits or an .npz with an array 'y'")
    labels = dataset.y.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= config.num_classes):
        raise DataError(f"labels must lie in 0..{config.num_classes - 1} (num_classes = {config.num_classes}), got "
                        f"{int(labels.min())}..{int(labels.max())}; set --num-classes")
    if split != "train":
        mask = torch.zeros_like(labels, dtype=torch.bool)
    elif config.labels_per_class is None:
        mask = torch.ones_like(labels, dtype=torch.bool)
    else:
        mask = balanced_label_mask(labels, config.labels_per_class, seed=config.label_seed)
    arrays = dict(dataset.arrays or {}) | {"y": torch.where(mask, labels, -1), "y_mask": mask}
    return replace(dataset, arrays=arrays)


# -- evaluation and plots -----------------------------------------------------------------------------------------


def _evaluation_tensors(data) -> tuple[torch.Tensor, ...]:
    """The model's arrays; dynamically binarised images as one fixed Bernoulli draw (the VAE's protocol)."""
    tensors = tuple(data.tensors)
    if getattr(data, "binarize", None) == "dynamic":
        tensors = (evaluation_draw(tensors[0]),) + tensors[1:]
    return tensors


def cluster_report(model, guide, data) -> dict:
    """Effective number of clusters of q(z | x) over ``data``, and with labels (used for nothing else) the clustering
    accuracy and NMI of its argmax."""
    model.eval(), guide.eval()
    probs = cluster_probabilities(model, guide, "z", _evaluation_tensors(data))
    if data.y is not None:
        return clustering_metrics(probs, data.y)
    return {"effective_num_clusters": effective_num_clusters(probs.numpy())}


def predicted_labels(model, guide, data) -> torch.Tensor:
    """``(N,)`` argmax q(y | x)."""
    model.eval(), guide.eval()
    return cluster_probabilities(model, guide, "y", _evaluation_tensors(data)).argmax(-1)


def evaluate_gmvae(model, guide, data, *, num_samples: int = 1000) -> dict:
    """Held-out ELBO, importance-sampled log p(x) (K = ``num_samples``) and :func:`cluster_report`."""
    out = evaluate_declared(model.eval(), guide.eval(), _evaluation_tensors(data), num_samples=num_samples)
    return out | cluster_report(model, guide, data)


def evaluate_ssvae(model, guide, data, *, num_samples: int = 1000) -> dict:
    """Held-out ELBO and importance-sampled log p(x) with the labels the view hides summed out, and the accuracy of
    argmax q(y | x) against the true labels."""
    out = evaluate_declared(model.eval(), guide.eval(), _evaluation_tensors(data), num_samples=num_samples)
    correct = predicted_labels(model, guide, data) == data.y.cpu()
    return out | {"accuracy": float(correct.float().mean()), "num_labelled": int(data.array("y_mask").sum())}


def summarize_gmvae(model, guide, data) -> dict:
    """:func:`cluster_report` on the training items, each key ``train_...``."""
    return {f"train_{key}": value for key, value in cluster_report(model, guide, data).items()}


def summarize_ssvae(model, guide, data) -> dict:
    """The accuracy of argmax q(y | x) on the training items whose labels the model did not see."""
    hidden = ~data.array("y_mask")
    if not hidden.any():
        return {}
    correct = predicted_labels(model, guide, data) == data.y.cpu()
    return {"train_unlabelled_accuracy": float(correct[hidden].float().mean())}


def plots_gmvae(model, guide, dataset, history, run_dir):
    return deep_mixture_plots(model, guide, dataset, run_dir, discrete="z", continuous="t", title="cluster")


def plots_ssvae(model, guide, dataset, history, run_dir):
    return deep_mixture_plots(model, guide, dataset, run_dir, discrete="y", continuous="t", title="class")


ENTRIES = (
    ModelEntry("gmvae", GMVAEConfig, build_gmvae, methods=("svi",),
               description="mixture-prior VAE: unsupervised clustering, the cluster enumerated exactly",
               evaluate=evaluate_gmvae, sample=sample_declared, plots=plots_gmvae, summarize=summarize_gmvae,
               inference_data=declared_inference_data, check_data=check_images, elbo="enum", max_plate_nesting=1,
               inputs=lambda config: gmvae_declaration(config).data_names, pretrain=pretrain_gmvae),
    ModelEntry("ssvae", SSVAEConfig, build_ssvae, methods=("svi",),
               description="semi-supervised VAE (M2): q(y | x) q(t | x, y), labels for a class-balanced subset",
               evaluate=evaluate_ssvae, sample=sample_declared, plots=plots_ssvae, summarize=summarize_ssvae,
               inference_data=declared_inference_data, check_data=check_images, elbo="enum",
               max_plate_nesting=1, inputs=lambda config: ssvae_declaration(config).data_names,
               prepare_data=label_view, pretrain=pretrain_ssvae,
               stratify=lambda config: "y_mask" if config.labelled_in_every_batch else None),
)

__all__ = ["GMVAEConfig", "SSVAEConfig", "build_gmvae", "build_ssvae", "gmvae_declaration", "pretrain_gmvae",
           "pretrain_ssvae", "ssvae_declaration"]
