"""Deterministic autoencoder pretraining: a start for a VAE's encoder mean and decoder before SVI.

:func:`pretrain_autoencoder` minimises the reconstruction cross-entropy of binary or grey-level data through the
encoder's mean, with no sampling and no KL term::

    min_{φ, θ}  Σ_n Σ_d  BCE(x_nd, sigmoid(f_θ(m_φ(x_n)))_d)        m_φ(x_n) = the location of q(t_n | x_n)

VaDE (Jiang et al. 2017) starts its mixture-prior VAE from such an autoencoder and a Gaussian mixture fit to the codes
m_φ(x_n); the model entries that use it (``gmvae``'s :func:`emvi.catalog.deep_mixture.pretrain_gmvae`) do the
mixture fit themselves. The minibatch order comes from a private generator seeded by ``seed`` (global random streams
are left as they were, so the SVI that follows draws what it would have drawn without pretraining).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from ..validation import check_positive_int


def pretrain_autoencoder(encode: Callable[[torch.Tensor], torch.Tensor], decode: Callable[[torch.Tensor], torch.Tensor],
                         parameters, x: torch.Tensor, *, epochs: int, batch_size: int = 128,
                         learning_rate: float = 1e-3, seed: int = 0, binarize: str | None = None,
                         device: torch.device | str | None = None) -> dict:
    """Adam on the mean reconstruction cross-entropy (nats per item) of ``x`` ``(N, D)`` in [0, 1].

    ``encode`` maps a batch ``(B, D)`` to codes ``(B, q)``, ``decode`` codes to logits ``(B, D)``; ``parameters``
    are the weights trained (the encoder's and decoder's). ``binarize="dynamic"`` draws each batch as Bernoulli(x),
    from the seeded generator. ``device`` (default: the first parameter's) is where the batches go.

    Returns ``{"pretrain_reconstruction_nats": [per epoch], "pretrain_seconds": s}``.
    """
    check_positive_int(epochs, "pretrain_epochs")
    parameters = list(parameters)
    device = torch.device(device) if device is not None else parameters[0].device
    generator = torch.Generator().manual_seed(int(seed))
    optimizer = torch.optim.Adam(parameters, lr=learning_rate)
    x = x.detach().cpu()
    n = x.shape[0]
    started, history = time.perf_counter(), []
    for _ in range(epochs):
        order, total = torch.randperm(n, generator=generator), 0.0
        for start in range(0, n, batch_size):
            batch = x[order[start : start + batch_size]]
            if binarize == "dynamic":
                batch = torch.bernoulli(batch, generator=generator)
            batch = batch.to(device=device, dtype=parameters[0].dtype)
            loss = nn.functional.binary_cross_entropy_with_logits(decode(encode(batch)), batch, reduction="none")
            loss = loss.sum(-1).mean()  # nats per item: the scale of log p(x_n | t_n)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.shape[0]
        history.append(total / n)
    return {"pretrain_reconstruction_nats": history, "pretrain_seconds": time.perf_counter() - started}


@torch.no_grad()
def reconstruction_nats(encode, decode, x: torch.Tensor, *, batch_size: int = 1000) -> float:
    """Mean reconstruction cross-entropy (nats per item) of ``x`` through ``encode`` then ``decode``."""
    total = 0.0
    for start in range(0, x.shape[0], batch_size):
        batch = x[start : start + batch_size]
        logits = decode(encode(batch))
        total += float(nn.functional.binary_cross_entropy_with_logits(logits, batch, reduction="sum"))
    return total / x.shape[0]
