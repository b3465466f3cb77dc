"""scikit-learn-style estimators over emvi's models: fit / predict / score / sample with fitted attributes ending in ``_``."""

from .hmm import HMM
from .mixture import Mixture
from .ppca import PPCA, FactorAnalysis

__all__ = ["HMM", "FactorAnalysis", "Mixture", "PPCA"]
