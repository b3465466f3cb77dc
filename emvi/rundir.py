"""The run directory: the one module that names its files and reads and writes them.

A run directory holds

* ``config.json`` — the resolved configuration (model, method, data; the method's settings under
  :data:`METHOD_CONFIG`), written atomically;
* ``spec.toml`` — the same as a spec file that ``emvi fit`` can run again;
* ``checkpoint.pt`` (and ``best.pt`` for SVI) — the fitted state, written atomically (temporary file in the same
  folder, fsync, rename), loaded with ``torch.load(..., weights_only=True)``: tensors and plain containers only;
* ``metrics.jsonl`` — one JSON object per epoch (SVI) or iteration (EM);
* ``summary.json`` — the final metrics;
* ``loss_curve.png`` and the model's own plots (:data:`PLOTS`), written by ``emvi fit``;
* ``inference_data.nc``, ``posterior_summary.csv`` and their plots, written by ``emvi analyze``;
* ``evaluation_SPLIT.json`` (``emvi evaluate``) and ``samples.npy`` (``emvi sample``).

No other module spells these names: everything reaches them through :class:`RunDirectory`'s paths.

A run killed at any moment leaves either the previous file or the new one, never a torn one. The SVI runner, EM,
NUTS, the estimators' registry hooks and the CLI all go through :class:`RunDirectory`.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import torch

from .config import LEGACY_METHOD_CONFIG, METHOD_CONFIG, method_settings  # noqa: F401  (re-exported)
from .errors import CheckpointError, ConfigError

CHECKPOINT_FORMAT = "emvi-checkpoint-v1"

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
SPEC = "spec.toml"

INFERENCE_DATA = "inference_data.nc"
POSTERIOR_SUMMARY = "posterior_summary.csv"
SAMPLES = "samples.npy"
DATA = "data.pt"
"""The training (and held-out) tensors of a run written by :func:`emvi.train`, to rebuild it from the CLI."""
COMPARISON_TABLE = "comparison.csv"
COMPARISON_PLOT = "comparison.png"
"""``emvi analyze``'s comparison of several runs, written in a folder of its own (by default the runs' parent)."""

PLOTS = (
    "loss_curve",  # every fit with a history (emvi fit)
    "trace", "estimates", "bounds", "posterior_predictive",  # emvi analyze: posterior draws, point fits, local latents
    "reconstructions", "prior_samples", "manifold", "latent_space",  # VAEs
    "conditional_samples", "latent_map",  # deep mixtures (gmvae, ssvae)
)
"""The PNG plots a run directory may hold, each ``NAME.png`` (:meth:`RunDirectory.plot_path`)."""

_HELD: dict[Path, int] = {}
"""Run folders this process holds (:meth:`RunDirectory.lock`: ``fcntl.flock`` on the folder itself, so no lock file
is written; the kernel releases it when the process ends, however it ends, so a lock is never stale), by resolved
path: their descriptors stay open until :meth:`RunDirectory.unlock` or the process exits."""

PARTIAL = (SPEC, CONFIG, METRICS)
"""What a fit writes before its first checkpoint: a folder holding only these (and leftover temporary files) is a
run that never finished one, which a new fit may reuse."""


def _atomic_write(path: Path, write) -> Path:
    """Call ``write(binary_handle)`` on a temporary file beside ``path``, fsync it and rename it over ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError:  # a read-only run or output folder: nothing was written
        raise ConfigError(f"cannot write {path}: {path.parent} is read-only (permission denied); make it writable "
                          "or copy the run to a folder you can write") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    _fsync_directory(path.parent)
    return path


def _is_leftover_tmp(name: str) -> bool:
    """A temporary file :func:`_atomic_write` leaves when the process dies between creating and renaming it."""
    return name.startswith(".") and name.endswith(".tmp")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (e.g. samples an ``emvi sample --output`` names)."""
    return _atomic_write(Path(path), lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return _atomic_write(Path(path), lambda handle: handle.write(text.encode("utf-8")))


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) atomically to ``path``."""
    payload = {"format": CHECKPOINT_FORMAT, **state}
    return _atomic_write(Path(path), lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; train first with 'emvi fit' or check the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError, IndexError,
            KeyError, TypeError, AttributeError, OverflowError, MemoryError) as exc:  # what random bytes raise
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not an emvi checkpoint ({first_line[:160]}); "
            "delete it and train again, or resume from another run"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{str(path)!r} is not an emvi checkpoint (format {found!r}); expected {CHECKPOINT_FORMAT!r}")
    return state


