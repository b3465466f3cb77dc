"""What controls an SVI fit and what it returns: :class:`TrainConfig`, :class:`TrainResult`, and the objects built
from a configuration (the ELBO, the optimiser and its learning-rate schedule) by :mod:`emvi.inference.svi_loop`.

The loss and the optimiser are strings in a configuration (``elbo="trace"``, ``optimizer="adam"``) or, from Python,
objects: a Pyro ``ELBO`` instance and a torch optimiser class or ``pyro.optim`` optimiser (:func:`resolve_optim`).
Either way one torch optimiser steps every parameter of the model and guide at once.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import method_settings
from ..errors import CheckpointError, ConfigError, short_repr
from ..validation import check_choice, check_number, check_positive_int, check_seed
from .elbo import ELBO_NAMES, make_elbo
from .seeding import seed_everything
from .sites import discrete_sites, enumerate_discrete

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LR_SCHEDULES = (None, "exponential", "step", "cosine", "plateau")

NO_STRATA = "off"
"""``TrainConfig.stratify`` value for plain (unstratified) steps, overriding a model entry's default."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that controls an SVI fit (the model's own hyper-parameters live in its config)."""

    epochs: int = 10
    """Passes over the training data."""
    batch_size: int = 128
    """Mini-batch size (capped at the data size); on several processes, the global batch they share."""
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    """One of adam, adamw, sgd, rmsprop."""
    weight_decay: float = 0.0
    momentum: float = 0.0
    """SGD / RMSprop momentum."""
    lr_schedule: str | None = None
    """None, exponential, step, cosine or plateau (on the held-out loss, else the training loss); stepped per epoch."""
    lr_decay: float = 0.5
    """Multiplicative factor of the exponential (per epoch), step and plateau schedules."""
    lr_step_epochs: int = 10
    """Epochs between decays of the step schedule."""
    elbo: str = "auto"
    """auto (enum when the model has discrete latents its guide leaves out, else trace), trace (Trace_ELBO), meanfield
    (TraceMeanField_ELBO, analytic KL), renyi (importance weighted), enum (TraceEnum_ELBO)."""
    num_particles: int = 1
    renyi_alpha: float = 0.0
    vectorize_particles: bool = False
    max_plate_nesting: int | None = None
    kl_warmup_epochs: float = 0.0
    """Scale latent sites by min(1, epochs done / kl_warmup_epochs): a KL warm-up against posterior collapse."""
    seed: int = 0
    n_init: int = 1
    """Restarts: fits from seeds seed, seed+1, ... (start and SVI alike, freshly built parameters each); the one
    with the highest full-data ELBO at the end is kept (for EM, the highest objective)."""
    device: str = "cpu"
    """cpu, cuda, cuda:N or auto."""
    early_stopping_patience: int | None = None
    """Stop after this many epochs without a better held-out loss (needs validation data); the fit ends at the best
    held-out epoch's weights, whether it stopped early or ran out of epochs."""
    average_weights_from: int | None = None
    """Stochastic weight averaging (emvi.inference.WeightAverage): the fit ends on the mean of the weights after
    epochs average_weights_from to epochs (1-based) instead of the last epoch's, also under early stopping; a run
    directory saves that mean as the fitted weights. None: off."""
    clip_grad_norm: float | None = None
    validate: bool = False
    """Pyro/torch argument validation inside the loop; off by default because the data is checked on entry."""
    jit: bool = False
    """Use Pyro's JIT ELBOs, falling back to eager mode when compilation fails."""
    progress: bool = True
    """Show a progress bar with the running loss (only on a terminal)."""
    stratify: str | None = None
    """Name of a data array ``(N,)`` of stratum labels (bool or integer), e.g. ssvae's ``y_mask``: every step then
    holds up to ``batch_size`` items of each stratum (the whole stratum when it is smaller), an epoch is one pass
    over the largest, and each stratum's part is scaled by its own size N_s, so the step still estimates the
    full-data ELBO without bias, with far less variance when a small stratum weighs much (M2's labelled images,
    Kingma et al. 2014). Sites outside the data plate (global latents) count once per step, not once per stratum.
    None: the model entry's default (e.g. ssvae's ``y_mask``); ``"off"``: plain steps."""

    def __post_init__(self):
        check_positive_int(self.epochs, "epochs", minimum=0)
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.num_particles, "num_particles")
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        check_choice(self.elbo, "elbo", ("auto", *ELBO_NAMES))
        check_number(self.learning_rate, "learning_rate", minimum=0, exclusive_minimum=True)
        check_number(self.weight_decay, "weight_decay", minimum=0)
        check_number(self.momentum, "momentum", minimum=0)
        check_number(self.lr_decay, "lr_decay", minimum=0, exclusive_minimum=True)
        check_positive_int(self.lr_step_epochs, "lr_step_epochs")
        check_number(self.kl_warmup_epochs, "kl_warmup_epochs", minimum=0)
        check_number(self.renyi_alpha, "renyi_alpha")
        check_seed(self.seed)
        check_positive_int(self.n_init, "n_init")
        if self.max_plate_nesting is not None:
            check_positive_int(self.max_plate_nesting, "max_plate_nesting", minimum=0)
        if self.early_stopping_patience is not None:
            check_positive_int(self.early_stopping_patience, "early_stopping_patience")
        if self.average_weights_from is not None:
            check_positive_int(self.average_weights_from, "average_weights_from")
        if self.clip_grad_norm is not None:  # a negative norm would reverse the gradients
            check_number(self.clip_grad_norm, "clip_grad_norm", minimum=0, exclusive_minimum=True)
        if self.stratify is not None and (not isinstance(self.stratify, str) or not self.stratify):
            raise ConfigError(f"stratify must name a data array (e.g. y_mask), got {self.stratify!r}")
        if self.elbo == "renyi" and not self.renyi_alpha < 1:
            raise ConfigError(f"renyi_alpha must be < 1, got {self.renyi_alpha}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainResult:
    """What a fit returns, built once at its end. ``history`` holds one dict per epoch (a resumed fit's include the
    epochs before the resumption); losses are negative ELBOs in nats per data item."""

    history: tuple[dict, ...] = ()
    epochs_run: int = 0
    stopped_early: bool = False
    best_valid_loss: float | None = None
    run_dir: Path | None = None
    param_store_state: dict | None = None
    """Pyro param-store entries created by hand-written models (``pyro.param``); empty for PyroModules."""
    seed: int = 0
    """``TrainConfig.seed`` of the fit."""
    method: str = "svi"
    model: Any = field(default=None, compare=False, repr=False)
    """The model the loop trained (a plain ``model(*data)`` wrapped to take ``num_data``)."""
    guide: Any = field(default=None, compare=False, repr=False)
    """The guide the loop trained: the one passed in, or the automatic guide built for ``guide=None``."""

    @property
    def final_train_loss(self) -> float | None:
        return self.history[-1]["train_loss"] if self.history else None



def make_optimizer(config: TrainConfig, params, optim=None) -> torch.optim.Optimizer:
    """One torch optimiser over ``params``: ``config.optimizer`` by name, or ``optim`` (see :func:`resolve_optim`)."""
    if optim is not None:
        return resolve_optim(optim, config)(params)
    lr, wd = config.learning_rate, config.weight_decay
    # torch's fused kernels update all parameters in one pass; on CPU its default is a Python loop over parameters,
    # a visible share of a small VAE step (docs/experiments/vae.md, from benchmarks/vae_step.py).
    fused = {"fused": True} if _fused_kernels_apply(params) else {}
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, **fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, **fused)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=wd, **fused)
    return torch.optim.RMSprop(params, lr=lr, momentum=config.momentum, weight_decay=wd)


