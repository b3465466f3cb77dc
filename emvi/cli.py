"""The ``emvi`` command: fit, evaluate and sample models; every fit writes a self-describing run directory.

    emvi fit vae --dataset digits --epochs 20 --latent-dim 2
    emvi fit mixture data.csv --family poisson -k 3
    emvi evaluate runs/vae-20261124-101500
    emvi sample runs/vae-20261124-101500 --num-samples 64

User errors (bad options, missing data, corrupt checkpoints) print one line ``emvi: error: ...`` and exit with
status 2; nothing prints a traceback unless ``EMVI_DEBUG=1``.

Several processes: ``torchrun --nproc-per-node N -m emvi fit ...`` (or ``emvi fit ... --nproc N``, which starts
torchrun's elastic agent for you) joins the process group torchrun describes; rank 0 alone prints and writes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import warnings
from pathlib import Path

from ._version import __version__
from .errors import ConfigError, DistributedError, EmviError

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
    group.add_argument("--raw-counts", action="store_true", help="keep built-in images as integer counts (for count likelihoods)")
    group.add_argument("--limit", type=int, help="use only the first N training samples")
    group.add_argument("--valid-fraction", type=float, default=None,
                       help="hold out this fraction of the items for validation (default: 0, every item is fit)")
    group.add_argument("--label-column", help="name of a label column in a .csv file")


def build_parser() -> argparse.ArgumentParser:
    """The ``emvi`` command's parser: every subcommand, and under ``fit`` one subcommand per registered model with its
    data, method, model, start and method options (the documentation's CLI reference is rendered from it)."""
    return _build_parser()


def _build_parser() -> argparse.ArgumentParser:
    from .config import add_config_arguments
    from .inference.methods import method_names
    from .registry import available_models
    from .rundir import COMPARISON_PLOT, COMPARISON_TABLE, INFERENCE_DATA, POSTERIOR_SUMMARY, SAMPLES
    from .runs import method_config_class

    parser = _Parser(prog="emvi", description="Latent-variable models as Pyro model/guide pairs, from EM to VAEs.")
    parser.add_argument("--import", dest="import_module", metavar="MODULE",
                        help="import MODULE first (user code that registers models); may be repeated")
    parser.add_argument("--version", action="version", version=f"emvi {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    fit = commands.add_parser(
        "fit", help="fit a model (or a spec file) and write a run directory",
        description="Fit a model: 'emvi fit MODEL [options]' (see 'emvi fit MODEL --help') or "
                    "'emvi fit SPEC.toml|yaml [--set table.key=value ...] [--resume]'.")
    models = fit.add_subparsers(dest="model", metavar="MODEL", parser_class=_Parser)
    for name, entry in available_models().items():
        sub = models.add_parser(name, help=entry.description, description=entry.description)
        _add_data_options(sub)
        sub.add_argument("--method", choices=method_names(), default=entry.default_method,
                         help=f"fitting procedure (default: {entry.default_method})")
        sub.add_argument("--out", default="runs", help="parent folder of the run directory (default: runs)")
        sub.add_argument("--run-dir", help="exact run directory (default: OUT/MODEL-TIMESTAMP)")
        sub.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its checkpoint")
        sub.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
        sub.add_argument("--nproc", type=int, metavar="N",
                         help="fit on N local processes, started by torchrun's elastic agent (same as "
                              "'torchrun --standalone --nproc-per-node N -m emvi fit ...')")
        aliases = getattr(entry.config_class, "cli_aliases", {})
        add_config_arguments(sub, entry.config_class, group_title=f"{name} model", aliases=aliases)
        if entry.start_config is not None:  # training procedure before SVI, kept out of the model's config
            add_config_arguments(sub, entry.start_config, group_title=f"{name} start before SVI "
                                 f"({entry.start_config.__name__})")
        seen: set[str] = set()
        for method in method_names():  # each method's own options; seed, device and progress are shared
            cls = method_config_class(method)
            add_config_arguments(sub, cls, group_title=f"--method {method} ({cls.__name__})", skip=seen)
            seen |= {f.name for f in dataclasses.fields(cls)}

    evaluate = commands.add_parser("evaluate", help="held-out metrics of a fitted run", description="Evaluate a run directory on held-out data.")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--split", default="auto", choices=["auto", "train", "valid", "test"],
                          help="items to evaluate: test (a built-in data set's test split), valid (the items the fit "
                               "held out), train; auto picks test, else valid, else train (default: auto)")
    evaluate.add_argument("--trust-run-code", action="store_true",
                        help="let a run that names your own module import it from the working directory")
    evaluate.add_argument("--num-samples", type=int, default=1000, help="importance samples K per data item (default: 1000)")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
    evaluate.add_argument("--data-root", help="override the data root recorded in the run")
    evaluate.add_argument("--device", default="cpu")

    sample = commands.add_parser("sample", help="draw new data from a fitted model", description="Sample from a fitted run.")
    sample.add_argument("run_dir")
    sample.add_argument("--trust-run-code", action="store_true",
                        help="let a run that names your own module import it from the working directory")
    sample.add_argument("--num-samples", type=int, default=64)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--output", help=f"where to write the samples (.npy; default RUN_DIR/{SAMPLES}, and a PNG beside it)")
    sample.add_argument("--overwrite", action="store_true",
                        help="let --output replace an existing file (the run's own samples are always replaced)")

    analyze = commands.add_parser(
        "analyze", help="posterior analysis with ArviZ (InferenceData, summary, plots, comparison)",
        description=f"Write {INFERENCE_DATA}, {POSTERIOR_SUMMARY} and PNG plots into each run directory; with "
                    "several runs of the same data, also a comparison table (LOO, or held-out log-likelihood for point fits).")
    analyze.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    analyze.add_argument("--trust-run-code", action="store_true",
                        help="let a run that names your own module import it from the working directory")
    analyze.add_argument("--num-samples", type=int, default=200, help="posterior draws for SVI guides (default: 200)")
    analyze.add_argument("--compare-out", help=f"folder for {COMPARISON_TABLE} and {COMPARISON_PLOT} (default: the first run's parent)")
    analyze.add_argument("--data-root", help="override the data root recorded in the runs")
    analyze.add_argument("--limit", type=int, default=None,
                         help="compare on the first N held-out items only (default: all of them)")

    commands.add_parser("models", help="list the registered models", description="List the registered models.")
    return parser


