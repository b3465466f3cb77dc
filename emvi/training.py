"""A Pyro user's entry to emvi: :func:`train` fits any model/guide pair by SVI and can keep the fit as a run directory.

``emvi.train(model, guide, data, loss=pyro.infer.Trace_ELBO(), optim=pyro.optim.Adam({"lr": 1e-3}))`` takes Pyro
ELBO instances and optimisers (or their names, ``loss="trace"``, ``optim="adam"``), plain ``model(*data)`` callables
and ``guide=None`` (an ``AutoNormal`` over the continuous latents, discrete ones summed out). With ``run_dir`` the run
directory records what rebuilds the fit: the model and guide as ``module:qualname`` (functions, or modules built
with their default arguments, defined in an importable module, not ``__main__``), the data, and the parameters in the checkpoint, so ``emvi evaluate RUN``
(importance-sampled log p(x)) and ``emvi analyze RUN`` (per-item latents) work on it with no ``register_model``.
:func:`~emvi.training.load_python_run` is their side of it.

The mini-batch ELBO is unbiased for the full data only when the model scales its data plate by N / batch: a model
that takes ``num_data`` gets the full size (``emvi.plates.data_plate(x, num_data)``); one that does not gets none,
so its ``pyro.plate("data", len(x))`` sees one batch as the whole data — give it ``num_data`` (or
``pyro.plate("data", N, subsample=...)``), or train it with ``batch_size`` at least the data size.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path

import torch

from .config import method_settings
from .errors import ConfigError
from .inference import distributed
from .inference.auto import accepts_num_data, prepare_model
from .inference.runner import train as _train
from .inference.svi_loop import as_tensors
from .inference.train_config import TrainConfig, TrainResult
from .registry import import_user_module
from .rundir import DATA

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
            model and data); without it a run directory records how :func:`~emvi.training.load_python_run` rebuilds the fit.
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
        python = python_record(model, guide, auto_guide)
        rebuildable = not any(str(v).startswith("!") for v in (python["model"], python["guide"]))
        record = {"model": "python", "python": python,  # the data is saved only for a run that can be rebuilt
                  "data": {"saved": DATA if rebuildable else None, "valid_items": _num_items(valid_data),
                           "binarize": getattr(data, "binarize", None)}}
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
    if record is not None and record["data"]["saved"] and not resume and distributed.is_main_process():
        _save_data(run, data, valid_data)
    return _train(fit_model, fit_guide, data, config=config, valid_data=valid_data, run=run, resume=resume,
                  extra_config=record if extra_config is None else extra_config, callbacks=callbacks, loss=loss,
                  optim=optim)


def _needs_arguments(cls) -> bool:
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        return True
    return any(p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                                    p.KEYWORD_ONLY) for p in parameters)


def _num_items(data) -> int:
    return 0 if data is None else int(as_tensors(data, "validation data", torch.device("cpu"))[0][0].shape[0])


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


def _importable(fn, what: str) -> str:
    """``module:qualname`` of a function, ``module:qualname()`` of a module whose class needs no arguments, else
    ``!why`` (the note :func:`~emvi.training.load_python_run` refuses the run with)."""
    target, suffix = (type(fn), "()") if isinstance(fn, torch.nn.Module) else (fn, "")
    module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
    if suffix and _needs_arguments(target):
        reason = f"a {qualname} built with arguments"
    elif not module or not qualname:
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
    save_checkpoint({"train": list(train_tensors), "valid": valid}, run.file(DATA))


def _resolve(path: str | None, where: str, trust_code: bool = False):
    if not path or path.startswith("!"):
        why = path[1:] if path else f"{where} was not recorded"
        raise ConfigError(f"cannot rebuild {where}: {why}; train functions (or modules built without arguments) "
                          "defined in an importable module, or a registered model with 'emvi fit'")
    module, _, qualname = path.partition(":")
    import_user_module(module, where=where, local=trust_code)  # not installed: only with the user's consent
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


def is_python_run(resolved: dict) -> bool:
    """Whether a run's configuration was written by :func:`train` (rather than ``emvi fit``)."""
    return resolved.get("model") == "python" and isinstance(resolved.get("python"), dict)


