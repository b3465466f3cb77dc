"""Model specs: a whole fit described in one TOML or YAML file, validated before anything runs.

A spec has up to five tables; only ``model.name`` is required::

    [model]                 # a registered model and its configuration fields
    name = "mixture"
    family = "poisson"
    num_components = 3

    [inference]             # the method and its own options
    method = "em"           # svi (TrainConfig fields: epochs, ...) | em (EMConfig: max_iter, tol, n_init, init)
    max_iter = 500          # | mcmc (MCMCConfig: num_samples, warmup_steps, num_chains), as the model allows

    [start]                 # the model's start before SVI, where it has one (gmvae, ssvae: pretrain_epochs, ...)
    pretrain_epochs = 120

    [data]                  # where the observations come from
    dataset = "counts.csv"  # mnist | fashion-mnist | digits | a .npy/.npz/.csv path (relative to the spec file)
    valid_fraction = 0.1    # held out for validation (default 0: every item is fit)

    [outputs]
    out = "runs"            # parent folder of the run directory
    plots = true

Files are parsed with safe parsers only (``tomllib``, ``yaml.safe_load``). Unknown tables and keys are errors naming
the offending field and the allowed ones; so are wrong types. :func:`apply_overrides` changes single fields
(``inference.epochs=2``) as the command line's ``--set`` does.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import check_expanded_size, config_from_dict, config_to_dict
from .errors import ConfigError, short_repr


@dataclass(frozen=True)
class DataSpec:
    dataset: str = "digits"
    """mnist, fashion-mnist, digits, or a path to a .npy/.npz/.csv file (relative paths are read from the spec's folder)."""
    data_root: str | None = None
    """Folder holding MNIST/ or FashionMNIST/ (default: $EMVI_DATA)."""
    binarize: str | None = None
    """None, static or dynamic."""
    raw_counts: bool = False
    """Keep built-in images as integer counts (digits 0..16, MNIST 0..255) instead of scaling to [0, 1]."""
    download: bool = False
    limit: int | None = None
    """Use only the first N training samples."""
    label_column: str | None = None
    valid_fraction: float = 0.0
    """Fraction of the items held out for validation; 0 (the default) fits every item."""


@dataclass(frozen=True)
class OutputSpec:
    out: str = "runs"
    """Parent folder of the run directory."""
    run_dir: str | None = None
    """Exact run directory (default: OUT/MODEL-TIMESTAMP)."""
    plots: bool = True


@dataclass(frozen=True)
class Spec:
    """A validated spec: the model entry's name and config, the method and its config, data and outputs."""

    model: str
    model_config: Any
    method: str
    method_config: Any
    data: DataSpec = field(default_factory=DataSpec)
    outputs: OutputSpec = field(default_factory=OutputSpec)
    module: str | None = None
    """A Python module imported before the model is looked up (it registers the model: ``[model] module``)."""
    start_config: Any = None
    """The model entry's start options (``[start]``), or None for an entry without a start."""

    def to_dict(self) -> dict:
        """The resolved spec as plain data (every default filled in), in the file layout."""
        model = {"name": self.model, **({"module": self.module} if self.module else {})}
        return {
            "model": {**model, **config_to_dict(self.model_config)},
            "inference": {"method": self.method, **config_to_dict(self.method_config)},
            **({} if self.start_config is None else {"start": config_to_dict(self.start_config)}),
            "data": config_to_dict(self.data),
            "outputs": config_to_dict(self.outputs),
        }


TABLES = ("model", "inference", "start", "data", "outputs")


def read_spec_file(path: str | Path) -> dict:
    """Parse a ``.toml``, ``.yaml`` or ``.yml`` file into a dict (safe parsers only)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"spec file {str(path)!r} is a directory, not a file; pass the spec file inside it")
    if not path.is_file():
        raise ConfigError(f"spec file {str(path)!r} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"spec {str(path)!r} must end in .toml, .yaml or .yml")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"spec {path.name} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"spec {str(path)!r} cannot be read ({exc.strerror or exc}); check its permissions") from None
    try:
        if suffix == ".toml":
            raw = tomllib.loads(text)
        else:
            import yaml

            raw = yaml.load(text, Loader=_yaml_loader(yaml))  # noqa: S506 - a SafeLoader subclass
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"spec {path.name} is not valid TOML: {exc}") from None
    except ImportError:
        raise ConfigError("YAML specs need PyYAML; pip install pyyaml or write the spec in TOML") from None
    except Exception as exc:  # yaml.YAMLError and its subclasses
        if type(exc).__module__.startswith("yaml"):
            first = " ".join(str(exc).split())[:200]
            raise ConfigError(f"spec {path.name} is not valid YAML: {first}") from None
        raise
    check_expanded_size(raw, f"spec {path.name}")
    if raw is None:
        raise ConfigError(f"spec {path.name} is empty; it needs at least [model] name = ...")
    if not isinstance(raw, dict):
        raise ConfigError(f"spec {path.name} must be a table of tables ({', '.join(TABLES)}), got {type(raw).__name__}")
    return raw


def _yaml_loader(yaml):
    """``yaml.SafeLoader`` reading YAML 1.2 floats: PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string,
    which a spec's typed fields would refuse."""

    class Loader(yaml.SafeLoader):
        pass

    import re

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )
    return Loader


