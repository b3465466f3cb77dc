"""The mixture model fit by EM: exactness against scikit-learn and the lower-bound identities, recovery of known
parameters, the estimator API and bad input."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import GaussianMixture

import emvi  # noqa: F401  (the registry, as a user has it)
from emvi.errors import ConfigError, DataError, EmviError
from emvi.estimators.mixture import Mixture
from emvi.inference.em import fit_em
from emvi.inference.initialization import initialise_mixture, kmeans_plusplus
from emvi.models.mixture import FAMILIES, MixtureConfig, MixtureGuide, MixtureModel
from emvi.plates import data_plate


def gaussian_blobs(n=600, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[-3.0, 0.0, 1.0], [2.0, 2.0, -1.0], [3.0, -3.0, 0.5]])
    scales = np.array([[1.0, 0.5, 0.8], [0.4, 1.2, 0.6], [0.9, 0.9, 1.5]])
    z = rng.integers(0, 3, n)
    x = centres[z] + scales[z] * rng.normal(size=(n, 3))
    x[:, 1] += 0.6 * x[:, 0]  # correlate features so the full covariance matters
    return x


def family_data(family, n=300, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(0, 3, (n,), generator=g)
    if family.startswith("gaussian"):
        return (torch.randn(n, d, generator=g, dtype=torch.float64) + 3 * z[:, None]).double()
    if family == "poisson":
        return torch.poisson((1.0 + 4 * z[:, None]).expand(n, d).double(), generator=g)
    if family == "bernoulli":
        return torch.bernoulli((0.2 + 0.3 * z[:, None]).expand(n, d).double(), generator=g)
    return torch.randint(0, 3, (n, d), generator=g).double()


@pytest.mark.parametrize("covariance_type,family", [("diag", "gaussian-diag"), ("full", "gaussian-full")])
def test_em_equals_sklearn_from_the_same_start(covariance_type, family):
    x = gaussian_blobs()
    xt = torch.as_tensor(x)
    centres = kmeans_plusplus(xt, 3, torch.Generator().manual_seed(1))
    start = MixtureModel(MixtureConfig(num_components=3, family=family), 3, dtype=torch.float64)
    initialise_mixture(start, xt, "kmeans++", torch.Generator(), means_init=centres)
    if family == "gaussian-diag":
        precisions = 1 / start.variances.detach().numpy()
    else:
        tril = start.scale_tril.detach()
        precisions = np.linalg.inv((tril @ tril.transpose(-1, -2)).numpy())
    sk = GaussianMixture(3, covariance_type=covariance_type, tol=1e-9, max_iter=1000, reg_covar=1e-6,
                         weights_init=start.weights.detach().numpy(), means_init=centres.numpy(),
                         precisions_init=precisions).fit(x)
    est = Mixture(3, family, means_init=centres, tol=1e-9, max_iter=1000, floor=1e-6).fit(x)
    assert est.converged_ and sk.converged_
    ours, theirs = est.score(x), sk.score(x)
    assert abs(ours - theirs) <= 1e-4 * abs(theirs)
    # EM creeps along flat directions, so the two stopping points differ slightly in the parameters, not the fit.
    np.testing.assert_allclose(est.predict_proba(x), sk.predict_proba(x), atol=1e-3)
    # Same log-likelihood and the same parameter count give the same information criteria.
    assert est.bic(x) == pytest.approx(sk.bic(x), rel=1e-4)
    assert est.aic(x) == pytest.approx(sk.aic(x), rel=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("map_prior", [False, True])
def test_em_objective_never_decreases(family, map_prior):
    x = family_data(family)
    extra = {"weight_concentration": 2.0, "prior_strength": 5.0} if map_prior else {}
    config = MixtureConfig(num_components=3, family=family, num_categories=3, **extra)
    model = MixtureModel(config, x.shape[1], dtype=torch.float64)
    initialise_mixture(model, x, "random", torch.Generator().manual_seed(0))
    result = fit_em(model, x, max_iter=40, tol=0.0, warn=False)
    history = torch.tensor(result.log_likelihood_history, dtype=torch.float64)
    assert len(history) == 41
    # Exact EM: each M-step can only raise log p(x | θ) + log p(θ); allow float64 round-off only.
    assert (history.diff() >= -1e-9 * history.abs()[1:]).all()
    assert history[-1] > history[0]


def small_poisson():
    x = torch.tensor([[0.0, 3.0], [5.0, 1.0], [2.0, 2.0], [7.0, 0.0], [1.0, 4.0]], dtype=torch.float64)
    model = MixtureModel(MixtureConfig(num_components=3, family="poisson"), 2, dtype=torch.float64)
    model.set_parameter("weights", torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    model.set_parameter("rates", torch.tensor([[1.0, 3.0], [6.0, 0.5], [2.0, 2.0]], dtype=torch.float64))
    return x, model


def elbo_of(model, x, q):
    """E_q[log p(x, z) - log q(z)] by Pyro's TraceEnum_ELBO with a guide enumerating z under q (exact)."""

    def guide(x, num_data=None):
        with data_plate(x, num_data):
            pyro.sample("z", dist.Categorical(q), infer={"enumerate": "parallel"})

    return -TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)


