"""The one training loop: stochastic variational inference over mini-batches for any Pyro model/guide pair.

Each step estimates the negative ELBO of the full data set from a mini-batch,

    loss = -( E_q[log p(x_B | z_B)] * N/|B| + E_q[log p(z) - log q(z)] ),

through ``elbo.differentiable_loss(model, guide, *batch, num_data=N)`` (the model's data plate does the N/|B|
scaling) and takes one step of a single torch optimizer over the parameters of ``model`` and ``guide``.  With
``TrainConfig.stratify`` each step holds a part of every stratum s of the data (e.g. M2's labelled and unlabelled
images), one ELBO call each with ``num_data=N_s``, and the loss is their sum Σ_s (N_s/|B_s|) Σ_{n in B_s} ℓ_n: still
an unbiased estimate of the full-data loss (:func:`epoch_batches`; the terms of sites outside the data plate are
scaled by 1/S in each of the S calls, so they count once).  Parameters live in the modules
(``module_local_params``), and the fit runs inside a fresh Pyro param-store scope, so two fits in one process never
share parameters by accident.

Per epoch the runner appends a line to ``metrics.jsonl`` and atomically rewrites ``checkpoint.pt`` (model and guide
state including buffers, optimizer and scheduler state, RNG states, epoch, history).  Resuming from it replays the
remaining epochs exactly: the shuffling of epoch ``e`` depends only on ``(seed, e)``, and every other random draw comes
from the generators whose state the checkpoint restores.

On several processes (torchrun; :mod:`emvi.inference.distributed`) ``batch_size`` is the global batch: rank r of W
reads the r-th contiguous slice of each global batch of the same permutation, its loss is weighted by its share of
the batch, and one all-reduce sums the flat gradients (and the loss), so every rank takes the step one process takes
on the whole batch. ``num_data`` stays the full N. Held-out losses are summed over the ranks' parts of the held-out
data, early stopping is decided on those shared values, and rank 0 alone writes metrics and checkpoints (which hold
every rank's RNG state). A checkpoint resumes on any number of processes: the batches are the same; rank 0's random
stream continues, and so do the others' when the number of processes is unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.poutine.messenger import Messenger

from ..errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from ..rundir import METHOD_CONFIG, RunDirectory, method_settings
from ..validation import check_choice, check_number, check_positive_int, check_seed, resolve_device
from . import distributed
from .elbo import ELBO_NAMES, make_elbo
from .seeding import get_rng_state, seed_everything, set_rng_state
from .sites import discrete_sites, enumerate_discrete

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LR_SCHEDULES = (None, "exponential", "step", "cosine", "plateau")


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
    device: str = "cpu"
    """cpu, cuda, cuda:N or auto."""
    early_stopping_patience: int | None = None
    """Stop after this many epochs without a better held-out loss (needs validation data)."""
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
    Kingma et al. 2014). Sites outside the data plate (global latents) count once per step, not once per stratum."""

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
        if self.max_plate_nesting is not None:
            check_positive_int(self.max_plate_nesting, "max_plate_nesting", minimum=0)
        if self.early_stopping_patience is not None:
            check_positive_int(self.early_stopping_patience, "early_stopping_patience")
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

    @property
    def final_train_loss(self) -> float | None:
        return self.history[-1]["train_loss"] if self.history else None


class _ScaleSharedSites(Messenger):
    """Multiplies by ``factor`` the log-density of every sample site outside the data plate of ``num_data`` items.

    Under stratified batches each stratum's part is one ELBO call, and each call adds the terms of the sites outside
    the data plate (global latents); with ``factor`` = 1/S over S parts they add up to those terms once."""

    def __init__(self, factor: float, num_data: int):
        super().__init__()
        self.factor, self.num_data = factor, num_data

    def _process_message(self, msg):
        # Plates entered inside the model have already added their frames (they sit above this handler).
        if msg["type"] == "sample" and not any(_full_size(f) == self.num_data for f in msg["cond_indep_stack"]):
            msg["scale"] = self.factor * msg["scale"]


