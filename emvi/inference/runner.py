"""SVI with a record: :func:`train` runs :class:`~emvi.inference.svi_loop.SVI` with the callbacks that keep a run.

:class:`MetricsWriter` appends a line per epoch to the run's metrics and writes its configuration;
:class:`Checkpointer` atomically rewrites the checkpoint after every epoch (model and guide state including buffers,
optimiser and scheduler state, RNG states, epoch, history) and restores it on ``resume``, which replays the remaining
epochs exactly: the shuffling of epoch ``e`` depends only on ``(seed, e)``, and every other random draw comes from the
generators whose state the checkpoint restores. Both write through ``run``, a run-directory object
(:class:`emvi.rundir.RunDirectory` or anything with its methods); this package never names a file.

On several processes (:class:`~emvi.inference.svi_loop.Reducer`) rank 0 alone writes, and checkpoints hold every
rank's RNG state. A checkpoint resumes on any number of processes: the batches are the same; rank 0's random stream
continues, and so do the others' when the number of processes is unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import torch

from ..config import METHOD_CONFIG
from ..errors import CheckpointError, ConfigError
from . import distributed
from .averaging import WeightAverage
from .seeding import get_rng_state, seed_everything, set_rng_state
from .svi_loop import (
    SVI,
    Callback,
    Reducer,
    epoch_batches,
    evaluate_loss,
    fit_scope,
    fitted_weights,
    load_modules,
    loop_weights,
    rank_seed,
)
from .train_config import TrainConfig, TrainResult, check_resumable, describe

OBJECTIVE_PARTICLES = 16
"""Particles (at least) of the full-data ELBO that ranks the restarts of an ``n_init`` fit."""


class MetricsWriter(Callback):
    """Writes the run's configuration (``resolved``) and its metrics, one line per epoch, through ``run``."""

    def __init__(self, run, resolved: dict):
        self.run, self.resolved = run, resolved

    def on_start(self, loop):
        self.run.create().write_config(self.resolved)
        # Lines of an epoch interrupted after its metrics line but before its checkpoint are dropped.
        self.run.write_metrics(loop.history)

    def on_epoch_end(self, loop, metrics):
        self.run.append_metrics(metrics)


class Checkpointer(Callback):
    """Saves the fit's state after every epoch (and the best held-out epoch's weights), restores it on resume, and
    returns to the best weights when early stopping ends the fit. ``writes``: this process writes (rank 0).
    ``averagers``: the fit's :class:`~emvi.inference.averaging.WeightAverage` callbacks, whose running means the
    checkpoint carries (``weight_average``: one's state, or a list of several's) so that a resumed fit averages
    exactly as an uninterrupted one."""

    def __init__(self, run, resolved: dict, *, writes: bool = True, averagers: tuple[WeightAverage, ...] = ()):
        self.run, self.resolved, self.writes, self.averagers = run, resolved, writes, tuple(averagers)

    def restore(self, loop: SVI) -> None:
        """Load the run's checkpoint into an initialised loop (rank 0 reads it and sends it to the others)."""
        reducer, device = loop.reducer, loop.device
        if reducer.world == 1:
            state = self.run.load_checkpoint(map_location=device)
        else:  # the run directory need not be shared by every node
            state = _to_device(reducer.on_main(lambda: self.run.load_checkpoint(map_location="cpu")), device)
        check_resumable(state, loop.requested)
        load_modules(state, loop.model, loop.guide, loop.store)
        loop.optimizer.load_state_dict(state["optimizer"])
        if loop.scheduler is not None and state.get("scheduler") is not None:
            loop.scheduler.load_state_dict(state["scheduler"])
        _restore_rng(state, loop.config, reducer.world, reducer.rank)
        loop.epoch = int(state["epoch"])
        loop.history = [dict(h) for h in state["history"]]
        loop.best_valid = float(state.get("best_valid", math.inf))
        loop.epochs_without_improvement = int(state.get("epochs_without_improvement", 0))
        saved = state.get("weight_average")
        if saved is not None and self.averagers:
            saved = saved if isinstance(saved, list) else [saved]
            if len(saved) != len(self.averagers):
                raise CheckpointError(f"the checkpoint holds {len(saved)} weight averages but this fit has "
                                      f"{len(self.averagers)}; resume with the fit's own averaging")
            for averager, averaged in zip(self.averagers, saved, strict=True):
                averager.load_state_dict(averaged)

    def on_epoch_end(self, loop, metrics):
        world = loop.reducer.world
        rng_states = distributed.all_gather_object(get_rng_state(), what="gathering the RNG states") \
            if world > 1 else None
        if not self.writes:
            return
        state = {
            **loop_weights(loop),
            "optimizer": loop.optimizer.state_dict(),
            "scheduler": loop.scheduler.state_dict() if loop.scheduler is not None else None,
            "rng": get_rng_state(),
            "epoch": loop.epoch,
            "history": loop.history,
            "best_valid": loop.best_valid,
            "epochs_without_improvement": loop.epochs_without_improvement,
            "config": json.dumps(self.resolved, default=str),
            "world_size": world,
        }
        if rng_states is not None:
            state["rng_ranks"] = rng_states
        if self.averagers:
            averaged = [averager.state_dict() for averager in self.averagers]
            state["weight_average"] = averaged[0] if len(averaged) == 1 else averaged
        if loop.improved:
            self.run.save_checkpoint({k: state[k] for k in ("model", "guide", "param_store", "epoch", "config")},
                                     best=True)
        self.run.save_checkpoint(state)

    def on_stop(self, loop):
        if loop.reducer.on_main(lambda: self.run.has_checkpoint(best=True)):
            best_state = loop.reducer.on_main(lambda: self.run.load_checkpoint(map_location="cpu", best=True))
            load_modules(_to_device(best_state, loop.device), loop.model, loop.guide, loop.store)
            loop.weights_replaced = "best"

    def save_fitted(self, loop):
        """Add the weights the fit ended on, when a callback replaced the last epoch's, to the last checkpoint as
        ``"fitted"`` (what :func:`load_run_modules` and ``emvi evaluate`` read); its training state stays the last
        epoch's, which a resumed fit continues."""
        if self.writes and self.run.has_checkpoint():
            state = self.run.load_checkpoint()
            state["fitted"] = loop_weights(loop)
            self.run.save_checkpoint(state)


