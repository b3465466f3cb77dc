"""The bad-input fuzzer of issue 17, shared by ``tests/cli/test_fuzz.py`` (a fixed-seed budget under pytest) and
``benchmarks/fuzz.py`` (a long run printing counts as JSON).

Invariant checked for every case: ``emvi`` returns 0, or returns 2 with exactly one line on stderr starting
``emvi: error:``; no exception escapes ``emvi.cli.main``; a failed command leaves every file that existed before it
(valid run directories, data, specs) byte-for-byte unchanged and creates no file outside the run directory it was
asked to create; the shared fixtures (data files, valid runs) are never changed.

Hypothesis strategies generate the cases in five categories: ``cli`` (options of every command and model, with bad
values), ``data`` (files of every kind: dtype, shape, NaN/inf, empty, truncated, wrong extension, wrong encoding),
``spec`` (TOML/YAML with wrong types, unknown keys, odd encodings), ``checkpoint`` (truncated, foreign, NaN, wrong
shapes, damaged config.json, training state of another layout) and ``rundir`` (missing, a file, another model's,
half-written, foreign files). Every numeric option of every model gets special floats (nan, inf, 1e300, 1e-320) and
integers at and past 2**63; devices get odd strings (cuda:99, mps, meta); names and paths get newlines, ANSI escapes
and NUL; .npy/.npz files get headers claiming huge lengths or shapes (issue 33).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hypothesis import strategies as st

import emvi  # noqa: F401 - fills the registry
from emvi.catalog import FAMILIES
from emvi.cli import main
from emvi.registry import available_models
from emvi.runs import method_config_class

CATEGORIES = ("cli", "data", "spec", "checkpoint", "rundir")
# The built-in families only: other test modules register their own models in the same process.
MODELS = tuple(entry.name for family in FAMILIES for entry in family.ENTRIES)

# Values an option may get. Sizes may be huge (the memory guard must answer); counts of iterations stay small so a
# value that happens to be valid still fits in milliseconds.
BAD_VALUES = ("-1", "0", "-3.5", "nan", "inf", "-inf", "1e999", "abc", "", " ", "true", "none", "0x10", "１", "1,2",
              "-", "--", "é", "9" * 40, "-0", "1e300", "1e-320", "+inf", "NaN", "1e20", str(2**63), str(2**63 - 1),
              str(-(2**63) - 1), "a\nb", "\x1b[31mred\x1b[0m", "\t", "\x00")
"""Special floats, integers at and past torch's 64-bit sizes, and hostile text (newlines, ANSI escapes, NUL)."""
DEVICE_VALUES = ("cpu", "cuda", "cuda:0", "cuda:99", "cuda:-1", "mps", "meta", "xla", "cpu:0", "auto", "CPU", "gpu",
                 "cuda:0\n", "cuda:1e9")
HOSTILE_PATHS = ("run\nx", "\x1b[2Jrun", "run\t", "..", "./", "r" * 300, "run/../run", "~")
SMALL_VALUES = ("1", "2")
HUGE_VALUES = ("1000000000", "123456789012")
SIZE_OPTIONS = {"latent_dim", "hidden_dims", "num_components", "num_states", "num_topics", "num_categories"}
SKIPPED_OPTIONS = {"download", "jit", "data_root", "help"}  # network, compilation: slow, not bad-input handling

TINY = {  # what keeps a valid fit in milliseconds; fuzzed options come after and override
    "svi": ["--epochs", "1", "--batch-size", "8", "--progress", "false"],
    "em": ["--max-iter", "2", "--progress", "false"],
    "mcmc": ["--num-samples", "4", "--warmup-steps", "1", "--num-chains", "1", "--progress", "false"],
}
MODEL_TINY = {"vae": ["--hidden-dims", "4", "--latent-dim", "2"], "composed": ["--hidden-dims", "4"],
              "lda": ["--hidden-dims", "4", "-k", "2"], "prodlda": ["--hidden-dims", "4", "-k", "2"],
              "mixture": ["-k", "2"], "hmm": ["-k", "2"], "ppca": ["--latent-dim", "1"], "fa": ["--latent-dim", "1"],
              "declared": [],  # a declaration's sites come from a spec file; from options it must refuse in one line
              "gmvae": ["--hidden-dims", "4", "--latent-dim", "2", "-k", "2"],
              "ssvae": ["--hidden-dims", "4", "--latent-dim", "2", "--num-classes", "2"]}