def python_split(resolved: dict, split: str, where) -> str:
    """The split to evaluate of a :func:`train` run: ``auto`` is ``valid`` when it held data out, else ``train``."""
    held_out = bool(resolved.get("data", {}).get("valid_items"))
    if split == "auto":
        return "valid" if held_out else "train"
    if split == "test":
        raise ConfigError(f"{where} was trained on tensors, which have no test split; use --split train (or valid "
                          "when the fit held data out)")
    return split


def load_python_run(run, resolved: dict, *, split: str = "train", device="cpu", trust_code: bool = False):
    """``(entry, model, guide, dataset, resolved)`` of a run :func:`train` wrote: the recorded functions (an
    automatic guide rebuilt on the data), the parameters of its checkpoint (Pyro's param store holds those of
    ``pyro.param``: it is cleared and refilled), the ``split`` (``train`` or ``valid``) of the saved data as an
    ``ArrayDataset``, and an unregistered :class:`~emvi.registry.ModelEntry` whose ``evaluate`` and
    ``inference_data`` hooks work on any such pair."""
    import pyro

    from .data import ArrayDataset
    from .inference.svi_loop import fitted_weights, load_modules
    from .rundir import load_checkpoint

    record = resolved["python"]
    model = _resolve(record.get("model"), f"{run.path}'s model", trust_code)
    auto = record.get("guide") is None and record.get("auto_guide")
    guide = None if auto else _resolve(record.get("guide"), f"{run.path}'s guide", trust_code)
    if not resolved["data"].get("saved"):
        raise ConfigError(f"the run in {run.path} saved no data (its model or guide cannot be rebuilt)")
    saved = load_checkpoint(run.file(resolved["data"]["saved"]))
    tensors = saved["train"] if split == "train" else saved.get("valid")
    if not tensors:
        raise ConfigError(f"the run in {run.path} held no items out; use --split train")
    first = tuple(t[: int(method_settings(resolved).get("batch_size", 128))] for t in saved["train"])
    prepared = prepare_model(model, first, guide, auto_guide=record.get("auto_guide") or "normal",
                             num_data=int(saved["train"][0].shape[0]))
    state = run.load_checkpoint(map_location=device)
    pyro.clear_param_store()  # create the parameters of pyro.param and lazy modules, then overwrite their values
    model, guide = prepared.model, prepared.guide
    for module in (model, guide):
        if isinstance(module, torch.nn.Module):
            module.to(device)
    example = tuple(t[:2].to(device) for t in saved["train"])
    with pyro.poutine.block():
        guide_trace = pyro.poutine.trace(guide).get_trace(*example)
        pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(*example)
    load_modules(fitted_weights(state), model, guide, pyro.get_param_store())
    model, guide = _as_module(model, device), _as_module(guide, device)
    arrays = {f"input{i}": t for i, t in enumerate(tensors[1:], start=1)}
    dataset = ArrayDataset(x=tensors[0], name=Path(run.path).name, arrays=arrays or None,
                           inputs=("x", *arrays) if arrays else None, binarize=resolved["data"].get("binarize"))
    return _entry(record), model, guide, dataset, resolved


class _FunctionModule(torch.nn.Module):
    """A function as a module (what the analysis tools take: ``parameters()`` for the device, ``eval()``)."""

    def __init__(self, fn, device):
        super().__init__()
        self.fn = fn
        self.anchor = torch.nn.Parameter(torch.empty(0, device=device), requires_grad=False)

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _as_module(fn, device):
    if isinstance(fn, torch.nn.Module):
        return fn.to(device) if next(fn.parameters(), None) is not None else _FunctionModule(fn, device)
    return _FunctionModule(fn, device)


