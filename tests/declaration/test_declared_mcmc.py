"""NUTS on declared models (``--method mcmc``): the globals declared with a prior are sampled, discrete locals are
summed out, what has no prior stays at the MAP the chains start from. Checked against a conjugate closed form and a
hand-written mixture marginal; the CLI fits a spec by NUTS and analyses it."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emvi.analysis.declared import declared_inference_data
from emvi.catalog.declared import build
from emvi.data import DataInfo
from emvi.data.arrays import ArrayDataset
from emvi.declaration import declare, latent, learned, observed, param, table
from emvi.declaration.capabilities import mcmc_ready
from emvi.errors import ConfigError
from emvi.inference.mcmc import MCMCConfig
from emvi.inference.methods import get_method
from emvi.rundir import RunDirectory

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "declared"))
import models as examples  # noqa: E402

PRIOR_SCALE = 3.0


def fit(decl, x, run_dir=None, **options):
    data = ArrayDataset(x)
    model, guide = build(decl, DataInfo(x.shape[0], tuple(x.shape[1:]), arrays={"x": list(x.shape[1:])}))
    config = MCMCConfig(progress=False, **options)
    run = RunDirectory(run_dir) if run_dir is not None else None
    summary = get_method("mcmc").fit(model, guide, data, config, run=run).summary()
    return model, guide, summary


def fits_by(method, decl, shape=(2,)):
    """Whether the method table's ``method`` can fit the model built from ``decl`` (its protocols decide)."""
    model, guide = build(decl, DataInfo(10, shape, arrays={"x": list(shape)}))
    return get_method(method).why_not(model, guide) is None


@pytest.mark.slow
def test_nuts_draws_match_the_conjugate_normal_posterior(tmp_path):
    """x_n ~ N(mu, I), mu ~ N(0, 3² I): the posterior is N(Σx / (n + 1/9), 1 / (n + 1/9)) per coordinate. The draws'
    mean is within 5 Monte Carlo standard errors (ESS from the sampler) and their variance within 5 standard errors
    of a variance estimate (relative sd √(2 / ESS))."""
    g = torch.Generator().manual_seed(0)
    n = 40
    x = torch.tensor([1.0, -2.0]) + torch.randn(n, 2, generator=g)
    decl = declare("normal_mean", param("mu", "normal", shape=(2,), loc=0.0, scale=PRIOR_SCALE),
                   observed("x", "normal", loc="mu", scale=1.0))
    model, guide, summary = fit(decl, x, tmp_path, num_samples=200, warmup_steps=100, num_chains=2, seed=1)
    assert summary["num_divergent"] == 0 and summary["max_r_hat"] < 1.05
    precision = n + PRIOR_SCALE**-2
    mean, var = x.double().sum(0) / precision, 1 / precision
    idata = declared_inference_data(model, guide, (x,), method="mcmc", run_dir=tmp_path)
    draws = torch.as_tensor(idata.posterior["mu"].values).reshape(-1, 2)
    ess = summary["min_ess"]
    assert torch.all((draws.mean(0) - mean).abs() < 5 * math.sqrt(var / ess)), (draws.mean(0), mean)
    assert torch.all((draws.var(0) / var - 1).abs() < 5 * math.sqrt(2 / ess)), (draws.var(0), var)


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto")  # PSIS on 60 draws: the k diagnostic
def test_mixture_draws_give_the_hand_written_marginal_as_pointwise_log_likelihood(tmp_path):
    """A mixture with a prior on its means and the cluster summed out: each draw's pointwise log-likelihood equals
    log Σ_k π_k N(x_n | μ_k, σ²) computed by hand from the draw and the point values, and LOO runs on it."""
    import arviz as az

    g = torch.Generator().manual_seed(2)
    centres = torch.tensor([[-3.0, 0.0], [3.0, 1.0]])
    x = centres[torch.arange(60) % 2] + torch.randn(60, 2, generator=g)
    decl = declare("prior_mixture", param("mu", "normal", shape=(2, 2), loc=0.0, scale=PRIOR_SCALE),
                   latent("z", "categorical", categories=2), observed("x", "normal", loc="mu[z]", scale=learned()))
    assert mcmc_ready(decl) is None and fits_by("mcmc", decl)
    model, guide, summary = fit(decl, x, tmp_path, num_samples=60, warmup_steps=60, num_chains=1, seed=0)
    idata = declared_inference_data(model, guide, (x,), method="mcmc", run_dir=tmp_path)
    mu = torch.as_tensor(idata.posterior["mu"].values)[0]  # (draw, K, D)
    sorted_means = mu.mean(0)[mu.mean(0)[:, 0].argsort()]
    assert torch.allclose(sorted_means, centres.double(), atol=0.6)
    log_pi = torch.log_softmax(torch.as_tensor(idata.constant_data["z_logits"].values), -1)
    scale = torch.as_tensor(idata.constant_data["x_scale"].values)
    log_lik = torch.as_tensor(idata.log_likelihood["x"].values)[0]
    for d in (0, 17, 59):
        per_component = torch.distributions.Normal(mu[d][:, None], scale).log_prob(x.double()).sum(-1)  # (K, N)
        expected = torch.logsumexp(log_pi[:, None] + per_component, 0)
        torch.testing.assert_close(log_lik[d], expected, rtol=1e-9, atol=1e-9)
    assert math.isfinite(float(az.loo(idata).elpd_loo))


