"""The SVI loop in NumPyro's shape: :meth:`SVI.init` (ELBO, optimiser, schedule), :meth:`SVI.step` (one mini-batch
update, returns its loss) and :meth:`SVI.run` (epochs: batches, validation, early stopping, schedules, KL warm-up).

Each step estimates the negative ELBO of the full data set from a mini-batch,

    loss = -( E_q[log p(x_B | z_B)] * N/|B| + E_q[log p(z) - log q(z)] ),

through ``elbo.differentiable_loss(model, guide, *batch, num_data=N)`` (the model's data plate does the N/|B|
scaling) and takes one step of a single torch optimiser over the parameters of ``model`` and ``guide``. Stratified
batches (:func:`~emvi.inference.svi_loop.epoch_batches`) and the several-process reduction (:class:`~emvi.inference.svi_loop.Reducer`) are described where they live.

Everything a fit keeps on disk is a callback: :class:`Callback` objects see the loop at its start, after every epoch
and when it stops (:mod:`emvi.inference.runner` passes the metrics writer and the checkpointer); the loop itself
knows no run directory. It runs inside :func:`~emvi.inference.svi_loop.fit_scope`: a fresh Pyro param-store scope and validation as
configured, so two fits in one process never share parameters by accident.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
import warnings
from collections.abc import Callable

import pyro
import torch
from pyro.infer import ELBO, RenyiELBO, TraceEnum_ELBO
from pyro.poutine.messenger import Messenger

from ..errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from ..nn import uses_local_params
from ..validation import resolve_device
from . import distributed
from .elbo import DifferentiableRenyiELBO
from .seeding import seed_everything
from .train_config import (
    NO_STRATA,
    TrainConfig,
    TrainResult,
    check_plate_nesting,
    elbo_for,
    follow_discrete_sites,
    kl_weight,
    make_optimizer,
    make_scheduler,
)


class Reducer:
    """The several-process side of a step, from :mod:`emvi.inference.distributed` (one process: the identity).

    ``batch_size`` is the global batch: rank r of W reads the r-th contiguous slice of each part of the same
    permutation, its loss is weighted by its share, and one all-reduce sums the flat gradients (and the loss), so every
    rank takes the step one process takes on the whole batch; ``num_data`` stays the full N. Held-out losses are summed
    over the ranks' parts, early stopping is decided on those shared values, and rank 0 alone writes."""

    def __init__(self):
        self.world, self.rank = distributed.world_size(), distributed.rank()

    def shard_bounds(self, num_items: int) -> tuple[int, int]:
        return distributed.shard_bounds(num_items)

    def share_start(self, model, guide, store, seed: int) -> None:
        """Every rank starts from rank 0's weights; rank 0 keeps one process's random stream, the others their own."""
        if self.world > 1:
            distributed.broadcast_module_(model, guide)
            distributed.broadcast_([p for _, p in store.named_parameters()])
            seed_everything(rank_seed(seed, self.rank))

    def reduce_gradients(self, params: list[torch.Tensor], local_loss: float) -> float:
        """Sum every parameter's gradient and the (share-weighted) loss over the ranks in one all-reduce per dtype;
        returns the summed loss. A parameter without a gradient on every rank keeps none, as in one process (the
        optimizer then skips it); one with a gradient on some rank gets the sum (zeros elsewhere)."""
        if self.world == 1:
            return local_loss
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        has_grad = torch.tensor([float(p.grad is not None) for p in params], dtype=params[0].dtype,
                                device=params[0].device)
        loss = torch.tensor([local_loss], dtype=params[0].dtype, device=params[0].device)
        distributed.all_reduce_sum_([*grads, has_grad, loss], what="the gradients' all-reduce")
        for p, g, flag in zip(params, grads, has_grad.tolist(), strict=True):
            p.grad = g if flag > 0 else None
        return float(loss.item())

    def decide(self, stop: bool) -> bool:
        """One early-stopping decision for all ranks (their losses are the same all-reduced values anyway)."""
        return bool(distributed.broadcast_object(stop, what="the early-stopping decision")) if self.world > 1 else stop

    def on_main(self, fn: Callable):
        return distributed.on_main_process(fn)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream (rank 0: ``seed`` itself, the stream of one process)."""
    return (int(seed) + 1_000_003 * rank) % (2**63) if rank else int(seed)


class Callback:
    """What :meth:`SVI.run` calls; override what you need. ``loop`` is the :class:`SVI` (its ``epoch``, ``history``,
    ``improved``, :meth:`~emvi.inference.svi_loop.SVI.state_dict`...)."""

    def on_start(self, loop: SVI) -> None:
        """Before the first epoch run (after a checkpoint was restored)."""

    def on_epoch_end(self, loop: SVI, metrics: dict) -> None:
        """After each epoch, with its metrics (already in ``loop.history``)."""

    def on_stop(self, loop: SVI) -> None:
        """When a fit under early stopping ends: stopped by it, or out of epochs after the best held-out epoch (the
        fit then returns to that epoch's weights either way, as scikit-learn's ``early_stopping`` does)."""

    def on_end(self, loop: SVI) -> None:
        """After the last epoch, whatever ended the fit (after ``on_stop``)."""


class _MetricsCallback(Callback):
    def __init__(self, fn: Callable[[dict], None]):
        self.fn = fn

    def on_epoch_end(self, loop, metrics):
        self.fn(metrics)


@contextlib.contextmanager
def fit_scope(config: TrainConfig, *modules):
    """A fresh Pyro param-store scope with validation as ``config.validate`` asks and ``module_local_params`` as the
    PyroModules among ``modules`` were built (the user's own setting when there is none); yields the param store."""
    store = pyro.get_param_store()
    local = uses_local_params(*modules)
    mode = contextlib.nullcontext() if local is None else pyro.settings.context(module_local_params=local)
    with store.scope(), pyro.validation_enabled(config.validate), mode:
        yield store


class SVI:
    """``init`` / ``step`` / ``run`` over ``model`` and ``guide`` (callables ``f(*batch, num_data=N)``).

    ``loss`` (default: ``config.elbo``) may be a Pyro ``ELBO`` instance; ``optim`` (default: ``config.optimizer``) a
    torch optimiser class or ``pyro.optim`` optimiser (:func:`~emvi.inference.train_config.resolve_optim`)::

        with fit_scope(config, model, guide) as store:
            svi = SVI(model, guide, config, loss=pyro.infer.Trace_ELBO()).init(data, store=store)
            first = svi.step(epoch_batches(len(data), config.batch_size, seed=config.seed, epoch=0)[0])
            result = svi.run(callbacks=(print,))     # the epochs left, each epoch's metrics printed
    """

    def __init__(self, model: Callable, guide: Callable, config: TrainConfig = TrainConfig(), *, loss=None,
                 optim=None, reducer: Reducer | None = None):
        if loss is not None and not isinstance(loss, ELBO):
            raise ConfigError(f"loss must be an ELBO name or a pyro.infer ELBO instance, got {type(loss).__name__}")
        self.model, self.guide, self.config, self.requested = model, guide, config, config
        self.loss, self.optim = _differentiable(loss), optim
        self.reducer = reducer or Reducer()
        self.epoch, self.history, self.best_valid, self.epochs_without_improvement = 0, [], math.inf, 0
        self.improved = self.stopped_early = False
        self.weights_replaced: str | None = None
        """Set by a callback that ends the fit on other weights than the last epoch's (``"best"``, ``"average"``)."""

    def init(self, train_data, valid_data=None, *, store=None) -> SVI:
        """Check the data, move the modules to the device, resolve the ELBO (``auto``), create lazily initialised
        parameters with one loss evaluation, and build the optimiser and schedule. Call inside :func:`~emvi.inference.svi_loop.fit_scope`."""
        config = self.config
        self.device = device = resolve_device(config.device)
        self.train_tensors, self.transform = as_tensors(train_data, "training data", device)
        self.valid_tensors, self.valid_transform = (None, None) if valid_data is None else \
            as_tensors(valid_data, "validation data", device)
        if config.early_stopping_patience is not None and self.valid_tensors is None:
            raise ConfigError("early_stopping_patience needs validation data; pass valid_data or a --valid-fraction")
        for module in (self.model, self.guide):
            if isinstance(module, torch.nn.Module):
                module.to(device)
        self.num_data = num_data = int(self.train_tensors[0].shape[0])
        self.batch_size = min(config.batch_size, num_data)
        self.strata = strata_of(train_data, config.stratify, num_data)
        self.store = store if store is not None else pyro.get_param_store()
        seed_everything(config.seed)
        first_batch = self.transform(tuple(t[: self.batch_size] for t in self.train_tensors))
        self.loss_model = self.model  # checkpoints hold ``model``'s state, whatever wraps it for the loss
        if self.loss is not None:
            as_enum = isinstance(self.loss, TraceEnum_ELBO)
            self.loss_model, _ = follow_discrete_sites(dataclasses.replace(config, elbo="auto" if as_enum else "trace"),
                                                       self.model, self.guide, first_batch, num_data)
            self.elbo = self.loss
            _loss(self.elbo, self.loss_model, self.guide, first_batch, num_data, 1.0)
        else:
            if config.elbo != "enum":
                self.loss_model, config = follow_discrete_sites(config, self.model, self.guide, first_batch, num_data)
            else:
                check_plate_nesting(config, self.model, self.guide, first_batch, num_data)
            self.config = config
            # One pass creates lazily initialised parameters (autoguides, pyro.param) before the optimizer sees them.
            self.elbo = _warm_up(elbo_for(config, jit=config.jit), config, self.loss_model, self.guide, first_batch,
                                 num_data)
        self.params = collect_parameters(self.model, self.guide, self.store)
        if not self.params:
            raise ConfigError("the model and guide have no trainable parameters; nothing to fit")
        self.reducer.share_start(self.model, self.guide, self.store, config.seed)
        self.optimizer = make_optimizer(config, self.params, self.optim)
        self.scheduler = make_scheduler(config, self.optimizer)
        return self

    def step(self, parts: list[tuple[torch.Tensor, int]], warmup: float = 1.0) -> float:
        """One update from the step's parts ``[(item indices, N_part)]`` (:func:`~emvi.inference.svi_loop.epoch_batches`); returns the loss
        summed over the parts and ranks (a negative ELBO of the full data set)."""
        self.optimizer.zero_grad(set_to_none=True)
        local = 0.0
        for index, part_size in parts:
            start, stop = self.reducer.shard_bounds(index.shape[0])
            if stop <= start:
                continue
            rows = index[start:stop]
            batch = self.transform(tuple(t.index_select(0, rows) for t in self.train_tensors), index=rows)
            loss = _loss(self.elbo, self.loss_model, self.guide, batch, part_size, warmup, num_parts=len(parts))
            if self.reducer.world > 1:
                loss = loss * ((stop - start) / index.shape[0])
            local += loss.item()
            loss.backward()
        value = self.reducer.reduce_gradients(self.params, local)
        if not math.isfinite(value):
            return value  # the caller names the epoch and step; the parameters are left as they were
        if self.config.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_grad_norm)
        self.optimizer.step()
        return value

    def run_epoch(self) -> dict:
        """One pass over the training data (and the held-out loss); returns the epoch's metrics."""
        config, epoch, num_data = self.config, self.epoch, self.num_data
        started = time.perf_counter()
        steps = epoch_batches(num_data, self.batch_size, seed=config.seed, epoch=epoch, strata=self.strata,
                              device=self.device)
        total, seen = 0.0, 0
        bar = _progress(config, len(steps), epoch) if self.reducer.rank == 0 else None
        warmup = 1.0
        for index, parts in enumerate(steps):
            warmup = kl_weight(config, epoch + index / len(steps))
            value = self.step(parts, warmup)
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"loss became {value} at epoch {epoch + 1}, step {index + 1}{self.checkpoint_note()}; lower "
                    "--learning-rate or set --clip-grad-norm")
            step_items = sum(items.shape[0] for items, _ in parts)
            total += value * step_items
            seen += step_items
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / seen / num_data:.4g}")
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - started
        metrics = {"epoch": epoch + 1, "train_loss": total / seen / num_data,
                   "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds,
                   "items_per_second": seen / seconds if seconds > 0 else float("inf")}
        if warmup < 1.0:
            metrics["kl_weight"] = warmup
        if self.valid_tensors is not None:
            metrics["valid_loss"] = evaluate_loss(self.elbo, self.loss_model, self.guide, self.valid_tensors,
                                                  batch_size=self.batch_size, transform=self.valid_transform)
            if not math.isfinite(metrics["valid_loss"]):
                raise NonFiniteLossError(f"held-out loss became {metrics['valid_loss']} at epoch {epoch + 1}"
                                         f"{self.checkpoint_note()}; lower --learning-rate")
        return metrics

    run_directory = None
    """The run directory checkpoints go to (set by the runner), for error messages."""

    def checkpoint_note(self) -> str:
        """``; the last good checkpoint is kept in RUN`` when one exists there, else that none was written."""
        if self.run_directory is None:
            return ""
        if self.run_directory.has_checkpoint():
            return f"; the last good checkpoint is kept in {self.run_directory.path}"
        return f"; no checkpoint was written to {self.run_directory.path} yet"

    def run(self, callbacks=()) -> TrainResult:
        """Epochs from ``self.epoch`` to ``config.epochs``: schedules, early stopping, then the callbacks (objects of
        :class:`Callback` or functions of each epoch's metrics). Returns the fit's :class:`TrainResult`."""
        callbacks = [c if isinstance(c, Callback) else _MetricsCallback(c) for c in callbacks]
        config = self.config
        for callback in callbacks:
            callback.on_start(self)
        while self.epoch < config.epochs:
            metrics = self.run_epoch()
            if self.scheduler is not None:
                if config.lr_schedule == "plateau":
                    self.scheduler.step(metrics.get("valid_loss", metrics["train_loss"]))
                else:
                    self.scheduler.step()
            self.improved = "valid_loss" in metrics and metrics["valid_loss"] < self.best_valid
            if self.improved:
                self.best_valid, self.epochs_without_improvement = metrics["valid_loss"], 0
            elif "valid_loss" in metrics:
                self.epochs_without_improvement += 1
            self.history.append(metrics)
            self.epoch += 1
            patience = config.early_stopping_patience
            stop = self.reducer.decide(patience is not None and self.epochs_without_improvement >= patience)
            for callback in callbacks:
                callback.on_epoch_end(self, metrics)
            if stop:
                self.stopped_early = True
                break
        if self.stopped_early or (config.early_stopping_patience is not None and self.epochs_without_improvement):
            for callback in callbacks:
                callback.on_stop(self)
        for callback in callbacks:
            callback.on_end(self)
        return self.result()

    def result(self, run_dir=None) -> TrainResult:
        best = self.best_valid
        return TrainResult(history=tuple(self.history), epochs_run=len(self.history), stopped_early=self.stopped_early,
                           best_valid_loss=best if math.isfinite(best) else None, run_dir=run_dir,
                           param_store_state=param_store_values(self.store), seed=self.config.seed, method="svi",
                           model=self.model, guide=self.guide)


