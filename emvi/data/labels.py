"""Semi-supervised label subsets: a seeded, class-balanced choice of which items keep their labels."""

from __future__ import annotations

import torch

from ..errors import DataError


def balanced_label_mask(labels: torch.Tensor, per_class: int, *, seed: int = 0) -> torch.Tensor:
    """``(N,)`` bool mask marking ``per_class`` items of every class in ``labels`` ``(N,)``, drawn uniformly without
    replacement by a generator seeded with ``seed``; the same labels and seed always give the same subset."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.numel() == 0:
        raise DataError(f"labels must be a non-empty 1-D array, got shape {tuple(labels.shape)}; the data set "
                        "needs labels (y) for a labelled subset")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise DataError(f"labels per class must be an integer >= 1, got {per_class!r}")
    generator = torch.Generator().manual_seed(int(seed))
    mask = torch.zeros(labels.shape[0], dtype=torch.bool)
    for value in torch.unique(labels):
        members = torch.nonzero(labels == value).flatten()
        if members.numel() < per_class:
            raise DataError(f"class {int(value)} has {members.numel()} items, fewer than the {per_class} labels per "
                            "class asked for; lower --labels-per-class")
        mask[members[torch.randperm(members.numel(), generator=generator)[:per_class]]] = True
    return mask


__all__ = ["balanced_label_mask"]