def test_elbo_plus_kl_equals_log_evidence_for_any_q():
    x, model = small_poisson()
    log_evidence = float(model.log_likelihood(x).sum().detach())
    posterior = model.responsibilities(x).detach()
    q = torch.softmax(torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3)), -1)
    kl = float((q * (q.log() - posterior.log())).sum())
    elbo = elbo_of(model, x, q)
    assert kl > 1e-3  # q really differs from the posterior, so the identity is not trivially 0 + log p(x)
    assert elbo + kl == pytest.approx(log_evidence, abs=1e-10)
    # q = the E-step posterior closes the gap: ELBO = log p(x).
    assert elbo_of(model, x, posterior) == pytest.approx(log_evidence, abs=1e-10)
    stats, objective = model.e_step(x)
    assert float(objective) == pytest.approx(log_evidence, abs=1e-10)
    # The model with z enumerated on the model side (empty guide) gives the exact marginal too.
    assert -TraceEnum_ELBO(max_plate_nesting=1).loss(model, MixtureGuide(), x) == pytest.approx(log_evidence, abs=1e-10)


@pytest.mark.parametrize("family", ["gaussian-diag", "poisson", "bernoulli", "categorical"])
def test_e_step_is_pyros_exact_posterior_of_z(family):
    x = family_data(family, n=50)
    model = MixtureModel(MixtureConfig(num_components=3, family=family, num_categories=3), x.shape[1],
                         dtype=torch.float64)
    model.break_symmetry(torch.Generator().manual_seed(0))
    marginals = TraceEnum_ELBO(max_plate_nesting=1).compute_marginals(model, MixtureGuide(), x)
    resp, _ = model.e_step(x)
    torch.testing.assert_close(resp, marginals["z"].probs, rtol=1e-9, atol=1e-12)


def matched(true, fitted):
    """Permute fitted components (rows) to the true ones by the Hungarian assignment on squared distance."""
    cost = ((true[:, None, :] - fitted[None, :, :]) ** 2).sum(-1)
    _, columns = linear_sum_assignment(cost)
    return columns


def test_recovers_simulated_poisson_mixture():
    rng = np.random.default_rng(0)
    n, weights = 6000, np.array([0.5, 0.3, 0.2])
    rates = np.array([[1.0, 8.0, 3.0], [9.0, 1.0, 4.0], [4.0, 4.0, 12.0]])
    z = rng.choice(3, n, p=weights)
    x = rng.poisson(rates[z])
    est = Mixture(3, "poisson", n_init=3, tol=1e-8, max_iter=500, seed=0).fit(x)
    order = matched(rates, est.rates_)
    # Standard errors of the complete-data MLEs; assignment uncertainty inflates them a little, hence 5 SE.
    rate_se = np.sqrt(rates / (n * weights[:, None]))
    assert (np.abs(est.rates_[order] - rates) < 5 * rate_se).all()
    weight_se = np.sqrt(weights * (1 - weights) / n)
    assert (np.abs(est.weights_[order] - weights) < 5 * weight_se).all()


