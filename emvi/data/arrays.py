"""The in-memory data set every loader returns: aligned tensors, an optional per-batch transform, and what a model
builder may know about them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..errors import DataError
from .binarize import bernoulli_draw
from .info import DataInfo


@dataclass(frozen=True)
class ArrayDataset:
    """In-memory data: ``x`` of shape ``(N, D)`` (float32), optional integer labels ``y`` of shape ``(N,)``.

    Sequences are ``x`` of shape ``(N, T, D)`` padded, with ``lengths`` ``(N,)``. ``arrays`` holds further named
    arrays aligned with ``x`` (an .npz's covariates, label masks...); ``inputs`` names the arrays a model receives,
    in order (``"x"``, ``"y"`` or a key of ``arrays``), for models that take several (declared models).

    ``x_scale``, shaped as ``x``, makes each training step see a fresh draw ``Normal(x, x_scale)`` in place of ``x``:
    uncertain features such as codes drawn from an encoder's q(z | x) (M1+M2 trains its M2 on such draws). Scoring
    reads ``x``, the means.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    image_shape: tuple[int, ...] | None = None
    name: str = "array"
    binarize: str | None = None
    lengths: torch.Tensor | None = None
    arrays: dict[str, torch.Tensor] | None = None
    inputs: tuple[str, ...] | None = None
    x_scale: torch.Tensor | None = None

    def __post_init__(self):
        if self.x_scale is not None:
            if self.x_scale.shape != self.x.shape:
                raise DataError(f"x_scale has shape {tuple(self.x_scale.shape)} but x has {tuple(self.x.shape)}; "
                                "give one standard deviation per value of x")
            if not (torch.isfinite(self.x_scale).all() and (self.x_scale >= 0).all()):
                raise DataError("x_scale must hold finite standard deviations >= 0; drop or clip the others")
            if self.binarize == "dynamic":
                raise DataError("x_scale and dynamic binarisation both redraw x in every step; keep one of them")
        for name, value in (self.arrays or {}).items():
            if value.shape[0] != self.x.shape[0]:
                raise DataError(f"array {name!r} has {value.shape[0]} rows but x has {self.x.shape[0]}; align them")
        if self.y is not None and self.y.shape[0] != self.x.shape[0]:
            raise DataError(f"labels have {self.y.shape[0]} rows but data has {self.x.shape[0]}; pass one label per row")
        if self.lengths is not None and (self.x.dim() != 3 or self.lengths.shape != (self.x.shape[0],)):
            raise DataError(f"lengths must give one length per sequence of x (N, T, D); got lengths of shape "
                            f"{tuple(self.lengths.shape)} for x of shape {tuple(self.x.shape)}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """What the model receives: the observations (and sequence lengths); labels are for analysis only."""
        if self.inputs is not None:
            return tuple(self.array(name) for name in self.inputs)
        return (self.x,) if self.lengths is None else (self.x, self.lengths)

    def array(self, name: str) -> torch.Tensor:
        """The named array: ``"x"``, ``"y"`` (labels) or one of :attr:`arrays`."""
        if self.arrays and name in self.arrays:
            return self.arrays[name]
        if name == "x":
            return self.x
        if name == "y" and self.y is not None:
            return self.y
        present = ["x"] + (["y"] if self.y is not None else []) + list(self.arrays or {})
        raise DataError(f"the data has no array {name!r} (arrays: {', '.join(present)}); save it in the .npz under "
                        f"{name!r}")

    def fingerprint(self) -> str:
        """``"N items, sha256:..."`` of what the model reads (its tensors, their shapes and dtypes): a run records it,
        and a resume or an evaluation of the training items refuses data that changed since the fit."""
        import hashlib

        digest = hashlib.sha256()
        for tensor in self.tensors:
            digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return f"{len(self)} items, sha256:{digest.hexdigest()[:32]}"

    def with_inputs(self, names) -> ArrayDataset:
        """The same data, giving a model the named arrays (checked now) as its tensors."""
        for name in names:
            self.array(name)
        return replace(self, inputs=tuple(names))

    def info(self) -> DataInfo:
        return DataInfo(
            num_data=len(self),
            event_shape=tuple(self.x.shape[1:]),
            image_shape=self.image_shape,
            num_classes=int(self.y.max().item()) + 1 if self.y is not None and len(self.y) else None,
            arrays=self.array_shapes(),
        )

    def array_shapes(self) -> dict[str, list[int]]:
        """Per-item shape of every named array (``x``, ``y`` and :attr:`arrays`)."""
        shapes = {"x": list(self.x.shape[1:])}
        if self.y is not None:
            shapes["y"] = list(self.y.shape[1:])
        shapes.update({name: list(value.shape[1:]) for name, value in (self.arrays or {}).items()})
        return shapes

    def transform_batch(self, batch: tuple[torch.Tensor, ...], generator: torch.Generator | None = None,
                        index: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Per-batch transform applied by the training loops, its draws from ``generator`` (torch's global one by
        default): dynamic binarisation draws ``Bernoulli(x)``; with :attr:`x_scale`, the batch's items (rows
        ``index`` of the data) are drawn from ``Normal(x, x_scale)`` (left as they are without ``index``)."""
        if self.binarize == "dynamic":
            return (bernoulli_draw(batch[0], generator),) + tuple(batch[1:])
        if self.x_scale is not None and index is not None:
            x = batch[0]
            scale = self.x_scale[index.to(self.x_scale.device)].to(x)
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype,
                                device=x.device if generator is None else generator.device).to(x.device)
            return (x + scale * noise,) + tuple(batch[1:])
        return batch

    def subset(self, indices) -> ArrayDataset:
        indices = torch.as_tensor(indices, dtype=torch.long)
        return replace(self, x=self.x[indices], y=None if self.y is None else self.y[indices],
                       lengths=None if self.lengths is None else self.lengths[indices],
                       x_scale=None if self.x_scale is None else self.x_scale[indices],
                       arrays=None if self.arrays is None else {k: v[indices] for k, v in self.arrays.items()})
