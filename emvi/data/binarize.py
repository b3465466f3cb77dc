"""Binarisation of grey levels in [0, 1]: the one home of every Bernoulli draw of the data.

A data set is binarised ``"static"`` (once, when loaded: :func:`binarize_static`) or ``"dynamic"`` (a fresh draw
``x_b ~ Bernoulli(x)`` of every training batch: :func:`bernoulli_draw`, applied by
:meth:`emvi.data.ArrayDataset.transform_batch`). A dynamically binarised run is scored on one fixed draw of the
held-out images (:func:`evaluation_draw`, seeded by :data:`EVALUATION_SEED`), so that every evaluation, analysis and
benchmark of it sees the same binary images. Shapes: ``x`` is ``(N, D)`` (or any shape); outputs have ``x``'s shape
and dtype.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError

EVALUATION_SEED = 0
"""Seed of the one Bernoulli draw on which dynamically binarised data are evaluated (the usual protocol)."""

STATIC_MODES = ("threshold", "sample")


def bernoulli_draw(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw ``Bernoulli(x)`` of grey levels ``x`` in [0, 1] (torch's global generator unless ``generator``)."""
    return torch.bernoulli(x, generator=generator)


def binarize_static(x: torch.Tensor, mode: str = "threshold", seed: int = 0) -> torch.Tensor:
    """Binary images once and for all: ``x > 0.5`` (``mode="threshold"``) or one seeded draw (``"sample"``)."""
    if mode == "threshold":
        return (x > 0.5).to(x.dtype)
    if mode == "sample":
        return bernoulli_draw(x, torch.Generator().manual_seed(int(seed)))
    raise ConfigError(f"static_mode must be 'threshold' or 'sample', got {mode!r}")


def evaluation_draw(x: torch.Tensor, seed: int = EVALUATION_SEED) -> torch.Tensor:
    """The fixed Bernoulli draw of ``x`` on which a dynamically binarised run is scored."""
    return bernoulli_draw(x, torch.Generator().manual_seed(int(seed)))


def evaluation_images(data) -> torch.Tensor:
    """``data.x`` as a model scores it: :func:`evaluation_draw` of it when ``data`` is dynamically binarised."""
    return evaluation_draw(data.x) if getattr(data, "binarize", None) == "dynamic" else data.x


def evaluation_tensors(data) -> tuple[torch.Tensor, ...]:
    """``data``'s arrays as a model scores them: dynamically binarised images as :func:`evaluation_draw`."""
    tensors = tuple(data.tensors)
    if getattr(data, "binarize", None) == "dynamic":
        tensors = (evaluation_draw(tensors[0]),) + tensors[1:]
    return tensors


__all__ = ["EVALUATION_SEED", "STATIC_MODES", "bernoulli_draw", "binarize_static", "evaluation_draw",
           "evaluation_images", "evaluation_tensors"]
