"""The ``emvi`` command: fit, evaluate and sample models; every fit writes a self-describing run directory.

    emvi fit vae --dataset digits --epochs 20 --latent-dim 2
    emvi fit mixture data.csv --family poisson -k 3
    emvi evaluate runs/vae-20261124-101500
    emvi sample runs/vae-20261124-101500 --num-samples 64

User errors (bad options, missing data, corrupt checkpoints) print one line ``emvi: error: ...`` and exit with
status 2; nothing prints a traceback unless ``EMVI_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .errors import ConfigError, EmviError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise ConfigError(f"{self.prog}: {message}; see '{self.prog} --help'")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("data", nargs="?", help="a .npy, .npz or .csv file (instead of --dataset)")
    group.add_argument("--dataset", help="mnist, fashion-mnist, digits, or a file path (default: digits)")
    group.add_argument("--data-root", help="folder holding MNIST/ or FashionMNIST/ (default: $EMVI_DATA)")
    group.add_argument("--download", action="store_true", help="download mnist/fashion-mnist into the data root if missing")
    group.add_argument("--binarize", choices=["static", "dynamic"], help="binarise images (static threshold or dynamic sampling)")
    group.add_argument("--limit", type=int, help="use only the first N training samples")
    group.add_argument("--valid-fraction", type=float, default=None, help="hold out this fraction for validation (default: 0.1)")
    group.add_argument("--label-column", help="name of a label column in a .csv file")


def _build_parser() -> argparse.ArgumentParser:
    from .config import add_config_arguments
    from .inference.runner import TrainConfig
    from .registry import available_models

    parser = _Parser(prog="emvi", description="Latent-variable models as Pyro model/guide pairs, from EM to VAEs.")
    parser.add_argument("--version", action="version", version=f"emvi {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    fit = commands.add_parser("fit", help="fit a model and write a run directory", description="Fit a model; see 'emvi fit MODEL --help'.")
    models = fit.add_subparsers(dest="model", metavar="MODEL", parser_class=_Parser)
    for name, entry in available_models().items():
        sub = models.add_parser(name, help=entry.description, description=entry.description)
        _add_data_options(sub)
        sub.add_argument("--method", choices=entry.methods, default=entry.methods[0], help=f"fitting procedure (default: {entry.methods[0]})")
        sub.add_argument("--out", default="runs", help="parent folder of the run directory (default: runs)")
        sub.add_argument("--run-dir", help="exact run directory (default: OUT/MODEL-TIMESTAMP)")
        sub.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its checkpoint")
        sub.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
        aliases = getattr(entry.config_class, "cli_aliases", {})
        add_config_arguments(sub, entry.config_class, group_title=f"{name} model", aliases=aliases)
        add_config_arguments(sub, TrainConfig, group_title="training")

    evaluate = commands.add_parser("evaluate", help="held-out metrics of a fitted run", description="Evaluate a run directory on held-out data.")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--split", default="test", choices=["train", "test"], help="which split to evaluate (default: test)")
    evaluate.add_argument("--num-samples", type=int, default=1000, help="importance samples K per data item (default: 1000)")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
    evaluate.add_argument("--data-root", help="override the data root recorded in the run")
    evaluate.add_argument("--device", default="cpu")

    sample = commands.add_parser("sample", help="draw new data from a fitted model", description="Sample from a fitted run.")
    sample.add_argument("run_dir")
    sample.add_argument("--num-samples", type=int, default=64)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--output", help="where to write the samples (.npy; default RUN_DIR/samples.npy and samples.png)")

    commands.add_parser("models", help="list the registered models", description="List the registered models.")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = _build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        if args.command == "fit" and args.model is None:
            raise ConfigError("emvi fit: name a model; see 'emvi models' or 'emvi fit --help'")
        handler = {"fit": _cmd_fit, "evaluate": _cmd_evaluate, "sample": _cmd_sample, "models": _cmd_models}[args.command]
        return handler(args) or 0
    except EmviError as exc:
        if os.environ.get("EMVI_DEBUG"):
            raise
        print(f"emvi: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("emvi: interrupted; the last checkpoint in the run directory is intact (resume with --resume)", file=sys.stderr)
        return 130


def _cmd_models(args) -> int:
    from .registry import available_models

    for name, entry in available_models().items():
        print(f"{name:12s} methods: {', '.join(entry.methods):16s} {entry.description}")
    return 0


def _load_data(data_cfg: dict, *, split: str = "train", root_override: str | None = None):
    from .data import load_dataset

    return load_dataset(
        data_cfg["dataset"],
        root=root_override or data_cfg.get("data_root"),
        split=split,
        binarize=data_cfg.get("binarize"),
        download=bool(data_cfg.get("download", False)) and split == "train",
        limit=data_cfg.get("limit") if split == "train" else None,
        label_column=data_cfg.get("label_column"),
    )


def _cmd_fit(args) -> int:
    from .config import config_from_args
    from .inference.runner import TrainConfig
    from .registry import get_model

    entry = get_model(args.model)
    model_config = config_from_args(entry.config_class, args)
    train_values = {}
    if getattr(args, "elbo", None) is None:
        train_values["elbo"] = entry.elbo
    if getattr(args, "max_plate_nesting", None) is None and entry.max_plate_nesting is not None:
        train_values["max_plate_nesting"] = entry.max_plate_nesting
    train_config = config_from_args(TrainConfig, args, base=train_values)
    if args.data and args.dataset:
        raise ConfigError("give either a data file or --dataset, not both")
    data_cfg = {
        "dataset": args.data or args.dataset or "digits",
        "data_root": args.data_root,
        "binarize": args.binarize,
        "download": args.download,
        "limit": args.limit,
        "label_column": args.label_column,
        "valid_fraction": 0.1 if args.valid_fraction is None else args.valid_fraction,
    }
    return run_fit(entry, model_config, train_config, data_cfg, method=args.method, out=args.out,
                   run_dir=args.run_dir, resume=args.resume, plots=not args.no_plots)


def run_fit(entry, model_config, train_config, data_cfg: dict, *, method: str = "svi", out="runs", run_dir=None,
            resume: bool = False, plots: bool = True) -> int:
    """Fit ``entry``'s model as configured and fill a run directory (shared by the CLI and spec files)."""
    from .config import config_to_dict
    from .data import train_valid_split
    from .inference.runner import train

    if method not in entry.methods:
        raise ConfigError(f"model {entry.name!r} cannot be fit by {method!r}; use one of {', '.join(entry.methods)}")
    if resume and run_dir is None:
        raise ConfigError("--resume needs --run-dir pointing at the run to continue")
    dataset = _load_data(data_cfg)
    train_data, valid_data = dataset, None
    if data_cfg.get("valid_fraction"):
        train_data, valid_data = train_valid_split(dataset, data_cfg["valid_fraction"], seed=train_config.seed)
    run_dir = Path(run_dir) if run_dir else Path(out) / f"{entry.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and not resume and any(run_dir.iterdir()):
        raise ConfigError(f"run directory {run_dir} is not empty; pick another --run-dir or pass --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"run directory: {run_dir}", flush=True)

    from .inference.seeding import seed_everything

    seed_everything(train_config.seed)
    model, guide = entry.build(model_config, train_data.info())
    resolved = {
        "model": entry.name,
        "model_config": config_to_dict(model_config),
        "method": method,
        "data": data_cfg,
        "emvi_version": _version(),
    }
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
                            valid_data=valid_data, run_dir=run_dir) or {}
        history = summary.pop("history", [])
    if plots:
        summary["plots"] = [str(p) for p in _write_plots(entry, model, guide, dataset, history, run_dir)]
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for key, value in summary.items():
        if key != "plots":
            print(f"{key}: {value}")
    print(f"outputs written to {run_dir}")
    return 0


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
    from .inference.runner import load_run_modules
    from .registry import get_model

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"{run_dir} is not an emvi run directory (no config.json); pass the folder 'emvi fit' printed")
    try:
        resolved = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{config_path} is not valid JSON ({exc}); restore it from the checkpoint's copy") from None
    entry = get_model(resolved["model"])
    model_config = config_from_dict(entry.config_class, resolved.get("model_config", {}), where="model_config.")
    dataset = _load_data(resolved["data"], split=split, root_override=root_override)
    train_info = _load_data(resolved["data"], split="train", root_override=root_override).info() if split != "train" else dataset.info()
    model, guide = entry.build(model_config, train_info)
    if entry.load is not None and resolved.get("method", "svi") != "svi":
        entry.load(model, guide, run_dir, device)
    else:
        load_run_modules(run_dir, model, guide, device=device)
    return entry, model, guide, dataset, resolved


