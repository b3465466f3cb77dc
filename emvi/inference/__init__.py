"""Fitting procedures, generic over model/guide pairs: the SVI runner, EM, checkpoints and ELBOs."""

from .auto import PreparedModel, fit_svi, prepare_model
from .elbo import make_elbo
from .em import ConvergenceWarning, EMResult, fit_em
from .runner import TrainConfig, TrainResult, evaluate_loss, load_run_modules, train
from .seeding import seed_everything

__all__ = [
    "ConvergenceWarning",
    "EMResult",
    "PreparedModel",
    "TrainConfig",
    "TrainResult",
    "evaluate_loss",
    "fit_em",
    "fit_svi",
    "load_run_modules",
    "make_elbo",
    "prepare_model",
    "seed_everything",
    "train",
]