_IMPORTED: list[str] = []


def _import_modules(argv: list[str]) -> list[str]:
    """Import every ``--import MODULE`` (user code registering models) before the parser lists the models; returns
    the arguments without them."""
    from .registry import import_user_module

    rest, i = [], 0
    while i < len(argv):
        if argv[i] == "--import" and i + 1 < len(argv):
            module = argv[i + 1]
            i += 2
        elif argv[i].startswith("--import="):
            module = argv[i][len("--import="):]
            i += 1
        else:
            rest.append(argv[i])
            i += 1
            continue
        import_user_module(module)
        _IMPORTED.append(module)
    return rest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .inference import distributed

    held: list[str] = []
    try:
        with _warnings_held(held):
            status = _dispatch(argv)
        _print_warnings(held)
        return status
    except EmviError as exc:
        if os.environ.get("EMVI_DEBUG"):
            raise
        print(f"emvi: error: {one_line(str(exc))}", file=sys.stderr)
        _print_warnings(held)
        if isinstance(exc, DistributedError):  # a peer died: its process group cannot be torn down cleanly
            distributed.abandon(EXIT_USAGE)
        return EXIT_USAGE
    finally:
        distributed.shutdown()


def _dispatch(argv: list[str]) -> int:
    from .inference import distributed

    argv, nproc = _take_nproc(argv)
    if nproc is not None:
        return _launch(nproc, argv)
    if not distributed.init_from_environment():
        return _main(argv)
    if argv[:1] != ["fit"]:  # evaluate, sample, analyze, models: one process's work, done by rank 0
        if not distributed.is_main_process():
            return 0
        with distributed.single_process():
            return _main(argv)
    if not distributed.is_main_process():
        sys.stdout = open(os.devnull, "w")  # rank 0 prints; errors still reach stderr
    return _main(argv)


