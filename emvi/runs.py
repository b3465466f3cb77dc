"""Run directories: fit a registered model as configured and write everything a later command needs.

What a run directory holds, and every read and write of it, is :mod:`emvi.rundir`'s. :func:`run_fit` is the one
place a fit becomes a run directory (the CLI and spec files both go through it); :func:`load_run` rebuilds model,
guide and data from one, so ``emvi evaluate|sample|analyze RUN_DIR`` need nothing else.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ._version import __version__
from .errors import ConfigError


def load_data(data_cfg: dict, *, split: str = "train", root_override: str | None = None):
    from .data import load_dataset

    return load_dataset(
        data_cfg["dataset"],
        root=root_override or data_cfg.get("data_root"),
        split=split,
        binarize=data_cfg.get("binarize"),
        download=bool(data_cfg.get("download", False)) and split == "train",
        limit=data_cfg.get("limit") if split == "train" else None,
        label_column=data_cfg.get("label_column"),
        raw_counts=bool(data_cfg.get("raw_counts", False)),
    )


def model_view(entry, model_config, dataset, split: str):
    """The loaded ``dataset`` as the model sees it: the entry's ``prepare_data`` (e.g. labels hidden outside a
    labelled subset), then its named ``inputs``."""
    if entry.prepare_data is not None:
        dataset = entry.prepare_data(model_config, dataset, split)
    if entry.inputs is not None:  # a model reading several named arrays (declared models)
        dataset = dataset.with_inputs(entry.inputs(model_config))
    return dataset


def held_out_split(entry, dataset, valid_fraction, *, seed: int, announce: bool = False):
    """``(train, valid or None)``: a random held-out split of the samples, or of whole sequences for a sequential
    model. One sequence (a 2-D array, or a single padded row) is never split: shuffling its time steps into two sets
    would break the chain the model describes, so it is all training data."""
    from .data import train_valid_split

    if not valid_fraction:
        return dataset, None
    if entry.sequential and (dataset.x.dim() == 2 or len(dataset) == 1):
        if announce:
            print("one sequence: nothing held out (give several sequences, e.g. an .npz with x (N, T, D) and lengths, "
                  "to hold some out)", flush=True)
        return dataset, None
    return train_valid_split(dataset, valid_fraction, seed=seed)


def method_config_class(method: str) -> type:
    """The configuration dataclass of a fitting method (the method table's ``config_class``)."""
    from .inference.methods import get_method

    return get_method(method).config_class


def run_model_config(entry, resolved: dict):
    """The model configuration a run directory's config.json records, as ``entry``'s config dataclass."""
    from .config import config_from_dict

    return config_from_dict(entry.config_class, model_options(entry, resolved.get("model_config", {})),
                            where="model_config.", strict=True)


def model_options(entry, recorded: dict) -> dict:
    """``recorded`` model options without the entry's start options (runs written before the starts had their own
    config kept ``pretrain_*`` among the model's)."""
    start_class = getattr(entry, "start_config", None)
    if start_class is None or not isinstance(recorded, dict):
        return recorded
    start_fields = {f.name for f in dataclasses.fields(start_class)} - {f.name for f in
                                                                       dataclasses.fields(entry.config_class)}
    return {key: value for key, value in recorded.items() if key not in start_fields}


def start_options(entry, start_config=None):
    """``entry``'s start config (its ``start_config`` class's defaults when None); None for an entry without one."""
    start_class = getattr(entry, "start_config", None)
    if start_class is None:
        if start_config is not None:
            raise ConfigError(f"model {entry.name!r} has no start options; drop them (the [start] table)")
        return None
    if start_config is None:
        return start_class()
    if not isinstance(start_config, start_class):
        raise ConfigError(f"model {entry.name!r} takes a {start_class.__name__} as its start options, "
                          f"got {type(start_config).__name__}")
    return start_config


def run_seed(resolved: dict) -> int:
    """The seed a run directory's fit used (whatever its method)."""
    from .rundir import method_settings

    return int(method_settings(resolved).get("seed", 0))


def build_model(model, config, data_info, *, seed: int = 0):
    """``(model, guide)`` of the registered ``model`` (a name or a :class:`~emvi.registry.ModelEntry`) for
    ``config`` and ``data_info``, with the initial weights drawn from ``seed``: with
    ``TrainConfig(seed=seed)`` a script is reproducible from its first epoch, as ``emvi fit`` is."""
    from .inference.seeding import seed_everything
    from .registry import get_model

    entry = get_model(model) if isinstance(model, str) else model
    if not isinstance(config, entry.config_class):
        raise ConfigError(f"model {entry.name!r} takes a {entry.config_class.__name__}, got {type(config).__name__}")
    seed_everything(seed)
    return entry.build(config, data_info)


def run_fit(entry, model_config, method_config, data_cfg: dict, *, method: str = "svi", out="runs", run_dir=None,
            resume: bool = False, plots: bool = True, spec: dict | None = None, start_config=None) -> Path:
    """Fit ``entry``'s model as configured and fill a run directory; returns its path.

    ``method_config`` is the method's configuration (:func:`method_config_class`). Everything is validated (data
    loaded, model built, a resumed run's configuration compared) before the run directory is created or changed.
    ``spec`` is the resolved spec (see :mod:`emvi.spec`); it is written to ``spec.toml`` and stored in
    ``config.json`` and in every checkpoint. ``start_config`` holds the entry's start options (its ``start_config``
    class; default: that class's defaults), used by a new fit of a method with a start (SVI's ``pretrain``).

    Under torchrun (a process group of several ranks) every rank loads the data and fits its part; rank 0 alone
    checks and writes the run directory and prints. NUTS (``mcmc``) runs on rank 0 alone; the other ranks return.
    """
    from .config import METHOD_CONFIG, config_to_dict
    from .inference import distributed
    from .inference.convergence import convergence_reported
    from .inference.methods import get_method
    from .rundir import RunDirectory, default_run_path
    from .validation import resolve_device

    fitter = get_method(method)
    if not isinstance(method_config, fitter.config_class):
        raise ConfigError(f"method {method!r} takes a {fitter.config_class.__name__}, "
                          f"got {type(method_config).__name__}")
    if fitter.configure is not None:
        method_config = fitter.configure(entry, model_config, method_config)
    start_config = start_options(entry, start_config)
    if resume and run_dir is None:
        raise ConfigError("--resume needs --run-dir pointing at the run to continue")
    if fitter.single_process and distributed.is_distributed():
        if not distributed.is_main_process():
            return Path(run_dir) if run_dir else Path(out)  # e.g. NUTS chains run in one process: rank 0's
        with distributed.single_process():
            return run_fit(entry, model_config, method_config, data_cfg, method=method, out=out, run_dir=run_dir,
                           resume=resume, plots=plots, spec=spec, start_config=start_config)
    main = distributed.is_main_process()
    say = print if main else (lambda *args, **kwargs: None)
    resolve_device(method_config.device)
    run = RunDirectory(distributed.on_main_process(lambda: run_dir if run_dir else default_run_path(out, entry.name)))
    run.check_creatable()
    if resume and not run.path.is_dir():
        raise ConfigError(f"cannot resume: {run.path} is not a run directory; drop --resume to start a new run there")
    run.check_free("fit")  # a run another process writes is refused as such, before its contents are judged
    if not resume and not run.is_reusable():
        raise ConfigError(f"run directory {run.path} is not empty; pick another --run-dir or pass --resume")
    dataset = model_view(entry, model_config, load_data(data_cfg), "train")
    if entry.check_data is not None:
        entry.check_data(model_config, dataset, method)
    train_data, valid_data = held_out_split(entry, dataset, data_cfg.get("valid_fraction"), seed=method_config.seed,
                                            announce=main)
    data_info = train_data.info()
    check_model_size(entry, model_config, data_info)
    model, guide = build_model(entry, model_config, data_info, seed=method_config.seed)
    reason = fitter.why_not(model, guide)
    if reason is not None:
        raise ConfigError(f"model {entry.name!r} cannot be fit by {method!r}: {reason}")
    resolved = {
        "model": entry.name,
        "model_config": config_to_dict(model_config),
        **({} if start_config is None else {"start_config": config_to_dict(start_config)}),
        "method": method,
        "data": data_cfg,
        "data_info": dataclasses.asdict(data_info),
        "data_fingerprint": dataset.fingerprint(),
        "spec": spec,
        "emvi_version": __version__,
    }
    run.resolved_config = resolved  # what config.json and every checkpoint record beside the method's options

    def check_and_create():
        existed = run.path.is_dir()
        if not existed:  # a new folder (exclusive for a default name: two runs never share one), locked empty
            run.create(exclusive=run_dir is None)
        try:  # one writer per run: the lock is taken before the folder's contents are judged or changed
            run.lock("fit")
            if resume:
                _check_resume(run, resolved, method_config, model, guide, fitter)
            elif not run.is_reusable():
                raise ConfigError(f"run directory {run.path} is not empty; pick another --run-dir or pass --resume")
        except BaseException:
            run.unlock()
            if not existed:  # a refused fit leaves nothing behind
                run.remove_empty()
            raise
        if not resume:
            run.clear_partial()  # a fit that never wrote a checkpoint: start it afresh
        run.create()  # every check passed: clear what a killed write left behind
        if spec is not None:
            run.write_spec(spec)
        if not resume:
            run.write_config({METHOD_CONFIG: config_to_dict(method_config), **resolved})

    distributed.on_main_process(check_and_create)  # every rank raises rank 0's error, if any
    try:  # the run stays held until the fit is written (and is free for evaluate/analyze after)
        say(f"run directory: {run.path}", flush=True)
        summary: dict = {"num_train_items": len(train_data),
                         "num_held_out_items": 0 if valid_data is None else len(valid_data)}
        if fitter.start is not None and not resume:  # a resumed fit's checkpoint holds the started weights
            summary |= fitter.start(entry, model, guide, train_data, model_config, method_config, start_config)
        def rebuild(seed: int):  # a restart's fresh pair: built and started from ``seed``
            fresh = build_model(entry, model_config, data_info, seed=seed)
            if fitter.start is not None:
                fitter.start(entry, *fresh, train_data, model_config, dataclasses.replace(method_config, seed=seed),
                             start_config)
            return fresh

        with convergence_reported():  # the summary says whether the fit converged (and convergence_note why not)
            result = fitter.fit(model, guide, train_data, method_config, valid_data=valid_data,
                                run=run if main else None, resume=resume,
                                **({"rebuild": rebuild} if fitter.rebuilds else {}))
        summary |= result.summary()
        history = list(result.history)
        if main:
            run.write_metrics(history)
        if distributed.is_distributed():
            summary["num_processes"] = distributed.world_size()
        if not main:
            return run.path
        if entry.summarize is not None:  # the model's own metrics of the fit (e.g. clustering accuracy)
            summary |= entry.summarize(model, guide, train_data)
        if plots:
            summary["plots"] = [str(p) for p in _write_plots(entry, model, guide, dataset, history, run.path)]
        run.write_summary(summary)
        for key, value in summary.items():
            if key != "plots":
                print(f"{key}: {value}")
        note = convergence_note(method, method_config, summary)
        if note:
            print(note)
        print(f"outputs written to {run.path}")
        return run.path
    finally:
        run.unlock()


def svi_config(entry, model_config, train_config):
    """``train_config`` with the entry's strata (its ``stratify`` hook, e.g. ssvae's ``y_mask``) when it names none."""
    from .inference.methods.svi import configure
    from .registry import get_model

    return configure(get_model(entry) if isinstance(entry, str) else entry, model_config, train_config)


def pretrain(entry, model, guide, train_data, model_config, train_config, start_config=None) -> dict:
    """The entry's start before SVI (its ``pretrain`` hook with ``start_config``, default: the entry's start
    defaults; e.g. gmvae's autoencoder and clusters), on the training device; ``{}`` for an entry without one.
    Returns what the hook reports for the run's summary."""
    from .inference.methods.svi import start
    from .registry import get_model

    entry = get_model(entry) if isinstance(entry, str) else entry
    return start(entry, model, guide, train_data, model_config, train_config, start_options(entry, start_config))


def convergence_note(method: str, method_config, summary: dict) -> str | None:
    """One line when a fit did not converge, naming the option to change (the method table's note)."""
    from .inference.methods import get_method

    note = get_method(method).convergence_note
    return None if note is None else note(method_config, summary)


def _check_resume(run, resolved: dict, method_config, model=None, guide=None, fitter=None) -> None:
    """Refuse to resume a run directory that holds another model, method, model configuration or data, an em/mcmc
    fit, or no usable checkpoint; changes nothing in it."""
    from .errors import CheckpointError
    from .inference.runner import check_resumable
    from .registry import get_model

    saved = run.read_config()
    if "model" not in saved:
        raise CheckpointError(f"cannot resume {run.path}: it was not written by 'emvi fit' (its config names no "
                              "model); pick another --run-dir")
    for key in ("model", "method", "model_config", "data"):
        ours, theirs = resolved.get(key), saved.get(key)
        if key == "model_config" and saved.get("model") == resolved.get("model"):
            theirs = model_options(get_model(saved["model"]), theirs)  # a run from before the start options
        if theirs == ours:
            continue
        if isinstance(ours, dict) and isinstance(theirs, dict):
            fields = sorted({k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)}, key=str)
            detail = "; ".join(f"{key}.{k} is {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in fields[:3])
        else:
            detail = f"{key} is {theirs!r} there, {ours!r} here"
        raise CheckpointError(f"cannot resume {run.path}: {detail}; resume with the run's own options or pick "
                              "another --run-dir")
    if saved.get("data_fingerprint") not in (None, resolved.get("data_fingerprint")):
        raise CheckpointError(f"cannot resume {run.path}: its data changed since the fit ({saved['data_fingerprint']} "
                              f"then, {resolved.get('data_fingerprint')} now); restore the data or refit into a new "
                              "--run-dir")
    if fitter is None:
        from .inference.methods import get_method

        fitter = get_method(resolved["method"])
    if not fitter.resumable:
        raise CheckpointError(f"cannot resume a {resolved['method']} fit: only svi fits resume from a checkpoint; "
                              "refit into a new --run-dir (EM and NUTS fits restart from scratch)")
    if not run.has_checkpoint():
        raise CheckpointError(f"nothing to resume: no checkpoint in {run.path}; drop --resume to start afresh "
                              "(a fit that never wrote one may reuse the folder)")
    state = run.load_checkpoint()
    check_resumable(state, method_config)
    _check_state_matches(state, run, model, guide)


def _check_state_matches(state: dict, run, model, guide) -> None:
    """The checkpoint's tensors have the shapes of the freshly built modules and are finite (a resume would otherwise
    fail, or train on NaN, after the run directory's files were rewritten)."""
    import torch

    from .errors import CheckpointError

    for key, module in (("model", model), ("guide", guide)):
        if not isinstance(module, torch.nn.Module):
            continue
        saved, expected = state.get(key), module.state_dict()
        if not isinstance(saved, dict):
            raise CheckpointError(f"cannot resume {run.path}: its checkpoint holds no {key} state; refit")
        for name, tensor in expected.items():
            value = saved.get(name)
            if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
                found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise CheckpointError(f"cannot resume {run.path}: its checkpoint's {key} {name} is {found}, the model "
                                      f"needs {tuple(tensor.shape)}; refit or restore {run.checkpoint_path}")
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise CheckpointError(f"cannot resume {run.path}: its checkpoint holds NaN or infinite weights "
                                      f"({key} {name}); refit, or resume from an earlier copy")


MEMORY_FRACTION = 0.8
"""Share of the available memory a model's parameters, gradients and optimiser state may take."""


def available_memory_bytes() -> int | None:
    """Memory the process may still use (``MemAvailable`` on Linux, else physical memory), or None if unknown."""
    import os

    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_model_size(entry, model_config, data_info) -> None:
    """Refuse a model whose parameters would not fit in memory, before allocating any of them.

    The builder runs once on PyTorch's ``meta`` device (shapes without storage); the parameters and buffers it
    creates, four copies of each (weights, gradients, two Adam moments) in their dtype, must fit in
    :data:`MEMORY_FRACTION` of the available memory. A builder that cannot run on the meta device is not checked.
    """
    import torch

    from .errors import EmviError

    try:
        with torch.device("meta"):
            modules = entry.build(model_config, data_info)
    except EmviError:
        raise
    except Exception:  # noqa: BLE001 - a builder that needs real storage (e.g. data-dependent initialisation)
        return
    tensors = {}
    for module in modules if isinstance(modules, tuple) else (modules,):
        if isinstance(module, torch.nn.Module):
            for tensor in list(module.parameters()) + list(module.buffers()):
                tensors[id(tensor)] = tensor
    count = sum(t.numel() for t in tensors.values())
    needed = 4 * sum(t.numel() * t.element_size() for t in tensors.values())
    available = available_memory_bytes()
    if available is not None and needed > MEMORY_FRACTION * available:
        raise ConfigError(f"model {entry.name!r} would have {count:,} parameters, about {needed / 2**30:,.1f} GiB "
                          f"with gradients and optimiser state, more than the {available / 2**30:,.1f} GiB of memory "
                          "available; lower its size options (-k, --num-categories, --latent-dim, --hidden-dims...)")


def _write_plots(entry, model, guide, dataset, history, run_dir: Path) -> list[Path]:
    paths = []
    if history:
        from .analysis.curves import plot_loss_curve
        from .rundir import RunDirectory

        paths.append(plot_loss_curve(history, RunDirectory(run_dir).plot_path("loss_curve")))
    if entry.plots is not None:
        paths.extend(entry.plots(model, guide, dataset, history, run_dir) or [])
    return paths


def load_run(run_dir: str | Path, *, device: str = "cpu", root_override: str | None = None, split: str = "train",
             trust_code: bool = False):
    """``(entry, model, guide, dataset, resolved)``: the registry entry, the fitted model and guide, the data of
    ``split`` and the resolved configuration of a run directory, rebuilt from its configuration and checkpoint.

    ``split``: ``train`` (the data set the fit read, held-out items included), ``test`` (a built-in data set's test
    split), ``valid`` (the items the fit held out) or ``auto`` (see :func:`evaluation_data`). Anything wrong with the
    folder (foreign or hand-edited configuration, a checkpoint that does not match the model or holds NaN weights,
    data that changed shape) raises an :class:`~emvi.errors.EmviError`; nothing is written. A run that names the
    user's own module (a spec's ``model.module``, :func:`emvi.train`'s model) imports it only when it is installed
    or already imported, unless ``trust_code`` (the CLI's ``--trust-run-code``) allows the working directory.
    """
    if split in ("valid", "auto"):
        return evaluation_data(run_dir, split, device=device, root_override=root_override, trust_code=trust_code)[:5]
    return _rebuild_run(*read_run(run_dir), device=device, root_override=root_override, split=split,
                        trust_code=trust_code)


def read_run(run_dir: str | Path):
    """``(run, resolved)``: a run directory and its resolved configuration, checked to be one 'emvi fit' wrote."""
    from .rundir import RunDirectory

    run = RunDirectory(run_dir)
    if not run.path.is_dir():
        what = "a file" if run.path.exists() else "no such folder"
        raise ConfigError(f"{run.path} is not an emvi run directory ({what}); pass the folder 'emvi fit' printed")
    resolved = run.read_config()
    if "model" not in resolved or "data" not in resolved:
        raise ConfigError(f"{run.path} was not written by 'emvi fit' (its config lacks the model or data); "
                          "evaluate it from Python with the model you trained")
    from .training import is_python_run

    if is_python_run(resolved):  # written by emvi.train: rebuilt from its recorded functions and saved data
        return run, resolved
    if not isinstance(resolved["data"], dict) or not isinstance(resolved.get("data_info"), dict) \
            or not isinstance(resolved["data"].get("dataset"), str):
        raise ConfigError(f"{run.config_path} is damaged (its data or data_info is not a table); restore it "
                          "from the checkpoint's copy or refit")
    return run, resolved


def _rebuild_run(run, resolved: dict, *, device: str, root_override: str | None, split: str,
                 trust_code: bool = False):
    """:func:`load_run` after :func:`read_run`: the model, guide and data of a checked configuration."""
    import torch

    from .data import DataInfo
    from .errors import CheckpointError, DataError, EmviError
    from .inference.methods import get_method
    from .registry import get_model
    from .training import is_python_run, load_python_run

    if is_python_run(resolved):
        return load_python_run(run, resolved, split=split, device=device, trust_code=trust_code)
    module = ((resolved.get("spec") or {}).get("model") or {}).get("module")
    if module:  # the user's module that registered the model
        from .registry import import_user_module

        import_user_module(module, where=f"{run.path}'s model.module", local=trust_code)
    entry = get_model(resolved["model"])
    model_config = run_model_config(entry, resolved)
    dataset = model_view(entry, model_config, load_data(resolved["data"], split=split, root_override=root_override),
                         split)
    recorded = resolved.get("data_fingerprint")
    if split == "train" and recorded is not None and recorded != dataset.fingerprint():
        raise DataError(f"the data of {run.path} changed since the fit ({recorded} then, {dataset.fingerprint()} "
                        f"now); restore {resolved['data']['dataset']} as it was, or refit")
    info = dict(resolved["data_info"])
    for key in ("event_shape", "image_shape"):
        if isinstance(info.get(key), list):
            info[key] = tuple(info[key])
    try:
        data_info = DataInfo(**info)
    except TypeError as exc:
        raise ConfigError(f"{run.config_path} has a damaged data_info ({exc}); refit") from None
    event_shape = tuple(data_info.event_shape or ())
    if not event_shape or dataset.x.dim() != len(event_shape) + 1 or dataset.x.shape[-1] != event_shape[-1]:
        raise DataError(f"the data of {run.path} now has items of shape {tuple(dataset.x.shape[1:])}, but the run was "
                        f"fit on {event_shape}; restore the run's data ({resolved['data']['dataset']})")
    check_model_size(entry, model_config, data_info)
    model, guide = entry.build(model_config, data_info)
    try:
        get_method(resolved.get("method", "svi")).load(model, guide, run, device)
    except EmviError:
        raise
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"the checkpoint in {run.path} does not match its {entry.name} model ({first}); "
                              f"refit, or restore {run.checkpoint_path}") from None
    for owner, module in (("model", model), ("guide", guide)):
        if isinstance(module, torch.nn.Module):
            for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise CheckpointError(f"the checkpoint in {run.path} holds NaN or infinite weights ({owner} "
                                          f"{name}); refit, or resume from an earlier copy")
    return entry, model, guide, dataset, resolved