def resolve_optim(optim, config: TrainConfig):
    """A function ``params -> torch.optim.Optimizer`` for ``optim``: a name of :data:`OPTIMIZERS`; a torch optimiser
    class (built with ``lr=config.learning_rate``); a ``pyro.optim`` optimiser such as
    ``pyro.optim.Adam({"lr": 1e-3})`` (its torch class and arguments, one optimiser over every parameter; per-parameter
    argument functions are refused); or any callable ``params -> Optimizer``."""
    if isinstance(optim, str):
        check_choice(optim, "optim", OPTIMIZERS)
        chosen = dataclasses.replace(config, optimizer=optim)
        return lambda params: make_optimizer(chosen, params)
    if isinstance(optim, type) and issubclass(optim, torch.optim.Optimizer):
        return lambda params: optim(params, lr=config.learning_rate)
    constructor = getattr(optim, "pt_optim_constructor", None)
    if constructor is not None:  # a pyro.optim.PyroOptim
        args = getattr(optim, "pt_optim_args", {})
        if callable(args):
            raise ConfigError("a pyro.optim optimiser with per-parameter arguments (a function) cannot drive one "
                              "optimiser over all parameters; pass a dict, e.g. pyro.optim.Adam({'lr': 1e-3})")
        return lambda params: constructor(params, **dict(args))
    if hasattr(optim, "pt_scheduler_constructor"):
        raise ConfigError("pyro.optim learning-rate schedulers are not supported; pass the optimiser and set "
                          "TrainConfig.lr_schedule")
    if callable(optim):
        return optim
    raise ConfigError(f"optim must be one of {', '.join(OPTIMIZERS)}, a torch optimiser class or a pyro.optim "
                      f"optimiser, got {type(optim).__name__}")


