"""One source of every default: emvi's own estimators take the EM and NUTS options' defaults from the method
configs (``EMConfig``, ``MCMCConfig``) that the CLI and spec files use, so a fit means the same from every entry.
The drop-in classes named after scikit-learn's and hmmlearn's (``GaussianMixture``, ``PCA``, ``FactorAnalysis``,
``GaussianHMM``...) keep those libraries' defaults instead, as their users expect."""

import dataclasses
import inspect

import pytest

from emvi.estimators import HMM, PPCA, Mixture
from emvi.inference.em import EMConfig
from emvi.inference.mcmc import MCMCConfig

METHOD_DEFAULTS = {f.name: f.default for config in (EMConfig, MCMCConfig) for f in dataclasses.fields(config)
                   if f.name in ("max_iter", "tol", "n_init", "init", "num_samples", "warmup_steps", "num_chains")}


@pytest.mark.parametrize("estimator", [Mixture, HMM, PPCA], ids=lambda cls: cls.__name__)
def test_estimator_defaults_are_the_method_configs(estimator):
    parameters = inspect.signature(estimator.__init__).parameters
    shared = {name: parameters[name].default for name in METHOD_DEFAULTS if name in parameters}
    assert shared, f"{estimator.__name__} shares no option with the method configs"
    assert shared == {name: METHOD_DEFAULTS[name] for name in shared}
