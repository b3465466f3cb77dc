"""Model names -> how to build, fit, load, evaluate, sample and analyse them: a plain table.

The built-in families fill it from :mod:`emvi.catalog` (one file per family, imported by ``import emvi``); user code
adds its own models with :func:`register_model`::

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

    * ``fit(model, guide, train_data, *, method, config, valid_data, run) -> dict`` fits by a method other than
      ``"svi"``: ``config`` is that method's :class:`~emvi.inference.em.EMConfig` or
      :class:`~emvi.inference.mcmc.MCMCConfig`, ``run`` the :class:`~emvi.rundir.RunDirectory` (or None) whose
      checkpoint it writes; it returns summary metrics (``converged``, ``n_iter``, ``history``...).
    * ``load(model, guide, run, device)`` restores what ``fit`` saved in the :class:`~emvi.rundir.RunDirectory`.
    * ``evaluate(model, guide, data, *, num_samples) -> dict`` held-out metrics (default: the negative ELBO).
    * ``sample(model, guide, num_samples) -> Tensor`` draws new observations.
    * ``plots(model, guide, data, history, run_dir) -> list[Path]`` writes PNG files.
    * ``inference_data(model, guide, data, *, method, num_samples, run_dir) -> arviz.InferenceData`` for
      ``emvi analyze`` (see :mod:`emvi.analysis.report`).
    * ``check_data(config, data)`` raises :class:`emvi.errors.DataError` when the training data (an
      :class:`~emvi.data.ArrayDataset`) does not suit the model as configured (shape, support, sizes); called by
      :func:`emvi.runs.run_fit` whatever the method, before anything is written.
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
    check_data: Callable | None = None
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
    ``inference_data``, ``check_data``, ``elbo``, ``max_plate_nesting``, ``sequential``.
    """
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"register_model({name!r}): config must be a dataclass, got {config!r}")
    allowed = {f.name for f in dataclasses.fields(ModelEntry)} - {"name", "config_class", "build", "methods", "description"}
    unknown = set(hooks) - allowed
    if unknown:
        raise ConfigError(f"register_model({name!r}): unknown hook(s) {sorted(unknown)}; allowed: {sorted(allowed)}")

    def decorator(build):
        doc = description or (build.__doc__ or "").strip().split("\n")[0]
        add_entry(ModelEntry(name, config, build, tuple(methods), doc, **hooks))
        return build

    return decorator


def add_entry(entry: ModelEntry) -> ModelEntry:
    """Put ``entry`` in the table under ``entry.name`` (replacing an entry of that name)."""
    _MODELS[entry.name] = entry
    return entry


def get_model(name: str) -> ModelEntry:
    try:
        return _MODELS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name from a spec file
        raise ConfigError(f"unknown model {name!r}; registered models: {', '.join(sorted(_MODELS)) or 'none'}") from None


def available_models() -> dict[str, ModelEntry]:
    return dict(sorted(_MODELS.items()))
