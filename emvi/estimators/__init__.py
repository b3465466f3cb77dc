"""scikit-learn-style estimators over emvi's models: fit / predict / score / sample with fitted attributes ending in
``_``, numpy in and out, ``get_params``/``set_params``/``clone``, :class:`NotFittedError` before ``fit``;
scikit-learn's ``ConvergenceWarning`` when a fit stops at ``max_iter``.

Drop-ins (the peer's constructor parameters, defaults, attributes and conventions; change only the import):

* ``sklearn.mixture.GaussianMixture`` -> :class:`GaussianMixture` (full, tied, diag, spherical);
* ``sklearn.decomposition.PCA`` (its probabilistic model) -> :class:`PCA`;
* ``sklearn.decomposition.FactorAnalysis`` -> :class:`FactorAnalysis` (rotations included);
* ``hmmlearn.hmm.GaussianHMM`` / ``PoissonHMM`` / ``CategoricalHMM`` -> :class:`GaussianHMM` / :class:`PoissonHMM` /
  :class:`CategoricalHMM` (priors, ``init_params``/``params``, ``monitor_``: :class:`ConvergenceMonitor`).

emvi's own: :class:`Mixture` (Gaussian, Poisson, Bernoulli, categorical; EM, SVI, NUTS), :class:`HMM` (EM, SVI,
NUTS), :class:`PPCA`; their defaults are the method configs' (``EMConfig``, ``MCMCConfig``).
"""

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