def test_mcmc_is_refused_with_the_reason():
    assert not fits_by("mcmc", examples.poisson_vae, (6,))  # continuous per-item latent
    no_prior = declare("plain_mixture", latent("z", "categorical", categories=2),
                       observed("x", "normal", loc=table("z"), scale=table("z")))
    assert not fits_by("mcmc", no_prior)
    with pytest.raises(ConfigError, match="NUTS samples the globals declared with a prior"):
        fit(no_prior, torch.randn(10, 2), num_samples=4, warmup_steps=1, num_chains=1)


@pytest.mark.slow
def test_cli_fits_a_declared_spec_by_nuts_and_analyses_it(tmp_path):
    spec = tmp_path / "spec.yaml"
    source = (ROOT / "examples" / "declared" / "hierarchical_mixture.yaml").read_text().split("inference:")[0]
    data = ROOT / "examples" / "declared" / "data" / "clusters.npz"
    spec.write_text(source + f"inference:\n  method: mcmc\n  num_samples: 40\n  warmup_steps: 40\n  progress: false\n"
                             f"data:\n  dataset: {data}\noutputs:\n  run_dir: {tmp_path / 'run'}\n")
    for argv in (["fit", str(spec)], ["analyze", str(tmp_path / "run")]):
        done = subprocess.run([sys.executable, "-m", "emvi", *argv], capture_output=True, text=True, timeout=600,
                              cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": ""})
        assert done.returncode == 0, done.stderr
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert '"num_chains": 2' in summary and '"max_r_hat"' in summary
    import arviz as az

    idata = az.from_netcdf(tmp_path / "run" / "inference_data.nc")
    assert idata.posterior["mu"].shape == (2, 40, 3, 2) and "tau" in idata.constant_data
    assert idata.log_likelihood["x"].shape == (2, 40, 100)


@pytest.mark.slow
def test_a_gamma_prior_poisson_mixture_starts_from_separated_components_and_mixes(tmp_path):
    """Globals of every family start distinct (a Gamma prior's rates once all started equal: a symmetric saddle the
    MAP never left, and chains with R-hat 100); from the best of several MAP starts both chains agree and the rates
    are recovered (sorted: labels are arbitrary)."""
    g = torch.Generator().manual_seed(0)
    rates = torch.tensor([1.0, 5.0, 15.0])
    z = torch.randint(0, 3, (300,), generator=g)
    x = torch.poisson(rates[z][:, None].expand(-1, 2), generator=g)
    decl = declare("poisson_mix", param("rate", "gamma", shape=(3, 2), concentration=2.0, rate=0.2),
                   latent("z", "categorical", categories=3), observed("x", "poisson", rate="rate[z]"))
    model, guide, summary = fit(decl, x, tmp_path, num_samples=60, warmup_steps=60, num_chains=2, seed=0)
    assert summary["max_r_hat"] < 1.1 and summary["num_divergent"] == 0
    draws = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["mcmc_samples"]["rate"]  # (chain, draw, 3, 2)
    posterior_rates = draws.mean((0, 1, 3)).sort().values
    assert torch.allclose(posterior_rates.float(), rates, rtol=0.25), posterior_rates
