"""The starts of the deep-mixture VAEs before SVI (:mod:`emvi.models.deep_mixture`), run by ``emvi.runs`` through
their registry entries' ``pretrain`` hook on a new SVI fit only (never on ``--resume``).

* gmvae (:func:`pretrain_gmvae`): the encoder mean and the decoder trained as a deterministic autoencoder
  (:func:`emvi.inference.pretraining.pretrain_autoencoder`, VaDE), then the prior's μ_k, Σ_k (and π if learned) set
  from clusters of the codes, without labels: a GMM on their t-SNE map (:func:`embedded_clusters`, N2D; the map by
  openTSNE's FFT-accelerated t-SNE, :func:`tsne_map`), spectral clustering of their neighbour graph
  (:func:`emvi.inference.pretraining.spectral_clusters`), each cluster's moments (:func:`cluster_moments`), or a
  GMM on the codes themselves (:func:`gaussian_mixture`).
* ssvae (:func:`pretrain_ssvae`): q(y | x)'s hidden layers as an autoencoder's encoder, then cluster-then-label:
  the codes clustered as gmvae's, each cluster named after the labelled items it holds, and q(y | x) trained on
  those names.

Their options (:class:`GMVAEStart`, :class:`SSVAEStart`) are the entries' start configs: a spec's ``[start]``
table, the CLI's ``--pretrain-*`` options, ``config.json``'s ``start_config``. Deterministic given the fit's seed
(and, for the t-SNE map, torch's thread count);
the global random streams are untouched. Each returns the entries it adds to
the run's summary. The measurements behind each choice are in ``docs/experiments/deep_mixture.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..models.deep_mixture import GMVAEConfig, SSVAEConfig
from ..models.mixture import MixtureConfig, MixtureModel, check_mixture_data
from ..nn import FlatMLP
from ..validation import check_choice, check_number, check_positive_int
from .em import fit_em
from .initialization import initialise_mixture
from .pretraining import encode_in_chunks, pretrain_autoencoder, pretrain_classifier, spectral_clusters
from .restarts import best_of_restarts

PRETRAIN_EPOCHS = 10


@dataclass(frozen=True)
class GMVAEStart:
    """gmvae's start before SVI (:func:`pretrain_gmvae`): a training procedure, not part of the model."""

    pretrain_epochs: int = PRETRAIN_EPOCHS
    """Epochs of the autoencoder start: the encoder mean and decoder trained as a deterministic autoencoder, then
    μ_k, σ_k (and π if learned) from the clusters of its codes; 0: none."""
    pretrain_clusters: str = "tsne"
    """Where the prior's start comes from after the autoencoder: tsne (the moments of the clusters that a Gaussian
    mixture finds on the codes' t-SNE map, N2D's recipe), spectral (the same from spectral clustering of the codes'
    nearest-neighbour graph) or gmm (a GMM fit to the codes by EM, VaDE's)."""
    pretrain_neighbors: int = 10
    """Nearest neighbours per code in spectral's graph."""
    pretrain_perplexity: float = 30.0
    """t-SNE's perplexity (tsne's map of the codes; capped at (N - 1) / 3)."""
    pretrain_restarts: int = 10
    """k-means++ starts (seeded by the fit's seed) of tsne's GMM on the map, of spectral's k-means or of the GMM; the
    best objective is kept."""

    def __post_init__(self):
        check_positive_int(self.pretrain_epochs, "pretrain_epochs", minimum=0)
        check_positive_int(self.pretrain_restarts, "pretrain_restarts")
        check_choice(self.pretrain_clusters, "pretrain_clusters", ("tsne", "spectral", "gmm"))
        check_positive_int(self.pretrain_neighbors, "pretrain_neighbors")
        check_number(self.pretrain_perplexity, "pretrain_perplexity", minimum=1)


