"""Fitting procedures, generic over model/guide pairs: the SVI runner, EM, NUTS, restarts and ELBOs, and the method
table that names them (:mod:`emvi.inference.methods`). Every training loop of emvi lives here."""

from .auto import PreparedModel, prepare_model
from .averaging import WeightAverage
from .convergence import ConvergenceWarning, convergence_reported
from .elbo import make_elbo
from .em import EMConfig, EMResult, fit_em, fit_em_with_restarts
from .mcmc import MCMCConfig
from .methods import FitResult, Method, available_methods, get_method, register_method
from .runner import TrainConfig, TrainResult, evaluate_loss, load_run_modules, train
from .seeding import seed_everything
from .svi_loop import SVI, Callback

__all__ = [
    "SVI",
    "Callback",
    "ConvergenceWarning",
    "EMConfig",
    "EMResult",
    "FitResult",
    "MCMCConfig",
    "Method",
    "PreparedModel",
    "TrainConfig",
    "TrainResult",
    "WeightAverage",
    "available_methods",
    "convergence_reported",
    "evaluate_loss",
    "fit_em",
    "fit_em_with_restarts",
    "get_method",
    "load_run_modules",
    "make_elbo",
    "prepare_model",
    "register_method",
    "seed_everything",
    "train",
]