class RunDirectory:
    """One run directory: its file names and every read and write of them.

    ``RunDirectory(path)`` creates nothing; :meth:`create` makes the folder. Writers are atomic; readers raise
    :class:`emvi.errors.CheckpointError` / :class:`emvi.errors.ConfigError` with one-line messages.
    """

    def __init__(self, path: str | os.PathLike, resolved_config: dict | None = None):
        self.path = Path(path)
        self.resolved_config = resolved_config
        """The run's resolved configuration; every checkpoint written through this object carries a copy."""

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    # -- the path of every file ----------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.file(CONFIG)

    @property
    def spec_path(self) -> Path:
        return self.file(SPEC)

    @property
    def checkpoint_path(self) -> Path:
        return self.file(CHECKPOINT)

    @property
    def metrics_path(self) -> Path:
        return self.file(METRICS)

    @property
    def summary_path(self) -> Path:
        return self.file(SUMMARY)

    @property
    def inference_data_path(self) -> Path:
        return self.file(INFERENCE_DATA)

    @property
    def posterior_summary_path(self) -> Path:
        return self.file(POSTERIOR_SUMMARY)

    @property
    def samples_path(self) -> Path:
        return self.file(SAMPLES)

    def evaluation_path(self, split: str) -> Path:
        """Where ``emvi evaluate`` writes the metrics of ``split`` (train, valid or test)."""
        return self.file(f"evaluation_{split}.json")

    def plot_path(self, name: str) -> Path:
        """``NAME.png`` for one of :data:`PLOTS`."""
        if name not in PLOTS:
            raise ValueError(f"{name!r} is not a run directory plot; add it to emvi.rundir.PLOTS (one of {PLOTS})")
        return self.file(f"{name}.png")

    def check_creatable(self) -> None:
        """Raise :class:`ConfigError` unless the folder exists or can be made: no file in the way, on the path
        itself or above it (``--out FILE``), and the nearest existing folder writable."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"run directory {self.path} is a file; pick another --run-dir")
        for parent in self.path.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    raise ConfigError(f"cannot create run directory {self.path}: {parent} is a file, not a folder; "
                                      "pick another --out or --run-dir")
                break
        nearest = self.path if self.path.exists() else next(p for p in self.path.absolute().parents if p.exists())
        if not os.access(nearest, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write in {nearest} (permission denied); pick another --out or --run-dir")

    def create(self, *, exclusive: bool = False) -> RunDirectory:
        """Make the folder (and its parents) for writing, removing temporary files a killed write left behind;
        ``exclusive``: the folder must not exist yet (a default-named run never shares one)."""
        self.check_creatable()
        try:
            self.path.mkdir(parents=True, exist_ok=not exclusive)
        except FileExistsError:
            raise ConfigError(f"run directory {self.path} was created by another fit at the same moment; run again "
                              "(or pass --run-dir)") from None
        except OSError as exc:
            raise ConfigError(f"cannot create run directory {self.path} ({exc.strerror or exc}); pick another "
                              "--out or --run-dir") from None
        for leftover in self.path.iterdir():
            if _is_leftover_tmp(leftover.name) and leftover.is_file():
                leftover.unlink(missing_ok=True)
        return self

    def is_empty(self) -> bool:
        return not self.path.exists() or not any(self.path.iterdir())

    def is_reusable(self) -> bool:
        """Whether a new fit may write here: the folder is absent or empty, or holds only what a fit writes before
        its first checkpoint (:data:`PARTIAL`) and temporary files a killed write left behind."""
        if not self.path.exists():
            return True
        if not self.path.is_dir():
            return False
        return all(entry.is_file() and (entry.name in PARTIAL or _is_leftover_tmp(entry.name))
                   for entry in self.path.iterdir())

    def clear_partial(self) -> None:
        """Remove what :meth:`is_reusable` allows (a fit that never wrote a checkpoint) before a new fit here."""
        if not self.is_reusable() or not self.path.exists():
            return
        for entry in self.path.iterdir():
            entry.unlink(missing_ok=True)

    # -- ownership -----------------------------------------------------------------------------------------------

    def lock(self, action: str = "fit") -> RunDirectory:
        """Make this process the run's one writer (the folder must exist; nothing is written in it); refuse in one
        line when another process holds it. Held until :meth:`unlock` or the end of the process; taking it twice in
        one process is a no-op."""
        key = self.path.resolve()
        if key in _HELD:
            return self
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise ConfigError(f"cannot {action} in {self.path} ({exc.strerror or exc}); check the folder or pick "
                              "another --run-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"run directory {self.path} is in use by another emvi process (a fit, evaluate, sample "
                              "or analyze writing it); wait for it to finish or pick another --run-dir") from None
        _HELD[key] = fd
        return self

    def check_writable(self, action: str) -> None:
        """Refuse in one line, before any work, a run folder this process cannot write in (``action`` writes there)."""
        if self.path.is_dir() and not os.access(self.path, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot {action} {self.path}: the folder is read-only (permission denied); make it "
                              "writable or copy the run to a folder you can write")

    def check_free(self, action: str = "fit") -> None:
        """Refuse in one line, now, when another process holds the run (checked again when :meth:`lock` is taken)."""
        if self.path.is_dir() and self.path.resolve() not in _HELD:
            self.lock(action)
            self.unlock()

    def remove_empty(self) -> None:
        """Remove the folder if it is empty (what a refused fit created)."""
        if self.path.is_dir() and self.is_empty():
            try:
                self.path.rmdir()
            except OSError:
                pass  # something appeared meanwhile: leave it

    def unlock(self) -> None:
        """Release :meth:`lock`."""
        fd = _HELD.pop(self.path.resolve(), None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- checkpoints ---------------------------------------------------------------------------------------------

    def has_checkpoint(self, *, best: bool = False) -> bool:
        return self.file(BEST if best else CHECKPOINT).is_file()

    def save_checkpoint(self, state: dict, *, best: bool = False) -> Path:
        if "config" not in state and self.resolved_config is not None:
            state = {**state, "config": json.dumps(self.resolved_config, default=str)}
        return save_checkpoint(state, self.file(BEST if best else CHECKPOINT))

    def load_checkpoint(self, map_location="cpu", *, best: bool = False) -> dict:
        return load_checkpoint(self.file(BEST if best else CHECKPOINT), map_location=map_location)

    # -- configuration -------------------------------------------------------------------------------------------

    def write_config(self, resolved: dict) -> Path:
        self.resolved_config = resolved
        return atomic_write_text(self.file(CONFIG), json.dumps(resolved, indent=2, default=str) + "\n")

    def read_config(self) -> dict:
        """The resolved configuration: ``config.json``, or the copy every checkpoint carries when it is missing."""
        path = self.file(CONFIG)
        if path.is_file():
            try:
                text, where = path.read_text(encoding="utf-8", errors="replace"), path
            except OSError as exc:
                raise ConfigError(f"{path} cannot be read ({exc.strerror or exc}); check its permissions") from None
        elif self.has_checkpoint():
            text, where = self.load_checkpoint().get("config"), self.file(CHECKPOINT)
            if not isinstance(text, str):
                raise CheckpointError(f"{where} carries no configuration and {path} is missing; this is not a run "
                                      "directory 'emvi fit' wrote")
        else:
            raise ConfigError(f"{self.path} is not an emvi run directory (no {CONFIG}); pass the folder 'emvi fit' printed")
        try:
            resolved = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where} holds invalid JSON ({exc}); restore it from the checkpoint's copy") from None
        if not isinstance(resolved, dict):
            raise ConfigError(f"{where} does not hold a configuration object; restore it from the checkpoint's copy")
        return resolved

    def write_spec(self, spec: dict) -> Path:
        import tomli_w

        def drop_none(value):  # TOML has no null; an absent key means the default
            if isinstance(value, dict):
                return {k: drop_none(v) for k, v in value.items() if v is not None}
            return value

        return atomic_write_text(self.file(SPEC), tomli_w.dumps(drop_none(spec)))

    # -- metrics and summary -------------------------------------------------------------------------------------

    def write_metrics(self, records: Iterable[dict]) -> Path:
        """Replace ``metrics.jsonl`` by ``records`` (one JSON object a line)."""
        return atomic_write_text(self.file(METRICS), "".join(json.dumps(r, default=str) + "\n" for r in records))

    def append_metrics(self, record: dict) -> None:
        with open(self.file(METRICS), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")

    def read_metrics(self) -> list[dict]:
        path = self.file(METRICS)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def write_summary(self, summary: dict) -> Path:
        return atomic_write_text(self.file(SUMMARY), json.dumps(summary, indent=2, default=str) + "\n")

    def read_summary(self) -> dict:
        path = self.file(SUMMARY)
        try:
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            return {}


def default_run_path(parent: str | os.PathLike, prefix: str) -> Path:
    """``parent/prefix-YYYYmmdd-HHMMSS-micros``: two fits started in the same second get different folders (and
    :meth:`RunDirectory.create` with ``exclusive=True`` refuses the one in a million that share a microsecond)."""
    return Path(parent) / f"{prefix}-{datetime.datetime.now():%Y%m%d-%H%M%S-%f}"


def comparison_paths(folder: str | os.PathLike) -> tuple[Path, Path]:
    """``(table, plot)``: where ``emvi analyze`` writes the comparison of several runs in ``folder``."""
    return Path(folder) / COMPARISON_TABLE, Path(folder) / COMPARISON_PLOT


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not supported on every platform (e.g. Windows), where it is skipped.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["RunDirectory", "atomic_write_bytes", "atomic_write_text", "comparison_paths", "load_checkpoint",
           "method_settings", "save_checkpoint", "CHECKPOINT", "BEST", "CONFIG", "METRICS", "SUMMARY", "SPEC",
           "INFERENCE_DATA", "POSTERIOR_SUMMARY", "SAMPLES", "COMPARISON_TABLE", "COMPARISON_PLOT", "PLOTS",
           "METHOD_CONFIG", "LEGACY_METHOD_CONFIG"]
