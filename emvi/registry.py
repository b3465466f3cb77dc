"""Model names -> how to build them, so the CLI, spec files and user code share one mechanism.

A model registers itself with :func:`register_model`; user code does the same for its own models::

    @register_model("poisson-regression-mixture", config=MyConfig)
    def build(config: MyConfig, data_info: DataInfo):
        return MyModel(config, data_info), MyGuide(...)

The builder receives the model's frozen config dataclass and a :class:`DataInfo` describing the training data and
returns ``(model, guide)``.  ``methods`` lists the fitting procedures the model supports (``"svi"``, ``"em"``, ``"mcmc"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


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


@dataclass(frozen=True)
class ModelEntry:
    """A registered model and the optional hooks the CLI uses beyond the generic SVI path.

    * ``fit(model, guide, train_data, *, method, train_config, valid_data, run_dir) -> dict`` fits by a method other
      than ``"svi"`` (EM, MCMC) and returns summary metrics; it saves what it needs in ``run_dir``.
    * ``load(model, guide, run_dir, device)`` restores a fitted model from ``run_dir`` when ``fit`` saved it its own way.
    * ``evaluate(model, guide, data, *, num_samples) -> dict`` held-out metrics (default: the negative ELBO).
    * ``sample(model, guide, num_samples) -> Tensor`` draws new observations.
    * ``plots(model, guide, data, history, run_dir) -> list[Path]`` writes PNG files.
    * ``inference_data(model, guide, data, *, method, num_samples, run_dir) -> arviz.InferenceData`` for
      ``emvi analyze`` (see :mod:`emvi.analysis.report`).
    """

    name: str
    config_class: type
    build: Callable[[Any, DataInfo], tuple[Any, Any]]
    methods: tuple[str, ...] = ("svi",)
    description: str = ""
    fit: Callable | None = None
    load: Callable | None = None
    evaluate: Callable | None = None
    sample: Callable | None = None
    plots: Callable | None = None
    inference_data: Callable | None = None
    elbo: str = "trace"
    """The ELBO the model trains with by default ("enum" for models with enumerated discrete sites)."""
    max_plate_nesting: int | None = None
    sequential: bool = False
    """The data are sequences: a 2-D array is one sequence ``(T, D)``, and held-out splits take whole sequences."""


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    config: type,
    methods: tuple[str, ...] = ("svi",),
    description: str = "",
    **hooks,
):
    """Decorator registering ``build(config, data_info) -> (model, guide)`` under ``name``.

    ``hooks`` are the optional :class:`ModelEntry` fields: ``fit``, ``load``, ``evaluate``, ``sample``, ``plots``,
    ``inference_data``, ``elbo``, ``max_plate_nesting``, ``sequential``.
    """
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"register_model({name!r}): config must be a dataclass, got {config!r}")
    allowed = {f.name for f in dataclasses.fields(ModelEntry)} - {"name", "config_class", "build", "methods", "description"}
    unknown = set(hooks) - allowed
    if unknown:
        raise ConfigError(f"register_model({name!r}): unknown hook(s) {sorted(unknown)}; allowed: {sorted(allowed)}")

    def decorator(build):
        doc = description or (build.__doc__ or "").strip().split("\n")[0]
        _MODELS[name] = ModelEntry(name, config, build, tuple(methods), doc, **hooks)
        return build

    return decorator


def attach_hooks(name: str, **hooks) -> None:
    """Add hooks to an already registered model (used by layers above the models, e.g. analysis)."""
    entry = _MODELS[name]
    _MODELS[name] = dataclasses.replace(entry, **hooks)


def get_model(name: str) -> ModelEntry:
    _load_builtin_models()
    try:
        return _MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; registered models: {', '.join(sorted(_MODELS)) or 'none'}") from None


def available_models() -> dict[str, ModelEntry]:
    _load_builtin_models()
    return dict(sorted(_MODELS.items()))


def _load_builtin_models() -> None:
    # Importing emvi.models runs the built-in @register_model decorators; emvi.analysis.hooks then attaches the
    # analysis hooks, which models may not import themselves (layers point one way).
    import emvi.analysis.hooks  # noqa: F401
    import emvi.models  # noqa: F401
