"""scikit-learn-style estimators over emvi's models: fit / predict / score / sample with fitted attributes ending in ``_``."""

from .mixture import Mixture

__all__ = ["Mixture"]