def describe(obj) -> str | None:
    """``module.qualname(args)`` of a loss or optimiser object, for the run's config (None for a name or None)."""
    if obj is None or isinstance(obj, str):
        return None
    kind = obj if isinstance(obj, type) else type(obj)
    name = f"{kind.__module__}.{kind.__qualname__}"
    args = getattr(obj, "pt_optim_args", None)
    return f"{name}({args!r})" if isinstance(args, dict) else name


def _fused_kernels_apply(params) -> bool:
    """torch's fused optimizers need dense floating-point parameters, all on one CPU or CUDA device type."""
    device_types = {p.device.type for p in params}
    return len(device_types) == 1 and device_types <= {"cpu", "cuda"} and all(
        p.is_floating_point() and not p.is_sparse for p in params)


def make_scheduler(config: TrainConfig, optimizer):
    """The per-epoch learning-rate schedule ``config.lr_schedule`` over ``optimizer``, or None."""
    if config.lr_schedule is None:
        return None
    if config.lr_schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_epochs, gamma=config.lr_decay)
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=config.lr_decay, patience=2)


def kl_weight(config: TrainConfig, epochs_done: float) -> float:
    """The KL warm-up's scale of the latent sites after ``epochs_done`` (fractional) epochs."""
    if config.kl_warmup_epochs <= 0:
        return 1.0
    return min(1.0, epochs_done / config.kl_warmup_epochs)


def elbo_for(config: TrainConfig, *, jit: bool):
    """The ELBO ``config.elbo`` names (after ``auto`` is resolved), with the configuration's particles."""
    return make_elbo(
        config.elbo,
        num_particles=config.num_particles,
        max_plate_nesting=config.max_plate_nesting,
        renyi_alpha=config.renyi_alpha,
        vectorize_particles=config.vectorize_particles,
        jit=jit,
    )


def follow_discrete_sites(config: TrainConfig, model, guide, batch, num_data):
    """Resolve ``elbo="auto"``: TraceEnum_ELBO when the model has discrete latents its guide does not sample (marked
    for enumeration in the model) or the guide marks its own discrete sites for enumeration (M2's unlabelled y),
    else Trace_ELBO. An explicit non-enumerating ELBO on such a model gets a warning: it would sample those sites."""
    hidden, marked, nesting = discrete_sites(model, guide, *batch, num_data=num_data)
    seed_everything(config.seed)  # the inspection drew random numbers; start the stream as if it had not run
    _check_plate_nesting(config, nesting)
    if hidden and config.elbo == "meanfield":  # TraceMeanField_ELBO needs every latent site in the guide
        raise ConfigError(f"elbo 'meanfield' cannot handle the discrete site(s) {', '.join(hidden)} the guide leaves "
                          "out (they are summed out); use elbo 'auto' (or 'enum')")
    if config.elbo == "auto":
        if not hidden and not marked:
            return model, dataclasses.replace(config, elbo="trace")
        nesting = config.max_plate_nesting if config.max_plate_nesting is not None else nesting
        return (enumerate_discrete(model) if hidden else model), dataclasses.replace(config, elbo="enum",
                                                                                     max_plate_nesting=nesting)
    if hidden:
        warnings.warn(f"elbo={config.elbo!r} samples the discrete site(s) {', '.join(hidden)} from the prior; "
                      "elbo='enum' (or 'auto') sums them out exactly", UserWarning, stacklevel=4)
    if marked and config.elbo == "renyi":  # Pyro's RenyiELBO draws every site (flat traces): no enumeration
        raise ConfigError(f"elbo 'renyi' cannot sum out the guide's site(s) {', '.join(marked)} marked for "
                          "enumeration (Pyro's RenyiELBO does not enumerate); use elbo 'auto' (or 'enum'), which sums "
                          "them out exactly")
    if marked:
        warnings.warn(f"elbo={config.elbo!r} samples the guide's site(s) {', '.join(marked)} marked for enumeration; "
                      "elbo='enum' (or 'auto') sums them out exactly", UserWarning, stacklevel=4)
    return model, config


RESTART_KEY = "restart"
"""Key of a checkpoint's configuration naming the restart (0, 1, ...) of an ``n_init`` fit it holds."""


