"""Variational families (guides) for emvi's models."""
