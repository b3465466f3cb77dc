"""A Pyro user's entry to emvi: :func:`train` fits any model/guide pair by SVI and can keep the fit as a run directory.

``emvi.train(model, guide, data, loss=pyro.infer.Trace_ELBO(), optim=pyro.optim.Adam({"lr": 1e-3}))`` takes Pyro
ELBO instances and optimisers (or their names, ``loss="trace"``, ``optim="adam"``), plain ``model(*data)`` callables
and ``guide=None`` (an ``AutoNormal`` over the continuous latents, discrete ones summed out). With ``run_dir`` the run
directory records what rebuilds the fit: the model and guide as ``module:qualname`` (functions, or modules built
with their default arguments, defined in an importable module, not ``__main__``), the data, and the parameters in the checkpoint, so ``emvi evaluate RUN``
(importance-sampled log p(x)) and ``emvi analyze RUN`` (per-item latents) work on it with no ``register_model``.
:func:`rebuild_python_run` is their side of it.

The mini-batch ELBO is unbiased for the full data only when the model scales its data plate by N / batch: a model
that takes ``num_data`` gets the full size (``emvi.plates.data_plate(x, num_data)``); one that does not gets none,
so its ``pyro.plate("data", len(x))`` sees one batch as the whole data — give it ``num_data`` (or
``pyro.plate("data", N, subsample=...)``), or train it with ``batch_size`` at least the data size.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import ConfigError
from .inference.auto import accepts_num_data, prepare_model
from .inference.runner import train as _train
from .inference.svi_loop import as_tensors
from .inference.train_config import TrainConfig, TrainResult

DATA_FILE = "data.pt"
"""The training (and held-out) tensors of a run written by :func:`train`, for ``emvi evaluate|analyze``."""


def train(model: Callable, guide: Callable | None = None, data=None, *, loss=None, optim=None,
          config: TrainConfig | None = None, valid_data=None, run_dir=None, resume: bool = False,
          extra_config: dict | None = None, callbacks: tuple = (), auto_guide: str = "normal") -> TrainResult:
    """Fit ``model`` and ``guide`` to ``data`` by SVI; returns a :class:`~emvi.inference.TrainResult` (its ``guide``
    is the automatic one when ``guide`` is None).

    Args:
        model, guide: ``f(*data)`` or ``f(*data, num_data=N)`` callables (functions, ``nn.Module``/``PyroModule``).
        data, valid_data: a tensor ``(N, ...)``, a tuple of tensors sharing dim 0 (the model's positional
            arguments), or an ``ArrayDataset``.
        loss: an ELBO name (``trace``, ``meanfield``, ``renyi``, ``enum``, ``auto``) or a Pyro ELBO instance
            (``Trace_ELBO()``, ``TraceEnum_ELBO(max_plate_nesting=1)``, ``RenyiELBO(alpha=0, num_particles=5)``).
        optim: an optimiser name, a torch optimiser class or a ``pyro.optim`` optimiser (one torch optimiser over
            every parameter; ``config.learning_rate`` for a class).
        config: epochs, batch size, schedules... (:class:`~emvi.inference.TrainConfig`).
        run_dir: a folder (or :class:`emvi.rundir.RunDirectory`) for metrics, checkpoints and configuration.
        resume: continue the checkpoint in ``run_dir``.
        extra_config: what the run's configuration records beside the training options (``emvi fit`` passes its
            model and data); without it a run directory records how :func:`rebuild_python_run` rebuilds the fit.
        callbacks: functions of each epoch's metrics, or :class:`~emvi.inference.svi_loop.Callback` objects.
        auto_guide: ``normal`` (AutoNormal) or ``delta`` (AutoDelta, MAP) for ``guide=None``.
    """
    config = config if config is not None else TrainConfig()
    if data is None:
        raise ConfigError("train needs data: emvi.train(model, guide, data, ...)")
    if isinstance(loss, str):
        config, loss = (config if loss == "auto" else dataclasses.replace(config, elbo=loss)), None
    if isinstance(optim, str):
        config, optim = dataclasses.replace(config, optimizer=optim), None
    run = _as_run(run_dir)
    record = None
    if extra_config is None and run is not None:
        record = {"model": "python", "python": python_record(model, guide, auto_guide), "data": {"saved": DATA_FILE}}
    fit_model, fit_guide = model, guide
    if guide is None or not accepts_num_data(model) or not accepts_num_data(guide):
        tensors, transform = as_tensors(data, "data", torch.device("cpu"))
        prepared = prepare_model(model, transform(tuple(t[: config.batch_size] for t in tensors)), guide,
                                 auto_guide=auto_guide, num_data=int(tensors[0].shape[0]))
        fit_model, fit_guide = prepared.model, prepared.guide
        if loss is None and config.elbo != "enum" and prepared.discrete_sites:
            config = dataclasses.replace(config, elbo="enum")
        if loss is None and config.max_plate_nesting is None and prepared.elbo == "enum":
            config = dataclasses.replace(config, max_plate_nesting=prepared.max_plate_nesting)
    if record is not None and not resume:
        _save_data(run, data, valid_data)
    return _train(fit_model, fit_guide, data, config=config, valid_data=valid_data, run=run, resume=resume,
                  extra_config=record if extra_config is None else extra_config, callbacks=callbacks, loss=loss,
                  optim=optim)


def _as_run(run_dir):
    if run_dir is None or hasattr(run_dir, "save_checkpoint"):
        return run_dir
    from .rundir import RunDirectory

    return RunDirectory(run_dir)


def python_record(model, guide, auto_guide: str) -> dict:
    """``{"model": "module:qualname", "guide": ... or None, "auto_guide": name for guide=None}``; a part that cannot
    be imported again (defined in ``__main__`` or inside a function) is recorded as a one-line note instead."""
    return {"model": _importable(model, "model"), "guide": None if guide is None else _importable(guide, "guide"),
            "auto_guide": auto_guide if guide is None else None}


def _importable(fn, what: str) -> str | None:
    """``module:qualname`` of a function, ``module:qualname()`` of a module built without arguments, else ``!why``
    (the note :func:`rebuild_python_run` refuses the run with)."""
    target, suffix = (type(fn), "()") if isinstance(fn, torch.nn.Module) else (fn, "")
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    if not module or not qualname:
        reason = f"a {type(fn).__name__} with no importable name"
    elif module == "__main__":
        reason = "defined in __main__"
    elif "<" in qualname:
        reason = f"{qualname}, not reachable by name"
    else:
        return f"{module}:{qualname}{suffix}"
    return f"!the {what} is {reason}"


def _save_data(run, data, valid_data) -> None:
    from .rundir import save_checkpoint

    train_tensors, _ = as_tensors(data, "data", torch.device("cpu"))
    valid = None if valid_data is None else list(as_tensors(valid_data, "validation data", torch.device("cpu"))[0])
    run.create()
    save_checkpoint({"train": list(train_tensors), "valid": valid}, run.file(DATA_FILE))


def _resolve(path: str | None, where: str):
    if not path or path.startswith("!"):
        why = path[1:] if path else f"{where} was not recorded"
        raise ConfigError(f"cannot rebuild {where}: {why}; define it in an importable module and train again")
    module, _, qualname = path.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in qualname.removesuffix("()").split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where} {path} cannot be imported ({exc}); put its module on PYTHONPATH") from None
    if not qualname.endswith("()"):
        return obj
    try:  # a module the run was trained with, built again with its default arguments
        return obj()
    except TypeError as exc:
        raise ConfigError(f"{where} {path} cannot be built without arguments ({exc}); train a function or a module "
                          "whose defaults are the trained ones") from None


def rebuild_python_run(run, resolved: dict, *, split: str = "train", device="cpu"):
    """``(model, guide, dataset)`` of a run :func:`train` wrote: the recorded functions (an automatic guide rebuilt
    on the data), the parameters of its checkpoint (Pyro's global param store holds those of ``pyro.param``), and
    the ``split`` (``train`` or ``valid``) of the saved data as an ``ArrayDataset``."""
    import pyro

    from .data import ArrayDataset
    from .inference.runner import load_modules
    from .rundir import load_checkpoint

    record = resolved.get("python") or {}
    model = _resolve(record.get("model"), f"{run.path}'s model")
    auto = record.get("guide") is None and record.get("auto_guide")
    guide = None if auto else _resolve(record.get("guide"), f"{run.path}'s guide")
    saved = load_checkpoint(run.file(resolved["data"]["saved"]))
    tensors = saved["train"] if split == "train" else saved.get("valid")
    if not tensors:
        raise ConfigError(f"the run in {run.path} held no items out; use --split train")
    prepared = prepare_model(model, tuple(t[:256] for t in saved["train"]), guide,
                             auto_guide=record.get("auto_guide") or "normal", num_data=int(saved["train"][0].shape[0]))
    model, guide = prepared.model, prepared.guide
    state = run.load_checkpoint(map_location=device)
    pyro.clear_param_store()  # the parameters of pyro.param live there; create them, then overwrite their values
    example = tuple(t[:2].to(device) for t in saved["train"])
    for module in (model, guide):
        if isinstance(module, torch.nn.Module):
            module.to(device)
    with pyro.poutine.block():
        guide_trace = pyro.poutine.trace(guide).get_trace(*example)
        pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(*example)
    load_modules(state, model, guide, pyro.get_param_store())
    arrays = {f"input{i}": t for i, t in enumerate(tensors[1:], start=1)}
    dataset = ArrayDataset(x=tensors[0], name=str(Path(run.path).name), arrays=arrays or None,
                           inputs=("x", *arrays) if arrays else None)
    return model, guide, dataset


__all__ = ["rebuild_python_run", "train"]
