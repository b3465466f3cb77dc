"""svi: the runner (:func:`emvi.inference.runner.train`) as a method of the table; every model can use it.

With ``TrainConfig.n_init`` > 1 the fit is restarted: restart r is the start and SVI seeded by ``seed + r``
(:func:`~emvi.inference.train_config.restart_config`) on a model and guide freshly built by ``rebuild(seed + r)``
(restart 0 uses the ones passed in); every restart is scored by the same full-data ELBO
(:func:`~emvi.inference.runner.training_objective`) and the highest is kept. The run directory ends with the
winner's checkpoints, metrics and history alone; its checkpoints name the restart, and ``--resume`` continues the
winner (seeded as it was), without refitting the others.
"""

from __future__ import annotations

import dataclasses
import json
import time

import torch

from ...config import METHOD_CONFIG, config_to_dict
from ...errors import CheckpointError, ConfigError
from ..restarts import run_restarts
from ..runner import TrainConfig, load_run_modules, train, training_objective
from ..train_config import RESTART_KEY, restart_config
from . import SVI, FitResult, Method
from .common import model_dtype, model_inputs
from .em import starts_from_data, warn_if_a_component_emptied

NAME = SVI


def fit(model, guide, train_data, config: TrainConfig, *, valid_data=None, run=None, resume=False,
        rebuild=None) -> FitResult:
    """Stochastic variational inference by the runner; ``run``'s checkpoints make the fit resumable. For
    ``config.n_init`` > 1, ``rebuild(seed) -> (model, guide)`` builds and starts a fresh pair for each restart after
    the first; ``model`` and ``guide`` end with the winner's parameters and buffers."""
    started = time.perf_counter()
    extra = None if run is None else getattr(run, "resolved_config", None)
    restarts: dict = {}
    if config.n_init == 1:
        result = train(model, guide, train_data, config=config, valid_data=valid_data, run=run, resume=resume,
                       extra_config=extra)
    elif resume:
        result, restarts = _resume_winner(model, guide, train_data, config, valid_data, run, extra)
    else:
        result, restarts = _best_restart(model, guide, train_data, config, valid_data, run, extra, rebuild)
    warn_if_a_component_emptied(model, train_data)
    metrics = {"epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
               "final_train_loss": result.final_train_loss, "best_valid_loss": result.best_valid_loss, **restarts}
    return FitResult(NAME, config.seed, None, result.epochs_run, tuple(result.history), metrics,
                     time.perf_counter() - started)


def _best_restart(model, guide, train_data, config: TrainConfig, valid_data, run, extra, rebuild):
    """``config.n_init`` fits (see the module docstring); returns the winner's ``TrainResult`` and the summary's
    ``n_init``, ``restart_objectives`` (full-data ELBO per item of each) and ``chosen_restart``."""
    if rebuild is None:
        raise ConfigError("n_init > 1 needs rebuild=, a function seed -> (model, guide) building a fresh pair for "
                          "each restart; fit through emvi.runs.run_fit (emvi fit), or set n_init=1")

    def fit_once(restart: int):
        pair = (model, guide) if restart == 0 else rebuild(config.seed + restart)
        result = train(*pair, train_data, config=restart_config(config, restart), valid_data=valid_data, run=run,
                       extra_config=_restart_record(config, extra, restart))
        files = None if run is None else _run_files(run)  # the next restart overwrites them
        return pair, result, files, training_objective(*pair, train_data, config)

    restarts = run_restarts(fit_once, config.n_init, objective=lambda outcome: outcome[3])
    (best_model, best_guide), result, files, _ = restarts.best
    for mine, winner in ((model, best_model), (guide, best_guide)):
        if mine is not winner and isinstance(mine, torch.nn.Module):
            mine.load_state_dict(winner.state_dict())
    if run is not None:
        if restarts.chosen != config.n_init - 1:
            for best, state in files.items():
                if state is not None:
                    run.save_checkpoint(state, best=best)
        _record_config(run, config, extra, restarts.chosen)
    return result, {"n_init": config.n_init, "restart_objectives": list(restarts.objectives),
                    "chosen_restart": restarts.chosen}