class BestWeights(Callback):
    """Keeps a copy, in memory, of the weights of the best held-out epoch and returns to them when a fit under early
    stopping ends (stopped, or out of epochs): what :class:`Checkpointer` does through ``best.pt`` for a fit that
    keeps no run directory."""

    def __init__(self):
        self.best: dict | None = None

    def on_epoch_end(self, loop, metrics):
        if loop.improved:
            weights = loop_weights(loop)
            self.best = {**weights, "model": _cloned(weights["model"]), "guide": _cloned(weights["guide"])}

    def on_stop(self, loop):
        if self.best is not None:
            load_modules(self.best, loop.model, loop.guide, loop.store)
            loop.weights_replaced = "best"


def _cloned(state: dict) -> dict:
    return {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def train(
    model: Callable,
    guide: Callable,
    train_data,
    *,
    config: TrainConfig = TrainConfig(),
    valid_data=None,
    run=None,
    resume: bool = False,
    extra_config: dict | None = None,
    callbacks: tuple = (),
    loss=None,
    optim=None,
    reducer: Reducer | None = None,
    run_dir=None,
) -> TrainResult:
    """Fit ``guide`` and ``model`` by SVI (:mod:`emvi.inference.svi_loop`), recording into ``run``.

    Args:
        model, guide: callables ``f(*data, num_data=N)`` (modules, or functions using ``pyro.module``/``pyro.param``).
        train_data, valid_data: tensor ``(N, ...)``, tuple of tensors sharing dim 0, or ``ArrayDataset``.
        run: a run-directory object (:class:`emvi.rundir.RunDirectory`) for the metrics, checkpoints and
            configuration, or None to keep nothing; ``emvi.train`` takes a path.
        resume: continue from the run's checkpoint.
        extra_config: stored next to the training configuration in the run's configuration and in checkpoints.
        callbacks: functions of each epoch's metrics dict, or :class:`~emvi.inference.svi_loop.Callback` objects.
        loss, optim: a Pyro ``ELBO`` instance and an optimiser object in place of ``config.elbo``/``optimizer``.
        reducer: the several-process reduction (default: the process group torchrun set up, if any).
        run_dir: the same as ``run`` (a run-directory object; a path goes through ``emvi.train``).
    """
    if run_dir is not None:
        if run is not None or not hasattr(run_dir, "save_checkpoint"):
            raise ConfigError("emvi.inference.runner.train takes run= (or run_dir=) as a run-directory object such as "
                              "emvi.rundir.RunDirectory(path); for a path, call emvi.train(..., run_dir=path)")
        run = run_dir
    if config.n_init != 1:  # restarts rebuild the model for every seed, which a model object alone cannot
        raise ConfigError(f"train fits once, got n_init={config.n_init}; for restarts fit a registered or declared "
                          "model by emvi fit --n-init (emvi.runs.run_fit), or loop over seeds yourself")
    reducer = reducer or Reducer()
    if resume and (run is None or not reducer.on_main(run.has_checkpoint)):
        where = "" if run is None else f" in {run.path}"
        raise CheckpointError(f"nothing to resume: no checkpoint{where}; drop --resume to start afresh")
    resolved = {METHOD_CONFIG: config.to_dict(), **(extra_config or {})}
    for key, value in (("loss", describe(loss)), ("optim", describe(optim))):
        if value is not None:
            resolved[key] = value
    loop = SVI(model, guide, config, loss=loss, optim=optim, reducer=reducer)
    averagers, callbacks = _fit_averagers(config, callbacks)
    # The averagers come first: the checkpoint of an epoch then holds the means with that epoch in them.
    hooks: list = list(averagers)
    checkpointer = None
    if run is not None:
        loop.run_directory = run
        if reducer.rank == 0:  # rank 0 alone writes the run directory
            hooks.append(MetricsWriter(run, resolved))
        checkpointer = Checkpointer(run, resolved, writes=reducer.rank == 0, averagers=averagers)
        hooks.append(checkpointer)
    elif config.early_stopping_patience is not None:
        hooks.append(BestWeights())
    with fit_scope(config, model, guide) as store:
        loop.init(train_data, valid_data, store=store)
        if resume:
            checkpointer.restore(loop)
        result = loop.run([*hooks, *callbacks])
        if checkpointer is not None and loop.weights_replaced:
            checkpointer.save_fitted(loop)
    if run is not None:
        result = dataclasses.replace(result, run_dir=run.path)
    return result


def _fit_averagers(config: TrainConfig, callbacks) -> tuple[tuple[WeightAverage, ...], tuple]:
    """The fit's :class:`WeightAverage` callbacks, ``config.average_weights_from``'s first, then those passed among
    ``callbacks`` (taken out of them, to run before the checkpointer and be checkpointed like the option's), and the
    other callbacks. With several, each keeps its own mean and the fit ends on the last one's."""
    passed = tuple(callback for callback in callbacks if isinstance(callback, WeightAverage))
    others = tuple(callback for callback in callbacks if not isinstance(callback, WeightAverage))
    option = () if config.average_weights_from is None else (WeightAverage(config.average_weights_from),)
    return option + passed, others


def training_objective(model, guide, train_data, config: TrainConfig, *,
                       num_particles: int = OBJECTIVE_PARTICLES) -> float:
    """The full-data ELBO per item of a fitted ``model`` and ``guide`` over ``train_data``: ``config``'s ELBO (``auto``
    resolved as in training, no KL warm-up, eager) with at least ``num_particles`` particles, its random stream seeded
    by ``config.seed``, so that every restart of a fit is scored by the same estimator. Higher is better."""
    scored = dataclasses.replace(config, num_particles=max(config.num_particles, num_particles), kl_warmup_epochs=0.0,
                                 jit=False, early_stopping_patience=None)
    with fit_scope(scored, model, guide) as store:
        loop = SVI(model, guide, scored).init(train_data, store=store)
        seed_everything(scored.seed)
        return -evaluate_loss(loop.elbo, loop.loss_model, loop.guide, loop.train_tensors,
                              batch_size=loop.batch_size, transform=loop.transform)


def _restore_rng(state: dict, config: TrainConfig, world: int, rank: int) -> None:
    """Each rank's own RNG state when the checkpoint was written by as many processes; otherwise rank 0 continues
    rank 0's stream and the others start a fresh one from ``(seed, rank, epoch)``."""
    per_rank = state.get("rng_ranks")
    if per_rank is not None and int(state.get("world_size", 1)) == world:
        set_rng_state(per_rank[rank])
    elif rank == 0:
        set_rng_state(state["rng"])
    else:
        seed_everything(rank_seed(config.seed + 7_919 * int(state["epoch"]), rank))


def _to_device(state, device):
    if isinstance(state, torch.Tensor):
        return state.to(device) if state.is_floating_point() else state
    if isinstance(state, dict):
        return {k: (v if k in ("rng", "rng_ranks") else _to_device(v, device)) for k, v in state.items()}
    if isinstance(state, list):
        return [_to_device(v, device) for v in state]
    return state


def load_run_modules(run, model, guide, *, which: str = "checkpoint", device="cpu") -> dict[str, Any]:
    """Load the parameters saved in ``run`` (a run-directory object) into freshly built ``model`` and ``guide``;
    returns the checkpoint."""
    state = run.load_checkpoint(map_location=device, best=which == "best")
    weights = fitted_weights(state)
    for key, module in (("model", model), ("guide", guide)):
        if isinstance(module, torch.nn.Module):
            module.to(device)
            try:
                module.load_state_dict(weights[key])
            except RuntimeError as exc:
                raise CheckpointError(
                    f"checkpoint in {run.path} does not match the {key} ({str(exc).splitlines()[0][:160]}); "
                    "rebuild it with the run's configuration"
                ) from None
    return state


__all__ = ["BestWeights", "Checkpointer", "MetricsWriter", "TrainConfig", "TrainResult", "check_resumable", "epoch_batches",
           "evaluate_loss", "load_run_modules", "train", "training_objective"]
