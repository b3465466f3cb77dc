"""Fitting procedures, generic over model/guide pairs: the SVI runner, EM, NUTS, restarts and ELBOs, and the method
table that names them (:mod:`emvi.inference.methods`). Every training loop of emvi lives here."""

from .auto import PreparedModel, fit_svi, prepare_model
from .elbo import make_elbo
from .em import ConvergenceWarning, EMConfig, EMResult, fit_em, fit_em_with_restarts
from .mcmc import MCMCConfig
from .methods import FitResult, Method, available_methods, get_method, register_method
from .runner import TrainConfig, TrainResult, evaluate_loss, load_run_modules, train
from .seeding import seed_everything

__all__ = [
    "ConvergenceWarning",
    "EMConfig",
    "EMResult",
    "FitResult",
    "MCMCConfig",
    "Method",
    "PreparedModel",
    "TrainConfig",
    "TrainResult",
    "available_methods",
    "evaluate_loss",
    "fit_em",
    "fit_em_with_restarts",
    "fit_svi",
    "get_method",
    "load_run_modules",
    "make_elbo",
    "prepare_model",
    "register_method",
    "seed_everything",
    "train",
]
