"""ArviZ export of mixture fits: netCDF round trip, exact marginal log-likelihood, relabelling, LOO on NUTS output."""

import warnings

import numpy as np
import pytest
import torch

import emvi  # noqa: F401
from emvi.analysis.arviz_io import _arviz
from emvi.analysis.mixture import mixture_inference_data
from emvi.estimators.mixture import Mixture


def counts(n=120, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.choice(2, n, p=[0.5, 0.5])
    return rng.poisson(np.array([[1.0, 7.0], [8.0, 2.0]])[z]).astype(float)


def test_point_fit_round_trips_through_netcdf_and_sums_to_the_exact_log_likelihood(tmp_path):
    az = _arviz()
    x = counts()
    est = Mixture(2, "poisson").fit(x)
    idata = mixture_inference_data(est.model_, est.guide_, torch.as_tensor(x), method="em", num_samples=5)
    assert {"posterior", "log_likelihood", "posterior_predictive", "observed_data"} <= set(idata.groups())
    assert idata.posterior["rates"].dims == ("chain", "draw", "component", "feature")
    # The marginal pointwise log-likelihood sums to the model's exact log p(x | θ).
    total = float(idata.log_likelihood["x"].sum())
    assert total == pytest.approx(est.score(x) * len(x), rel=1e-12)
    assert idata.posterior_predictive["x"].shape == (1, 5, len(x), 2)
    path = tmp_path / "mixture.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    np.testing.assert_array_equal(back.posterior["rates"].values, idata.posterior["rates"].values)
    np.testing.assert_array_equal(back.log_likelihood["x"].values, idata.log_likelihood["x"].values)
    assert back.posterior.attrs["model"] == "mixture" and "poisson" in back.posterior.attrs["config"]


@pytest.mark.slow
def test_nuts_draws_are_relabelled_and_loo_runs_without_missing_groups():
    az = _arviz()
    x = counts(80, seed=1)
    est = Mixture(2, "poisson", method="mcmc", num_samples=50, warmup_steps=50, num_chains=1).fit(x)
    samples = {name: value.clone() for name, value in est.mcmc_.samples.items()}
    # Swap the labels of every other draw: relabelling must undo it, so summaries stay those of the unswapped chain.
    swapped = {name: value.clone() for name, value in samples.items()}
    for name in ("weights", "rates"):
        swapped[name][:, 1::2] = samples[name][:, 1::2].flip(2)
    plain = mixture_inference_data(est.model_, None, torch.as_tensor(x), method="mcmc", samples=samples)
    idata = mixture_inference_data(est.model_, None, torch.as_tensor(x), method="mcmc", samples=swapped,
                                   diverging=est.mcmc_.extra_fields["diverging"])
    np.testing.assert_allclose(idata.posterior["rates"].values, plain.posterior["rates"].values)
    assert "relabelled" in idata.posterior.attrs and "sample_stats" in idata.groups()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = az.loo(idata, pointwise=True)
    assert not [w for w in caught if "group" in str(w.message).lower()]
    assert np.isfinite(result.elpd_loo) and result.loo_i.shape == (80,)
    # elpd_loo cannot exceed the in-sample lppd: leaving a point out never helps predict it.
    lppd = float(np.log(np.exp(idata.log_likelihood["x"].values.reshape(-1, 80)).mean(0)).sum())
    assert result.elpd_loo <= lppd + 1e-9