def test_recovers_simulated_bernoulli_mixture():
    rng = np.random.default_rng(1)
    n, d, weights = 4000, 16, np.array([0.4, 0.35, 0.25])
    probs = np.where(rng.random((3, d)) < 0.5, 0.15, 0.85)
    probs[:, :3] = [[0.15, 0.85, 0.85], [0.85, 0.15, 0.85], [0.85, 0.85, 0.15]]  # make the patterns distinct
    z = rng.choice(3, n, p=weights)
    x = (rng.random((n, d)) < probs[z]).astype(float)
    est = Mixture(3, "bernoulli", n_init=2, tol=1e-8, max_iter=500, seed=0).fit(x)
    order = matched(probs, est.probs_)
    probs_se = np.sqrt(probs * (1 - probs) / (n * weights[:, None]))
    assert (np.abs(est.probs_[order] - probs) < 5 * probs_se).all()
    assert (np.abs(est.weights_[order] - weights) < 5 * np.sqrt(weights * (1 - weights) / n)).all()
    # Components this far apart are identified item by item: predict agrees with the truth up to relabelling.
    assert (est.predict(x) == order[z]).mean() > 0.95 or (np.argsort(order)[est.predict(x)] == z).mean() > 0.95


def test_estimator_api_is_consistent():
    x = gaussian_blobs(300)
    est = Mixture(3, "gaussian-diag", n_init=2).fit(x)
    proba = est.predict_proba(x)
    assert proba.shape == (300, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(est.predict(x), proba.argmax(1))
    assert est.score(x) == pytest.approx(est.score_samples(x).mean(), rel=1e-12)
    assert est.lower_bound_ == pytest.approx(est.score(x), abs=1e-2)  # tol=1e-3: the last E-step is that close
    n, p = 300, 3 - 1 + 3 * 2 * 3
    assert est.bic(x) == pytest.approx(-2 * est.score(x) * n + p * math.log(n), rel=1e-12)
    assert est.aic(x) == pytest.approx(-2 * est.score(x) * n + 2 * p, rel=1e-12)
    assert est.converged_ and est.n_iter_ >= 1 and "converged" in est.convergence_report()
    samples, labels = est.sample(20000)
    assert samples.shape == (20000, 3) and labels.shape == (20000,)
    # Sampled labels follow the weights: binomial standard error sqrt(w (1 - w) / n), 5 SE.
    freq = np.bincount(labels, minlength=3) / 20000
    assert (np.abs(freq - est.weights_) < 5 * np.sqrt(est.weights_ * (1 - est.weights_) / 20000)).all()


def test_n_init_keeps_the_best_start():
    x = family_data("poisson", n=200, d=2, seed=4).numpy()
    single = Mixture(4, "poisson", init="random", n_init=1, seed=7, max_iter=300).fit(x)
    best = Mixture(4, "poisson", init="random", n_init=5, seed=7, max_iter=300).fit(x)
    # The first of the five starts is the single start (same generator), so the best can only be as good or better.
    assert best.lower_bound_ >= single.lower_bound_ - 1e-12


def test_map_prior_keeps_components_alive():
    # Two identical points per component and K = N / 2: maximum likelihood would collapse Gaussian variances onto the
    # floor; a Dirichlet(α > 1) weight prior keeps every weight at least (α - 1) / (N + K (α - 1)).
    x = family_data("bernoulli", n=40, d=3, seed=2)
    est = Mixture(6, "bernoulli", weight_concentration=3.0, prior_strength=2.0, max_iter=200).fit(x)
    assert est.weights_.min() >= (3.0 - 1) / (40 + 6 * 2.0) - 1e-12
    assert (est.probs_ > 0).all() and (est.probs_ < 1).all()


@pytest.mark.parametrize(
    "family,data,match",
    [
        ("gaussian-diag", [[1.0, float("nan")], [0.0, 1.0], [2.0, 2.0]], "NaN"),
        ("gaussian-diag", [1.0, 2.0, 3.0], "2-D"),
        ("gaussian-diag", np.zeros((3, 2, 2)), "2-D"),
        ("gaussian-diag", np.zeros((0, 2)), "empty"),
        ("poisson", [[1.0, -1.0], [0.0, 1.0], [2.0, 2.0]], "non-negative integer"),
        ("poisson", [[1.5, 1.0], [0.0, 1.0], [2.0, 2.0]], "non-negative integer"),
        ("bernoulli", [[1.0, 0.5], [0.0, 1.0], [1.0, 1.0]], "binary"),
        ("categorical", [[0.0, 5.0], [0.0, 1.0], [1.0, 1.0]], "num_categories"),
        ("gaussian-diag", [[0.0, 1.0], [1.0, 2.0]], "exceeds the number of items"),
        ("gaussian-diag", np.array([["a", "b"], ["c", "d"], ["e", "f"]]), "numeric"),
        ("gaussian-diag", np.ones((3, 2), dtype=complex), "real"),
    ],
)
def test_bad_input_raises_emvi_error(family, data, match):
    with pytest.raises(DataError, match=match) as info:
        Mixture(3, family).fit(np.asarray(data))
    message = str(info.value)
    assert "\n" not in message and len(message) < 200


@pytest.mark.parametrize(
    "kwargs,match",
    [({"family": "gamma"}, "family"), ({"num_components": 0}, "num_components"), ({"method": "gibbs"}, "method"),
     ({"init": "kmeans"}, "init"), ({"floor": 0.0}, "floor"), ({"weight_concentration": 0.5}, "weight_concentration"),
     ({"tol": -1.0}, "tol")],
)
def test_bad_configuration_raises_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Mixture(**{"num_components": 2, **kwargs}).fit(gaussian_blobs(40))  # fit checks, as scikit-learn's


def test_fitted_estimator_rejects_wrong_width_and_unfitted_use():
    x = gaussian_blobs(60)
    with pytest.raises(EmviError, match="not fitted"):
        Mixture(2).predict(x)
    est = Mixture(2).fit(x)
    with pytest.raises(DataError, match="features"):
        est.predict(x[:, :2])


def test_mcmc_is_rejected_for_full_covariance():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match="gaussian-full"):
            Mixture(2, "gaussian-full", method="mcmc", num_samples=4, warmup_steps=2, num_chains=1, max_iter=2).fit(gaussian_blobs(40))