def evaluation_data(run_dir, split: str = "auto", *, device: str = "cpu", root_override: str | None = None,
                    trust_code: bool = False):
    """``(entry, model, guide, dataset, resolved, split)``: a fitted run and the items to evaluate it on.

    ``split``: ``test`` (a built-in data set's test split; a file has none), ``valid`` (the items the fit held out,
    recomputed from the run's fraction and seed), ``train`` (the items the fit saw), or ``auto``: test, else valid,
    else train.
    """
    from .data import has_test_split

    if split not in ("auto", "train", "valid", "test"):
        raise ConfigError(f"split must be auto, train, valid or test, got {split!r}")
    from .training import is_python_run, load_python_run, python_split

    run, resolved = read_run(run_dir)  # the data set decides the split before any data is read: that split alone
    if is_python_run(resolved):
        split = python_split(resolved, split, run.path)
        return (*load_python_run(run, resolved, split=split, device=device), split)
    name = resolved["data"]["dataset"]
    if split == "auto":
        split = "test" if has_test_split(name) else ("valid" if resolved["data"].get("valid_fraction") else "train")
    elif split == "test" and not has_test_split(name):
        raise ConfigError(f"{name} has no test split (a file is all training data); use --split valid (the "
                          "items the fit held out) or --split train")
    entry, model, guide, dataset, resolved = _rebuild_run(run, resolved, device=device, trust_code=trust_code,
                                                          root_override=root_override,
                                                          split="test" if split == "test" else "train")
    if split == "valid":
        dataset = held_out_split(entry, dataset, resolved["data"].get("valid_fraction"), seed=run_seed(resolved))[1]
        if dataset is None:
            raise ConfigError(f"the run in {run_dir} held no items out; refit with --valid-fraction, or use "
                              "--split train")
    return entry, model, guide, dataset, resolved, split


