"""Run directories: fit a registered model as configured and write everything a later command needs.

A run directory holds ``config.json`` and ``spec.toml`` (the resolved configuration), ``checkpoint.pt`` (and
``best.pt``), ``metrics.jsonl``, ``summary.json`` and PNG plots. :func:`load_run` rebuilds model, guide and data from
it, so ``emvi evaluate|sample RUN_DIR`` need nothing else. The CLI and spec files both go through :func:`run_fit`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from .errors import ConfigError


def _version() -> str:
    from . import __version__

    return __version__


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


def run_fit(entry, model_config, train_config, data_cfg: dict, *, method: str = "svi", out="runs", run_dir=None,
            resume: bool = False, plots: bool = True, spec: dict | None = None) -> Path:
    """Fit ``entry``'s model as configured and fill a run directory; returns its path.

    ``spec`` is the resolved spec (see :mod:`emvi.spec`); it is written to ``spec.toml`` and stored in
    ``config.json`` and in every checkpoint.
    """
    from .config import config_to_dict
    from .inference.runner import train
    from .inference.seeding import seed_everything

    if method not in entry.methods:
        raise ConfigError(f"model {entry.name!r} cannot be fit by {method!r}; use one of {', '.join(entry.methods)}")
    if resume and run_dir is None:
        raise ConfigError("--resume needs --run-dir pointing at the run to continue")
    dataset = load_data(data_cfg)
    train_data, valid_data = held_out_split(entry, dataset, data_cfg.get("valid_fraction"), seed=train_config.seed,
                                            announce=True)
    run_dir = Path(run_dir) if run_dir else Path(out) / f"{entry.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and not resume and any(run_dir.iterdir()):
        raise ConfigError(f"run directory {run_dir} is not empty; pick another --run-dir or pass --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"run directory: {run_dir}", flush=True)

    seed_everything(train_config.seed)
    data_info = train_data.info()
    model, guide = entry.build(model_config, data_info)
    resolved = {
        "model": entry.name,
        "model_config": config_to_dict(model_config),
        "method": method,
        "data": data_cfg,
        "data_info": dataclasses.asdict(data_info),
        "spec": spec,
        "emvi_version": _version(),
    }
    if spec is not None:
        _write_spec_toml(spec, run_dir / "spec.toml")
    summary: dict = {}
    history: list[dict] = []
    if method == "svi":
        result = train(model, guide, train_data, config=train_config, valid_data=valid_data, run_dir=run_dir,
                       resume=resume, extra_config=resolved)
        history = result.history
        summary = {"epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
                   "final_train_loss": result.final_train_loss, "best_valid_loss": result.best_valid_loss}
    else:
        if entry.fit is None:
            raise ConfigError(f"model {entry.name!r} has no {method!r} procedure registered")
        (run_dir / "config.json").write_text(json.dumps({"train": train_config.to_dict(), **resolved}, indent=2, default=str) + "\n")
        summary = entry.fit(model, guide, train_data, method=method, train_config=train_config,
                            valid_data=valid_data, run_dir=run_dir, extra_config=resolved) or {}
        history = summary.pop("history", [])
    if plots:
        summary["plots"] = [str(p) for p in _write_plots(entry, model, guide, dataset, history, run_dir)]
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for key, value in summary.items():
        if key != "plots":
            print(f"{key}: {value}")
    print(f"outputs written to {run_dir}")
    return run_dir


def _write_spec_toml(spec: dict, path: Path) -> None:
    import tomli_w

    def drop_none(value):  # TOML has no null; an absent key means the default
        if isinstance(value, dict):
            return {k: drop_none(v) for k, v in value.items() if v is not None}
        return value

    path.write_text(tomli_w.dumps(drop_none(spec)))


def _write_plots(entry, model, guide, dataset, history, run_dir: Path) -> list[Path]:
    paths = []
    if history:
        from .analysis.curves import plot_loss_curve

        paths.append(plot_loss_curve(history, run_dir / "loss_curve.png"))
    if entry.plots is not None:
        paths.extend(entry.plots(model, guide, dataset, history, run_dir) or [])
    return paths


def load_run(run_dir: str | Path, *, device: str = "cpu", root_override: str | None = None, split: str = "train"):
    """Rebuild the model, guide and data of a run directory from its ``config.json`` and checkpoint."""
    from .config import config_from_dict
    from .inference.checkpoint import load_checkpoint
    from .inference.runner import load_run_modules
    from .registry import DataInfo, get_model

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if config_path.is_file():
        text = config_path.read_text()
    elif (run_dir / "checkpoint.pt").is_file():  # the checkpoint carries its own copy of the configuration
        text = load_checkpoint(run_dir / "checkpoint.pt")["config"]
    else:
        raise ConfigError(f"{run_dir} is not an emvi run directory (no config.json); pass the folder 'emvi fit' printed")
    try:
        resolved = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{config_path} is not valid JSON ({exc}); restore it from the checkpoint's copy") from None
    entry = get_model(resolved["model"])
    model_config = config_from_dict(entry.config_class, resolved.get("model_config", {}), where="model_config.")
    dataset = load_data(resolved["data"], split=split, root_override=root_override)
    info = dict(resolved["data_info"])
    for key in ("event_shape", "image_shape"):
        if info.get(key) is not None:
            info[key] = tuple(info[key])
    model, guide = entry.build(model_config, DataInfo(**info))
    if entry.load is not None and resolved.get("method", "svi") != "svi":
        entry.load(model, guide, run_dir, device)
    else:
        load_run_modules(run_dir, model, guide, device=device)
    return entry, model, guide, dataset, resolved


def default_evaluate(model, guide, dataset, resolved) -> dict:
    from .inference.elbo import make_elbo
    from .inference.runner import evaluate_loss

    train_cfg = resolved.get("train", {})
    elbo = make_elbo(train_cfg.get("elbo", "trace"), max_plate_nesting=train_cfg.get("max_plate_nesting"), num_particles=10,
                     vectorize_particles=False)
    loss = evaluate_loss(elbo, model, guide, dataset.tensors, transform=dataset.transform_batch)
    return {"elbo_nats_per_item": -loss}