METHODS = {"mixture": ("em", "svi", "mcmc"), "hmm": ("em", "svi", "mcmc"), "ppca": ("em", "svi"), "fa": ("em", "svi"),
           "composed": ("svi", "em"), "declared": ("svi", "em", "mcmc")}
"""The methods each model's protocols accept (the method table decides at fit time; the others: svi)."""

MODEL_DATA = {"vae": "unit.csv", "composed": "unit.csv", "lda": "counts.csv", "prodlda": "counts.csv",
              "mixture": "counts.csv", "hmm": "seq.npz", "ppca": "gauss.csv", "fa": "gauss.csv", "declared": "unit.csv",
              "gmvae": "unit.csv", "ssvae": "unit.csv"}  # ssvae on data without labels: refused in one line


def _options(model: str, method: str) -> list[str]:
    entry = available_models()[model]
    names = [f.name for f in dataclasses.fields(entry.config_class)]
    names += [f.name for f in dataclasses.fields(method_config_class(method))]
    names += ["limit", "valid_fraction", "binarize", "label_column", "raw_counts", "dataset", "out", "run_dir",
              "method"]
    return sorted({n for n in names if n not in SKIPPED_OPTIONS})


def _option_values(name: str):
    pool = list(BAD_VALUES) + list(SMALL_VALUES)
    if name in SIZE_OPTIONS:
        pool += list(HUGE_VALUES)
    if name == "method":
        pool += ["svi", "em", "mcmc", "gibbs"]
    if name == "binarize":
        pool += ["static", "dynamic"]
    if name == "device":
        pool += list(DEVICE_VALUES)
    if name in ("dataset", "run_dir", "out"):
        pool += ["digits", "mnist", "missing.csv", "run", "AFILE", "AFILE/x", "data/unit.csv", "/proc/version",
                 *HOSTILE_PATHS]
    return st.sampled_from(pool)


@st.composite
def cli_cases(draw):
    command = draw(st.sampled_from(("fit", "fit", "fit", "evaluate", "sample", "analyze", "models", "junk")))
    if command == "fit":
        model = draw(st.sampled_from(MODELS + ("nosuchmodel",)))
        if model == "nosuchmodel":
            return {"argv": ["fit", model], "run": None}
        method = draw(st.sampled_from(METHODS.get(model, ("svi",))))
        argv = ["fit", model, "@data/" + MODEL_DATA[model], "--method", method, "--run-dir", "run", "--no-plots",
                *TINY[method], *MODEL_TINY[model]]
        options = _options(model, method)
    else:
        argv, options = [command], []
        if command in ("evaluate", "sample", "analyze"):
            argv.append("run")
            options = {"evaluate": ["num_samples", "limit", "split", "device", "data_root"],
                       "sample": ["num_samples", "seed", "output"],
                       "analyze": ["num_samples", "compare_out"]}[command]
            argv += {"evaluate": ["--num-samples", "2"], "sample": ["--num-samples", "2"],
                     "analyze": ["--num-samples", "2"]}[command]
    names = draw(st.lists(st.sampled_from(options + ["no_such_option"]), max_size=3)) if options else []
    for name in names:
        flag = "--" + name.replace("_", "-")
        value = draw(_option_values(name))
        if name in ("num_samples", "limit") and value in HUGE_VALUES:
            value = "-2"  # valid but slow; the values past the bounds (1e20, 2**63) stay
        argv += [flag, value] if draw(st.booleans()) else [f"{flag}={value}"]
    if draw(st.integers(0, 9)) == 0:
        argv.insert(draw(st.integers(1, len(argv))), draw(st.sampled_from(["--resume", "--help-me", "-k", "--"])))
    return {"argv": argv, "run": draw(st.sampled_from(["vae", "mixture-em"])) if command != "fit" else None}


TRUNCATED = b"\x00emvi-fuzz-truncated:"
"""Marks a data case as ``SOURCE|CUT``: the fixture SOURCE cut to CUT bytes (generated bytes never start so)."""

# -- data files --------------------------------------------------------------------------------------------------------

_DTYPES = ("float32", "float64", "int64", "uint8", "bool", "complex64", "<U3", "float16", ">f8", "object")


