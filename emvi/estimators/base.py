"""What every estimator shares: scikit-learn's conventions.

* ``__init__`` stores its arguments verbatim (``get_params``/``set_params``/``sklearn.base.clone`` work); every check
  and every derived value (the model's config, the device, the dtype) happens in ``fit``.
* Inputs may be numpy arrays, nested lists or torch tensors; every public method and fitted attribute returns numpy
  arrays or Python numbers.
* A method that needs a fit raises :class:`NotFittedError` before ``fit``: an emvi error with a one-line message that
  is also scikit-learn's ``NotFittedError`` (so ``sklearn.utils.validation.check_is_fitted`` and
  ``except NotFittedError`` work).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import sklearn.exceptions
import torch
from sklearn.base import BaseEstimator

from ..errors import ConfigError, DataError, EmviError

DTYPES = {"float32": torch.float32, "float64": torch.float64}
"""The floating dtypes an estimator may compute in, by name (torch dtypes are accepted too)."""


class NotFittedError(EmviError, sklearn.exceptions.NotFittedError):
    """An estimator was used before ``fit``."""


class NonNumericDataError(DataError, TypeError):
    """An object array holds something that is not a number (a ``TypeError`` too, as numpy's own)."""


def resolve_dtype(dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtype itself) -> the torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ConfigError(f"dtype must be one of {', '.join(map(repr, DTYPES))}, got {dtype!r}")


def as_input(x, name: str = "X") -> torch.Tensor:
    """An array-like (numpy array, nested list, torch tensor) as a tensor, before the model's own checks.

    Object arrays of numbers are converted to float64 (anything else in them raises numpy's ``TypeError``); sparse
    matrices are refused; read-only arrays are copied (torch cannot wrap them).
    """
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise DataError(f"Complex data not supported: {name} has dtype {x.dtype}; pass real numbers")
        return x.detach()
    if scipy.sparse.issparse(x):
        raise DataError(f"{name} is a sparse matrix, and sparse input is not supported; pass x.toarray()")
    try:
        array = np.asarray(x)
    except ValueError as exc:  # ragged nested lists
        raise DataError(f"{name} must be an array of numbers ({str(exc).splitlines()[0][:120]}); pass a rectangular "
                        "array") from None
    if array.dtype == object:
        try:
            array = array.astype(np.float64)
        except TypeError as exc:
            raise NonNumericDataError(f"{name} must hold numbers ({exc}); pass numbers only") from None
        except ValueError as exc:
            raise DataError(f"{name} must hold numbers ({exc}); pass numbers only") from None
    if not array.flags.writeable or any(stride < 0 for stride in array.strides):  # torch takes neither
        array = array.copy()
    if np.iscomplexobj(array):
        raise DataError(f"Complex data not supported: {name} has dtype {array.dtype}; pass real numbers")
    try:
        return torch.as_tensor(array)
    except TypeError:
        raise DataError(f"{name} must be numeric, got dtype {array.dtype}; pass numbers, e.g. np.asarray(x, dtype=float)"
                        ) from None


def check_shape(x: torch.Tensor, ndim: tuple[int, ...] = (2,), name: str = "X", layout: str = "(items, features)"
                ) -> torch.Tensor:
    """``x`` has one of the dimensions ``ndim`` and at least one feature (its last axis); scikit-learn's wording."""
    if x.dim() not in ndim:
        raise DataError(f"{name} must be {' or '.join(f'{n}-D' for n in ndim)} {layout}, got shape {tuple(x.shape)}; "
                        "Reshape your data: x.reshape(-1, 1) for one feature, x.reshape(1, -1) for one item")
    if x.shape[-1] == 0:
        raise DataError(f"{name} has 0 feature(s) (shape={tuple(x.shape)}) while a minimum of 1 is required; pass at "
                        "least one feature")
    return x


def to_numpy(value) -> np.ndarray:
    """A tensor (detached, on the CPU) or array-like as a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


class EmviEstimator(BaseEstimator):
    """scikit-learn's ``BaseEstimator`` with emvi's fitted check; ``model_`` marks a fitted estimator."""

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def _check_num_features(self, num_features: int) -> None:
        """The number of features seen at ``fit`` must match (scikit-learn's wording, so its checks recognise it)."""
        if hasattr(self, "n_features_in_") and num_features != self.n_features_in_:
            raise DataError(f"X has {num_features} features, but {type(self).__name__} is expecting "
                            f"{self.n_features_in_} features as input; pass data with the training columns")


__all__ = ["DTYPES", "EmviEstimator", "NonNumericDataError", "NotFittedError", "as_input", "check_shape", "resolve_dtype", "to_numpy"]
