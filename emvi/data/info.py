"""What a model builder may know about its training data (:class:`DataInfo`), built by
:meth:`emvi.data.ArrayDataset.info` and recorded in a run directory's configuration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataInfo:
    """What a builder may know about the data: sizes, shapes and observation type.

    ``event_shape`` is the shape of one observation (``(D,)`` for tables and flattened images, ``(T, D)`` for
    sequences); ``image_shape`` is ``(C, H, W)`` when the observations are images.
    """

    num_data: int
    event_shape: tuple[int, ...]
    image_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    vocab_size: int | None = None
    arrays: dict[str, list[int]] | None = None
    """Per-item shape of each named data array (``x``, ``y``, an .npz's other arrays), for models reading several."""


__all__ = ["DataInfo"]