@st.composite
def arrays(draw):
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))
    dtype = draw(st.sampled_from(_DTYPES))
    values = draw(st.lists(st.sampled_from([0.0, 1.0, 0.5, -1.0, 3.0, 7.0, np.nan, np.inf, -np.inf, 1e300]),
                           min_size=1, max_size=4))
    flat = np.resize(np.array(values), int(np.prod(shape)) if shape else 1)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if dtype == "<U3":
            return flat.astype(str).astype("<U3").reshape(shape)
        if dtype == "object":
            return np.array([None] * flat.size, dtype=object).reshape(shape)
        if dtype in ("int64", "uint8", "bool"):
            flat = np.nan_to_num(flat, nan=0.0, posinf=9.0, neginf=-9.0)
        return flat.astype(dtype).reshape(shape)


@st.composite
def data_cases(draw):
    kind = draw(st.sampled_from(("npy", "npz", "csv", "truncated", "extension", "encoding", "garbage", "header")))
    name, payload = "input.npy", b""
    if kind == "npy":
        buffer = io.BytesIO()
        np.save(buffer, draw(arrays()), allow_pickle=True)
        payload = buffer.getvalue()
    elif kind == "npz":
        keys = draw(st.lists(st.sampled_from(("x", "y", "lengths", "a")), unique=True, max_size=3))
        buffer = io.BytesIO()
        np.savez(buffer, **{k: draw(arrays()) for k in keys})
        name, payload = "input.npz", buffer.getvalue()
    elif kind == "csv":
        rows = draw(st.lists(st.lists(st.sampled_from(["1", "0", "0.5", "-2", "nan", "inf", "", "a", "1e999", " 3 ",
                                                       '"4"', "0x1"]), min_size=0, max_size=4), max_size=5))
        header = draw(st.sampled_from(["", "a,b,c\n", "label,x\n"]))
        name, payload = "input.csv", (header + "\n".join(",".join(r) for r in rows)).encode()
    elif kind == "truncated":
        source = draw(st.sampled_from(("unit.npy", "seq.npz", "unit.csv")))
        name = "input" + Path(source).suffix
        payload = TRUNCATED + source.encode()  # resolved against the fixtures when the case runs
        payload += b"|" + str(draw(st.integers(0, 400))).encode()
    elif kind == "extension":
        name = draw(st.sampled_from(("input.txt", "input", "input.NPY", "input.csv.gz", "input.npy.bak", ".npy")))
        payload = b"1,2\n3,4\n"
    elif kind == "encoding":
        text = "0.5,0.25\n1,0\n"
        name = "input.csv"
        payload = draw(st.sampled_from([text.encode("utf-16"), b"\xef\xbb\xbf" + text.encode(), "é,1\n".encode("latin-1"),
                                        b"\x00\x01\x02", b"1,2\r\n3\x00,4\n"]))
    elif kind == "header":
        name, payload = draw(_hostile_headers())
    else:
        name = draw(st.sampled_from(("input.npy", "input.npz", "input.csv")))
        payload = draw(st.binary(max_size=64))
    model = draw(st.sampled_from(MODELS))
    method = draw(st.sampled_from(METHODS.get(model, ("svi",))))
    extra = draw(st.sampled_from([[], ["--label-column", "label"], ["--valid-fraction", "0.5"], ["--binarize", "static"]]))
    argv = ["fit", model, name, "--method", method, "--run-dir", "run", "--no-plots", *TINY[method],
            *MODEL_TINY[model], *extra]
    return {"argv": argv, "files": {name: payload}, "run": None}


@st.composite
def _hostile_headers(draw):
    """``(name, bytes)`` of an .npy (or an .npz holding one) whose header claims a huge length or a huge shape, or
    is no Python literal: the reader must refuse it before allocating or evaluating anything."""
    version = draw(st.sampled_from((1, 2, 3)))
    shape = draw(st.sampled_from(["(3, 2)", f"({2**62}, {2**62})", f"({2**31}, 8)", "(-1, 2)", "(3,)", "()",
                                  "__import__('os')", "(" + "1, " * 40 + ")"]))
    descr = draw(st.sampled_from(["'<f8'", "'|O'", "'<c16'", "'>i4'", "[('a', '<f8')]", "'<U9999999999'"]))
    header = ("{'descr': " + descr + ", 'fortran_order': False, 'shape': " + shape + ", }").encode("latin-1")
    header = header + b" " * draw(st.sampled_from([0, 10, 70000])) + b"\n"
    claimed = len(header) if draw(st.booleans()) else draw(st.sampled_from([0, 65535, 2**31, 2**32 - 1]))
    size = "<H" if version == 1 else "<I"
    if version == 1:
        claimed = min(claimed, 65535)
    import struct

    payload = b"\x93NUMPY" + bytes([version, 0]) + struct.pack(size, claimed) + header
    payload += b"\x00" * draw(st.sampled_from([0, 8, 48]))
    if draw(st.booleans()):
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("x.npy", payload)
        return "input.npz", buffer.getvalue()
    return "input.npy", payload


