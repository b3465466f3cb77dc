"""Generative stories, one per file: each model reads like its equations and knows nothing of how it is fit, wired or analysed."""

from .composed import ComposedConfig, ComposedModel
from .hmm import HMMConfig, HMMModel
from .lda import LDA, LDAConfig
from .mixture import MixtureConfig, MixtureModel
from .ppca import FactorAnalysisConfig, LinearGaussianModel, PPCAConfig
from .prodlda import ProdLDA, ProdLDAConfig
from .vae import VAEConfig, build_vae_pair


def _keep_parameters_local() -> None:
    """emvi's PyroModules derive from :class:`emvi.nn.LocalPyroModule` (their parameters stay in the module whatever
    ``pyro.settings`` says); the HMM's two classes get that base here until ``hmm.py`` names it itself."""
    from pyro.nn import PyroModule

    from ..nn import LocalPyroModule
    from .hmm import HMMGuide

    for cls in (HMMModel, HMMGuide):
        if cls.__bases__ == (PyroModule,):
            cls.__bases__ = (LocalPyroModule,)


_keep_parameters_local()

__all__ = [
    "ComposedConfig",
    "ComposedModel",
    "FactorAnalysisConfig",
    "HMMConfig",
    "HMMModel",
    "LDA",
    "LDAConfig",
    "LinearGaussianModel",
    "MixtureConfig",
    "MixtureModel",
    "PPCAConfig",
    "ProdLDA",
    "ProdLDAConfig",
    "VAEConfig",
    "build_vae_pair",
]