@dataclass(frozen=True)
class SSVAEStart:
    """ssvae's start before SVI (:func:`pretrain_ssvae`): a training procedure, not part of the model."""

    pretrain_epochs: int = 0
    """Epochs of an autoencoder start: q(y | x)'s hidden layers trained as the encoder of a deterministic
    autoencoder on every training image, labels unseen; 0: none."""
    pretrain_classifier_epochs: int = 3
    """Epochs of cross-entropy that train q(y | x) on the clusters of ``pretrain_cluster_on`` (t-SNE map and GMM, as
    gmvae's start), each cluster named after the labelled items it holds (cluster-then-label); 0: none."""
    pretrain_cluster_on: str = "codes"
    """What cluster-then-label clusters: codes (the autoencoder's codes; runs only with ``pretrain_epochs`` > 0) or
    inputs (the inputs x themselves, no autoencoder: for inputs that are already codes, M1+M2's)."""
    pretrain_perplexity: float = 30.0
    """t-SNE's perplexity for those clusters (capped at (N - 1) / 3)."""
    pretrain_restarts: int = 10
    """k-means++ starts of the GMM on the t-SNE map; the best log-likelihood is kept."""

    def __post_init__(self):
        check_positive_int(self.pretrain_epochs, "pretrain_epochs", minimum=0)
        check_positive_int(self.pretrain_classifier_epochs, "pretrain_classifier_epochs", minimum=0)
        check_choice(self.pretrain_cluster_on, "pretrain_cluster_on", ("codes", "inputs"))
        if self.pretrain_cluster_on == "inputs" and self.pretrain_epochs:
            raise ConfigError(f"pretrain_cluster_on = 'inputs' clusters the inputs themselves, so the autoencoder of "
                              f"pretrain_epochs = {self.pretrain_epochs} would be trained for nothing; set "
                              "pretrain_epochs to 0 or pretrain_cluster_on to 'codes'")
        check_number(self.pretrain_perplexity, "pretrain_perplexity", minimum=1)
        check_positive_int(self.pretrain_restarts, "pretrain_restarts")


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


def pretrain_gmvae(model, guide, train_data, config: GMVAEConfig, start: GMVAEStart, train_config) -> dict:
    """The start before SVI, with ``start.pretrain_epochs`` > 0:

    1. the encoder mean m(x) (the location of q(t | x)) and the decoder f are trained as a deterministic autoencoder,
       min Σ_n BCE(x_n, sigmoid f(m(x_n))) (:func:`emvi.inference.pretraining.pretrain_autoencoder`), with the SVI
       fit's batch size, learning rate and seed (VaDE, Jiang et al. 2017);
    2. the codes m(x_n) ``(N, q)`` of the training items are clustered, without labels: ``pretrain_clusters =
       "tsne"`` by a Gaussian mixture on their t-SNE map with perplexity ``pretrain_perplexity``
       (:func:`embedded_clusters`), ``"spectral"`` by spectral clustering of their
       ``pretrain_neighbors``-nearest-neighbour graph (:func:`emvi.inference.pretraining.spectral_clusters`), each
       component then the mean, (co)variance and share of its cluster's codes (:func:`cluster_moments`); ``"gmm"``
       by a Gaussian mixture fit to the codes by EM (:func:`gaussian_mixture`: the best log-likelihood of
       ``pretrain_restarts`` k-means++ starts);
    3. the prior's tables take that mixture's values: μ_k = its means, log σ_k = ½ log of its variances, and
       π_k = its weights if π is learned.

    Deterministic given ``train_config.seed``; the global random streams are untouched. Runs on the device of the
    model's parameters. Returns what goes into the run's summary: the epochs, the reconstruction nats per item of
    the last epoch, the log-likelihood per item of the codes under the starting mixture
    (``pretrain_start_loglik``), and the seconds taken."""
    if start.pretrain_epochs == 0:
        return {}
    device = next(model.parameters()).device
    x = (train_data.tensors[0] if hasattr(train_data, "tensors") else train_data).detach()
    encode, decode, parameters = gmvae_autoencoder(model, guide)
    model.train(), guide.train()
    out = pretrain_autoencoder(encode, decode, parameters, x, epochs=start.pretrain_epochs,
                               batch_size=train_config.batch_size, learning_rate=train_config.learning_rate,
                               seed=train_config.seed, transform=getattr(train_data, "transform_batch", None), device=device)
    started = time.perf_counter()
    codes = encode_in_chunks(encode, x, device=device, dtype=parameters[0].dtype).double()
    full = config.prior_covariance == "full"
    if start.pretrain_clusters in ("tsne", "spectral"):
        if start.pretrain_clusters == "tsne":
            labels = embedded_clusters(codes, config.num_components, perplexity=start.pretrain_perplexity,
                                       restarts=start.pretrain_restarts, seed=train_config.seed)
        else:
            labels = spectral_clusters(codes, config.num_components, neighbors=start.pretrain_neighbors,
                                       restarts=start.pretrain_restarts, seed=train_config.seed)
        weights, means, covariances = cluster_moments(codes, labels, config.num_components, floor=1e-4, full=full)
    else:  # a GMM that stops at max_iter is still a good start
        gmm = gaussian_mixture(codes, config.num_components, full=full, n_init=start.pretrain_restarts, max_iter=300,
                               floor=1e-4, seed=train_config.seed)
        weights, means, covariances = mixture_moments(gmm)
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
    return {"pretrain_epochs": start.pretrain_epochs,
            "pretrain_reconstruction_nats": out["pretrain_reconstruction_nats"][-1],
            "pretrain_start_loglik": float(log_joint.logsumexp(-1).mean()),
            "pretrain_seconds": out["pretrain_seconds"] + time.perf_counter() - started}


