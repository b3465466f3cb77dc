"""The same mixture model fit by SVI (TraceEnum_ELBO through the runner) and NUTS, and the registry hooks."""

import warnings

import numpy as np
import pytest
import torch

import emvi  # noqa: F401
from emvi.catalog.mixture import build_mixture, evaluate_mixture, sample_mixture
from emvi.data import DataInfo
from emvi.estimators.mixture import Mixture
from emvi.inference.em import ConvergenceWarning, EMConfig
from emvi.inference.mcmc import fit_mcmc
from emvi.inference.methods import get_method
from emvi.models.mixture import MixtureConfig
from emvi.registry import get_model
from emvi.rundir import RunDirectory


def counts(n=240, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.choice(2, n, p=[0.6, 0.4])
    return rng.poisson(np.array([[1.0, 6.0], [7.0, 2.0]])[z]).astype(float)


def test_svi_reaches_the_em_optimum():
    x = counts()
    em = Mixture(2, "poisson", tol=1e-8, max_iter=500).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svi = Mixture(2, "poisson", method="svi", svi_steps="adam", max_iter=150, learning_rate=0.05).fit(x)
    # Gradient ascent on the same exact marginal: it cannot beat EM's maximum and gets within 1e-3 nats/item of it.
    assert svi.score(x) <= em.score(x) + 1e-9
    assert svi.score(x) >= em.score(x) - 1e-3
    assert svi.history_[-1]["log_likelihood"] > svi.history_[0]["log_likelihood"]


def test_svi_minibatches_scale_to_the_full_data():
    x = counts(n=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svi = Mixture(2, "poisson", method="svi", svi_steps="adam", max_iter=8, batch_size=50,
                      learning_rate=0.05).fit(x)
    em = Mixture(2, "poisson", tol=1e-8).fit(x)
    # Plate subsampling scales each batch by N / batch, so the epoch loss estimates the full negative marginal.
    assert abs(svi.history_[-1]["log_likelihood"] - svi.score(x)) < 0.1
    assert svi.score(x) >= em.score(x) - 0.05


@pytest.mark.parametrize("family", ["gaussian-diag", "poisson", "bernoulli", "categorical"])
def test_full_batch_natural_gradient_svi_retraces_em(family):
    # With step 1 on the full batch, a natural-gradient step on the ELBO is the EM update (MAP priors included), so
    # the two objective trajectories agree step for step.
    g = torch.Generator().manual_seed(0)
    z = torch.randint(0, 3, (200,), generator=g)
    x = {"gaussian-diag": torch.randn(200, 3, generator=g, dtype=torch.float64) + 2 * z[:, None],
         "poisson": torch.poisson((1.0 + 3 * z[:, None]).expand(200, 3).double(), generator=g),
         "bernoulli": torch.bernoulli((0.2 + 0.3 * z[:, None]).expand(200, 3).double(), generator=g),
         "categorical": torch.randint(0, 3, (200, 3), generator=g).double()}[family]
    options = dict(num_categories=3, weight_concentration=2.0, prior_strength=1.5, max_iter=12, epochs=12, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        em = Mixture(3, family, **options).fit(x)
        svi = Mixture(3, family, method="svi", **options).fit(x)
    em_curve = [h["log_likelihood"] for h in em.history_[:12]]
    svi_curve = [h["log_likelihood"] for h in svi.history_]
    np.testing.assert_allclose(svi_curve, em_curve, rtol=1e-9)
    np.testing.assert_allclose(svi.weights_, em.weights_, rtol=1e-6)


def test_minibatch_natural_gradient_svi_approaches_the_optimum():
    x = counts(n=2000, seed=3)
    em = Mixture(2, "poisson", tol=1e-8).fit(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svi = Mixture(2, "poisson", method="svi", max_iter=5, batch_size=100, seed=1).fit(x)
    assert em.score(x) - 5e-3 <= svi.score(x) <= em.score(x) + 1e-9


@pytest.mark.slow
def test_nuts_on_the_collapsed_model():
    x = counts(n=150, seed=1)
    est = Mixture(2, "poisson", method="mcmc", num_samples=100, warmup_steps=100, num_chains=1, seed=0).fit(x)
    draws = est.mcmc_.samples
    assert draws["rates"].shape == (1, 100, 2, 2) and draws["weights"].shape == (1, 100, 2)
    assert "z" not in draws  # the assignments are summed out, never sampled
    torch.testing.assert_close(draws["weights"].sum(-1), torch.ones(1, 100, dtype=draws["weights"].dtype))
    em = Mixture(2, "poisson", tol=1e-8).fit(x)
    order = np.argsort(est.rates_[:, 0])
    em_order = np.argsort(em.rates_[:, 0])
    # With 150 items the posterior mean sits near the MLE: within 3 posterior standard deviations.
    sd = draws["rates"].flatten(0, 1).std(0).numpy()
    assert (np.abs(est.rates_[order] - em.rates_[em_order]) < 3 * sd[order]).all()
    assert est.mcmc_.num_divergent <= 3


def test_fit_mcmc_rejects_bad_settings():
    model, _ = build_mixture(MixtureConfig(num_components=2, family="poisson"), DataInfo(10, (2,)))
    with pytest.raises(emvi.errors.ConfigError):
        fit_mcmc(model, torch.zeros(10, 2), num_samples=0)


def test_registry_entry_and_hooks_round_trip(tmp_path):
    entry = get_model("mixture")
    assert entry.default_method == "em" and entry.elbo == "enum" and entry.max_plate_nesting == 1
    assert entry.inference_data is not None
    assert entry.config_class.cli_aliases == {"num_components": ("-k",)}
    x = torch.as_tensor(counts(), dtype=torch.float32)
    config = MixtureConfig(num_components=2, family="poisson")
    model, guide = entry.build(config, DataInfo(len(x), (2,)))
    assert all(get_method(name).why_not(model, guide) is None for name in ("svi", "em", "mcmc"))
    run = RunDirectory(tmp_path)
    em = get_method("em")
    result = em.fit(model, guide, x, EMConfig(max_iter=100, tol=1e-3, n_init=2, progress=False), run=run)
    summary = result.summary()
    assert summary["converged"] and result.history[0]["epoch"] == 0 and "train_loss" in result.history[0]
    again, guide = entry.build(config, DataInfo(len(x), (2,)))
    em.load(again, guide, run, "cpu")
    metrics = evaluate_mixture(again, guide, x)
    assert metrics["log_likelihood_per_item"] == pytest.approx(summary["log_likelihood_per_item"], rel=1e-12)
    samples = sample_mixture(again, guide, 7)
    assert samples.shape == (7, 2) and (samples >= 0).all() and (samples == samples.round()).all()
