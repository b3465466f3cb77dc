"""Model names -> how to build, fit, load, evaluate, sample and analyse them: a plain table.

The built-in families fill it from :mod:`emvi.catalog` (one file per family, imported by ``import emvi``); user code
adds its own models with :func:`register_model`::

    @register_model("poisson-regression-mixture", config=MyConfig)
    def build(config: MyConfig, data_info: DataInfo):
        return MyModel(config, data_info), MyGuide(...)

The builder receives the model's frozen config dataclass and a :class:`~emvi.data.DataInfo` describing the training data and
returns ``(model, guide)``. Which fitting methods a model supports follows from the protocols its model implements
(see :mod:`emvi.inference.methods`); ``default_method`` is the one ``emvi fit`` uses when none is given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, short_repr


@dataclass(frozen=True)
class ModelEntry:
    """A registered model and the optional hooks the CLI uses beyond the generic SVI path.

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
    build: Callable[[Any, Any], tuple[Any, Any]]
    """``build(config, data_info: emvi.data.DataInfo) -> (model, guide)``."""
    default_method: str = "svi"
    """The fitting method ``emvi fit`` and spec files use when none is given (a name in the method table)."""
    description: str = ""
    evaluate: Callable | None = None
    sample: Callable | None = None
    plots: Callable | None = None
    inference_data: Callable | None = None
    check_data: Callable | None = None
    elbo: str | Callable[[Any], str] = "trace"
    """The ELBO the model trains with by default ("enum" for models with enumerated discrete sites), or a function
    of the model's config returning it."""
    max_plate_nesting: int | None = None
    sequential: bool = False
    """The data are sequences: a 2-D array is one sequence ``(T, D)``, and held-out splits take whole sequences."""
    inputs: Callable[[Any], tuple[str, ...]] | None = None
    """``inputs(config) -> names`` of the data arrays the model takes, in order (default: the data set's tensors)."""
    summarize: Callable | None = None
    """``summarize(model, guide, train_data) -> dict``: metrics of the fitted model on its training items, added to
    the run's ``summary.json`` (e.g. the clustering accuracy of the mixture-prior VAE)."""
    prepare_data: Callable | None = None
    """``prepare_data(config, dataset, split) -> dataset``: the model's view of a loaded split (``"train"`` or
    ``"test"``) before ``inputs`` picks its arrays, e.g. the semi-supervised VAE hides the labels outside a seeded
    class-balanced subset; the same config always gives the same view."""
    pretrain: Callable | None = None
    """``pretrain(model, guide, train_data, config, start_config, train_config) -> dict``: sets the freshly built
    model and guide's starting weights before SVI (e.g. ``gmvae``'s autoencoder and mixture fit, VaDE's start), on the
    device of their parameters, seeded by ``train_config.seed``; it returns metrics for the run's summary.
    :func:`emvi.runs.run_fit` calls it on a new SVI fit only: a resumed fit's checkpoint already holds the
    pretrained, then trained, weights."""
    start_config: type | None = None
    """The dataclass of ``pretrain``'s options (training procedure, kept out of the model's config): a spec's
    ``[start]`` table, ``emvi fit``'s options, ``config.json``'s ``start_config``."""
    stratify: str | None = None
    """The data array whose values split the items into strata that every SVI step draws from
    (:attr:`emvi.inference.TrainConfig.stratify`) when the training options name none (``"off"``: plain steps);
    e.g. the semi-supervised VAE puts its labelled images in every step."""


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    config: type,
    default_method: str = "svi",
    description: str = "",
    **hooks,
):
    """Decorator registering ``build(config, data_info) -> (model, guide)`` under ``name``.

    ``hooks`` are the optional :class:`~emvi.registry.ModelEntry` fields: ``evaluate``, ``sample``, ``plots``,
    ``inference_data``, ``check_data``, ``elbo``, ``max_plate_nesting``, ``sequential``, ``inputs``,
    ``summarize``, ``prepare_data``, ``pretrain``, ``start_config``, ``stratify``.
    """
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"register_model({name!r}): config must be a dataclass, got {config!r}")
    allowed = {f.name for f in dataclasses.fields(ModelEntry)} - {"name", "config_class", "build", "default_method",
                                                               "description"}
    unknown = set(hooks) - allowed
    if unknown:
        raise ConfigError(f"register_model({name!r}): unknown hook(s) {sorted(unknown)}; allowed: {sorted(allowed)}")

    def decorator(build):
        doc = description or (build.__doc__ or "").strip().split("\n")[0]
        add_entry(ModelEntry(name, config, build, default_method, doc, **hooks))
        return build

    return decorator


def add_entry(entry: ModelEntry) -> ModelEntry:
    """Put ``entry`` in the table under ``entry.name`` (replacing an entry of that name)."""
    _MODELS[entry.name] = entry
    return entry


def default_elbo(entry: ModelEntry, config) -> str:
    """The entry's default ELBO name for ``config``."""
    return entry.elbo(config) if callable(entry.elbo) else entry.elbo


def get_model(name: str) -> ModelEntry:
    """The registered :class:`~emvi.registry.ModelEntry` called ``name``; an unknown name is a one-line
    :class:`~emvi.errors.ConfigError` listing the registered ones."""
    try:
        return _MODELS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name from a spec file
        raise ConfigError(f"unknown model {name!r}; registered models: {', '.join(sorted(_MODELS)) or 'none'}") from None


def available_models() -> dict[str, ModelEntry]:
    """Every registered model entry by name, sorted by name (the built-in catalog and the user's own)."""
    return dict(sorted(_MODELS.items()))


def import_user_module(module: str, base_dir=None, *, where: str = "--import", local: bool = True) -> None:
    """Import the user's module (which registers models), named by the user: from the installed environment, else
    (``local``) from the spec's folder or the working directory, which are searched *after* the installed packages
    (a file there never shadows one) and taken off ``sys.path`` again once the import is done. ``local=False`` (a run
    directory naming the module, read without the user's consent) refuses a module that is not installed. Any
    failure, including the module's own exceptions or ``sys.exit``, is one line naming ``where``."""
    import importlib
    import importlib.machinery
    import re
    import sys
    from pathlib import Path

    if not isinstance(module, str) or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", module):
        raise ConfigError(f"{where} must be a module name like 'my_models' (no path, no leading dot), got "
                          f"{short_repr(module)}")
    if module in sys.modules:
        return
    folders = [str(Path(base_dir).resolve()) if base_dir is not None else None, str(Path.cwd())]
    # Installed: found on sys.path without the working directory (``python -c``/``-m`` put it first) or the spec's.
    search = [p for p in sys.path if p not in ("", ".", *filter(None, folders))]
    top = module.split(".")[0]
    installed = top in sys.builtin_module_names or importlib.machinery.PathFinder.find_spec(top, search) is not None
    if not installed and not local:
        raise ConfigError(f"{where} names module {module!r}, which is not installed here; importing it runs code "
                          f"from {folders[-1]}: pass --trust-run-code if you trust that folder, or install the module")
    added = [] if installed else [f for f in dict.fromkeys(folders) if f and f not in sys.path]
    sys.path.extend(added)
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import {module!r} ({exc}); put it on PYTHONPATH or beside the spec") from None
    except SystemExit as exc:
        raise ConfigError(f"{where}: importing {module!r} called sys.exit({exc.code!r}); a model module must not exit"
                          ) from None
    except Exception as exc:  # noqa: BLE001 - the user's code: its error, in one line
        first = " ".join(str(exc).split())[:200]
        raise ConfigError(f"{where}: importing {module!r} raised {type(exc).__name__}: {first}; fix the module"
                          ) from None
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)