def pretrain_ssvae(model, guide, train_data, config: SSVAEConfig, start: SSVAEStart, train_config, *,
                   name_clusters: Callable) -> dict:
    """The start before SVI, with ``start.pretrain_epochs`` > 0 (cluster-then-label, then M2), or with
    ``start.pretrain_cluster_on = "inputs"`` step 2 alone, on the inputs x as they are:

    1. the hidden layers h(x) of the classifier q(y | x) become the encoder of a deterministic autoencoder,

           min Σ_n BCE(x_n, sigmoid g(W h(x_n))),   code c_n = W h(x_n) of size C (one dimension per class),

       trained on every training image (no label read) with the SVI fit's batch size, learning rate, seed and
       binarisation (:func:`emvi.inference.pretraining.pretrain_autoencoder`); W and the decoder g (an MLP with the
       hidden sizes reversed) are discarded after it. Where q(t | x, y) is the default MLP, its first layer's image
       columns take h's trained first layer (its columns for y keep their start);
    2. with ``pretrain_classifier_epochs`` > 0: the codes c_n are clustered as gmvae's start clusters them (a GMM
       on their t-SNE map, :func:`embedded_clusters`, no label), each cluster is named by the one-to-one map of
       clusters to classes that agrees with most labelled items (``name_clusters(clusters, classes, K, C)``; the
       catalog passes :func:`emvi.analysis.clustering.cluster_names`), and q(y | x) is trained by cross-entropy on
       y_n where labelled and on the name of x_n's cluster elsewhere
       (:func:`emvi.inference.pretraining.pretrain_classifier`).

    The classifier's hidden features are what its output layer reads (a hook on its last linear layer), so any
    classifier given through the guide's ``parts`` that ends in a linear layer is pretrained too. Deterministic given
    ``train_config.seed``; the global random streams are untouched. Returns the run summary's entries: the epochs,
    the reconstruction nats per item of the last epoch, the classifier's cross-entropy on its targets and the share
    of labelled items whose cluster bears their label (step 2), and the seconds taken."""
    on_inputs = start.pretrain_cluster_on == "inputs"
    if start.pretrain_epochs == 0 and not (on_inputs and start.pretrain_classifier_epochs):
        return {}
    started = time.perf_counter()
    classifier = guide.encoders["y"]
    head = _last_linear(classifier, "q(y | x)")
    device, dtype = head.weight.device, head.weight.dtype
    x = train_data.array("x").detach() if hasattr(train_data, "array") else train_data.detach()
    x = x.reshape(x.shape[0], -1)  # (N, D)

    def classify(batch):  # q(y | x)'s logits (B, C), as the guide computes them
        return classifier(guide.features({"x": batch}, batch.dtype))

    if on_inputs:  # the inputs are codes already: cluster-then-label alone
        model.train(), guide.train()
        summary = _cluster_then_label(classify, classifier.parameters(), train_data, x, x.to(device), config, start,
                                      train_config, name_clusters)
        return summary | {"pretrain_seconds": time.perf_counter() - started}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(train_config.seed)
        code = torch.nn.Linear(head.in_features, config.num_classes).to(device, dtype)
        decoder = FlatMLP([config.num_classes, *reversed(config.hidden_dims), x.shape[1]]).to(device, dtype)
    hidden = {}
    hook = head.register_forward_pre_hook(lambda module, args: hidden.__setitem__("h", args[0]))

    def encode(batch):
        classify(batch)
        return code(hidden["h"])

    model.train(), guide.train()
    try:
        out = pretrain_autoencoder(encode, decoder, [*classifier.parameters(), *code.parameters(),
                                                     *decoder.parameters()],
                                   x, epochs=start.pretrain_epochs,
                                   batch_size=train_config.batch_size, learning_rate=train_config.learning_rate,
                                   seed=train_config.seed, transform=getattr(train_data, "transform_batch", None),
                                   device=device)
        codes = encode_in_chunks(encode, x, device=device, dtype=dtype)
    finally:
        hook.remove()
    _share_first_layer(classifier, guide.encoders["t"])
    summary = {"pretrain_epochs": start.pretrain_epochs,
               "pretrain_reconstruction_nats": out["pretrain_reconstruction_nats"][-1]}
    if start.pretrain_classifier_epochs:
        summary |= _cluster_then_label(classify, classifier.parameters(), train_data, x, codes, config, start, train_config,
                                       name_clusters)
    summary["pretrain_seconds"] = time.perf_counter() - started
    return summary


