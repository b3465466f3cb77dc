"""The tied and spherical Gaussian mixtures: their densities equal scipy's, the enumerated ELBO (value and gradient)
equals the hand-written log-likelihood, the chunked statistics equal the explicit sums, the closed-form M-steps
equal scikit-learn's formulas written out in numpy, EM never decreases the likelihood; the precision conversions
invert each other; Lloyd's k-means finds scikit-learn's partition of separated clusters."""

import numpy as np
import pyro
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.cluster import KMeans

from emvi.inference.em import fit_em
from emvi.inference.initialization import initialise_mixture, lloyd_kmeans
from emvi.models.mixture import MixtureConfig, MixtureGuide, MixtureModel
from emvi.models.mixture_covariances import (
    GAUSSIAN_FAMILIES,
    covariance_from_precisions,
    covariance_matrices,
    precision_cholesky,
)

NEW_FAMILIES = ("gaussian-tied", "gaussian-spherical")


def blobs(n=240, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(0, 3, (n,), generator=g)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * (0.5 + 0.5 * z[:, None]) + 4.0 * z[:, None] + 1.0


def fitted(family, x, steps=3):
    model = MixtureModel(MixtureConfig(num_components=3, family=family, floor=1e-6), x.shape[1], dtype=torch.float64)
    initialise_mixture(model, x, "random", torch.Generator().manual_seed(0))
    fit_em(model, x, max_iter=steps, tol=0.0, warn=False)  # responsibilities away from hard 0/1
    return model


def component_covariances(model) -> np.ndarray:
    """``(K, D, D)`` covariance matrices, whatever the family."""
    family, k, d = model.config.family, model.config.num_components, model.num_features
    value = covariance_matrices(family, getattr(model, model.parameter_names()[2]).detach()).numpy()
    if family == "gaussian-tied":
        return np.broadcast_to(value, (k, d, d))
    if family == "gaussian-spherical":
        return value[:, None, None] * np.eye(d)
    if family == "gaussian-diag":
        return value[:, :, None] * np.eye(d)
    return value


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_log_likelihood_equals_scipy_mixture_density(family):
    x = blobs()
    model = fitted(family, x)
    weights, means = model.weights.detach().numpy(), model.means.detach().numpy()
    expected = np.log(sum(w * multivariate_normal(m, c).pdf(x.numpy())
                          for w, m, c in zip(weights, means, component_covariances(model), strict=True)))
    np.testing.assert_allclose(model.log_likelihood(x).detach().numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_enumerated_elbo_value_and_gradient_equal_the_log_likelihood(family):
    # The guide is empty and z enumerated, so -ELBO is -Σ log p(x_n) exactly (flat prior): value and gradient.
    x = blobs(n=60)
    model = fitted(family, x)
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.differentiable_loss(model, MixtureGuide(), x)
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params)
    weights, means = model.weights, model.means
    if family == "gaussian-tied":
        components = torch.distributions.MultivariateNormal(means, scale_tril=model.scale_tril.expand(3, 3, 3))
    else:
        components = torch.distributions.Independent(torch.distributions.Normal(means, model.variances.sqrt()[:, None]), 1)
    expected = -torch.logsumexp(weights.log() + components.log_prob(x[:, None]), -1).sum()
    expected_grads = torch.autograd.grad(expected, params)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("family", NEW_FAMILIES)
@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
def test_chunked_m_step_equals_scikit_learns_formulas(family, chunk_size):
    x = blobs(n=250)
    model = fitted(family, x)
    resp = model.e_step(x)[0].numpy()
    xn = x.numpy()
    counts = resp.sum(0)
    means = resp.T @ xn / counts[:, None]
    if family == "gaussian-tied":  # (Xᵀ X - Σ_k N_k μ_k μ_kᵀ) / N + ε I, rows of resp summing to 1
        covariance = (xn.T @ xn - (counts[:, None] * means).T @ means) / counts.sum() + 1e-6 * np.eye(3)
    else:  # the diag variances averaged over the features
        covariance = (resp.T @ xn**2 / counts[:, None] - means**2 + 1e-6).mean(1)
    model.m_step(model.expected_statistics(x, chunk_size=chunk_size)[0], x)
    np.testing.assert_allclose(model.weights.detach().numpy(), counts / len(xn), rtol=1e-12)
    np.testing.assert_allclose(model.means.detach().numpy(), means, rtol=1e-11)
    name = model.parameter_names()[2]
    stored = covariance_matrices(family, getattr(model, name).detach()).numpy()
    np.testing.assert_allclose(stored, covariance, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_m_step_from_responsibilities_equals_m_step_from_chunked_statistics(family):
    x = blobs(n=301)
    model = fitted(family, x)
    twin = MixtureModel(model.config, x.shape[1], dtype=torch.float64)
    twin.load_state_dict(model.state_dict())
    twin.m_step(twin.e_step(x)[0], x)
    model.m_step(model.expected_statistics(x, chunk_size=16)[0], x)
    for name in model.parameter_names():
        torch.testing.assert_close(getattr(model, name), getattr(twin, name), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_em_log_likelihood_never_decreases(family):
    x = blobs(n=400)
    model = MixtureModel(MixtureConfig(num_components=3, family=family), x.shape[1], dtype=torch.float64)
    initialise_mixture(model, x, "random", torch.Generator().manual_seed(1))
    history = torch.tensor(fit_em(model, x, max_iter=40, tol=0.0, warn=False).log_likelihood_history)
    assert (history.diff() >= -1e-9 * history.abs()[1:]).all()
    assert history[-1] > history[0]


@pytest.mark.parametrize("family", GAUSSIAN_FAMILIES)
def test_precision_conversions_invert_each_other(family):
    model = fitted(family, blobs())
    stored = getattr(model, model.parameter_names()[2]).detach()
    upper = precision_cholesky(family, stored)
    if family in ("gaussian-full", "gaussian-tied"):
        precisions = upper @ upper.mT
        torch.testing.assert_close(precisions @ covariance_matrices(family, stored),
                                   torch.eye(3, dtype=torch.float64).expand_as(precisions), rtol=0, atol=1e-12)
        assert torch.equal(upper, upper.triu())  # scikit-learn's precisions_cholesky_ is upper triangular
    else:
        precisions = upper.square()
    torch.testing.assert_close(covariance_from_precisions(family, precisions), stored, rtol=1e-12, atol=1e-14)


def test_lloyd_kmeans_finds_scikit_learns_partition_of_separated_clusters():
    x = blobs(n=300, seed=3)
    ours = lloyd_kmeans(x, 3, torch.Generator().manual_seed(0)).numpy()
    theirs = KMeans(3, n_init=1, random_state=0).fit(x.numpy()).labels_
    # the same partition up to the names of the clusters
    assert len({(a, b) for a, b in zip(ours, theirs, strict=True)}) == 3
    centres = np.stack([x.numpy()[ours == k].mean(0) for k in range(3)])
    nearest = ((x.numpy()[:, None] - centres) ** 2).sum(-1).argmin(1)
    assert (nearest == ours).all()  # a fixed point of Lloyd's iteration


@pytest.mark.parametrize("family, shape", [("gaussian-tied", (3, 3)), ("gaussian-spherical", (3,))])
def test_mixture_estimator_fits_the_new_families_by_em(family, shape):
    from emvi.estimators import Mixture

    x = blobs(n=300).numpy()
    fitted = Mixture(3, family, max_iter=200, tol=1e-8).fit(x)
    history = np.array([h["log_likelihood"] for h in fitted.history_])
    assert fitted.converged_ and fitted.covariances_.shape == shape
    assert (np.diff(history) >= -1e-12 * np.abs(history[1:])).all()
    assert fitted.score(x) == pytest.approx(fitted.lower_bound_, rel=1e-12)  # the objective is the log-likelihood