def restart_config(config: TrainConfig, restart: int) -> TrainConfig:
    """The configuration of restart ``restart`` of an ``n_init`` fit: one fit seeded by ``seed + restart``."""
    return dataclasses.replace(config, seed=config.seed + int(restart), n_init=1)


def check_plate_nesting(config: TrainConfig, model, guide, batch, num_data) -> None:
    """Refuse a ``max_plate_nesting`` below the model's nested plates (one trace of the model against the guide)."""
    if config.max_plate_nesting is not None:
        _check_plate_nesting(config, discrete_sites(model, guide, *batch, num_data=num_data).max_plate_nesting)
        seed_everything(config.seed)  # the inspection drew random numbers; start the stream as if it had not run


def _check_plate_nesting(config: TrainConfig, nesting: int) -> None:
    if config.max_plate_nesting is not None and config.max_plate_nesting < nesting:
        raise ConfigError(f"max_plate_nesting={config.max_plate_nesting} is below the model's {nesting} nested "
                          f"plate(s); leave it unset (the model's own) or set it >= {nesting}")


RNG_STATE_KEYS = {"python": torch.Tensor, "python_version": int, "numpy_keys": torch.Tensor, "numpy_pos": int,
                  "numpy_has_gauss": int, "numpy_gauss": float, "numpy_name": str, "torch": torch.Tensor}
"""What :func:`emvi.inference.seeding.get_rng_state` writes, and each entry's type."""


def _training_state_problem(state: dict) -> str | None:
    """What in a checkpoint's training state (optimiser, schedule, RNG, epoch, history) is not as the SVI loop writes
    it, or None: a resume reads each of these, and would fail half-way on another layout."""
    optimizer = state["optimizer"]
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
            and isinstance(optimizer.get("param_groups"), list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in optimizer["param_groups"])):
        return "optimizer is not a torch optimiser state"
    if state.get("scheduler") is not None and not isinstance(state["scheduler"], dict):
        return "scheduler is not a schedule state"
    states = [state["rng"], *(state.get("rng_ranks") or [])]
    for rng in states:
        if not isinstance(rng, dict) or any(not isinstance(rng.get(k), t) or isinstance(rng.get(k), bool)
                                            for k, t in RNG_STATE_KEYS.items()):
            return "rng is not a random-number-generator state"
    if isinstance(state["epoch"], bool) or not isinstance(state["epoch"], int) or state["epoch"] < 0:
        return f"epoch is {short_repr(state['epoch'])}"
    if not isinstance(state["history"], list) or not all(isinstance(h, dict) for h in state["history"]):
        return "history is not a list of per-epoch metrics"
    for key, kind in (("best_valid", (int, float)), ("epochs_without_improvement", int), ("world_size", int)):
        if key in state and (isinstance(state[key], bool) or not isinstance(state[key], kind)):
            return f"{key} is {short_repr(state[key])}"
    return None


def check_resumable(state: dict, config: TrainConfig) -> None:
    """Raise :class:`CheckpointError` unless ``state`` (a checkpoint) was written by an SVI fit with the same training
    options as ``config`` but for ``epochs`` (and ``progress``); for ``config.n_init`` > 1, the options of the
    restart the checkpoint holds (:func:`restart_config`)."""
    try:
        recorded = json.loads(state["config"])
        saved = method_settings(recorded) or None
        if config.n_init > 1:
            config = restart_config(config, int(recorded.get(RESTART_KEY, 0)))
    except (KeyError, TypeError, ValueError, AttributeError):
        saved = None
    missing = [k for k in ("model", "optimizer", "rng", "epoch", "history") if k not in state]
    if not isinstance(saved, dict) or missing:
        raise CheckpointError("cannot resume: the checkpoint was not written by an SVI fit (no training state); "
                              "refit into a new --run-dir")
    layout = _training_state_problem(state)
    if layout:
        raise CheckpointError(f"cannot resume: the checkpoint's training state has another layout ({layout}); it was "
                              "written by another emvi version or edited: refit into a new --run-dir")
    # Only the number of epochs may change between a run and its resumption.
    differing = [k for k, v in config.to_dict().items() if k not in ("epochs", "progress") and saved.get(k, v) != v]
    if differing:
        raise CheckpointError(
            f"cannot resume: training option(s) {', '.join(differing)} differ from the checkpoint's; "
            "resume with the original options (only epochs may change)"
        )


__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "RESTART_KEY", "TrainConfig", "TrainResult", "check_resumable",
           "make_optimizer", "make_scheduler", "resolve_optim", "restart_config"]