def _cluster_then_label(classify, parameters, train_data, x, codes, config: SSVAEConfig, start: SSVAEStart,
                        train_config,
                        name_clusters: Callable) -> dict:
    """q(y | x) trained by cross-entropy on targets y_n where labelled, else the name of x_n's cluster: the codes'
    clusters (:func:`embedded_clusters`, no label) named by the one-to-one map that agrees with most labelled
    items (``name_clusters``)."""
    labels, mask = train_data.array("y").long(), train_data.array("y_mask").bool()
    clusters = embedded_clusters(codes.double(), config.num_classes, perplexity=start.pretrain_perplexity,
                                 restarts=start.pretrain_restarts, seed=train_config.seed)
    names = torch.as_tensor(name_clusters(clusters[mask], labels[mask], config.num_classes, config.num_classes))
    targets = torch.where(mask, labels, names[clusters])
    out = pretrain_classifier(classify, parameters, x, targets,
                              epochs=start.pretrain_classifier_epochs, batch_size=train_config.batch_size,
                              learning_rate=train_config.learning_rate, seed=train_config.seed + 1,
                              transform=getattr(train_data, "transform_batch", None), device=codes.device)
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


def _tsne_scale(points):
    """``points`` ``(N, q)`` at a spread t-SNE handles. scikit-learn's Barnes-Hut t-SNE killed the process (a
    segmentation fault) on identical points and on spreads far from 1 (seen beyond about 1e30 and below 1e-20), so
    codes that are not finite or all equal are refused in one line, and a spread outside [1e-6, 1e6] is divided out
    (the affinities are calibrated per point by the perplexity, so a global scale only moves the rounding). Codes
    within that range, every trained autoencoder's, are passed as they are."""
    if not np.isfinite(points).all():
        raise DataError("the autoencoder's codes are not finite (its training diverged); lower --learning-rate, or "
                        "start with --pretrain-epochs 0")
    centre = points.max(0) / 2 + points.min(0) / 2  # no overflow near the largest floats, unlike a mean
    spread = float(np.abs(points - centre).max())
    if spread == 0 or not math.isfinite(spread):
        raise DataError("the autoencoder's codes are all equal (it collapsed) or too far apart to cluster; lower "
                        "--learning-rate, or start with --pretrain-epochs 0")
    return points if 1e-6 <= spread <= 1e6 else (points - centre) / spread


