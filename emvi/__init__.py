"""emvi: latent-variable models as Pyro model/guide pairs, from expectation maximisation to variational autoencoders.

Both EM and VAEs maximise the evidence lower bound, log p(x) = ELBO(q) + KL(q || p(z | x)): EM sets q to the exact
posterior, a VAE learns an amortised Gaussian q.
"""

# emvi's own PyroModules keep their parameters in the module (emvi.nn.LocalPyroModule); Pyro's settings are the user's.
from . import catalog  # noqa: E402,F401  (fills the registry with the built-in families)
from ._version import __version__
from .catalog.declared import register_declaration  # noqa: E402
from .data import ArrayDataset, DataInfo, load_dataset, train_valid_split
from .declaration import declare  # noqa: E402
from .errors import CheckpointError, ConfigError, DataError, EmviError, NonFiniteLossError
from .inference import (
    EMConfig,
    EMResult,
    MCMCConfig,
    TrainConfig,
    TrainResult,
    fit_em,
    make_elbo,
    seed_everything,
)
from .registry import available_models, get_model, register_model
from .runs import build_model  # noqa: E402
from .training import train  # noqa: E402

__all__ = [
    "ArrayDataset",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DataInfo",
    "EMConfig",
    "EMResult",
    "MCMCConfig",
    "EmviError",
    "__version__",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "available_models",
    "build_model",
    "declare",
    "fit_em",
    "get_model",
    "load_dataset",
    "make_elbo",
    "register_model",
    "register_declaration",
    "seed_everything",
    "train",
    "train_valid_split",
]
