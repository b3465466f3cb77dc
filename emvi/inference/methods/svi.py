"""svi: the runner (:func:`emvi.inference.runner.train`) as a method of the table; every model can use it."""

from __future__ import annotations

import dataclasses
import time

from ..runner import TrainConfig, load_run_modules, train
from . import SVI, FitResult, Method

NAME = SVI


def fit(model, guide, train_data, config: TrainConfig, *, valid_data=None, run=None, resume=False) -> FitResult:
    """Stochastic variational inference by the runner; ``run``'s checkpoints make the fit resumable."""
    started = time.perf_counter()
    result = train(model, guide, train_data, config=config, valid_data=valid_data,
                   run=run, resume=resume,
                   extra_config=None if run is None else getattr(run, "resolved_config", None))
    metrics = {"epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
               "final_train_loss": result.final_train_loss, "best_valid_loss": result.best_valid_loss}
    return FitResult(NAME, config.seed, None, result.epochs_run, tuple(result.history), metrics,
                     time.perf_counter() - started)


def load(model, guide, run, device) -> None:
    load_run_modules(run, model, guide, device=device)


def configure(entry, model_config, config: TrainConfig) -> TrainConfig:
    """``config`` with the entry's strata (its ``stratify`` hook, e.g. ssvae's ``y_mask``) when it names none."""
    stratify = getattr(entry, "stratify", None)
    if config.stratify is None and stratify is not None:
        name = stratify(model_config)
        if name is not None:
            return dataclasses.replace(config, stratify=name)
    return config


def start(entry, model, guide, train_data, model_config, config: TrainConfig) -> dict:
    """The entry's start before SVI (its ``pretrain`` hook, e.g. gmvae's autoencoder and clusters), on the training
    device; ``{}`` for an entry without one."""
    from ...validation import resolve_device

    pretrain = getattr(entry, "pretrain", None)
    if pretrain is None:
        return {}
    device = resolve_device(config.device)
    model.to(device), guide.to(device)
    return pretrain(model, guide, train_data, model_config, config) or {}


METHOD = Method(NAME, TrainConfig, fit, load, configure=configure, start=start, resumable=True)