# -- spec files --------------------------------------------------------------------------------------------------------

_SPEC_VALUES = st.one_of(st.integers(-3, 3), st.sampled_from([10**9, 1.5, -0.5, float("nan"), float("inf")]),
                         st.booleans(), st.sampled_from(["1", "abc", "", "none", "svi", "em", "digits", "static", "a\nb",
                                                          "\x1b[31mred", "cuda:99", "1e999"]),
                         st.lists(st.integers(-2, 4), max_size=3), st.just({"nested": 1}))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf"}.get(str(value), repr(value))
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


@st.composite
def spec_cases(draw):
    model = draw(st.sampled_from(MODELS + ("nosuchmodel",)))
    entry = available_models().get(model)
    method = draw(st.sampled_from(METHODS.get(model, ("svi",)))) if entry else "svi"
    tables = {"model": {"name": model}, "inference": {"method": method},
              "data": {"dataset": "@data/" + MODEL_DATA.get(model, "unit.csv")},
              "outputs": {"run_dir": "run", "plots": False}}
    tables["inference"].update({"svi": {"epochs": 1, "batch_size": 8, "progress": False},
                                "em": {"max_iter": 2, "progress": False},
                                "mcmc": {"num_samples": 4, "warmup_steps": 1, "num_chains": 1, "progress": False}}[method])
    if entry:
        tables["model"].update({k.lstrip("-").replace("-", "_"): [int(v)] if k == "--hidden-dims" else int(v)
                                for k, v in zip(MODEL_TINY[model][::2], MODEL_TINY[model][1::2], strict=True)
                                if k.startswith("--")})
        keys = [f.name for f in dataclasses.fields(entry.config_class)]
    else:
        keys = ["latent_dim"]
    slow = {"epochs", "max_iter", "n_init", "num_samples", "warmup_steps", "num_chains", "num_particles"}
    for _ in range(draw(st.integers(1, 3))):
        table = draw(st.sampled_from(("model", "inference", "data", "outputs", "junk")))
        key = draw(st.sampled_from(keys + ["epochs", "max_iter", "limit", "valid_fraction", "binarize", "dataset",
                                          "run_dir", "plots", "method", "unknown_key", "name", "seed", "learning_rate"]))
        value = draw(_SPEC_VALUES)
        if key in slow and isinstance(value, int) and not isinstance(value, bool) and value > 3:
            value = 2
        if key in ("run_dir", "out", "dataset") and isinstance(value, str) and value in ("", "none"):
            value = "AFILE"
        tables.setdefault(table, {})[key] = value
    fmt = draw(st.sampled_from(("toml", "toml", "yaml", "broken")))
    if fmt == "yaml":
        import yaml

        text, name = yaml.safe_dump({t: {k: (v if not isinstance(v, float) or v == v else ".nan") for k, v in kv.items()}
                                     for t, kv in tables.items()}), "spec.yaml"
    else:
        text = "\n".join(f"[{t}]\n" + "\n".join(f"{k} = {_toml_value(v)}" for k, v in kv.items())
                         for t, kv in tables.items()) + "\n"
        name = "spec.toml"
        if fmt == "broken":
            cut = draw(st.integers(0, len(text)))
            text = text[:cut] + draw(st.sampled_from(["[", "= =", "\x00", "]]", "'''"])) + text[cut:]
    encoding = draw(st.sampled_from(("utf-8", "utf-8", "utf-8", "utf-16", "latin-1-bytes", "bom")))
    payload = {"utf-8": text.encode(), "utf-16": text.encode("utf-16"), "bom": b"\xef\xbb\xbf" + text.encode(),
               "latin-1-bytes": text.encode() + "# café\n".encode("latin-1")}[encoding]
    sets = draw(st.lists(st.sampled_from(["inference.epochs=1", "inference.epochs=abc", "model.nope=1", "x=1",
                                          "junk.key=2", "data.limit=-1", "inference.seed=-1"]), max_size=2))
    argv = ["fit", name] + [a for s in sets for a in ("--set", s)]
    if draw(st.integers(0, 4)) == 0:
        argv.append("--resume")
    return {"argv": argv, "files": {name: payload}, "run": None}