def _resume_winner(model, guide, train_data, config: TrainConfig, valid_data, run, extra):
    """Continue the restart whose checkpoint ``run`` holds (the winner), seeded as it was."""
    if run is None or not run.has_checkpoint():
        raise CheckpointError("nothing to resume: no checkpoint of an n_init fit here; drop --resume to start afresh")
    recorded = json.loads(run.load_checkpoint()["config"])
    restart = int(recorded.get(RESTART_KEY, 0))
    result = train(model, guide, train_data, config=restart_config(config, restart), valid_data=valid_data, run=run,
                   resume=True, extra_config=_restart_record(config, extra, restart))
    _record_config(run, config, extra, restart)
    return result, {"n_init": config.n_init, "chosen_restart": restart}


def _run_files(run) -> dict:
    """The run's last and best-epoch checkpoints (None where absent), keyed by ``best``."""
    return {best: run.load_checkpoint(best=best) if run.has_checkpoint(best=best) else None for best in (False, True)}


def _restart_record(config: TrainConfig, extra, restart: int) -> dict:
    """What restart ``restart``'s checkpoints record: its own options (seed + restart, n_init 1) and its index."""
    return {**(extra or {}), METHOD_CONFIG: config_to_dict(restart_config(config, restart)), RESTART_KEY: restart}


def _record_config(run, config: TrainConfig, extra, restart: int) -> None:
    """The run's configuration with the options asked for (``n_init``, ``seed``), not the restart's own."""
    run.write_config({**(extra or {}), METHOD_CONFIG: config_to_dict(config), RESTART_KEY: restart})


def load(model, guide, run, device) -> None:
    load_run_modules(run, model, guide, device=device)


def configure(entry, model_config, config: TrainConfig) -> TrainConfig:
    """``config`` with the entry's strata (its ``stratify``, e.g. ssvae's ``y_mask``) when it names none."""
    stratify = getattr(entry, "stratify", None)
    if config.stratify is None and stratify is not None:
        return dataclasses.replace(config, stratify=stratify)
    return config


def start(entry, model, guide, train_data, model_config, config: TrainConfig, start_config) -> dict:
    """The entry's start before SVI (its ``pretrain`` hook with ``start_config``, as
    :func:`emvi.runs.start_options` resolved it; e.g. gmvae's autoencoder and clusters), on the training device;
    else, for a model that asks for it (``svi_data_start``) and has EM's protocol, EM's start (k-means++
    hard assignments of the first array's rows and one closed-form M-step), so that the components begin apart
    instead of all at the prior's centre; ``{}`` otherwise."""
    from ...validation import resolve_device

    pretrain = getattr(entry, "pretrain", None)
    if pretrain is None:
        return data_start(model, train_data, config)
    device = resolve_device(config.device)
    model.to(device), guide.to(device)
    return pretrain(model, guide, train_data, model_config, start_config, config) or {}


def data_start(model, train_data, config: TrainConfig) -> dict:
    """EM's start (:func:`emvi.inference.em.em_start`, seeded by ``config.seed``) for a model with
    ``svi_data_start`` and a ready EM protocol; ``{}`` for any other."""
    from ..em import EMConfig, em_start
    from ..enumerated_em import em_protocol

    if not starts_from_data(model):
        return {}
    dtype = model_dtype(model)
    model.to(torch.float64)
    em_start(em_protocol(model), model_inputs(model, train_data), EMConfig(seed=config.seed),
             torch.Generator().manual_seed(config.seed))
    model.to(dtype)
    return {"start": "kmeans++ and one M-step"}


METHOD = Method(NAME, TrainConfig, fit, load, configure=configure, start=start, resumable=True, rebuilds=True)
