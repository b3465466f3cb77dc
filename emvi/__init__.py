"""emvi: latent-variable models as Pyro model/guide pairs, from expectation maximisation to variational autoencoders.

Both EM and VAEs maximise the evidence lower bound, log p(x) = ELBO(q) + KL(q || p(z | x)): EM sets q to the exact
posterior, a VAE learns an amortised Gaussian q.
"""

import pyro as _pyro

from ._version import __version__
from .data import ArrayDataset, DataInfo, load_dataset, train_valid_split
from .errors import CheckpointError, ConfigError, DataError, EmviError, NonFiniteLossError
from .inference import (
    EMConfig,
    EMResult,
    MCMCConfig,
    TrainConfig,
    TrainResult,
    fit_em,
    fit_svi,
    make_elbo,
    seed_everything,
    train,
)
from .registry import available_models, get_model, register_model

# Parameters live in the modules that own them, never in Pyro's global param store, so two models in one process
# cannot share parameters by name (NumPyro's "inference state is a value" discipline). PyroModules must be built
# after this import; see ARCHITECTURE.md.
_pyro.settings.set(module_local_params=True)

from . import catalog  # noqa: E402,F401  (fills the registry with the built-in families; after the settings above)
from .catalog.declared import register_declaration  # noqa: E402
from .declaration import declare  # noqa: E402
from .runs import build_model  # noqa: E402

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
    "fit_svi",
    "get_model",
    "load_dataset",
    "make_elbo",
    "register_model",
    "register_declaration",
    "seed_everything",
    "train",
    "train_valid_split",
]