# -- checkpoints and config.json ---------------------------------------------------------------------------------------

TRAINING_STATE_DAMAGE = {"layout-optimizer": ("optimizer", {"weights": [1.0]}), "layout-rng": ("rng", "seed"),
                         "layout-epoch": ("epoch", "3"), "layout-history": ("history", 5),
                         "layout-scheduler": ("scheduler", [0.5]), "layout-groups": ("optimizer", {"state": {},
                                                                                              "param_groups": [1]})}
"""A checkpoint whose training state (optimiser, RNG, epoch, history) has another layout."""


@st.composite
def checkpoint_cases(draw):
    run = draw(st.sampled_from(("vae", "mixture-em")))
    damage = draw(st.sampled_from(("truncate", "garbage", "foreign", "no-format", "missing-keys", "nan", "shape",
                                   "pickle", "config-garbage", "config-model", "config-types", "config-missing",
                                   "checkpoint-missing", "checkpoint-dir", *TRAINING_STATE_DAMAGE)))
    command = draw(st.sampled_from(("evaluate", "sample", "analyze", "resume")))
    return {"damage": damage, "run": run, "command": command, "offset": draw(st.integers(0, 2000))}


# -- run-directory states ----------------------------------------------------------------------------------------------

@st.composite
def rundir_cases(draw):
    state = draw(st.sampled_from(("missing", "file", "other-model", "half-written", "foreign-files", "under-a-file",
                                  "empty", "tmp-only", "nested-missing")))
    command = draw(st.sampled_from(("fit", "fit-resume", "evaluate", "sample", "analyze")))
    model = draw(st.sampled_from(("vae", "mixture")))
    return {"state": state, "command": command, "model": model}


STRATEGIES = {"cli": cli_cases, "data": data_cases, "spec": spec_cases, "checkpoint": checkpoint_cases,
              "rundir": rundir_cases}


# -- running a case ----------------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    category: str
    argv: list[str]
    rc: int | None
    stderr: str
    traceback: str | None = None
    changed: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        problems = []
        if self.traceback is not None:
            problems.append(f"exception escaped: {self.traceback}")
        elif self.rc not in (0, 2):
            problems.append(f"exit status {self.rc}")
        elif self.rc == 2:
            lines = self.stderr.strip().splitlines()
            if len(lines) != 1 or not lines[0].startswith("emvi: error:"):
                problems.append(f"stderr is not one 'emvi: error:' line: {self.stderr[-300:]!r}")
        if "Traceback" in self.stderr:
            problems.append("traceback on stderr")
        if self.changed:
            problems.append(f"run directory changed by a failed command: {self.changed[:3]}")
        if self.outside:
            problems.append(f"files touched outside the run directory: {self.outside[:3]}")
        return problems


def _snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[path.relative_to(folder).as_posix()] = hashlib.sha1(path.read_bytes()).hexdigest()
        elif path.is_dir():
            out[path.relative_to(folder).as_posix() + "/"] = "dir"
    return out