def tsne_map(points: np.ndarray, *, perplexity: float, seed: int, threads: int = 1, neighbours: str = "exact",
             interval_width: float = 2.0) -> np.ndarray:
    """The 2-d t-SNE map ``(N, 2)`` of ``points`` ``(N, q)`` by openTSNE (Poličar et al. 2024): the affinities of
    each point's 3·perplexity nearest neighbours, a PCA start, 250 iterations of early exaggeration (12) and 500
    plain ones, the repulsive forces by FFT interpolation (FIt-SNE, Linderman et al. 2019: O(N) per iteration,
    where scikit-learn's Barnes-Hut tree is O(N log N) with a large constant).

    ``neighbours``: ``"exact"`` (scikit-learn's tree search, the default: on low-dimensional codes faster than the
    approximate index and without its randomness) or ``"annoy"`` (approximate). ``interval_width``: the width, in map
    units, of each interval of the interpolation grid (openTSNE's ``ints_in_interval``; its default is 1): the grid
    grows with the map's spread, so late iterations cost most, and a grid twice as coarse roughly halves the map's
    time at the same clusters (docs/experiments/deep_mixture.md). ``threads``: openTSNE's worker threads.
    Deterministic given ``seed`` and the thread count (its own generators); two threads round the parallel sums
    otherwise than one does, so the default is one thread: a seed gives the same start on every machine."""
    from openTSNE import TSNE

    check_positive_int(threads, "threads")
    check_choice(neighbours, "neighbours", ("exact", "annoy"))
    check_number(interval_width, "interval_width", minimum=0, exclusive_minimum=True)
    points = np.ascontiguousarray(_tsne_scale(points), dtype=np.float64)
    # openTSNE's "auto" picks Barnes-Hut below 10,000 points and FFT above; FFT alone keeps one method at any size.
    embedding = TSNE(2, perplexity=perplexity, initialization="pca", negative_gradient_method="fft",
                     neighbors=neighbours, ints_in_interval=interval_width, n_jobs=threads, random_state=seed,
                     verbose=False).fit(points)
    return np.asarray(embedding, dtype=np.float64)


def embedded_clusters(codes: torch.Tensor, num_clusters: int, *, perplexity: float = 30.0, restarts: int = 10,
                      seed: int = 0) -> torch.Tensor:
    """Cluster labels ``(N,)`` of ``codes`` ``(N, q)`` by a Gaussian mixture on their t-SNE map (N2D's recipe,
    McConville et al. 2019, with t-SNE as the manifold learner)::

        e_n = t-SNE(codes)_n  ``(N, 2)``   (:func:`tsne_map`: ``perplexity`` neighbours' worth of bandwidth)
        labels_n = argmax_k p(k | e_n) under a full-covariance K-component GMM fit to e by EM (best log-likelihood
                   of ``restarts`` k-means++ starts)

    t-SNE keeps each code's neighbourhood and lets distinct neighbourhoods drift apart, so clusters that touch in
    the codes (a 4 and a 9 drawn alike) come out as separate blobs, which a Gaussian mixture then finds. The
    neighbour graph of :func:`emvi.inference.pretraining.spectral_clusters` sees the same neighbourhoods but cuts
    where the graph is thinnest, which for some autoencoders is through a digit rather than between two.
    ``perplexity`` is capped at (N - 1) / 3 for small data.
    Deterministic given ``seed``; the global random streams are untouched. Uses no label.
    """
    check_positive_int(num_clusters, "num_clusters", minimum=2)
    check_positive_int(restarts, "restarts")
    check_number(perplexity, "perplexity", minimum=0, exclusive_minimum=True)
    points = codes.detach().cpu().double().numpy()
    if points.shape[0] < max(4, 2 * num_clusters):
        raise DataError(f"t-SNE clustering needs at least {max(4, 2 * num_clusters)} items for {num_clusters} "
                        f"clusters, got {points.shape[0]}; lower num_components or use more data")
    perplexity = min(float(perplexity), (points.shape[0] - 1) / 3)
    embedding = tsne_map(points, perplexity=perplexity, seed=seed)
    # A mixture that stops at max_iter still gives good labels. The tolerance is tight: on the map, EM creeps for
    # hundreds of iterations before two blobs part (docs/experiments/deep_mixture.md).
    gmm = gaussian_mixture(embedding, num_clusters, full=True, n_init=restarts, max_iter=1000, tol=1e-6, floor=1e-6,
                           seed=seed)
    with torch.no_grad():
        return gmm.responsibilities(_mixture_data(embedding, gmm.config)).argmax(-1)