def _cmd_evaluate(args) -> int:
    entry, model, guide, dataset, resolved = load_run(args.run_dir, device=args.device, root_override=args.data_root, split=args.split)
    if args.limit is not None:
        dataset = dataset.subset(range(min(args.limit, len(dataset))))
    if entry.evaluate is not None:
        metrics = entry.evaluate(model, guide, dataset, num_samples=args.num_samples)
    else:
        metrics = _default_evaluate(model, guide, dataset, resolved)
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    (Path(args.run_dir) / f"evaluation_{args.split}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


def _default_evaluate(model, guide, dataset, resolved) -> dict:
    from .inference.elbo import make_elbo
    from .inference.runner import evaluate_loss

    train_cfg = resolved.get("train", {})
    elbo = make_elbo(train_cfg.get("elbo", "trace"), max_plate_nesting=train_cfg.get("max_plate_nesting"), num_particles=10,
                     vectorize_particles=False)
    loss = evaluate_loss(elbo, model, guide, dataset.tensors, transform=dataset.transform_batch)
    return {"elbo_nats_per_item": -loss}


def _cmd_sample(args) -> int:
    import numpy as np
    import torch

    from .inference.seeding import seed_everything

    entry, model, guide, dataset, _ = load_run(args.run_dir)
    if entry.sample is None:
        raise ConfigError(f"model {entry.name!r} does not support sampling")
    seed_everything(args.seed)
    with torch.no_grad():
        samples = entry.sample(model, guide, args.num_samples)
    output = Path(args.output) if args.output else Path(args.run_dir) / "samples.npy"
    np.save(output, samples.detach().cpu().numpy())
    print(f"samples: {tuple(samples.shape)} written to {output}")
    if dataset.image_shape is not None:
        from .analysis.curves import plot_image_grid

        png = plot_image_grid(samples.detach().cpu(), dataset.image_shape, output.with_suffix(".png"), title="samples")
        print(f"picture: {png}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