def default_evaluate(entry, model, guide, dataset, resolved) -> dict:
    """The held-out negative ELBO per item (10 particles) under the ELBO the model trains with: the run's own for an
    SVI fit, the model's default otherwise (an EM fit's discrete sites are summed out, never sampled)."""
    from .config import config_from_dict
    from .inference.elbo import make_elbo
    from .inference.runner import evaluate_loss
    from .registry import default_elbo
    from .rundir import method_settings

    train_cfg = method_settings(resolved) if resolved.get("method", "svi") == "svi" else {}
    name = train_cfg.get("elbo")
    if name in (None, "auto"):
        model_config = config_from_dict(entry.config_class, resolved.get("model_config", {}), where="model_config.")
        name = default_elbo(entry, model_config)
    nesting = train_cfg.get("max_plate_nesting") or entry.max_plate_nesting
    elbo = make_elbo("trace" if name == "auto" else name, max_plate_nesting=nesting, num_particles=10,
                     vectorize_particles=False)
    loss = evaluate_loss(elbo, model, guide, dataset.tensors, transform=dataset.transform_batch)
    return {"elbo_nats_per_item": -loss}


def from_run(run_dir: str | Path, *, num_samples: int = 200, data_root=None, trust_code: bool = False):
    """``arviz.InferenceData`` of a fitted run directory on its training part (the held-out split, if any, is left
    out as at fit time), through the model's registry export: what ``emvi analyze RUN_DIR`` writes."""
    entry, model, guide, dataset, resolved = load_run(run_dir, root_override=data_root, trust_code=trust_code)
    if entry.inference_data is None:
        raise ConfigError(f"model {entry.name!r} has no ArviZ export; see `emvi models` for the models that have one")
    train_part, _ = held_out_split(entry, dataset, resolved["data"].get("valid_fraction"), seed=run_seed(resolved))
    return entry.inference_data(model, guide, train_part, method=resolved.get("method", "svi"), num_samples=num_samples,
                                run_dir=Path(run_dir))