def _differentiable(loss):
    """Pyro's ``RenyiELBO`` has no ``differentiable_loss``; the same bound as emvi's, which has one."""
    if isinstance(loss, RenyiELBO) and not isinstance(loss, DifferentiableRenyiELBO):
        return DifferentiableRenyiELBO(alpha=loss.alpha, num_particles=loss.num_particles,
                                       max_plate_nesting=loss.max_plate_nesting,
                                       vectorize_particles=loss.vectorize_particles)
    if loss is not None and not hasattr(loss, "differentiable_loss"):
        raise ConfigError(f"loss {type(loss).__name__} has no differentiable_loss; use Trace_ELBO, TraceEnum_ELBO, "
                          "TraceMeanField_ELBO or RenyiELBO")
    return loss


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
    """Multiplies the log-density of every unobserved sample site by ``factor`` (KL warm-up). Sites summed out by
    enumeration are left alone: they are part of the marginal likelihood, not of a KL term, and TraceEnum_ELBO needs
    them to share the scale of the observations that depend on them."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"] and not msg["infer"].get("enumerate"):
            msg["scale"] = self.factor * msg["scale"]


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


def _loss(elbo, model, guide, batch, num_data, warmup, *, num_parts: int = 1):
    """The step's loss on one part: latent sites scaled by ``warmup`` (KL warm-up); with ``num_parts`` S > 1
    (stratified steps) the sites outside the data plate by 1/S, so that over the S calls they count once."""
    if warmup < 1.0:
        scale = _ScaleLatentSites(warmup)
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


def strata_of(data, name: str | None, num_data: int) -> torch.Tensor | None:
    """The stratum labels ``(N,)`` named by ``TrainConfig.stratify`` (checked), or None."""
    if name is None or name == NO_STRATA:
        return None
    if not hasattr(data, "array"):
        raise ConfigError(f"stratify={name!r} needs an ArrayDataset holding an array {name!r}; got "
                          f"{type(data).__name__}")
    values = data.array(name)
    if values.shape != (num_data,) or torch.is_floating_point(values) or torch.is_complex(values):
        raise DataError(f"stratify: array {name!r} must hold one bool or integer stratum label per item, shape "
                        f"({num_data},); got dtype {values.dtype}, shape {tuple(values.shape)}")
    return values.detach().cpu().long()


def _warm_up(elbo, config, model, guide, first_batch, num_data):
    """Run one loss evaluation; with ``jit=True`` fall back to the eager ELBO if tracing fails."""
    try:
        _loss(elbo, model, guide, first_batch, num_data, 1.0)
        return elbo
    except Exception as exc:  # noqa: BLE001 - JIT failures come in many types
        if not config.jit:
            raise
        warnings.warn(f"JIT ELBO failed ({type(exc).__name__}: {str(exc)[:120]}); falling back to the eager ELBO", stacklevel=3)
        eager = elbo_for(config, jit=False)
        seed_everything(config.seed)  # the failed attempt drew random numbers; start the stream as an eager run does
        _loss(eager, model, guide, first_batch, num_data, 1.0)
        return eager


def as_tensors(data, what: str, device) -> tuple[tuple[torch.Tensor, ...], Callable]:
    transform = getattr(data, "transform_batch", None) or (lambda batch, **_: batch)
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


def collect_parameters(model, guide, store) -> list[torch.Tensor]:
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


def _progress(config: TrainConfig, total: int, epoch: int):
    if not config.progress or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, file=sys.stderr)


def module_state(module) -> dict:
    return module.state_dict() if isinstance(module, torch.nn.Module) else {}


def param_store_values(store) -> dict[str, torch.Tensor]:
    # Unconstrained values only: constraint objects are not weights_only-safe, and the warm-up pass recreates them.
    return {name: p.detach().clone() for name, p in store.named_parameters()}


def loop_weights(loop: SVI) -> dict:
    """The loop's live weights as a checkpoint holds them: ``{"model", "guide", "param_store"}`` (the modules'
    state dicts reference the live tensors; the param-store values are copies), the inverse of :func:`load_modules`."""
    return {"model": module_state(loop.model), "guide": module_state(loop.guide),
            "param_store": param_store_values(loop.store)}


def fitted_weights(state: dict) -> dict:
    """The weights a fit ended on, from its checkpoint: those of :meth:`SVI.run`'s last epoch, or where a callback
    replaced them (early stopping's best epoch, a weight average) the replacement, saved under ``"fitted"``."""
    return state.get("fitted", state)


def load_modules(state: dict, model, guide, store) -> None:
    """Copy a checkpoint's model, guide and param-store values into the live ones."""
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


__all__ = ["SVI", "Callback", "Reducer", "epoch_batches", "evaluate_loss", "fit_scope", "fitted_weights"]
