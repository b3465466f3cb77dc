"""Probabilistic PCA and factor analysis: closed forms against scikit-learn, monotone EM, the exact guide closes the
ELBO gap, and SVI's amortised guide leaves one."""

import math

import numpy as np
import pyro
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis

import emvi  # noqa: F401
from emvi.errors import DataError
from emvi.estimators.ppca import PPCA, FactorAnalysis
from emvi.inference.em import fit_em
from emvi.inference.likelihood import estimate_log_likelihood
from emvi.guides.linear_gaussian import ExactPosteriorGuide, LinearGaussianGuide
from emvi.inference.elbo import make_elbo
from emvi.inference.likelihood import log_importance_weights
from emvi.models.ppca import (
    FactorAnalysisConfig,
    LinearGaussianModel,
    PPCAConfig,
    closed_form_elbo,
)


@pytest.fixture(scope="module")
def digits():
    x = load_digits().data[:400].astype(np.float64) / 16
    return x[:, x.std(0) > 0.05]  # drop (nearly) constant pixels, whose ML variance collapses to the floor


def _model_from(config, x, weight, noise, mean):
    model = LinearGaussianModel(config, x.shape[1], dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(weight))
        model.mean.copy_(torch.as_tensor(mean))
        model.log_noise.copy_(torch.as_tensor(noise).log().reshape(model.log_noise.shape))
    return model


@pytest.mark.parametrize("latent_dim", [2, 5])
def test_marginal_likelihood_equals_sklearn_pca_score(digits, latent_dim):
    pca = PCA(latent_dim).fit(digits)
    # scikit-learn's PPCA covariance: Wᵀ diag(λ - σ²) W + σ² I with W its components.
    weight = pca.components_.T * np.sqrt(np.maximum(pca.explained_variance_ - pca.noise_variance_, 0.0))
    model = _model_from(PPCAConfig(latent_dim=latent_dim), digits, weight, pca.noise_variance_, pca.mean_)
    ours = float(model.log_likelihood(torch.as_tensor(digits)).detach().mean())
    assert ours == pytest.approx(pca.score(digits), rel=1e-6)


@pytest.mark.parametrize("latent_dim", [2, 5])
def test_marginal_likelihood_equals_sklearn_factor_analysis_score(digits, latent_dim):
    fa = SklearnFactorAnalysis(latent_dim, random_state=0).fit(digits)
    model = _model_from(FactorAnalysisConfig(latent_dim=latent_dim), digits, fa.components_.T, fa.noise_variance_,
                        fa.mean_)
    ours = float(model.log_likelihood(torch.as_tensor(digits)).detach().mean())
    assert ours == pytest.approx(fa.score(digits), rel=1e-6)


def test_ppca_em_reaches_the_closed_form_optimum(digits):
    """The PPCA maximum-likelihood solution is PCA of the (biased, 1/N) sample covariance (Tipping & Bishop)."""
    q = 3
    estimator = PPCA(q, tol=1e-10, max_iter=5000).fit(torch.as_tensor(digits))
    centred = digits - digits.mean(0)
    eigenvalues = np.sort(np.linalg.eigvalsh(centred.T @ centred / len(digits)))[::-1]
    sigma2 = eigenvalues[q:].mean()
    d = digits.shape[1]
    # log-likelihood at the optimum: -N/2 [D log 2π + Σ_{i<=q} log λ_i + (D - q) log σ² + D]
    optimum = -0.5 * (d * math.log(2 * math.pi) + np.log(eigenvalues[:q]).sum() + (d - q) * math.log(sigma2) + d)
    assert estimator.converged_
    assert estimator.score(torch.as_tensor(digits)) == pytest.approx(optimum, rel=1e-6)
    assert float(estimator.noise_variance_) == pytest.approx(sigma2, rel=1e-4)


