"""Generative stories, one per file. Importing this package registers the built-in models."""

from .composed import ComposedConfig, ComposedModel
from .vae import VAEConfig, build_vae_pair

__all__ = ["ComposedConfig", "ComposedModel", "VAEConfig", "build_vae_pair"]
