"""scikit-learn-style estimators over emvi's models: fit / predict / score / sample with fitted attributes ending in
``_``, numpy in and out, ``get_params``/``set_params``/``clone``, :class:`NotFittedError` before ``fit``;
scikit-learn's ``ConvergenceWarning`` when a fit stops at ``max_iter``."""

from sklearn.exceptions import ConvergenceWarning

from .base import NotFittedError
from .gaussian_mixture import GaussianMixture
from .hmm import HMM
from .hmmlearn_api import CategoricalHMM, ConvergenceMonitor, GaussianHMM, PoissonHMM
from .mixture import Mixture
from .pca import PCA
from .ppca import PPCA, FactorAnalysis

__all__ = ["CategoricalHMM", "ConvergenceMonitor", "ConvergenceWarning", "FactorAnalysis", "GaussianHMM",
           "GaussianMixture", "HMM", "Mixture", "NotFittedError", "PCA", "PoissonHMM", "PPCA"]