def test_factor_analysis_em_reaches_sklearn_optimum_and_is_monotone(digits):
    x = torch.as_tensor(digits)
    model = LinearGaussianModel(FactorAnalysisConfig(latent_dim=3), x.shape[1], dtype=torch.float64)
    model.initialise(x, torch.Generator().manual_seed(0))
    result = fit_em(model, x, max_iter=3000, tol=1e-10, warn=False)
    history = np.array(result.log_likelihood_history)
    assert (np.diff(history) >= -1e-9 * np.abs(history[1:])).all()
    sklearn_score = SklearnFactorAnalysis(3, tol=1e-8, max_iter=10000, random_state=0).fit(digits).score(digits)
    assert result.log_likelihood / len(x) >= sklearn_score - 1e-4 * abs(sklearn_score)


def test_exact_posterior_guide_closes_the_gap_and_amortised_guide_leaves_one(digits):
    x = torch.as_tensor(digits)
    estimator = PPCA(2, method="svi", epochs=10, batch_size=100, learning_rate=1e-2).fit(x)
    model = estimator.model_
    pyro.set_rng_seed(0)
    exact_guide = estimate_log_likelihood(model, ExactPosteriorGuide(model), x[:50], num_samples=20, prior=False)
    exact = model.log_likelihood(x[:50]).detach()
    torch.testing.assert_close(exact_guide.elbo.double(), exact, rtol=1e-9, atol=1e-9)
    amortised = estimate_log_likelihood(model, estimator.guide_, x[:50], num_samples=2000, prior=False)
    # ELBO(q) = log p(x) - KL(q || p(z|x)) < log p(x); the importance estimate sits in between, close to exact.
    assert float(amortised.elbo.mean()) < float(exact.mean())
    assert float(amortised.elbo.mean()) < float(amortised.importance.mean()) <= float(exact.mean()) + 0.01
    assert estimator.elbo_gap_ > 0


def test_svi_and_em_agree_on_the_likelihood_scale(digits):
    x = torch.as_tensor(digits)
    em = PPCA(2).fit(x)
    svi = PPCA(2, method="svi", guide="linear-full", epochs=30, batch_size=100, learning_rate=2e-2).fit(x)
    assert svi.score(x) <= em.score(x) + 1e-6  # EM's fixed point is the maximum
    assert svi.score(x) > em.score(x) - 0.1 * abs(em.score(x))


def test_estimator_surface(digits):
    x = torch.as_tensor(digits)
    fa = FactorAnalysis(2, max_iter=50, tol=1e-4).fit(x)
    assert fa.transform(x).shape == (len(x), 2)
    assert fa.components_.shape == (2, x.shape[1]) and fa.noise_variance_.shape == (x.shape[1],)
    assert fa.sample(7).shape == (7, x.shape[1])
    assert fa.bic(x) > fa.aic(x)  # log N > 2
    assert fa.score_samples(x).shape == (len(x),)


@pytest.mark.parametrize("bad,message", [
    (torch.tensor([[1.0, float("nan"), 2.0]] * 5), "NaN"),
    (torch.zeros(5), "2-D"),
    (torch.zeros(1, 4), "at least 2 items"),
    (torch.zeros(6, 2), "below the number of features"),
])
def test_bad_input(bad, message):
    with pytest.raises(DataError, match=message):
        PPCA(2).fit(bad)


