"""Generative stories, one per file. Importing this package registers the built-in models."""

from .composed import ComposedConfig, ComposedModel

__all__ = ["ComposedConfig", "ComposedModel"]