class Workspace:
    """Fixtures shared by all cases (tiny data files and two valid runs), and one scratch folder per case."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.data = self.root / "data"
        self.runs = self.root / "runs"
        self.cases = self.root / "cases"
        for folder in (self.data, self.runs, self.cases):
            folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        np.savetxt(self.data / "unit.csv", rng.uniform(size=(12, 4)).round(3), delimiter=",")
        np.save(self.data / "unit.npy", rng.uniform(size=(12, 4)))
        np.savetxt(self.data / "counts.csv", rng.integers(1, 4, size=(12, 4)), delimiter=",", fmt="%d")
        np.savetxt(self.data / "gauss.csv", rng.normal(size=(12, 3)).round(3), delimiter=",")
        np.savez(self.data / "seq.npz", x=rng.normal(size=(4, 5, 2)), lengths=np.array([5, 4, 3, 5]))
        self._fit_fixture("vae", ["fit", "vae", str(self.data / "unit.csv"), "--epochs", "1", "--hidden-dims", "4",
                                  "--latent-dim", "2", "--no-plots", "--progress", "false"])
        self._fit_fixture("mixture-em", ["fit", "mixture", str(self.data / "counts.csv"), "--family", "poisson",
                                         "-k", "2", "--method", "em", "--max-iter", "3", "--no-plots",
                                         "--progress", "false"])
        self.fixture_snapshot = {"data": _snapshot(self.data), "runs": _snapshot(self.runs)}
        self.count = 0

    def _fit_fixture(self, name: str, argv: list[str]) -> None:
        target = self.runs / name
        if not target.exists():
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                rc = main(argv + ["--run-dir", str(target)])
            assert rc == 0, err.getvalue()

    def fixtures_changed(self) -> list[str]:
        now = {"data": _snapshot(self.data), "runs": _snapshot(self.runs)}
        return [f"{k}/{name}" for k in now for name in set(now[k]) ^ set(self.fixture_snapshot[k])
                ] + [f"{k}/{name}" for k in now for name in set(now[k]) & set(self.fixture_snapshot[k])
                     if now[k][name] != self.fixture_snapshot[k][name]]

    def copy_run(self, name: str, target: Path) -> Path:
        shutil.copytree(self.runs / name, target)
        return target

    def run(self, category: str, case: dict) -> Outcome:
        self.count += 1
        folder = self.cases / f"case{self.count}"
        folder.mkdir()
        previous = os.getcwd()
        os.chdir(folder)
        try:
            argv, allowed = _prepare(self, category, case, folder)
            before = _snapshot(folder)
            outcome = _call(category, argv)
            after = _snapshot(folder)
            if outcome.rc != 0 or outcome.traceback is not None:
                gone_or_changed = [n for n in before if after.get(n) != before[n]]
                outcome.changed = [n for n in gone_or_changed if n.startswith("run/") or n.startswith("other/")]
                outcome.outside = [n for n in gone_or_changed if n not in outcome.changed]
                outcome.outside += [n for n in after if n not in before and not any(n.startswith(a) for a in allowed)]
            else:
                outcome.outside = [n for n in before if not n.startswith(("run/", "other/", "runs/"))
                                   and n not in after and not n.endswith("/")]
            outcome.outside += self.fixtures_changed()
            return outcome
        finally:
            os.chdir(previous)
            shutil.rmtree(folder, ignore_errors=True)


def _call(category: str, argv: list[str]) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    rc, trace = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's --help/--version
            rc = exc.code if isinstance(exc.code, int) else 0
        except BaseException as exc:  # noqa: BLE001 - what the invariant forbids
            trace = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return Outcome(category, argv, rc, err.getvalue(), trace)


def _resolve(argv: list[str], ws: Workspace) -> list[str]:
    return [str(ws.data / a[len("@data/"):]) if a.startswith("@data/") else a for a in argv]


def _prepare(ws: Workspace, category: str, case: dict, folder: Path) -> tuple[list[str], tuple[str, ...]]:
    """Write the case's files into ``folder``; returns the argv and the paths new files may appear under."""
    (folder / "AFILE").write_text("a file where a folder is expected\n")
    allowed = ("run/", "runs/", "samples", "comparison")
    if category in ("cli", "data", "spec"):
        if case.get("run"):
            ws.copy_run(case["run"], folder / "run")
        for name, payload in case.get("files", {}).items():
            if payload.startswith(TRUNCATED):
                source, cut = payload[len(TRUNCATED):].decode().split("|")
                payload = (ws.data / source).read_bytes()[: int(cut)]
            if name.endswith(".toml") or name.endswith(".yaml"):
                payload = payload.replace(b"@data/", str(ws.data).encode() + b"/")
            (folder / name).write_bytes(payload)
        argv = _resolve(case["argv"], ws)
        return argv, allowed + ("AFILE/", "x/")
    if category == "checkpoint":
        run = ws.copy_run(case["run"], folder / "run")
        _damage(run, case["damage"], case["offset"])
        model_argv = (["fit", "vae", str(ws.data / "unit.csv"), "--epochs", "2", "--hidden-dims", "4", "--latent-dim",
                       "2"] if case["run"] == "vae" else
                      ["fit", "mixture", str(ws.data / "counts.csv"), "--family", "poisson", "-k", "2", "--method",
                       "em", "--max-iter", "3"])
        argv = {"evaluate": ["evaluate", "run", "--num-samples", "2"], "sample": ["sample", "run", "--num-samples", "2"],
                "analyze": ["analyze", "run", "--num-samples", "2"],
                "resume": model_argv + ["--run-dir", "run", "--resume", "--no-plots", "--progress", "false"]}
        return argv[case["command"]], allowed
    # rundir states
    state, model = case["state"], case["model"]
    target = folder / "run"
    if state == "file":
        target.write_text("not a folder\n")
    elif state == "other-model":
        ws.copy_run("mixture-em" if model == "vae" else "vae", target)
    elif state == "half-written":
        target.mkdir()
        (target / "spec.toml").write_text("[model]\nname = 'vae'\n")
        (target / "config.json").write_text('{"model": "vae"}\n')
        (target / ".checkpoint.pt.x1.tmp").write_bytes(b"torn write")
    elif state == "foreign-files":
        target.mkdir()
        (target / "notes.txt").write_text("mine\n")
    elif state == "empty":
        target.mkdir()
    elif state == "tmp-only":
        target.mkdir()
        (target / ".config.json.y.tmp").write_text("{")
    run_arg = {"under-a-file": "AFILE/run", "nested-missing": "deep/er/run"}.get(state, "run")
    fit = (["fit", "vae", str(ws.data / "unit.csv"), "--epochs", "1", "--hidden-dims", "4", "--latent-dim", "2"]
           if model == "vae" else
           ["fit", "mixture", str(ws.data / "counts.csv"), "--family", "poisson", "-k", "2", "--method", "em",
            "--max-iter", "2"])
    fit += ["--run-dir", run_arg, "--no-plots", "--progress", "false"]
    argv = {"fit": fit, "fit-resume": fit + ["--resume"], "evaluate": ["evaluate", run_arg, "--num-samples", "2"],
            "sample": ["sample", run_arg, "--num-samples", "2"], "analyze": ["analyze", run_arg, "--num-samples", "2"]}
    return argv[case["command"]], allowed + ("deep/",)