def _random_model(config, d=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    model = LinearGaussianModel(config, d, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.randn(d, config.latent_dim, generator=generator, dtype=torch.float64))
        model.mean.copy_(torch.randn(d, generator=generator, dtype=torch.float64))
        model.log_noise.copy_(0.3 * torch.randn(model.log_noise.shape, generator=generator, dtype=torch.float64))
    x = model.sample(25)
    return model, x


@pytest.mark.parametrize("config", [PPCAConfig(latent_dim=2), FactorAnalysisConfig(latent_dim=3)])
def test_closed_form_elbo_is_log_likelihood_minus_kl(config):
    """ELBO(q) = log p(x) - KL(q || p(z | x)) for any Gaussian q, with the KL from torch's own formula."""
    model, x = _random_model(config)
    q = config.latent_dim
    generator = torch.Generator().manual_seed(1)
    loc = torch.randn(len(x), q, generator=generator, dtype=torch.float64)
    factor = torch.randn(q, q, generator=generator, dtype=torch.float64)
    covariance = factor @ factor.T + 0.1 * torch.eye(q, dtype=torch.float64)
    with torch.no_grad():
        elbo = model.gaussian_elbo(x, loc, covariance)
        kl = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(loc, covariance),
                                               model.posterior(x))
        exact = model.log_likelihood(x)
        posterior_loc, posterior_cov = model.posterior_moments(x)
        torch.testing.assert_close(elbo, exact - kl, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(model.gaussian_elbo(x, posterior_loc, posterior_cov), exact, rtol=1e-10, atol=1e-10)
    assert (kl > 0).all()


def test_posterior_is_bayes_rule_on_the_joint_gaussian():
    """p(z | x) from the joint Gaussian of (z, x): mean Wᵀ C⁻¹ (x - μ), covariance I - Wᵀ C⁻¹ W."""
    model, x = _random_model(FactorAnalysisConfig(latent_dim=2))
    with torch.no_grad():
        loc, covariance = model.posterior_moments(x)
        gain = torch.linalg.solve(model.covariance(), model.weight).T  # Wᵀ C⁻¹  (q, D)
        torch.testing.assert_close(loc, (x - model.mean) @ gain.T, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(covariance, torch.eye(2, dtype=torch.float64) - gain @ model.weight,
                                   rtol=1e-10, atol=1e-10)


def test_monte_carlo_elbo_of_linear_guide_matches_closed_form():
    """The guide-sampled ELBO (what SVI optimises) is unbiased for the closed form: within 5 standard errors."""
    model, x = _random_model(FactorAnalysisConfig(latent_dim=2))
    guide = LinearGaussianGuide(x.shape[1], 2).double()
    pyro.set_rng_seed(0)
    with torch.no_grad():
        log_w = log_importance_weights(model, guide, x, 4000)  # (K, N)
        closed = closed_form_elbo(model, guide, x)
    standard_error = log_w.std(0) / math.sqrt(log_w.shape[0])
    assert ((log_w.mean(0) - closed).abs() <= 5 * standard_error).all()
    assert (closed < model.log_likelihood(x).detach()).all()


def test_exact_guide_makes_every_single_sample_elbo_the_log_likelihood():
    """log p(x, z) - log p(z | x) = log p(x) for every z: the runner's ELBO loss is -log p(x), with zero variance."""
    model, x = _random_model(PPCAConfig(latent_dim=2))
    guide = ExactPosteriorGuide(model)
    pyro.set_rng_seed(0)
    loss = make_elbo("trace").differentiable_loss(model, guide, x[:10], num_data=len(x))
    exact = model.log_likelihood(x[:10]).sum() * len(x) / 10  # the plate scales the mini-batch to the full data
    torch.testing.assert_close(loss, -exact, rtol=1e-10, atol=1e-8)
    # and its gradient is the log-likelihood's: SVI with this guide is gradient ascent on log p(x)
    grad_elbo = torch.autograd.grad(loss, model.weight)[0]
    grad_exact = torch.autograd.grad(-exact, model.weight)[0]
    torch.testing.assert_close(grad_elbo, grad_exact, rtol=1e-8, atol=1e-8)


def test_mean_field_gap_at_its_optimum():
    """Best diagonal q for KL(q || p): exact mean, variances 1 / diag(M); gap = ½ (Σ log M_ii - log det M)."""
    model, x = _random_model(PPCAConfig(latent_dim=3))
    with torch.no_grad():
        loc, covariance = model.posterior_moments(x)
        precision = torch.linalg.inv(covariance)
        best = torch.diag(1 / torch.diagonal(precision))
        gap = model.log_likelihood(x) - model.gaussian_elbo(x, loc, best)
        expected = 0.5 * (torch.diagonal(precision).log().sum() - torch.logdet(precision))
        torch.testing.assert_close(gap, expected.expand_as(gap), rtol=1e-9, atol=1e-10)
        for factor in (0.8, 1.25):  # any other diagonal does worse
            assert (model.log_likelihood(x) - model.gaussian_elbo(x, loc, best * factor) > gap).all()
