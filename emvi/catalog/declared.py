"""Declared models, wired: a :class:`emvi.declaration.Declaration` becomes a registry entry with every hook.

``register_declaration(decl)`` (``emvi.register_declaration``) registers it under ``decl.name``: builder (the
:class:`~emvi.models.declared.DeclaredModel` and the derived :class:`~emvi.guides.declared.DeclaredGuide`), its ELBO
(TraceEnum_ELBO when a discrete local is latent), the data arrays it reads, held-out ELBO and importance-sampled
log p(x) (enumerated sites summed inside each weight), sampling, the ArviZ export, and EM when every latent is
discrete with closed-form M-steps. The entry ``declared`` takes the declaration from the spec file itself
(``[model.sites.NAME] ...``).
"""

from __future__ import annotations

import copy
import itertools
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import pyro
import torch

from ..analysis.declared import declared_inference_data
from ..data import DataInfo
from ..declaration import Declaration
from ..declaration.capabilities import elbo_name, em_ready, mcmc_ready
from ..errors import ConfigError
from ..guides.declared import DeclaredGuide
from ..inference.direct import climb
from ..inference.elbo import make_elbo
from ..inference.em import fit_em_with_restarts
from ..inference.likelihood import estimate_log_likelihood, without_training_terms
from ..inference.mcmc import fit_mcmc
from ..inference.restarts import best_of_restarts
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
        if self.sites is not None and not isinstance(self.sites, dict):
            raise ConfigError(f"model.sites must be a table of sites, got {self.sites!r}")
        if self.sites is not None:  # validated where it enters: a spec's errors name the field (and the file)
            Declaration.from_dict(self.title or "declared", {"sites": self.sites}, where="model")


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


def evaluate_declared(model, guide, data, *, num_samples: int = 100) -> dict:
    """Held-out ELBO (the model's own estimator) and the importance-sampled log p(x) with K = ``num_samples``."""
    tensors = data.tensors if hasattr(data, "tensors") else tuple(data)
    decl = model.declaration
    elbo = make_elbo(elbo_name(decl), max_plate_nesting=1, num_particles=10 if elbo_name(decl) == "trace" else 1)
    out = {"elbo_nats_per_item": -evaluate_loss(elbo, model, without_training_terms(guide), tensors)}
    estimates = estimate_log_likelihood(model, guide, tensors, num_samples=max(1, num_samples), prior=False)
    out["is_loglik_nats"] = float(estimates.importance.mean())
    if em_ready(decl) is None:
        with torch.no_grad():
            dtype = next(model.parameters()).dtype
            out["log_likelihood_per_item"] = float(model.log_likelihood(*(_cast(t, dtype) for t in tensors)).mean())
    return out


def sample_declared(model, guide, num_samples: int) -> torch.Tensor:
    """New items: the first data array's site (a fully observed one) ``(num_samples, ...)``."""
    first = model.declaration.data_names[0]
    return model.sample(num_samples)[first].float()


def _cast(t: torch.Tensor, dtype):
    return t.to(dtype) if t.is_floating_point() else t


def fit_declared(model, guide, train_data, *, method: str, config, valid_data=None, run=None) -> dict:
    """The fit hook: :func:`fit_declared_em` or :func:`fit_declared_mcmc`."""
    fit = {"em": fit_declared_em, "mcmc": fit_declared_mcmc}.get(method)
    if fit is None:
        raise ConfigError(f"this hook fits by em or mcmc, got method {method!r}")
    return fit(model, guide, train_data, config=config, valid_data=valid_data, run=run)


def fit_declared_em(model, guide, train_data, *, config, valid_data=None, run=None) -> dict:
    """EM for a declaration whose only latent is categorical: :func:`fit_em_with_restarts` in float64 on the data
    arrays, the E-step read off the enumerated trace, closed-form M-steps."""
    method = "em"
    z = model._em_latent()
    dtype = next(model.parameters()).dtype
    model.to(torch.float64)
    data = tuple(_cast(t, torch.float64) for t in train_data.tensors)
    view = _EMView(model, data, z.num_values)
    x = data[0].to(torch.float64).reshape(data[0].shape[0], -1)
    result = fit_em_with_restarts(view, x, config)
    summary = {"method": method, "converged": result.converged, "n_iter": result.n_iter,
               "objective_per_item": result.lower_bound, "seconds": result.seconds_history[-1]}
    with torch.no_grad():
        summary["log_likelihood_per_item"] = float(model.log_likelihood(*data).mean())
        if valid_data is not None:
            held = tuple(_cast(t, torch.float64) for t in valid_data.tensors)
            summary["valid_log_likelihood_per_item"] = float(model.log_likelihood(*held).mean())
    model.to(dtype)
    if run is not None:
        run.save_checkpoint({"model": model.state_dict(), "summary": dict(summary)})
    summary["history"] = [{"epoch": i, "train_loss": -value / result.num_data}
                          for i, value in enumerate(result.log_likelihood_history)]
    return summary


MAP_STARTS = 4
"""Starting points of the MAP that NUTS starts from: the model as built, then parameters redrawn from 0.1 N(0, 1)."""