def _damage(run: Path, damage: str, offset: int) -> None:
    checkpoint, config = run / "checkpoint.pt", run / "config.json"
    if damage == "truncate":
        checkpoint.write_bytes(checkpoint.read_bytes()[: offset % max(1, checkpoint.stat().st_size)])
    elif damage == "garbage":
        checkpoint.write_bytes(os.urandom(64))
    elif damage == "foreign":
        torch.save([torch.zeros(3)], checkpoint)
    elif damage == "pickle":
        torch.save({"format": "emvi-checkpoint-v1", "model": Path("x")}, checkpoint)
    else:
        state = torch.load(checkpoint, weights_only=True)
        if damage == "no-format":
            state.pop("format")
        elif damage == "missing-keys":
            state = {"format": state["format"], "config": state.get("config", "{}")}
        elif damage == "nan":
            state["model"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in state["model"].items()}
        elif damage in TRAINING_STATE_DAMAGE:
            key, value = TRAINING_STATE_DAMAGE[damage]
            state[key] = value
        elif damage == "shape":
            state["model"] = {k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in state["model"].items()}
        elif damage == "config-garbage":
            config.write_bytes(b"\xff{not json")
        elif damage == "config-model":
            config.write_text(config.read_text().replace('"vae"', '"hmm"').replace('"mixture"', '"vae"'))
        elif damage == "config-types":
            config.write_text(config.read_text().replace('"latent_dim": 2', '"latent_dim": "2"')
                              .replace('"num_components": 2', '"num_components": [2]')
                              .replace('"data_info": {', '"data_info": {"bogus": 1, '))
        elif damage == "config-missing":
            config.unlink()
        elif damage == "checkpoint-missing":
            checkpoint.unlink()
            return
        elif damage == "checkpoint-dir":
            checkpoint.unlink()
            checkpoint.mkdir()
            return
        torch.save(state, checkpoint)


def summarise(outcomes: list[Outcome]) -> dict:
    failures = [o for o in outcomes if o.failures]
    by_category = {c: {"cases": 0, "failures": 0, "exit_0": 0, "exit_2": 0} for c in CATEGORIES}
    for o in outcomes:
        row = by_category[o.category]
        row["cases"] += 1
        row["failures"] += bool(o.failures)
        row["exit_0"] += o.rc == 0
        row["exit_2"] += o.rc == 2
    return {"cases": len(outcomes), "failures": len(failures),
            "tracebacks": sum(o.traceback is not None or "Traceback" in o.stderr for o in outcomes),
            "changed_run_dirs": sum(bool(o.changed) for o in outcomes),
            "touched_outside": sum(bool(o.outside) for o in outcomes),
            "by_category": by_category}
