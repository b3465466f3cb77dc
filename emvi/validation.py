"""Checks run once, where user data enters emvi. Each raises :class:`~emvi.errors.DataError` with a one-line message."""

from __future__ import annotations

import numpy as np
import torch

from .errors import SIZE_MAX, ConfigError, DataError, short_repr


def as_float_tensor(x, name: str = "data", *, ndim: int | tuple[int, ...] = 2, dtype=torch.float32) -> torch.Tensor:
    """Convert array-like ``x`` to a finite floating tensor with ``ndim`` dimensions and at least one row."""
    if isinstance(x, np.ndarray):
        if np.issubdtype(x.dtype, np.complexfloating):
            raise DataError(f"{name} must be real-valued, got dtype {x.dtype}; pass the real part (or both parts as "
                            "columns)")
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise DataError(f"{name} must hold numbers, got dtype {x.dtype}; convert it with np.asarray(..., dtype=float)")
        if x.dtype not in (np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_) or not x.dtype.isnative:
            x = x.astype(np.float64)  # byte-swapped, float16, unsigned wide ints, timedeltas: what torch may refuse
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise DataError(f"{name} must be an array of numbers ({exc}); pass a numpy array or torch tensor") from None
    if x.dtype == torch.bool or not torch.is_floating_point(x):
        if x.is_complex():
            raise DataError(f"{name} must be real-valued, got dtype {x.dtype}")
        x = x.to(dtype)
    elif x.dtype != dtype and dtype is not None:
        x = x.to(dtype)
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if x.dim() not in allowed:
        raise DataError(
            f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(x.shape)}; "
            "reshape it to (num_samples, num_features)" if allowed == (2,) else
            f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one sample")
    if x.dim() >= 2 and x.shape[-1] == 0:
        raise DataError(f"{name} has no features (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise DataError(f"{name} contains NaN or infinite values (first at index {tuple(bad)}); remove or impute them")
    return x


def check_nonnegative_integers(x: torch.Tensor, name: str = "data") -> torch.Tensor:
    """Counts must be whole numbers >= 0 (Poisson, multinomial observations)."""
    if (x < 0).any():
        raise DataError(f"{name} holds negative counts (min {x.min().item():g}); counts must be >= 0")
    if (x != torch.round(x)).any():
        raise DataError(f"{name} holds non-integer counts; counts must be whole numbers")
    return x


def check_unit_interval(x: torch.Tensor, name: str = "data") -> torch.Tensor:
    """Bernoulli observations (and their relaxations) lie in [0, 1]."""
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1:
        raise DataError(f"{name} must lie in [0, 1] for a Bernoulli likelihood, got range [{lo:g}, {hi:g}]; scale it first")
    return x


def check_positive_int(value, name: str, *, minimum: int = 1, maximum: int = SIZE_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {short_repr(value)}")
    if value > maximum:
        raise ConfigError(f"{name} must be an integer <= {maximum}, got {value!r}; lower it")
    return int(value)


MONTE_CARLO_SAMPLES_MAX = 100_000
"""Importance samples or posterior draws per evaluate/analyze call: the Monte Carlo error at 1e5 draws (about 0.3% of
a standard deviation) is far below any difference these commands report, and more only costs time and memory."""

SEED_MAX = 2**32 - 1
"""NumPy's legacy seeding (which Pyro's ``set_rng_seed`` uses) takes seeds in [0, 2**32 - 1]."""


def check_seed(value, name: str = "seed") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{name} must be an integer in [0, {SEED_MAX}], got {value!r}")
    return int(value)


def check_number(value, name: str, *, minimum: float | None = None, maximum: float | None = None,
                 exclusive_minimum: bool = False) -> float:
    """A finite real number (not a bool) within the bounds; raise ConfigError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        raise ConfigError(f"{name} must be {'>' if exclusive_minimum else '>='} {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum:g}, got {value!r}")
    return float(value)


def check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_components_vs_samples(num_components: int, num_samples: int) -> None:
    if num_components > num_samples:
        raise DataError(
            f"number of components K={num_components} is larger than the number of samples N={num_samples}; "
            "use K <= N or more data"
        )


def resolve_device(device) -> torch.device:
    """``"auto"`` picks CUDA when present; an unavailable CUDA device is an error, not a silent fallback."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a valid torch device ({exc}); use 'cpu', 'cuda' or 'auto'") from None
    if dev.type not in ("cpu", "cuda"):  # meta holds no data; mps, xpu and the rest are untested backends
        raise ConfigError(f"device {device!r} is not supported: emvi runs on 'cpu' or 'cuda' (or 'auto')")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r} asked for but this machine has {torch.cuda.device_count()} CUDA "
                          "device(s); use --device cuda:0 or auto")
    return dev


def first_tensor(data) -> torch.Tensor:
    """The observations of what fitting hooks receive: a dataset's first tensor (``data.tensors[0]``), the first
    element of a tuple or list, or ``data`` itself as a tensor."""
    if hasattr(data, "tensors"):
        return data.tensors[0]
    return data[0] if isinstance(data, (tuple, list)) else torch.as_tensor(data)
