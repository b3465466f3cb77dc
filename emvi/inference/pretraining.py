"""Deterministic autoencoder pretraining: a start for a VAE's encoder mean and decoder before SVI.

:func:`pretrain_autoencoder` minimises the reconstruction cross-entropy of binary or grey-level data through the
encoder's mean, with no sampling and no KL term::

    min_{φ, θ}  Σ_n Σ_d  BCE(x_nd, sigmoid(f_θ(m_φ(x_n)))_d)        m_φ(x_n) = the location of q(t_n | x_n)

VaDE (Jiang et al. 2017) starts its mixture-prior VAE from such an autoencoder and a Gaussian mixture fit to the codes
m_φ(x_n); :func:`emvi.inference.starts.embedded_clusters` fits that mixture to the codes' t-SNE map instead (N2D's
recipe, McConville et al. 2019), and :func:`spectral_clusters` clusters the codes along their nearest-neighbour
graph. The starts that use them (:mod:`emvi.inference.starts`, e.g. ``gmvae``'s
:func:`~emvi.inference.starts.pretrain_gmvae`) set their priors from the clusters themselves. The minibatch order
comes from a private generator seeded by ``seed`` (global random streams are left as they were, so the SVI that
follows draws what it would have drawn without pretraining).

Why not :class:`emvi.inference.svi_loop.SVI`: its loss is a plain network loss (no ELBO, no Pyro trace) and its
shuffling and binarisation draw from that private generator, where the SVI loop's come from ``(seed, epoch)`` and the
global stream.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..errors import DataError
from ..validation import check_positive_int

BatchTransform = Callable[..., tuple[torch.Tensor, ...]]
"""A data set's per-batch transform (:meth:`emvi.data.ArrayDataset.transform_batch`): ``(batch, generator,
index=rows)``."""


def pretrain_autoencoder(encode: Callable[[torch.Tensor], torch.Tensor], decode: Callable[[torch.Tensor], torch.Tensor],
                         parameters, x: torch.Tensor, *, epochs: int, batch_size: int = 128,
                         learning_rate: float = 1e-3, seed: int = 0, transform: BatchTransform | None = None,
                         device: torch.device | str | None = None) -> dict:
    """Adam on the mean reconstruction cross-entropy (nats per item) of ``x`` ``(N, D)`` in [0, 1].

    ``encode`` maps a batch ``(B, D)`` to codes ``(B, q)``, ``decode`` codes to logits ``(B, D)``; ``parameters``
    are the weights trained (the encoder's and decoder's). ``transform`` (the data set's
    ``transform_batch``, e.g. dynamic binarisation) is applied to each batch with the seeded generator. ``device`` (default: the first parameter's) is where the batches go.

    Returns ``{"pretrain_reconstruction_nats": [per epoch], "pretrain_seconds": s}``.
    """
    check_positive_int(epochs, "pretrain_epochs")

    def reconstruction(batch, _):
        loss = nn.functional.binary_cross_entropy_with_logits(decode(encode(batch)), batch, reduction="none")
        return loss.sum(-1).mean()  # nats per item: the scale of log p(x_n | t_n)

    started = time.perf_counter()
    history = _adam_epochs(reconstruction, parameters, x, None, epochs=epochs, batch_size=batch_size,
                           learning_rate=learning_rate, seed=seed, transform=transform, device=device)
    return {"pretrain_reconstruction_nats": history, "pretrain_seconds": time.perf_counter() - started}


def pretrain_classifier(classify: Callable[[torch.Tensor], torch.Tensor], parameters, x: torch.Tensor,
                        targets: torch.Tensor, *, epochs: int, batch_size: int = 128, learning_rate: float = 1e-3,
                        seed: int = 0, transform: BatchTransform | None = None,
                        device: torch.device | str | None = None) -> dict:
    """Adam on the mean cross-entropy of ``classify(x)`` (logits ``(B, C)``) against ``targets`` ``(N,)``, with the
    minibatches and batch transform of :func:`pretrain_autoencoder`. Returns ``{"pretrain_classifier_nats": [per
    epoch]}``."""
    check_positive_int(epochs, "pretrain_classifier_epochs")
    history = _adam_epochs(lambda batch, target: nn.functional.cross_entropy(classify(batch), target), parameters,
                           x, targets.detach().cpu().long(), epochs=epochs, batch_size=batch_size,
                           learning_rate=learning_rate, seed=seed, transform=transform, device=device)
    return {"pretrain_classifier_nats": history}


def _adam_epochs(loss_of, parameters, x: torch.Tensor, targets: torch.Tensor | None, *, epochs: int,
                 batch_size: int, learning_rate: float, seed: int, transform: BatchTransform | None, device) -> list[float]:
    """Epochs of Adam on ``loss_of(batch (B, D), targets (B,) or None)``, shuffled by a private generator seeded by
    ``seed`` (which also draws the batch transform, e.g. dynamic binarisation); the mean loss per item of each epoch."""
    parameters = list(parameters)
    device = torch.device(device) if device is not None else parameters[0].device
    generator = torch.Generator().manual_seed(int(seed))
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    x = x.detach().cpu()
    n, history = x.shape[0], []
    for _ in range(epochs):
        order, total = torch.randperm(n, generator=generator), 0.0
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            batch = x[rows]
            if transform is not None:
                batch = transform((batch,), generator, index=rows)[0]
            batch = batch.to(device=device, dtype=parameters[0].dtype)
            loss = loss_of(batch, None if targets is None else targets[rows].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.shape[0]
        history.append(total / n)
    return history


@torch.no_grad()
def encode_in_chunks(encode, x: torch.Tensor, *, batch_size: int = 1000, device=None, dtype=None) -> torch.Tensor:
    """``encode`` applied to ``x`` ``(N, D)`` ``batch_size`` rows at a time (on ``device`` in ``dtype``, default:
    ``x``'s), concatenated on the CPU: ``(N, q)``. Bounds the network's activation memory on a whole data set."""
    return torch.cat([encode(x[i : i + batch_size].to(device=device or x.device, dtype=dtype or x.dtype)).cpu()
                      for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def reconstruction_nats(encode, decode, x: torch.Tensor, *, batch_size: int = 1000) -> float:
    """Mean reconstruction cross-entropy (nats per item) of ``x`` through ``encode`` then ``decode``."""
    def item_nats(batch):  # (B, 1): only the per-item sums leave the chunk, not its (B, D) logits
        return nn.functional.binary_cross_entropy_with_logits(decode(encode(batch)), batch,
                                                              reduction="none").sum(-1, keepdim=True)

    return float(encode_in_chunks(item_nats, x, batch_size=batch_size).double().sum()) / x.shape[0]


def spectral_clusters(codes: torch.Tensor, num_clusters: int, *, neighbors: int = 10, restarts: int = 10,
                      seed: int = 0) -> torch.Tensor:
    """Cluster labels ``(N,)`` of ``codes`` ``(N, q)`` by spectral clustering of their nearest-neighbour graph
    (Ng, Jordan and Weiss 2001, with one eigenvector more)::

        W = ½ (A + Aᵀ),  A_nm = 1 if m is among the ``neighbors`` nearest codes of n (n itself included)
        U = the K + 1 eigenvectors of the smallest eigenvalues of the normalised Laplacian of W  (K = num_clusters)
        labels = k-means (best of ``restarts`` k-means++ starts) of U's rows scaled to unit length

    On a connected graph the first eigenvector is constant, so K + 1 of them hold K that separate clusters; on a
    graph in pieces the first ones indicate the pieces and must be kept, so none is dropped (K + 1 against NJW's K,
    and the number of k-means starts: docs/experiments/deep_mixture.md).

    The graph follows the data's manifold, which a Gaussian mixture on the codes does not: N2D (McConville et al.
    2019) clusters an autoencoder's codes through such a manifold step for that reason. Deterministic given
    ``seed``; the global random streams are untouched. Uses no label.
    """
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.manifold import spectral_embedding
    from sklearn.neighbors import kneighbors_graph

    check_positive_int(num_clusters, "num_clusters", minimum=2)
    check_positive_int(neighbors, "neighbors")
    check_positive_int(restarts, "restarts")
    points = codes.detach().cpu().double().numpy()
    if points.shape[0] <= max(neighbors, num_clusters + 1):
        raise DataError(f"spectral clustering needs more items ({points.shape[0]}) than neighbours ({neighbors}) "
                        f"and clusters + 1 ({num_clusters + 1}); lower them or use more data")
    adjacency = kneighbors_graph(points, neighbors, include_self=True)
    with warnings.catch_warnings():
        # A graph in several pieces is the easy case for clustering (its eigenvectors indicate the pieces).
        warnings.filterwarnings("ignore", "Graph is not fully connected", UserWarning)
        embedding = spectral_embedding(0.5 * (adjacency + adjacency.T), n_components=num_clusters + 1,
                                       drop_first=False, random_state=seed)
    embedding /= np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    labels = KMeans(num_clusters, n_init=restarts, random_state=seed).fit_predict(embedding)
    return torch.as_tensor(labels, dtype=torch.long)

