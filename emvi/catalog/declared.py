"""Declared models, wired: a :class:`emvi.declaration.Declaration` becomes a registry entry with every hook.

``register_declaration(decl)`` (``emvi.register_declaration``) registers it under ``decl.name``: builder (the
:class:`~emvi.models.declared.DeclaredModel` and the derived :class:`~emvi.guides.declared.DeclaredGuide`), its ELBO
(TraceEnum_ELBO when a discrete local is latent), the data arrays it reads, held-out ELBO and importance-sampled
log p(x) (enumerated sites summed inside each weight), sampling and the ArviZ export; the model itself has EM's
protocol when its per-item latents are all discrete (closed-form M-steps for one categorical latent, else
:mod:`emvi.inference.enumerated_em`), and NUTS's when its globals have priors. The entry ``declared`` takes the declaration from the spec file itself
(``[model.sites.NAME] ...``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..analysis.declared import declared_inference_data
from ..config import check_expanded_size
from ..data import DataInfo
from ..declaration import FAMILIES, Declaration
from ..declaration.capabilities import elbo_name
from ..errors import ConfigError, DataError, short_repr
from ..guides.declared import DeclaredGuide
from ..inference.elbo import make_elbo
from ..inference.enumerated_em import em_protocol
from ..inference.likelihood import estimate_log_likelihood, without_training_terms
from ..inference.runner import evaluate_loss
from ..models.declared import DeclaredModel
from ..registry import ModelEntry, add_entry


@dataclass(frozen=True)
class DeclaredConfig:
    """A declared model's options (the declaration itself is the model's structure)."""

    sites: dict | None = None
    """The declaration's sites as plain data (spec files: [model.sites.NAME] tables); None: the registered one."""
    title: str = ""
    """The declaration's name in printouts and errors (spec files; default: the registered name)."""
    description: str = ""
    guide_hidden_dims: tuple[int, ...] = (64,)
    """Hidden sizes of the derived guide's encoders."""

    def __post_init__(self):
        if isinstance(self.sites, str):  # the CLI's --sites: JSON, inline TOML or YAML, or a file holding them
            object.__setattr__(self, "sites", parse_sites(self.sites))
        if self.sites is not None and not isinstance(self.sites, dict):
            raise ConfigError(f"model.sites must be a table of sites, got {short_repr(self.sites)}")
        if self.sites is not None:  # validated where it enters: a spec's errors name the field (and the file)
            Declaration.from_dict(self.title or "declared", {"sites": self.sites}, where="model")