def _full_size(frame) -> int:
    return frame.full_size if getattr(frame, "full_size", None) is not None else frame.size


class _ScaleLatentSites(Messenger):
    """Multiplies the log-density of every unobserved sample site by ``factor`` (KL warm-up)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.factor * msg["scale"]


def train(
    model: Callable,
    guide: Callable,
    train_data,
    *,
    config: TrainConfig = TrainConfig(),
    valid_data=None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    extra_config: dict | None = None,
    callbacks: tuple[Callable[[dict], None], ...] = (),
) -> TrainResult:
    """Fit ``guide`` and ``model`` by SVI; see the module docstring.

    Args:
        model, guide: callables ``f(*data, num_data=N)`` (PyroModules or functions using ``pyro.module``).
        train_data, valid_data: tensor ``(N, ...)``, tuple of tensors sharing dim 0, or ``ArrayDataset``.
        run_dir: where ``metrics.jsonl``, ``checkpoint.pt``, ``best.pt`` and ``config.json`` go; None keeps nothing.
        resume: continue from ``run_dir/checkpoint.pt``.
        extra_config: stored next to the training configuration in ``config.json`` and in checkpoints
            (e.g. the model's config, the data set), so a run directory describes itself.
        callbacks: called with each epoch's metrics dict.
    """
    device = resolve_device(config.device)
    train_tensors, transform = _as_tensors(train_data, "training data", device)
    valid_tensors, valid_transform = (None, None) if valid_data is None else _as_tensors(valid_data, "validation data", device)
    if config.early_stopping_patience is not None and valid_tensors is None:
        raise ConfigError("early_stopping_patience needs validation data; pass valid_data or a --valid-fraction")
    run = RunDirectory(run_dir) if run_dir is not None else None
    run_dir = run.path if run is not None else None
    world, rank = distributed.world_size(), distributed.rank()
    writer = run if rank == 0 else None  # rank 0 alone writes the run directory
    if resume and (run is None or not distributed.on_main_process(run.has_checkpoint)):
        raise CheckpointError(f"nothing to resume: no checkpoint in {run_dir}; drop --resume to start afresh")
    for module in (model, guide):
        if isinstance(module, torch.nn.Module):
            module.to(device)

    num_data = int(train_tensors[0].shape[0])
    batch_size = min(config.batch_size, num_data)
    strata = _strata(train_data, config.stratify, num_data)
    resolved = {METHOD_CONFIG: config.to_dict(), **(extra_config or {})}
    store = pyro.get_param_store()
    with store.scope() as scope, pyro.validation_enabled(config.validate):
        seed_everything(config.seed)
        first_batch = transform(tuple(t[:batch_size] for t in train_tensors))
        requested, loss_model = config, model  # checkpoints hold ``model``'s state, whatever wraps it for the loss
        if config.elbo != "enum":
            loss_model, config = _follow_discrete_sites(config, model, guide, first_batch, num_data)
        elbo = _elbo_for(config, jit=config.jit)
        # One pass creates lazily initialised parameters (autoguides, pyro.param) before the optimizer sees them.
        elbo = _warm_up(elbo, config, loss_model, guide, first_batch, num_data)
        params = _collect_parameters(model, guide, store)
        if not params:
            raise ConfigError("the model and guide have no trainable parameters; nothing to fit")
        if world > 1:
            distributed.broadcast_module_(model, guide)
            distributed.broadcast_([p for _, p in store.named_parameters()])
            # Rank 0 keeps one process's random stream; the others draw their own latent samples.
            seed_everything(_rank_seed(config.seed, rank))
        optimizer = _make_optimizer(config, params)
        scheduler = _make_scheduler(config, optimizer)

        history: list[dict] = []
        stopped_early = False
        start_epoch, best_valid, epochs_without_improvement = 0, math.inf, 0
        if resume:
            if world == 1:
                state = run.load_checkpoint(map_location=device)
            else:  # rank 0 reads it (the run directory need not be shared by every node) and sends it to the others
                state = _to_device(distributed.on_main_process(lambda: run.load_checkpoint(map_location="cpu")), device)
            check_resumable(state, requested)
            _load_modules(state, model, guide, store)
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            _restore_rng(state, config, world, rank)
            start_epoch = int(state["epoch"])
            history = [dict(h) for h in state["history"]]
            best_valid = float(state.get("best_valid", math.inf))
            epochs_without_improvement = int(state.get("epochs_without_improvement", 0))
        if writer is not None:
            writer.create().write_config(resolved)
            # Lines of an epoch interrupted after its metrics line but before its checkpoint are dropped.
            writer.write_metrics(history)

        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            steps = epoch_batches(num_data, batch_size, seed=config.seed, epoch=epoch, strata=strata,
                                  device=device)
            total, seen = 0.0, 0
            bar = _progress(config, len(steps), epoch) if rank == 0 else None
            for step, parts in enumerate(steps):
                warmup = _kl_weight(config, epoch + step / len(steps))
                optimizer.zero_grad(set_to_none=True)
                local = 0.0
                for index, part_size in parts:
                    # Across processes rank r takes the r-th contiguous slice of each part, weighted by its share.
                    start, stop = distributed.shard_bounds(index.shape[0])
                    if stop <= start:
                        continue
                    batch = transform(tuple(t.index_select(0, index[start:stop]) for t in train_tensors))
                    loss = _loss(elbo, loss_model, guide, batch, part_size, warmup, num_parts=len(parts))
                    if world > 1:
                        loss = loss * ((stop - start) / index.shape[0])
                    local += loss.item()
                    loss.backward()
                value = local if world == 1 else _all_reduce_gradients(params, local)
                _check_finite(value, epoch, step, run_dir)
                if config.clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.clip_grad_norm)
                optimizer.step()
                step_items = sum(index.shape[0] for index, _ in parts)
                total += value * step_items
                seen += step_items
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total / seen / num_data:.4g}")
            if bar is not None:
                bar.close()
            seconds = time.perf_counter() - started
            metrics = {
                "epoch": epoch + 1,
                "train_loss": total / seen / num_data,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": seconds,
                "items_per_second": seen / seconds if seconds > 0 else float("inf"),
            }
            if warmup < 1.0:
                metrics["kl_weight"] = warmup
            if valid_tensors is not None:
                metrics["valid_loss"] = evaluate_loss(
                    elbo, loss_model, guide, valid_tensors, batch_size=batch_size, transform=valid_transform
                )
                if not math.isfinite(metrics["valid_loss"]):
                    raise NonFiniteLossError(
                        f"held-out loss became {metrics['valid_loss']} at epoch {epoch + 1}; the last good checkpoint "
                        "is kept; lower --learning-rate"
                    )
            if scheduler is not None:
                if config.lr_schedule == "plateau":
                    scheduler.step(metrics.get("valid_loss", metrics["train_loss"]))
                else:
                    scheduler.step()
            improved = "valid_loss" in metrics and metrics["valid_loss"] < best_valid
            if improved:
                best_valid, epochs_without_improvement = metrics["valid_loss"], 0
            elif "valid_loss" in metrics:
                epochs_without_improvement += 1
            history.append(metrics)
            stop = config.early_stopping_patience is not None and epochs_without_improvement >= config.early_stopping_patience
            if world > 1:  # one decision for all ranks (their losses are the same all-reduced values anyway)
                stop = bool(distributed.broadcast_object(stop, what="the early-stopping decision"))
            rng_states = distributed.all_gather_object(get_rng_state(), what="gathering the RNG states") \
                if run is not None and world > 1 else None
            if writer is not None:
                writer.append_metrics(metrics)
                state = {
                    "model": _state_dict(model),
                    "guide": _state_dict(guide),
                    "param_store": _param_store_values(store),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng": get_rng_state(),
                    "epoch": epoch + 1,
                    "history": history,
                    "best_valid": best_valid,
                    "epochs_without_improvement": epochs_without_improvement,
                    "config": json.dumps(resolved, default=str),
                    "world_size": world,
                }
                if rng_states is not None:
                    state["rng_ranks"] = rng_states
                if improved:
                    writer.save_checkpoint({k: state[k] for k in ("model", "guide", "param_store", "epoch", "config")},
                                           best=True)
                writer.save_checkpoint(state)
            for callback in callbacks:
                callback(metrics)
            if stop:
                stopped_early = True
                break
        if stopped_early and run is not None and distributed.on_main_process(lambda: run.has_checkpoint(best=True)):
            best_state = distributed.on_main_process(lambda: run.load_checkpoint(map_location="cpu", best=True))
            _load_modules(_to_device(best_state, device), model, guide, store)
        result = TrainResult(
            history=tuple(history), epochs_run=len(history), stopped_early=stopped_early,
            best_valid_loss=best_valid if math.isfinite(best_valid) else None, run_dir=run_dir,
            param_store_state={k: v.detach().clone() for k, v in _param_store_values(store).items()},
            seed=config.seed, method="svi")
    del scope
    return result


@torch.no_grad()
def evaluate_loss(elbo, model, guide, tensors, *, batch_size: int = 1024, transform=None) -> float:
    """Negative ELBO per data item over ``tensors`` (full-data scaling, averaged over batches).

    With a process group, each rank evaluates its contiguous part of ``tensors`` and the totals are summed."""
    num_data = int(tensors[0].shape[0])
    first, last = distributed.shard_bounds(num_data)
    total = 0.0
    for start in range(first, last, batch_size):
        batch = tuple(t[start : min(start + batch_size, last)] for t in tensors)
        if transform is not None:
            batch = transform(batch)
        # ``loss`` (a float) rather than ``differentiable_loss``: TraceEnum_ELBO refuses the latter under no_grad.
        total += float(elbo.loss(model, guide, *batch, num_data=num_data)) * batch[0].shape[0]
    if distributed.is_distributed():
        summed = torch.tensor([total], dtype=torch.float64)
        distributed.all_reduce_sum_([summed], what="the held-out loss's all-reduce")
        total = float(summed.item())
    return total / num_data / num_data


def _check_finite(value: float, epoch: int, step: int, run_dir) -> None:
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"loss became {value} at epoch {epoch + 1}, step {step + 1}; the last good checkpoint is "
            f"kept{'' if run_dir is None else ' in ' + str(run_dir)}; lower --learning-rate or set --clip-grad-norm"
        )


def _all_reduce_gradients(params: list[torch.Tensor], local_loss: float) -> float:
    """Sum every parameter's gradient and the (share-weighted) loss over the ranks in one all-reduce per dtype;
    returns the summed loss. A parameter without a gradient on every rank keeps none, as in one process (the
    optimizer then skips it); one with a gradient on some rank gets the sum (zeros elsewhere)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has_grad = torch.tensor([float(p.grad is not None) for p in params], dtype=params[0].dtype,
                            device=params[0].device)
    loss = torch.tensor([local_loss], dtype=params[0].dtype, device=params[0].device)
    distributed.all_reduce_sum_([*grads, has_grad, loss], what="the gradients' all-reduce")
    for p, g, flag in zip(params, grads, has_grad.tolist(), strict=True):
        p.grad = g if flag > 0 else None
    return float(loss.item())


def _rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream (rank 0: ``seed`` itself, the stream of one process)."""
    return (int(seed) + 1_000_003 * rank) % (2**63) if rank else int(seed)


def _restore_rng(state: dict, config: TrainConfig, world: int, rank: int) -> None:
    """Each rank's own RNG state when the checkpoint was written by as many processes; otherwise rank 0 continues
    rank 0's stream and the others start a fresh one from ``(seed, rank, epoch)``."""
    per_rank = state.get("rng_ranks")
    if per_rank is not None and int(state.get("world_size", 1)) == world:
        set_rng_state(per_rank[rank])
    elif rank == 0:
        set_rng_state(state["rng"])
    else:
        seed_everything(_rank_seed(config.seed + 7_919 * int(state["epoch"]), rank))


def _to_device(state, device):
    if isinstance(state, torch.Tensor):
        return state.to(device) if state.is_floating_point() else state
    if isinstance(state, dict):
        return {k: (v if k in ("rng", "rng_ranks") else _to_device(v, device)) for k, v in state.items()}
    if isinstance(state, list):
        return [_to_device(v, device) for v in state]
    return state


def _loss(elbo, model, guide, batch, num_data, kl_weight, *, num_parts: int = 1):
    if kl_weight < 1.0:
        scale = _ScaleLatentSites(kl_weight)
        model, guide = scale(model), scale(guide)
    if num_parts > 1:
        shared = _ScaleSharedSites(1.0 / num_parts, num_data)
        model, guide = shared(model), shared(guide)
    return elbo.differentiable_loss(model, guide, *batch, num_data=num_data)


def epoch_batches(num_data: int, batch_size: int, *, seed: int, epoch: int, strata: torch.Tensor | None = None,
                  device=None) -> list[list[tuple[torch.Tensor, int]]]:
    """Each step's parts ``[(item indices, N_part)]`` for epoch ``epoch``: a function of ``(seed, epoch)`` only, so a
    resumed fit replays the same batches.

    Without ``strata``: one part per step, consecutive slices of ``batch_size`` of one permutation of the N items,
    each scaled by N. With ``strata`` ``(N,)`` (stratum labels): one part per stratum s of N_s items in every step,
    ``min(batch_size, N_s)`` of its items scaled by N_s; ``ceil(max_s N_s / batch_size)`` steps, one pass over the
    largest stratum, and the smaller ones cycle through fresh permutations (a stratum of at most ``batch_size`` items
    is whole in every step). Drawn on the CPU, the indices go to ``device`` once per permutation, not per step."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if strata is None:
        order = torch.randperm(num_data, generator=generator).to(device)
        return [[(order[start : start + batch_size], num_data)] for start in range(0, num_data, batch_size)]
    members = [torch.nonzero(strata == value).squeeze(-1) for value in torch.unique(strata)]
    num_steps = math.ceil(max(m.shape[0] for m in members) / batch_size)
    steps: list[list[tuple[torch.Tensor, int]]] = [[] for _ in range(num_steps)]
    for items in members:
        size = items.shape[0]
        per_step = min(batch_size, size)
        needed = size if size > (num_steps - 1) * per_step else num_steps * per_step  # one pass, else cycle
        draws = [items[torch.randperm(size, generator=generator)] for _ in range(math.ceil(needed / size))]
        cycle = torch.cat(draws)[:needed].to(device)
        for step in range(num_steps):
            steps[step].append((cycle[step * per_step : (step + 1) * per_step], size))
    return steps


def _strata(data, name: str | None, num_data: int) -> torch.Tensor | None:
    """The stratum labels ``(N,)`` named by ``TrainConfig.stratify`` (checked), or None."""
    if name is None:
        return None
    if not hasattr(data, "array"):
        raise ConfigError(f"stratify={name!r} needs an ArrayDataset holding an array {name!r}; got "
                          f"{type(data).__name__}")
    values = data.array(name)
    if values.shape != (num_data,) or torch.is_floating_point(values) or torch.is_complex(values):
        raise DataError(f"stratify: array {name!r} must hold one bool or integer stratum label per item, shape "
                        f"({num_data},); got dtype {values.dtype}, shape {tuple(values.shape)}")
    return values.detach().cpu().long()


def _follow_discrete_sites(config: TrainConfig, model, guide, batch, num_data):
    """Resolve ``elbo="auto"``: TraceEnum_ELBO when the model has discrete latents its guide does not sample (marked
    for enumeration in the model) or the guide marks its own discrete sites for enumeration (M2's unlabelled y),
    else Trace_ELBO. An explicit non-enumerating ELBO on such a model gets a warning: it would sample those sites."""
    hidden, marked, nesting = discrete_sites(model, guide, *batch, num_data=num_data)
    seed_everything(config.seed)  # the inspection drew random numbers; start the stream as if it had not run
    if config.elbo == "auto":
        if not hidden and not marked:
            return model, dataclasses.replace(config, elbo="trace")
        nesting = config.max_plate_nesting if config.max_plate_nesting is not None else nesting
        return (enumerate_discrete(model) if hidden else model), dataclasses.replace(config, elbo="enum",
                                                                                     max_plate_nesting=nesting)
    if hidden:
        warnings.warn(f"elbo={config.elbo!r} samples the discrete site(s) {', '.join(hidden)} from the prior; "
                      "elbo='enum' (or 'auto') sums them out exactly", UserWarning, stacklevel=3)
    if marked:
        warnings.warn(f"elbo={config.elbo!r} samples the guide's site(s) {', '.join(marked)} marked for enumeration; "
                      "elbo='enum' (or 'auto') sums them out exactly", UserWarning, stacklevel=3)
    return model, config


def _elbo_for(config: TrainConfig, *, jit: bool):
    return make_elbo(
        config.elbo,
        num_particles=config.num_particles,
        max_plate_nesting=config.max_plate_nesting,
        renyi_alpha=config.renyi_alpha,
        vectorize_particles=config.vectorize_particles,
        jit=jit,
    )


def _warm_up(elbo, config, model, guide, first_batch, num_data):
    """Run one loss evaluation; with ``jit=True`` fall back to the eager ELBO if tracing fails."""
    try:
        _loss(elbo, model, guide, first_batch, num_data, 1.0)
        return elbo
    except Exception as exc:  # noqa: BLE001 - JIT failures come in many types
        if not config.jit:
            raise
        warnings.warn(f"JIT ELBO failed ({type(exc).__name__}: {str(exc)[:120]}); falling back to the eager ELBO", stacklevel=3)
        eager = _elbo_for(config, jit=False)
        seed_everything(config.seed)  # the failed attempt drew random numbers; start the stream as an eager run does
        _loss(eager, model, guide, first_batch, num_data, 1.0)
        return eager


def _kl_weight(config: TrainConfig, epochs_done: float) -> float:
    if config.kl_warmup_epochs <= 0:
        return 1.0
    return min(1.0, epochs_done / config.kl_warmup_epochs)


def _as_tensors(data, what: str, device) -> tuple[tuple[torch.Tensor, ...], Callable]:
    transform = getattr(data, "transform_batch", None) or (lambda batch: batch)
    if hasattr(data, "tensors"):
        tensors = tuple(data.tensors)
    elif isinstance(data, torch.Tensor):
        tensors = (data,)
    elif isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
        tensors = tuple(data)
    else:
        raise DataError(f"{what} must be a tensor, a tuple of tensors or an ArrayDataset, got {type(data).__name__}")
    if tensors[0].dim() == 0 or tensors[0].shape[0] == 0:
        raise DataError(f"{what} is empty; pass at least one sample")
    n = tensors[0].shape[0]
    for t in tensors[1:]:
        if t.shape[0] != n:
            raise DataError(f"{what}: tensors disagree on the number of samples ({n} vs {t.shape[0]}); align them")
    for t in tensors:
        if torch.is_floating_point(t) and not torch.isfinite(t).all():
            raise DataError(f"{what} contains NaN or infinite values; remove or impute them")
    return tuple(t.to(device) for t in tensors), transform


def _collect_parameters(model, guide, store) -> list[torch.Tensor]:
    seen, params = set(), []
    candidates = []
    for module in (model, guide):
        if isinstance(module, torch.nn.Module):
            candidates.extend(module.parameters())
    candidates.extend(p for _, p in store.named_parameters())
    for p in candidates:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    return params


def _make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    lr, wd = config.learning_rate, config.weight_decay
    # torch's fused kernels update all parameters in one pass; on CPU its default is a Python loop over parameters,
    # which costs 0.7-0.85 ms of a 7 ms VAE step on MNIST with 2 threads (benchmarks/vae_step.py).
    fused = {"fused": True} if _fused_kernels_apply(params) else {}
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, **fused)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, **fused)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=wd, **fused)
    return torch.optim.RMSprop(params, lr=lr, momentum=config.momentum, weight_decay=wd)


def _fused_kernels_apply(params) -> bool:
    """torch's fused optimizers need dense floating-point parameters, all on one CPU or CUDA device type."""
    device_types = {p.device.type for p in params}
    return len(device_types) == 1 and device_types <= {"cpu", "cuda"} and all(
        p.is_floating_point() and not p.is_sparse for p in params)


def _make_scheduler(config: TrainConfig, optimizer):
    if config.lr_schedule is None:
        return None
    if config.lr_schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_epochs, gamma=config.lr_decay)
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=config.lr_decay, patience=2)