@contextlib.contextmanager
def _warnings_held(held: list[str]):
    """Hold the warnings a command raises (filters unchanged: an error filter still raises) as one line each, to be
    printed after its result or its one-line error instead of as multi-line reports before it."""
    previous = warnings.showwarning

    def hold(message, category, filename, lineno, file=None, line=None):
        first = " ".join(str(message).split())[:300]
        held.append(f"emvi: warning: {category.__name__}: {one_line(first)}")

    warnings.showwarning = hold
    try:
        yield
    finally:
        warnings.showwarning = previous


def one_line(text: str) -> str:
    """``text`` safe for one terminal line: newlines, ANSI escapes and other control characters (from a file, run or
    site name) are written as their escapes, so they can neither split the message nor drive the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _print_warnings(held: list[str]) -> None:
    for line in dict.fromkeys(held):  # each distinct warning once
        print(line, file=sys.stderr)


def _take_nproc(argv: list[str]) -> tuple[list[str], int | None]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``, and N (None when absent)."""
    rest, nproc, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--nproc" or arg.startswith("--nproc="):
            value = arg.split("=", 1)[1] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else "")
            i += 1 if "=" in arg else 2
            try:
                nproc = int(value)
            except ValueError:
                raise ConfigError(f"--nproc takes a number of processes, got {value!r}") from None
            if nproc < 1:
                raise ConfigError(f"--nproc must be >= 1, got {nproc}")
            continue
        rest.append(arg)
        i += 1
    return rest, nproc


def _launch(nproc: int, argv: list[str]) -> int:
    """Run ``emvi ARGV`` on ``nproc`` local processes under torchrun's elastic agent (standalone rendezvous)."""
    from .inference import distributed

    if distributed.launched_by_torchrun():
        raise ConfigError("--nproc starts torchrun itself; drop it when launching with torchrun")
    if nproc == 1:
        return _main(argv)
    _parse(argv)  # one process reads the options first: a bad one is one line, not one per rank
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(["--standalone", "--nproc-per-node", str(nproc), "-m", "emvi", *argv]))
    except ChildFailedError as exc:
        failures = ", ".join(f"rank {r} exit code {f.exitcode}" for r, f in sorted(exc.failures.items()))
        print(f"emvi: error: {nproc} processes were started and {failures}; see the lines above", file=sys.stderr)
        return 1
    return 0


def _parse(argv: list[str]):
    """``(spec, args, argv)``: the user's modules imported, then a spec file read and validated (``args`` None) or the
    command line parsed (``spec`` None). ``--nproc`` calls it once before starting processes, each process again."""
    argv = _import_modules(list(argv))
    spec_path, overrides = _spec_invocation(argv)
    if spec_path is not None:
        from .spec import load_spec

        return load_spec(spec_path, overrides), None, argv
    dashes = [a.split("=", 1)[0] for a in argv if a.startswith("--") and a.endswith("=--")]
    if dashes:  # argparse drops a '--' value and leaves an empty list where one value belongs
        raise ConfigError(f"{dashes[0]}=-- gives no value ('--' ends the options); give {dashes[0]} a value or drop it")
    return None, _build_parser().parse_args(argv), argv


