"""Generative stories, one per file. Importing this package registers the built-in models."""
