"""The ArviZ layer: InferenceData groups survive netCDF, relabelling undoes a known permutation."""

import numpy as np
import torch

from emvi.analysis.arviz_io import loo, to_inference_data
from emvi.inference.relabel import relabel_components


def test_relabelling_recovers_a_permuted_ground_truth():
    g = torch.Generator().manual_seed(0)
    truth_means = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    truth_weights = torch.tensor([0.2, 0.3, 0.5])
    truth_trans = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])
    chains, draws = 2, 30
    perms = torch.stack([torch.randperm(3, generator=g) for _ in range(chains * draws)]).reshape(chains, draws, 3)
    noise = 0.1 * torch.randn(chains, draws, 3, 2, generator=g)
    means = truth_means[perms] + noise
    weights = truth_weights[perms]
    trans = truth_trans[perms.unsqueeze(-1), perms.unsqueeze(-2)]  # rows and columns relabelled together
    fixed, found = relabel_components(
        {"means": means, "weights": weights, "transition": trans},
        key="means", reference=truth_means, component_axes={"means": (0,), "weights": (0,), "transition": (0, 1)},
    )
    assert torch.equal(found, perms.argsort(-1))  # found[k] = the draw's label for reference component k
    assert torch.allclose(fixed["means"], truth_means.expand_as(means), atol=0.5)
    assert torch.equal(fixed["weights"], truth_weights.expand_as(weights))
    assert torch.equal(fixed["transition"], truth_trans.expand_as(trans))


def test_inference_data_round_trips_through_netcdf(tmp_path):
    import arviz as az

    rng = np.random.default_rng(0)
    idata = to_inference_data(
        posterior={"rate": torch.tensor(rng.gamma(2.0, size=(2, 50, 3)))},
        log_likelihood={"x": torch.tensor(rng.normal(-2.0, 0.01, size=(2, 50, 20)))},
        observed_data={"x": torch.arange(20.0)},
        posterior_predictive={"x": torch.tensor(rng.poisson(3.0, size=(2, 50, 20)).astype(float))},
        coords={"component": [0, 1, 2], "obs": list(range(20))},
        dims={"rate": ["component"], "x": ["obs"]},
        attrs={"model": "mixture", "config": {"num_components": 3}},
    )
    path = tmp_path / "fit.nc"
    idata.to_netcdf(str(path))
    again = az.from_netcdf(str(path))
    assert set(again.groups()) >= {"posterior", "log_likelihood", "observed_data", "posterior_predictive"}
    np.testing.assert_allclose(again.posterior["rate"].values, idata.posterior["rate"].values)
    assert again.posterior.attrs["config"] == '{"num_components": 3}'
    assert list(again.posterior["rate"].dims) == ["chain", "draw", "component"]
    result = loo(again)
    assert np.isfinite(result["elpd_loo"])
