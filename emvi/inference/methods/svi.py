"""svi: the runner (:func:`emvi.inference.runner.train`) as a method of the table; every model can use it."""

from __future__ import annotations

import dataclasses
import time

import torch

from ..runner import TrainConfig, load_run_modules, train
from . import SVI, FitResult, Method
from .common import model_dtype, model_inputs
from .em import starts_from_data, warn_if_a_component_emptied

NAME = SVI


def fit(model, guide, train_data, config: TrainConfig, *, valid_data=None, run=None, resume=False) -> FitResult:
    """Stochastic variational inference by the runner; ``run``'s checkpoints make the fit resumable."""
    started = time.perf_counter()
    result = train(model, guide, train_data, config=config, valid_data=valid_data,
                   run=run, resume=resume,
                   extra_config=None if run is None else getattr(run, "resolved_config", None))
    warn_if_a_component_emptied(model, train_data)
    metrics = {"epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
               "final_train_loss": result.final_train_loss, "best_valid_loss": result.best_valid_loss}
    return FitResult(NAME, config.seed, None, result.epochs_run, tuple(result.history), metrics,
                     time.perf_counter() - started)


def load(model, guide, run, device) -> None:
    load_run_modules(run, model, guide, device=device)


def configure(entry, model_config, config: TrainConfig) -> TrainConfig:
    """``config`` with the entry's strata (its ``stratify``, e.g. ssvae's ``y_mask``) when it names none."""
    stratify = getattr(entry, "stratify", None)
    if config.stratify is None and stratify is not None:
        return dataclasses.replace(config, stratify=stratify)
    return config


def start(entry, model, guide, train_data, model_config, config: TrainConfig, start_config=None) -> dict:
    """The entry's start before SVI (its ``pretrain`` hook with ``start_config``, default: its ``start_config``
    class's defaults; e.g. gmvae's autoencoder and clusters), on the training device; else, for a model that asks for it (``svi_data_start``) and has EM's protocol, EM's start (k-means++
    hard assignments of the first array's rows and one closed-form M-step), so that the components begin apart
    instead of all at the prior's centre; ``{}`` otherwise."""
    from ...validation import resolve_device

    pretrain = getattr(entry, "pretrain", None)
    if pretrain is None:
        return data_start(model, train_data, config)
    device = resolve_device(config.device)
    model.to(device), guide.to(device)
    if start_config is None and getattr(entry, "start_config", None) is not None:
        start_config = entry.start_config()
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


METHOD = Method(NAME, TrainConfig, fit, load, configure=configure, start=start, resumable=True)
