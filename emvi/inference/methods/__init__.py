"""The method table: every way emvi fits a model, one module and one row each.

A row (:class:`Method`) names the method, its configuration dataclass, and the functions :mod:`emvi.runs` calls::

    fit(model, guide, train_data, config, *, valid_data=None, run=None, resume=False) -> FitResult
    load(model, guide, run, device)               # restore what fit saved in the run directory
    ready(model, guide) -> str | None             # why this model cannot use the method (None: it can)
    convergence_note(config, summary) -> str | None

``run`` is the run directory object ``emvi.runs`` passes in (duck-typed: ``save_checkpoint``, ``load_checkpoint``,
``path``, ``resolved_config``), or None. Methods reach models only through protocols (the EM protocol of
:mod:`emvi.inference.em`, ``initialise``, ``bayesian_view`` for NUTS), never a family's class, so which methods a
model supports follows from what it implements. A new method is one module and one :func:`register_method` call.
Every fit returns one :class:`FitResult`, whose :meth:`FitResult.summary` is what ``summary.json`` holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError
from .names import EM, MCMC, SVI


@dataclass(frozen=True)
class FitResult:
    """What a fit returns, whatever the method; built once at its end.

    ``converged`` is None for a method without a convergence test (NUTS reports R-hat instead; a fixed number of
    SVI epochs); ``n_iter`` counts iterations, epochs or kept draws per chain; ``history`` one dict per iteration or
    epoch (``epoch``, ``train_loss``...); ``metrics`` the method's and model's numbers for the run's summary."""

    method: str
    seed: int
    converged: bool | None = None
    n_iter: int = 0
    history: tuple[dict, ...] = ()
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        """The run's ``summary.json`` entries of the fit: the same keys for every method, then its metrics."""
        return {"method": self.method, "seed": self.seed, "converged": self.converged, "n_iter": self.n_iter,
                "seconds": self.seconds, **self.metrics}


@dataclass(frozen=True)
class Method:
    """One row of the method table (see the module docstring)."""

    name: str
    config_class: type
    fit: Callable[..., FitResult]
    load: Callable[..., None]
    ready: Callable[[Any, Any], str | None] | None = None
    convergence_note: Callable[[Any, dict], str | None] | None = None
    configure: Callable[..., Any] | None = None
    """``configure(entry, model_config, config) -> config``: the model entry's defaults for the method's options."""
    start: Callable[..., dict] | None = None
    """``start(entry, model, guide, train_data, model_config, config, start_config) -> dict``: the model entry's
    start before a new (not resumed) fit, with the entry's start options; returns metrics for the summary."""
    rebuilds: bool = False
    """``fit`` takes ``rebuild(seed) -> (model, guide)``, a freshly built and started pair (for restarts)."""
    resumable: bool = False
    """A fit can continue from the run directory's checkpoint (``--resume``)."""
    single_process: bool = False
    """The fit runs on one process even under torchrun (the others return at once)."""

    def why_not(self, model, guide) -> str | None:
        return None if self.ready is None else self.ready(model, guide)


_METHODS: dict[str, Method] = {}
_LOADED: list[bool] = []


def register_method(method: Method) -> Method:
    """Put ``method`` in the table under its name (replacing a method of that name); returns it."""
    if not isinstance(method, Method):
        raise ConfigError(f"register_method takes a Method, got {type(method).__name__}")
    if not dataclasses.is_dataclass(method.config_class):
        raise ConfigError(f"method {method.name!r}: config_class must be a dataclass, got {method.config_class!r}")
    _METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Drop ``name`` from the table (tests that register a throwaway method)."""
    _METHODS.pop(name, None)


def _builtins() -> None:
    if not _LOADED:
        from . import em, mcmc, svi

        _LOADED.append(True)
        mine = dict(_METHODS)
        _METHODS.clear()
        for module in (svi, em, mcmc):
            _METHODS[module.METHOD.name] = module.METHOD
        _METHODS.update(mine)


def get_method(name: str) -> Method:
    """The fitting method called ``name`` in the method table (``svi``, ``em``, ``mcmc`` or one registered with
    :func:`register_method`); an unknown name is a one-line :class:`~emvi.errors.ConfigError` listing the known ones."""
    _builtins()
    try:
        return _METHODS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name from a spec file
        raise ConfigError(f"unknown method {name!r}; use one of {', '.join(_METHODS)}") from None


def available_methods() -> dict[str, Method]:
    """Every method by name, the built-in ones first."""
    _builtins()
    return dict(_METHODS)


def method_names() -> tuple[str, ...]:
    return tuple(available_methods())


def check_method_name(method) -> None:
    """Raise a one-line :class:`~emvi.errors.ConfigError` unless ``method`` names a row of the table."""
    if method not in method_names():
        raise ConfigError(f"method must be one of {', '.join(method_names())}, got {method!r}")


__all__ = ["EM", "MCMC", "SVI", "FitResult", "Method", "available_methods", "check_method_name", "get_method", "method_names", "register_method",
           "unregister_method"]