def fit_declared_mcmc(model, guide, train_data, *, config, valid_data=None, run=None) -> dict:
    """NUTS over the globals declared with a prior, with every per-item latent discrete and summed out exactly, in
    float64 (:meth:`~emvi.models.declared.DeclaredModel.with_random_globals`). The chains start from the MAP
    (L-BFGS on the enumerated log joint, best of :data:`MAP_STARTS` starts: a mixture's likelihood has poor local
    maxima, and a chain started in one stays there), which also fixes what has no prior (empirical Bayes). The checkpoint keeps
    that point fit and the draws."""
    reason = mcmc_ready(model.declaration)
    if reason is not None:
        raise ConfigError(f"model {model.declaration.name!r} cannot be fit by mcmc: {reason}; fit it by svi")
    dtype = next(model.parameters()).dtype
    starts = itertools.count()

    def map_once(generator: torch.Generator):
        if next(starts):  # the first start is the model as built; the others redraw every parameter
            with torch.no_grad():
                for value in model.parameters():
                    value.copy_(0.1 * torch.randn(value.shape, generator=generator, dtype=torch.float64))
        return fit_map(model, train_data.tensors), copy.deepcopy(model.state_dict())

    best_value, best_state = best_of_restarts(map_once, MAP_STARTS, seed=config.seed, objective=lambda o: o[0])
    model.load_state_dict(best_state)
    start = {"start_log_joint_per_item": best_value, "map_starts": MAP_STARTS}
    model.to(torch.float64)
    data = tuple(_cast(t, torch.float64) for t in train_data.tensors)
    init = {name: model.global_value(name).detach().clone() for name in model.prior_globals()}
    result = fit_mcmc(model.with_random_globals, *data, num_samples=config.num_samples,
                      warmup_steps=config.warmup_steps, num_chains=config.num_chains, seed=config.seed,
                      init_values=init, max_plate_nesting=1, progress=config.progress)
    model.to(dtype)
    summary = {"method": "mcmc", **start, "seconds": result.seconds} | result.summary()
    if run is not None:
        run.save_checkpoint({"model": model.state_dict(), "summary": dict(summary)} | result.checkpoint_entries())
    summary["history"] = []
    return summary


def fit_map(model, tensors, *, max_iter: int = 500) -> float:
    """Maximise log p(x, θ) (discrete locals summed out, priors of globals included) by L-BFGS over the model's
    parameters, in float64; returns the final value per item."""
    from pyro.infer import TraceEnum_ELBO

    dtype = next(model.parameters()).dtype
    model.to(torch.float64)
    data = tuple(_cast(t, torch.float64) for t in tensors)
    elbo = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False)  # a model may have no latent

    def no_guide(*args, **kwargs):  # every latent is enumerated in the model; globals are point values
        pass

    def log_joint():
        return -elbo.differentiable_loss(model, no_guide, *data)

    # A line search may probe parameters where a value leaves its support (a rate exp(u) underflowing to 0): that
    # probe's objective is not finite and the search backs off, rather than a validation error ending the fit.
    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)  # such a probe's loss
        _, value = climb(log_joint, list(model.parameters()), max_iter=max_iter, tolerance_grad=1e-7,
                         tolerance_change=1e-12)
    model.to(dtype)
    return value / data[0].shape[0]


class _EMView:
    """The EM protocol of :func:`fit_em_with_restarts` over a declared model's several data arrays."""

    def __init__(self, model, data, num_components):
        self.model, self.data = model, data
        self.config = SimpleNamespace(num_components=num_components)

    def e_step(self, x):
        return self.model.e_step(*self.data)

    def m_step(self, resp, x):
        self.model.m_step(resp, *self.data)

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state):
        self.model.load_state_dict(state)


def load_declared(model, guide, run, device) -> None:
    model.load_state_dict(run.load_checkpoint(map_location=device)["model"])
    model.to(device)


# -- entries ----------------------------------------------------------------------------------------------------------


def declared_entry(declaration: Declaration | None, name: str | None = None, *, parts=None) -> ModelEntry:
    """The registry entry of ``declaration`` (None: the spec-declared ``declared`` entry)."""
    name = name or declaration.name

    def current(config: DeclaredConfig) -> Declaration:
        return declaration_of(config, declaration, name)

    def build(config: DeclaredConfig, data_info: DataInfo):
        return build_declared(current(config), config, data_info, parts=parts)

    methods = ("svi",)
    if declaration is None or em_ready(declaration) is None:
        methods += ("em",)
    if declaration is None or mcmc_ready(declaration) is None:
        methods += ("mcmc",)
    description = (declaration.description if declaration is not None else "") or (
        "declared model: sites and parents in; guide, enumeration, EM, CLI and analysis out")
    return ModelEntry(name, DeclaredConfig, build, methods=methods, description=description,
                      fit=fit_declared, load=load_declared, evaluate=evaluate_declared, sample=sample_declared,
                      inference_data=declared_inference_data, elbo=lambda config: elbo_name(current(config)),
                      max_plate_nesting=1, inputs=lambda config: current(config).data_names)


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
