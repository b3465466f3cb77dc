"""NUTS on a declared model with a continuous per-item latent: the latents and the globals are sampled jointly, and
the draws of the global cover its conjugate posterior computed by hand."""

import math

import numpy as np
import pytest
import torch

from emvi.catalog.declared import build
from emvi.data import ArrayDataset, DataInfo
from emvi.declaration import declare, latent, learned, observed, param
from emvi.declaration.capabilities import mcmc_ready
from emvi.inference.mcmc import MCMCConfig, fit_posterior
from emvi.inference.methods.common import model_inputs

PRIOR_SCALE = 10.0


def hierarchical(scale=1.0):
    return declare("hierarchical", param("mu", "normal", loc=0.0, scale=PRIOR_SCALE),
                   latent("t", "normal", dim=1, loc="mu", scale=1.0),
                   observed("x", "normal", dim=1, loc="t", scale=scale))


@pytest.mark.slow
def test_nuts_draws_of_the_global_cover_its_conjugate_posterior():
    # mu ~ N(0, 10^2), t_n | mu ~ N(mu, 1), x_n | t_n ~ N(t_n, 1): marginally x_n | mu ~ N(mu, 2), so
    # mu | x ~ N(m, s^2) with 1/s^2 = 1/10^2 + N/2 and m = s^2 * sum(x) / 2.
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(1.5, 2**0.5, size=(50, 1)))
    precision = 1 / PRIOR_SCALE**2 + len(x) / 2
    mean, sd = float(x.sum() / 2 / precision), 1 / math.sqrt(precision)
    model, _ = build(hierarchical(), DataInfo(50, (1,), arrays={"x": [1]}))
    assert mcmc_ready(model.declaration) is None and model.mcmc_start == "as built"
    model.double()
    data = model_inputs(model, ArrayDataset(x=x).with_inputs(("x",)))
    result = fit_posterior(model, *data, config=MCMCConfig(num_samples=600, warmup_steps=300, num_chains=1, seed=0,
                                                           progress=False))
    draws = result.samples["mu"].reshape(-1).double()
    assert result.samples["t"].shape[-2:] == (50, 1)  # the per-item latents were sampled too
    ess = float(result.summary()["min_ess"])
    assert abs(float(draws.mean()) - mean) < 5 * sd / math.sqrt(ess)
    assert float(draws.std()) == pytest.approx(sd, rel=0.25)


def test_the_refusal_names_the_real_blocker_first():
    no_prior = declare("no_prior", latent("t", "normal", dim=1, loc=0.0, scale=1.0),
                       observed("x", "normal", dim=1, loc="t", scale=learned()))
    reason = mcmc_ready(no_prior)
    assert "would be point-fitted" in reason and "x.scale" in reason
    assert mcmc_ready(hierarchical()) is None
