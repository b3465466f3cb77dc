"""Generative stories, one per file: each model reads like its equations and knows nothing of how it is fit, wired or analysed."""

from .composed import ComposedConfig, ComposedModel
from .hmm import HMMConfig, HMMModel
from .lda import LDA, LDAConfig
from .mixture import MixtureConfig, MixtureModel
from .ppca import FactorAnalysisConfig, LinearGaussianModel, PPCAConfig
from .prodlda import ProdLDA, ProdLDAConfig
from .vae import VAEConfig, build_vae_pair

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