def parse_spec(raw: dict, *, base_dir: str | Path | None = None) -> Spec:
    """Validate a spec mapping against the registry and the config dataclasses."""
    from .inference.methods import method_names
    from .registry import get_model
    from .runs import method_config_class

    unknown = sorted(map(str, set(raw) - set(TABLES)))
    if unknown:
        raise ConfigError(f"unknown spec table(s) {', '.join(unknown)}; allowed tables: {', '.join(TABLES)}")
    for table in TABLES:
        if table in raw and not isinstance(raw[table], dict):
            raise ConfigError(f"spec table '{table}' must be a table of key = value pairs, got {short_repr(raw[table])}")
    model_table = dict(raw.get("model") or {})
    if "name" not in model_table:
        raise ConfigError("spec is missing model.name; set it to a registered model (see 'emvi models')")
    name = model_table.pop("name")
    module = model_table.pop("module", None)
    if module is not None:
        from .registry import import_user_module

        import_user_module(module, base_dir, where="model.module")
    entry = get_model(name)
    start_config = _start_config(entry, raw.get("start"), model_table)
    model_config = config_from_dict(entry.config_class, model_table, where="model.", strict=True)

    inference = dict(raw.get("inference") or {})
    method = inference.pop("method", entry.default_method)
    if not isinstance(method, str) or method not in method_names():
        raise ConfigError(f"inference.method must be one of {', '.join(method_names())}, got {method!r}")
    method_config = config_from_dict(method_config_class(method), method_defaults(entry, method, model_config) | inference,
                                     where="inference.", strict=True)

    data = config_from_dict(DataSpec, raw.get("data") or {}, where="data.", strict=True)
    if data.binarize not in (None, "static", "dynamic"):
        raise ConfigError(f"data.binarize must be one of none, 'static', 'dynamic', got {data.binarize!r}")
    if not 0.0 <= data.valid_fraction < 1.0:
        raise ConfigError(f"data.valid_fraction must lie in [0, 1), got {data.valid_fraction}")
    if base_dir is not None and Path(data.dataset).suffix.lower() in (".npy", ".npz", ".csv"):
        resolved = Path(base_dir) / data.dataset
        if not Path(data.dataset).is_absolute() and resolved.exists():
            data = dataclasses.replace(data, dataset=str(resolved))
    outputs = config_from_dict(OutputSpec, raw.get("outputs") or {}, where="outputs.", strict=True)
    return Spec(model=name, model_config=model_config, method=method, method_config=method_config, data=data,
                outputs=outputs, module=module, start_config=start_config)


def _start_config(entry, table: dict | None, model_table: dict):
    """The entry's start options from the ``[start]`` table (refusing them under ``[model]``, where they once were)."""
    if entry.start_config is None:
        if table:
            raise ConfigError(f"model {entry.name!r} has no start options; remove the [start] table")
        return None
    start_fields = {f.name for f in dataclasses.fields(entry.start_config)}
    misplaced = sorted(set(model_table) & start_fields)
    if misplaced:
        raise ConfigError(f"model.{misplaced[0]} is a start option of {entry.name!r}, not part of the model; move it "
                          "to the [start] table (e.g. start.pretrain_epochs = 10)")
    return config_from_dict(entry.start_config, table or {}, where="start.", strict=True)


def method_defaults(entry, method: str, model_config=None) -> dict:
    """The model's own defaults for its method's options: its ELBO and plate nesting for SVI."""
    from .registry import default_elbo

    if method != "svi":
        return {}
    defaults = {"elbo": default_elbo(entry, model_config)}
    if entry.max_plate_nesting is not None:
        defaults["max_plate_nesting"] = entry.max_plate_nesting
    return defaults


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``table.key=value`` overrides; values are parsed as TOML scalars or arrays, else taken as strings."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like table.key=value, e.g. inference.epochs=2")
        dotted, text = item.split("=", 1)
        table, key = dotted.strip().split(".", 1)
        if table not in TABLES:
            raise ConfigError(f"override {item!r}: unknown table {table!r}; allowed tables: {', '.join(TABLES)}")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        raw.setdefault(table, {})
        if not isinstance(raw[table], dict):
            raise ConfigError(f"spec table '{table}' must be a table, got {short_repr(raw[table])}")
        raw[table][key.strip()] = value
    return raw


def load_spec(path: str | Path, overrides: list[str] | None = None) -> Spec:
    """Read, override and validate a spec file."""
    raw = apply_overrides(read_spec_file(path), overrides or [])
    try:
        return parse_spec(raw, base_dir=Path(path).parent)
    except ConfigError as exc:
        if str(Path(path).name) in str(exc):
            raise
        raise type(exc)(f"{Path(path).name}: {exc}") from None


def run_spec(spec: Spec, *, resume: bool = False) -> Path:
    """Fit what ``spec`` describes and return the run directory; the resolved spec is saved with the run."""
    from .registry import get_model
    from .runs import run_fit  # the one fitting path, shared with the CLI's options

    data_cfg = config_to_dict(spec.data)
    return run_fit(
        get_model(spec.model),
        spec.model_config,
        spec.method_config,
        data_cfg,
        method=spec.method,
        out=spec.outputs.out,
        run_dir=spec.outputs.run_dir,
        resume=resume,
        plots=spec.outputs.plots,
        spec=spec.to_dict(),
        start_config=spec.start_config,
    )
