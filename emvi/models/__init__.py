"""Generative stories, one per file. Importing this package registers the built-in models."""

from .composed import ComposedConfig, ComposedModel
from .hmm import HMMConfig, HMMModel
from .lda import LDA, LDAConfig, build_lda
from .mixture import MixtureConfig, MixtureModel
from .ppca import FactorAnalysisConfig, LinearGaussianModel, PPCAConfig
from .prodlda import ProdLDA, ProdLDAConfig, build_prodlda
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
    "build_lda",
    "build_prodlda",
    "build_vae_pair",
]