def _main(argv: list[str]) -> int:
    try:
        spec, args, argv = _parse(argv)
        if spec is not None:
            from .spec import run_spec

            run_spec(spec, resume="--resume" in argv)
            return 0
        if args.command is None:
            _build_parser().print_help()
            return EXIT_USAGE
        if args.command == "fit" and args.model is None:
            raise ConfigError("emvi fit: name a model; see 'emvi models' or 'emvi fit --help'")
        handler = {"fit": _cmd_fit, "evaluate": _cmd_evaluate, "sample": _cmd_sample, "models": _cmd_models,
                   "analyze": _cmd_analyze}[args.command]
        with _runs_held(args):
            return handler(args) or 0
    except EmviError as exc:
        if os.environ.get("EMVI_DEBUG"):
            raise
        print(f"emvi: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("emvi: interrupted; the last checkpoint in the run directory is intact (resume with --resume)", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _runs_held(args):
    """evaluate, sample and analyze write into the runs they read: each is held (:meth:`RunDirectory.lock`) for the
    command, so they never write beside a fit or each other; a run another process holds is refused in one line."""
    from .rundir import RunDirectory

    names = [getattr(args, "run_dir", None)] if args.command in ("evaluate", "sample") else \
        list(getattr(args, "run_dirs", None) or []) if args.command == "analyze" else []
    runs = [RunDirectory(name) for name in names if name is not None and Path(name).is_dir()]
    try:
        for run in runs:
            run.lock(args.command)
            if not (args.command == "sample" and args.output):  # sample --output writes elsewhere only
                run.check_writable(args.command)
        yield
    finally:
        for run in runs:
            run.unlock()


def _spec_invocation(argv: list[str]) -> tuple[str | None, list[str]]:
    """``emvi fit SPEC.toml [--set table.key=value ...] [--resume]``: a spec file instead of a model name."""
    if len(argv) < 2 or argv[0] != "fit" or not argv[1].lower().endswith((".toml", ".yaml", ".yml")):
        return None, []
    overrides, rest = [], argv[2:]
    i = 0
    while i < len(rest):
        if rest[i] == "--set" and i + 1 < len(rest):
            overrides.append(rest[i + 1])
            i += 2
        elif rest[i].startswith("--set="):
            overrides.append(rest[i][len("--set="):])
            i += 1
        elif rest[i] == "--resume":
            i += 1
        else:
            raise ConfigError(f"emvi fit SPEC takes only --set table.key=value and --resume, got {rest[i]!r}")
    return argv[1], overrides


def _cmd_models(args) -> int:
    from .registry import available_models

    for name, entry in available_models().items():
        print(f"{name:12s} default method: {entry.default_method:6s} {entry.description}")
    return 0


def _cmd_fit(args) -> int:
    from .config import config_from_args
    from .inference.methods import method_names
    from .registry import get_model
    from .runs import method_config_class
    from .spec import DataSpec, OutputSpec, Spec, method_defaults, run_spec

    entry = get_model(args.model)
    model_config = config_from_args(entry.config_class, args)
    chosen = method_config_class(args.method)
    chosen_fields = {f.name for f in dataclasses.fields(chosen)}
    for other in method_names():
        for f in dataclasses.fields(method_config_class(other)):
            if f.name not in chosen_fields and getattr(args, f.name, None) is not None:
                raise ConfigError(f"--{f.name.replace('_', '-')} is an option of --method {other}, not of "
                                  f"--method {args.method}; see 'emvi fit {entry.name} --help'")
    method_config = config_from_args(chosen, args, base=method_defaults(entry, args.method, model_config))
    if args.data and args.dataset:
        raise ConfigError("give either a data file or --dataset, not both")
    data = DataSpec(
        dataset=args.data or args.dataset or "digits",
        data_root=args.data_root,
        binarize=args.binarize,
        raw_counts=args.raw_counts,
        download=args.download,
        limit=args.limit,
        label_column=args.label_column,
        valid_fraction=0.0 if args.valid_fraction is None else args.valid_fraction,
    )
    outputs = OutputSpec(out=args.out, run_dir=args.run_dir, plots=not args.no_plots)
    start_config = None if entry.start_config is None else config_from_args(entry.start_config, args)
    spec = Spec(model=entry.name, model_config=model_config, method=args.method, method_config=method_config,
                data=data, outputs=outputs, module=_IMPORTED[-1] if _IMPORTED else None, start_config=start_config)
    run_spec(spec, resume=args.resume)
    return 0


def _cmd_evaluate(args) -> int:
    from .rundir import RunDirectory, atomic_write_text
    from .runs import default_evaluate, evaluation_data
    from .validation import MONTE_CARLO_SAMPLES_MAX, check_positive_int, resolve_device

    check_positive_int(args.num_samples, "--num-samples", maximum=MONTE_CARLO_SAMPLES_MAX)
    if args.limit is not None:
        check_positive_int(args.limit, "--limit")
    resolve_device(args.device)
    entry, model, guide, dataset, resolved, split = evaluation_data(args.run_dir, args.split, device=args.device,
                                                                    trust_code=args.trust_run_code,
                                                                    root_override=args.data_root)
    print(f"evaluating: {split} split ({len(dataset)} items)")
    if args.limit is not None:
        dataset = dataset.subset(range(min(args.limit, len(dataset))))
    if entry.evaluate is not None:
        metrics = entry.evaluate(model, guide, dataset, num_samples=args.num_samples)
    else:
        metrics = default_evaluate(entry, model, guide, dataset, resolved)
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    atomic_write_text(RunDirectory(args.run_dir).evaluation_path(split), json.dumps(metrics, indent=2) + "\n")
    return 0


def _cmd_sample(args) -> int:
    import numpy as np
    import torch

    from .inference.seeding import seed_everything
    from .rundir import RunDirectory, atomic_write_bytes
    from .runs import available_memory_bytes, load_run
    from .validation import check_positive_int, check_seed

    check_positive_int(args.num_samples, "--num-samples")
    check_seed(args.seed, "--seed")
    output = Path(args.output) if args.output else RunDirectory(args.run_dir).samples_path
    if output.suffix.lower() != ".npy":
        raise ConfigError(f"--output {output} must end in .npy (the samples are written as a NumPy array there)")
    if output.is_dir():
        raise ConfigError(f"--output {output} is a folder; name a .npy file")
    if args.output and not output.parent.is_dir():
        raise ConfigError(f"--output {output}: folder {output.parent} does not exist; create it first")
    if args.output and not os.access(output.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {output}: cannot write in {output.parent} (permission denied)")
    entry, model, guide, dataset, _ = load_run(args.run_dir, trust_code=args.trust_run_code)
    if entry.sample is None:
        raise ConfigError(f"model {entry.name!r} does not support sampling")
    if args.output and not args.overwrite:  # a path outside the run may be anyone's file: never replace it unasked
        for path in (output, output.with_suffix(".png")) if dataset.image_shape is not None else (output,):
            if path.exists():
                raise ConfigError(f"--output {output}: {path} exists already; pass --overwrite to replace it or name "
                                  "another file")
    item_size = 8 * int(np.prod(dataset.x.shape[1:])) * (100 if entry.sequential else 1)
    available = available_memory_bytes()
    if available is not None and args.num_samples * item_size > 0.5 * available:
        raise ConfigError(f"--num-samples {args.num_samples} would need about {args.num_samples * item_size / 2**30:,.1f} "
                          f"GiB, more than the memory available; draw fewer")
    seed_everything(args.seed)
    with torch.no_grad():
        samples = entry.sample(model, guide, args.num_samples)
    buffer = io.BytesIO()
    np.save(buffer, samples.detach().cpu().numpy())
    atomic_write_bytes(output, buffer.getvalue())
    print(f"samples: {tuple(samples.shape)} written to {output}")
    if dataset.image_shape is not None:
        from .analysis.curves import plot_image_grid

        png = plot_image_grid(samples.detach().cpu(), dataset.image_shape, output.with_suffix(".png"), title="samples")
        print(f"picture: {png}")
    return 0


def _summary_value(run_dir, key: str):
    """``key`` from a run's ``summary.json`` (None if the run has no such summary or value)."""
    from .rundir import RunDirectory

    summary = RunDirectory(run_dir).read_summary()
    return summary.get(key) if isinstance(summary, dict) else None


COMPARISON_CHUNK = 100
"""Held-out items scored per export call in a comparison: below every export's own item cap, so all are scored."""


def _cmd_analyze(args) -> int:
    from .analysis.report import compare_fits, loo_applies, plot_comparison, write_analysis
    from .rundir import comparison_paths
    from .runs import held_out_split, load_run, run_seed
    from .validation import MONTE_CARLO_SAMPLES_MAX, check_positive_int

    check_positive_int(args.num_samples, "--num-samples", maximum=MONTE_CARLO_SAMPLES_MAX)
    if args.limit is not None:
        check_positive_int(args.limit, "--limit")
    if args.compare_out is not None and Path(args.compare_out).exists() and not Path(args.compare_out).is_dir():
        raise ConfigError(f"--compare-out {args.compare_out} is a file; name a folder")
    if len(set(map(str, args.run_dirs))) != len(args.run_dirs):
        raise ConfigError("the same run directory is named twice; name each run once")
    fits, held_out, counts, loaded = {}, {}, {}, []
    for run_dir in args.run_dirs:  # every run is loaded and checked before any is written to
        entry, model, guide, dataset, resolved = load_run(run_dir, root_override=args.data_root,
                                                          trust_code=args.trust_run_code)
        if entry.inference_data is None:
            raise ConfigError(f"model {entry.name!r} has no ArviZ export; see `emvi models` for the models analyze supports")
        train_part, valid_part = held_out_split(entry, dataset, resolved["data"].get("valid_fraction"),
                                                seed=run_seed(resolved))
        loaded.append((run_dir, entry, model, guide, resolved, train_part, valid_part))
    for run_dir, entry, model, guide, resolved, train_part, _ in loaded:
        method = resolved.get("method", "svi")
        print(f"{run_dir}: building InferenceData ({method})", flush=True)
        idata = entry.inference_data(model, guide, train_part, method=method, num_samples=args.num_samples, run_dir=Path(run_dir))
        for kind, path in write_analysis(idata, run_dir).items():
            print(f"  {kind}: {path}")
        fits[Path(run_dir).name] = idata
        counts[Path(run_dir).name] = _summary_value(run_dir, "num_parameters")
    if len(fits) > 1 and not all(loo_applies(idata) for idata in fits.values()):
        held_out = _held_out_items(loaded, fits, args)
    if len(fits) > 1:
        table = compare_fits(fits, held_out=held_out if held_out else None, num_parameters=counts)
        bic = {Path(d).name: _summary_value(d, "bic") for d in args.run_dirs}
        if any(value is not None for value in bic.values()):  # BIC of the fitted parameters, beside LOO or held-out
            table["bic"] = [bic.get(name) for name in table.index]
        out = Path(args.compare_out) if args.compare_out else Path(args.run_dirs[0]).parent
        out.mkdir(parents=True, exist_ok=True)
        table_path, plot_path = comparison_paths(out)
        table.to_csv(table_path)
        plot_comparison(table, plot_path)
        print(table.to_string())
        print(f"comparison written to {table_path}")
    return 0


def _held_out_items(loaded, fits, args) -> dict:
    """Per run, the ``(N,)`` held-out log-likelihood of the same N items (all, or ``--limit``); runs whose held-out
    items differ are refused in one line (a comparison on different items ranks nothing)."""
    import numpy as np
    import torch

    from .analysis.local_latents import item_log_likelihoods
    from .analysis.report import is_point_fit

    held_out, fingerprints = {}, {}
    for run_dir, entry, model, guide, resolved, _, valid_part in loaded:
        name = Path(run_dir).name
        if valid_part is None:
            raise ConfigError(f"{run_dir} has no held-out data to compare on (a point fit, or a posterior over "
                              "per-item latents, has no LOO); refit with --valid-fraction > 0")
        count = len(valid_part) if args.limit is None else min(args.limit, len(valid_part))
        compared = valid_part.subset(torch.arange(count))
        fingerprints[name] = compared.fingerprint()
        draws = 1 if is_point_fit(fits[name]) else args.num_samples  # importance samples of per-item latents
        values = []
        for start in range(0, count, COMPARISON_CHUNK):
            part = compared.subset(torch.arange(start, min(start + COMPARISON_CHUNK, count)))
            held = entry.inference_data(model, guide, part, method=resolved.get("method", "svi"), num_samples=draws,
                                        run_dir=Path(run_dir))
            values.append(item_log_likelihoods(held))
        held_out[name] = np.concatenate(values)
    if len(set(fingerprints.values())) > 1:
        sizes = ", ".join(f"{name}: {print_.split(',')[0]}" for name, print_ in fingerprints.items())
        raise ConfigError(f"the runs hold out different items ({sizes}); compare runs fitted on the same data with the "
                          "same --valid-fraction and --seed")
    return held_out


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