def _mixture_data(points, config: MixtureConfig) -> torch.Tensor:
    """``points`` ``(N, q)`` (a tensor or numpy array) checked as mixture data, as float64 on the CPU."""
    return check_mixture_data(torch.as_tensor(points).detach(), config).to(device="cpu", dtype=torch.float64)


def gaussian_mixture(points, num_components: int, *, full: bool, n_init: int, max_iter: int, tol: float = 1e-3,
                     floor: float = 1e-6, seed: int = 0, screen_iter: int | None = None) -> MixtureModel:
    """A Gaussian mixture (full or diagonal covariances, ``floor`` added to them) fit by EM to ``points`` ``(N, q)``
    in float64 on the CPU: the best final log-likelihood of ``n_init`` k-means++ starts drawn from a generator
    seeded by ``seed``, each run for at most ``max_iter`` iterations. The same starts, iterations and values as
    the EM path of ``emvi.estimators.Mixture``; stopping at ``max_iter`` is not reported (a start needs none).

    ``screen_iter``: each start runs at most ``screen_iter`` iterations, and only the one with the best
    log-likelihood then continues (to ``max_iter`` iterations in all, or ``tol``): its trajectory is the one it has
    without screening, so the result is the unscreened fit of the start that leads after ``screen_iter``."""
    config = MixtureConfig(num_components=num_components, family="gaussian-full" if full else "gaussian-diag",
                           floor=floor)
    x = _mixture_data(points, config)
    if screen_iter is not None:
        check_positive_int(screen_iter, "screen_iter")
    first_iter = max_iter if screen_iter is None else min(screen_iter, max_iter)

    def fit_once(generator: torch.Generator):
        model = MixtureModel(config, x.shape[1], dtype=torch.float64)
        initialise_mixture(model, x, "kmeans++", generator)
        return model, fit_em(model, x, max_iter=first_iter, tol=tol, warn=False)

    model, screened = best_of_restarts(fit_once, n_init, seed=seed,
                                       objective=lambda outcome: outcome[1].log_likelihood)
    if not screened.converged and screened.n_iter < max_iter:
        # fit_em's first E-step re-evaluates these parameters; measured against the objective before the last
        # M-step, its stopping test is the one the unscreened run makes after that step.
        fit_em(model, x, max_iter=max_iter - screened.n_iter, tol=tol, warn=False,
               previous=screened.log_likelihood_history[-2])
    return model


@torch.no_grad()
def mixture_moments(model: MixtureModel) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(weights (K,), means (K, q), covariances)`` of a fitted Gaussian mixture: variances ``(K, q)`` (diagonal)
    or covariance matrices ``(K, q, q)`` (full)."""
    if model.config.family == "gaussian-full":
        tril = model.scale_tril.detach()
        covariances = tril @ tril.transpose(-1, -2)
    else:
        covariances = model.variances.detach()
    return model.weights.detach(), model.components().mean.detach(), covariances


__all__ = ["cluster_moments", "embedded_clusters", "gaussian_mixture", "gmvae_autoencoder", "mixture_moments",
           "pretrain_gmvae", "pretrain_ssvae", "tsne_map"]