def parse_sites(text: str) -> dict:
    """``--sites``: the sites as JSON (``'{"z": {"role": "latent", ...}}'``), inline TOML (``'z = {role =
    "latent", ...}'``) or YAML, or the path of a ``.json``/``.toml``/``.yaml`` file holding them; a ``sites``
    (or ``model.sites``) table around them is unwrapped."""
    import json
    import tomllib
    from pathlib import Path

    import yaml

    path = Path(text) if len(text) < 4096 and "\n" not in text else None
    if path is not None and path.suffix.lower() in (".json", ".toml", ".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"--sites file {text!r} does not exist; check the path or give the sites inline")
        text, suffix = path.read_text(encoding="utf-8"), path.suffix.lower()
    else:
        suffix = None
    parsers = {".json": (json.loads,), ".toml": (tomllib.loads,), ".yaml": (yaml.safe_load,),
               ".yml": (yaml.safe_load,)}.get(suffix, (json.loads, tomllib.loads, yaml.safe_load))
    value = None
    for parse in parsers:
        try:
            value = parse(text)
        except Exception:  # noqa: BLE001 - the next format is tried; the refusal below names them all
            continue
        if isinstance(value, dict):
            break
    if not isinstance(value, dict):
        raise ConfigError(f"--sites {short_repr(text)} is not a table of sites in JSON, TOML or YAML; e.g. "
                          "'{\"z\": {\"role\": \"latent\", \"family\": \"categorical\", \"categories\": 3}, ...}' or a .toml file")
    check_expanded_size(value, "--sites")
    while set(value) in ({"sites"}, {"model"}) and isinstance(next(iter(value.values())), dict):
        value = next(iter(value.values()))
    return value


def declaration_of(config: DeclaredConfig, default: Declaration | None, name: str) -> Declaration:
    if config.sites is not None:
        return Declaration.from_dict(config.title or name, {"sites": config.sites, "description": config.description},
                                     where="model")
    if default is None:
        raise ConfigError("model 'declared' needs its sites: add [model.sites.NAME] tables (role, family, "
                          "parameters) to the spec")
    return default


def build_declared(declaration: Declaration, config, data_info: DataInfo, *, parts=None, hidden_dims=None):
    """``(model, guide)`` for the data described by ``data_info`` (its named arrays give the observed shapes); the
    guide's encoders have ``hidden_dims`` hidden units (default: ``config.guide_hidden_dims``)."""
    arrays = {k: tuple(v) for k, v in (data_info.arrays or {"x": list(data_info.event_shape)}).items()}
    model = DeclaredModel(declaration, arrays, data_info.image_shape, config=config)
    hidden_dims = config.guide_hidden_dims if hidden_dims is None else hidden_dims
    guide = DeclaredGuide(declaration, arrays, hidden_dims=hidden_dims, parts=parts)
    return model, guide


# -- hooks ------------------------------------------------------------------------------------------------------------


EVALUATION_PARTICLES = 10
"""Draws of the continuous latents averaged in the held-out ELBO (one draw can land above log p(x))."""


def evaluate_declared(model, guide, data, *, num_samples: int = 100) -> dict:
    """Held-out ELBO per item (the model's own estimator, averaged over :data:`EVALUATION_PARTICLES` draws of the
    continuous latents; exact when every latent is discrete and summed out) and the importance-sampled log p(x)
    with K = ``num_samples`` (a bound that tightens as K grows; the ELBO is its K = 1 case in expectation)."""
    tensors = data.tensors if hasattr(data, "tensors") else tuple(data)
    decl = model.declaration
    sampled = any(s.role == "latent" and not FAMILIES[s.family].discrete for s in decl.sites)
    elbo = make_elbo(elbo_name(decl), max_plate_nesting=1, num_particles=EVALUATION_PARTICLES if sampled else 1)
    out = {"elbo_nats_per_item": -evaluate_loss(elbo, model, without_training_terms(guide), tensors)}
    estimates = estimate_log_likelihood(model, guide, tensors, num_samples=max(1, num_samples), prior=False)
    out["is_loglik_nats"] = float(estimates.importance.mean())
    if model.em_ready() is None:  # every latent discrete: the exact log p(x_n), everything summed out
        with torch.no_grad():
            dtype = next(model.parameters()).dtype
            exact = em_protocol(model).log_likelihood(*(_cast(t, dtype) for t in tensors))
            out["log_likelihood_per_item"] = float(exact.mean())
    return out


def sample_declared(model, guide, num_samples: int) -> torch.Tensor:
    """New items: the first data array's site (a fully observed one) ``(num_samples, ...)``."""
    first = model.declaration.data_names[0]
    return model.sample(num_samples)[first].float()


def _cast(t: torch.Tensor, dtype):
    return t.to(dtype) if t.is_floating_point() else t


# -- entries ----------------------------------------------------------------------------------------------------------


SUPPORT_CHECKS = {  # support -> (what it needs, whether values (masked to the observed items) lie in it)
    "count": ("non-negative whole numbers", lambda v: (v >= 0) & (v == v.round())),
    "counts": ("non-negative whole numbers", lambda v: (v >= 0) & (v == v.round())),
    "binary": ("values in [0, 1] (0/1, or grey levels read as means)", lambda v: (v >= 0) & (v <= 1)),
    "positive": ("positive values", lambda v: v > 0),
    "unit": ("values strictly between 0 and 1", lambda v: (v > 0) & (v < 1)),
}


def check_declared_data(declaration: Declaration, data) -> None:
    """Every observed site's data in its family's support (the built-in families' check, for any declaration): a
    Poisson site refuses negative or fractional counts, a categorical one codes outside 0..K-1; items a site's mask
    hides are not checked."""
    arrays = dict(zip(declaration.data_names, data.tensors, strict=False))
    for site in declaration.sites:
        if site.role != "observed" or site.name not in arrays:
            continue
        values = arrays[site.name]
        if site.mask is not None and site.mask in arrays:
            keep = arrays[site.mask].bool()
            values = values[keep.reshape(keep.shape[0], *([1] * (values.dim() - 1))).expand_as(values)]
        values = values.to(torch.float64)
        family = FAMILIES[site.family]
        support = family.support
        if support == "finite" and site.categories is not None:
            what, ok = f"whole numbers in 0..{site.categories - 1}", (values >= 0) & (values < site.categories) & \
                (values == values.round())
        elif support in SUPPORT_CHECKS:
            what, test = SUPPORT_CHECKS[support]
            ok = test(values)
        elif not family.alias and family.support_constraint is not None:  # a Pyro family: its support's check
            what, ok = f"values in {family.support_constraint}", family.support_constraint.check(values)
        else:
            continue
        if not bool(ok.all()):
            bad = float(values[~ok].flatten()[0])
            raise DataError(f"observed site {site.name!r} ({site.family}) needs {what}, found {bad:g}; fix the data "
                            "or declare a family whose support holds it")


def declared_entry(declaration: Declaration | None, name: str | None = None, *, parts=None) -> ModelEntry:
    """The registry entry of ``declaration`` (None: the spec-declared ``declared`` entry)."""
    name = name or declaration.name

    def current(config: DeclaredConfig) -> Declaration:
        return declaration_of(config, declaration, name)

    def build(config: DeclaredConfig, data_info: DataInfo):
        return build_declared(current(config), config, data_info, parts=parts)

    description = (declaration.description if declaration is not None else "") or (
        "declared model: sites and parents in; guide, enumeration, EM, CLI and analysis out")
    return ModelEntry(name, DeclaredConfig, build, description=description, evaluate=evaluate_declared, sample=sample_declared,
                      inference_data=declared_inference_data, elbo=lambda config: elbo_name(current(config)),
                      max_plate_nesting=1, inputs=lambda config: current(config).data_names,
                      check_data=lambda config, data, method=None: check_declared_data(current(config), data))


def register_declaration(declaration: Declaration, *, parts=None) -> ModelEntry:
    """Register ``declaration`` under its name with every hook; returns the entry. ``parts`` replaces parts of the
    derived guide (``{"t": my_encoder}``, see :mod:`emvi.guides.declared`)."""
    if not isinstance(declaration, Declaration):
        raise ConfigError(f"register_declaration takes a Declaration (emvi.declaration.declare(...)), got "
                          f"{type(declaration).__name__}")
    return add_entry(declared_entry(declaration, parts=parts))


def build(declaration: Declaration, data_info: DataInfo, config: DeclaredConfig | None = None, *, parts=None):
    """``(model, guide)`` of a declaration without registering it."""
    return build_declared(declaration, config or DeclaredConfig(), data_info, parts=parts)


ENTRIES = (declared_entry(None, "declared"),)

__all__ = ["DeclaredConfig", "build", "declared_entry", "register_declaration"]