def _progress(config: TrainConfig, total: int, epoch: int):
    if not config.progress or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, file=sys.stderr)


def _state_dict(module) -> dict:
    return module.state_dict() if isinstance(module, torch.nn.Module) else {}


def _param_store_values(store) -> dict[str, torch.Tensor]:
    # Unconstrained values only: constraint objects are not weights_only-safe, and the warm-up pass recreates them.
    return {name: p.detach().clone() for name, p in store.named_parameters()}


def _load_modules(state: dict, model, guide, store) -> None:
    for key, module in (("model", model), ("guide", guide)):
        if isinstance(module, torch.nn.Module):
            try:
                module.load_state_dict(state[key])
            except RuntimeError as exc:
                raise CheckpointError(
                    f"checkpoint does not match the {key} ({str(exc).splitlines()[0][:160]}); resume with the same model configuration"
                ) from None
    current = dict(store.named_parameters())
    with torch.no_grad():
        for name, value in state.get("param_store", {}).items():
            if name not in current:
                raise CheckpointError(f"checkpoint has parameter {name!r} that the model does not create; use the same model")
            current[name].copy_(value)


def check_resumable(state: dict, config: TrainConfig) -> None:
    """Raise :class:`CheckpointError` unless ``state`` (a checkpoint) was written by an SVI fit with the same training
    options as ``config`` but for ``epochs`` (and ``progress``)."""
    try:
        saved = method_settings(json.loads(state["config"])) or None
    except (KeyError, TypeError, ValueError, AttributeError):
        saved = None
    missing = [k for k in ("model", "optimizer", "rng", "epoch", "history") if k not in state]
    if not isinstance(saved, dict) or missing:
        raise CheckpointError("cannot resume: the checkpoint was not written by an SVI fit (no training state); "
                              "refit into a new --run-dir")
    # Only the number of epochs may change between a run and its resumption.
    differing = [k for k, v in config.to_dict().items() if k not in ("epochs", "progress") and saved.get(k, v) != v]
    if differing:
        raise CheckpointError(
            f"cannot resume: training option(s) {', '.join(differing)} differ from the checkpoint's; "
            "resume with the original options (only epochs may change)"
        )


def load_run_modules(run_dir: str | Path, model, guide, *, which: str = "checkpoint", device="cpu") -> dict[str, Any]:
    """Load the parameters saved in ``run_dir`` into freshly built ``model`` and ``guide``; returns the checkpoint."""
    state = RunDirectory(run_dir).load_checkpoint(map_location=device, best=which == "best")
    for key, module in (("model", model), ("guide", guide)):
        if isinstance(module, torch.nn.Module):
            module.to(device)
            try:
                module.load_state_dict(state[key])
            except RuntimeError as exc:
                raise CheckpointError(
                    f"checkpoint in {run_dir} does not match the {key} ({str(exc).splitlines()[0][:160]}); "
                    "rebuild it with the run's configuration"
                ) from None
    return state


__all__ = ["TrainConfig", "TrainResult", "train", "evaluate_loss", "load_run_modules", "check_resumable"]
