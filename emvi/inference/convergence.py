"""The one convergence monitor: every iterative fit that stops at ``max_iter`` says so through :func:`~emvi.inference.convergence.warn_not_converged`.

The warning is scikit-learn's ``sklearn.exceptions.ConvergenceWarning``, so ``warnings`` filters and
``pytest.warns`` written for scikit-learn catch emvi's too. scikit-learn is imported only when a warning is due, never
by ``import emvi``; :class:`ConvergenceWarning` is the name emvi's modules filter by without importing it (a filter
on it matches scikit-learn's class and its subclasses). A caller that reports convergence itself (``emvi fit`` prints
one line from the run's summary) fits inside :func:`convergence_reported`, where no warning is emitted.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_REPORTED: ContextVar[bool] = ContextVar("emvi_convergence_reported", default=False)


def _scikit_learn_class() -> type | None:
    """``sklearn.exceptions.ConvergenceWarning`` if scikit-learn is loaded (else no warning of it can exist)."""
    return getattr(sys.modules.get("sklearn.exceptions"), "ConvergenceWarning", None)


class _StandsForScikitLearn(type):
    def __subclasscheck__(cls, other) -> bool:
        target = _scikit_learn_class()
        return type.__subclasscheck__(cls, other) or (target is not None and isinstance(other, type)
                                                      and issubclass(other, target))

    def __instancecheck__(cls, instance) -> bool:
        return cls.__subclasscheck__(type(instance))


class ConvergenceWarning(UserWarning, metaclass=_StandsForScikitLearn):
    """A fit stopped at ``max_iter`` before its objective settled: stands for scikit-learn's ``ConvergenceWarning``,
    which is what :func:`~emvi.inference.convergence.warn_not_converged` emits (``issubclass(sklearn_class, ConvergenceWarning)`` holds)."""


def warn_not_converged(message: str, *, stacklevel: int = 1) -> None:
    """Warn scikit-learn's ``ConvergenceWarning`` with ``message`` (``stacklevel`` as for :func:`warnings.warn`,
    counted from the caller), unless inside :func:`convergence_reported`."""
    if _REPORTED.get():
        return
    from sklearn.exceptions import ConvergenceWarning as ScikitLearnConvergenceWarning

    warnings.warn(message, ScikitLearnConvergenceWarning, stacklevel=stacklevel + 1)


@contextmanager
def convergence_reported() -> Iterator[None]:
    """No convergence warning inside: for a caller that reports convergence itself (a run's summary)."""
    token = _REPORTED.set(True)
    try:
        yield
    finally:
        _REPORTED.reset(token)


__all__ = ["ConvergenceWarning", "convergence_reported", "warn_not_converged"]