def _entry(record: dict):
    from .registry import ModelEntry

    def unbuildable(*_):
        raise ConfigError("a run of emvi.train is rebuilt from its recorded functions, not built by name")

    return ModelEntry(name=str(record.get("model")), config_class=dict, build=unbuildable,
                      description="a model/guide pair trained by emvi.train", evaluate=evaluate_pair,
                      inference_data=pair_inference_data)


def _inputs(dataset):
    return dataset.tensors if len(dataset.tensors) > 1 else dataset.x


def _guide_latents(model, guide, x) -> tuple[dict, bool]:
    """``(values of the guide's latent sites, whether any sits in the data plate)``; an autoguide's values are its
    medians (the point of AutoDelta, the location of AutoNormal), another guide's one draw."""
    from .inference.likelihood import importance_traces

    with torch.no_grad():
        guide_trace, _ = importance_traces(model, guide, x, None)
        latents = {name: site for name, site in guide_trace.nodes.items() if site["type"] == "sample"
                   and not site["is_observed"] and type(site["fn"]).__name__ != "_Subsample"}
        local = any(f.name == "data" for site in latents.values() for f in site["cond_indep_stack"])
        values = {name: site["value"] for name, site in latents.items()}
        if not local and hasattr(guide, "median"):
            values = dict(guide.median(*(x if isinstance(x, tuple) else (x,))))
    return values, local


def _point_log_likelihood(model, values: dict, x) -> torch.Tensor:
    """log p(x_n | globals) per item ``(N,)``, discrete local sites summed out."""
    from pyro import poutine

    from .inference.pointwise import pointwise_log_likelihood

    return pointwise_log_likelihood(poutine.condition(model, data=values), *(x if isinstance(x, tuple) else (x,)))


def evaluate_pair(model, guide, dataset, *, num_samples: int = 1000) -> dict:
    """With latents in the data plate: the ELBO and the importance-sampled log p(x_n) per item (K = ``num_samples``
    guide draws). With global latents only: log p(x_n | globals) at the guide's point (discrete locals summed out).
    Both with the sum over the items."""
    from .inference.likelihood import estimate_log_likelihood

    x = _inputs(dataset)
    values, local = _guide_latents(model, guide, x)
    if not local:
        pointwise = _point_log_likelihood(model, values, x)
        return {"log_likelihood_nats_per_item": float(pointwise.mean()), "log_likelihood_nats": float(pointwise.sum()),
                "num_items": len(dataset), "note": "at the guide's point estimate of the global latents"}
    estimates = estimate_log_likelihood(model, guide, x, num_samples=num_samples, prior=False)
    return {"elbo_nats_per_item": float(estimates.elbo.mean()),
            "is_log_likelihood_nats_per_item": float(estimates.importance.mean()),
            "is_log_likelihood_nats": float(estimates.importance.sum()), "num_samples": num_samples,
            "num_items": len(dataset)}


def pair_inference_data(model, guide, data, *, method: str = "svi", num_samples: int = 200, run_dir=None):
    """The local-latent export (:mod:`emvi.analysis.local_latents`) when the guide draws latents in the data plate,
    else a point export: the guide's point of the globals and log p(x_n | globals) per item."""
    from .analysis.arviz_io import to_inference_data
    from .analysis.local_latents import local_latent_inference_data

    x = _inputs(data)
    values, local = _guide_latents(model, guide, x)
    if local:
        return local_latent_inference_data(model, guide, data, method=method, num_samples=num_samples,
                                           run_dir=run_dir, model_name="python")
    batch = data.x.shape[0]
    pointwise = _point_log_likelihood(model, values, x)
    return to_inference_data(posterior={name: value.detach()[None, None] for name, value in values.items()},
                             log_likelihood={"x": pointwise[None, None]},
                             observed_data={"x": data.x.reshape(batch, -1)},
                             coords={"obs": list(range(batch))}, dims={"x": ["obs"]},
                             attrs={"model": "python", "method": method,
                                    "note": "the guide's point estimate of the global latents"})


__all__ = ["evaluate_pair", "is_python_run", "load_python_run", "pair_inference_data", "train"]