def test_initialisation_is_seeded_and_picks_distinct_data_points():
    from emvi.inference.initialization import initial_centres

    x = torch.as_tensor(gaussian_blobs(200))
    for method in ("kmeans++", "random"):
        a = initial_centres(x, 3, method, torch.Generator().manual_seed(5))
        b = initial_centres(x, 3, method, torch.Generator().manual_seed(5))
        torch.testing.assert_close(a, b)
        # every centre is a row of x, and the three rows differ
        assert all(((x - c).abs().sum(-1) == 0).any() for c in a)
        assert torch.unique(a, dim=0).shape[0] == 3
    with pytest.raises(ConfigError, match="init"):
        initial_centres(x, 3, "kmeans", torch.Generator())


def test_kmeans_plusplus_spreads_centres_over_separated_clusters():
    # Three tight clusters 100 apart: greedy k-means++ puts one centre in each (a random subsample often would not).
    g = torch.Generator().manual_seed(0)
    centres_true = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]], dtype=torch.float64)
    x = (centres_true.repeat_interleave(50, 0) + 0.1 * torch.randn(150, 2, generator=g, dtype=torch.float64))
    for seed in range(5):
        centres = kmeans_plusplus(x, 3, torch.Generator().manual_seed(seed))
        nearest = torch.cdist(centres, centres_true).argmin(-1)
        assert sorted(nearest.tolist()) == [0, 1, 2]


def test_cached_statistics_follow_in_place_changes_of_the_data():
    x, model = small_poisson()
    before = model.log_likelihood(x).detach().clone()
    x[0, 0] += 3.0  # same tensor object, new version: the E-step must not reuse the old T(x)
    after = model.log_likelihood(x).detach()
    fresh = model.log_likelihood(x.clone()).detach()
    torch.testing.assert_close(after, fresh)
    assert not torch.equal(before, after)
