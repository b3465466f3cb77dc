"""The Gaussian mixture's E-step data for a whole EM fit (``em_constants``: the items cast once to the product dtype):
the E-step that reads them gives the chunked E-step's statistics and log-likelihood for every covariance type and
chunk size; :func:`fit_em` prepares them once and, from the same start, repeats scikit-learn's EM iterations (float64)
and ends where the fit that casts every chunk ends (float32 products)."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from toy_models import GAUSSIANS, correlated_blobs
from toy_models import started_mixture as started

from emvi.inference.em import fit_em
from emvi.models.mixture import MixtureConfig, MixtureModel
from emvi.models.mixture_covariances import covariance_matrices, precision_cholesky


def blobs(n=503, d=4, seed=0):
    """Three correlated clusters; 503 rows leave ragged last chunks for every chunk size below."""
    return correlated_blobs(n, d, seed)




def sklearn_start(model):
    """scikit-learn's ``weights_init``, ``means_init``, ``precisions_init`` of ``model``'s parameters."""
    family = model.config.family
    scatter = family in ("gaussian-full", "gaussian-tied")
    upper = precision_cholesky(family, (model.scale_tril if scatter else model.variances).detach())
    precisions = upper @ upper.mT if scatter else upper**2
    return dict(weights_init=model.weights.detach().numpy(), means_init=model.means.detach().numpy(),
                precisions_init=precisions.numpy())


@pytest.mark.parametrize("family", GAUSSIANS)
@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
def test_statistics_from_the_cast_data_equal_the_chunked_ones(family, chunk_size):
    x = blobs()
    model = started(family, x, product_dtype=torch.float32)
    constants = model.em_constants(x)
    assert constants.dtype == torch.float32 and constants.shape == x.shape
    want, want_objective = model.expected_statistics(x, chunk_size=chunk_size)
    got, got_objective = model.expected_statistics(x, chunk_size=chunk_size, constants=constants)
    # The same products of the same float32 numbers: casting once or chunk by chunk rounds identically.
    assert float(got_objective) == pytest.approx(float(want_objective), rel=1e-12)
    assert got.counts.dtype == got.sums.dtype == torch.float64  # the sums still add up in float64
    torch.testing.assert_close(got.counts, want.counts, rtol=1e-12, atol=0)
    torch.testing.assert_close(got.sums, want.sums, rtol=1e-12, atol=1e-12 * float(want.sums.abs().max()))
    if want.scatter is not None:
        torch.testing.assert_close(got.scatter, want.scatter, rtol=1e-12,
                                   atol=1e-12 * float(want.scatter.abs().max()))


@pytest.mark.parametrize("family", ["gaussian-diag", "gaussian-full", "poisson", "bernoulli"])
def test_nothing_is_prepared_without_a_product_dtype_or_for_other_families(family):
    x = blobs().abs().round() if family == "poisson" else (blobs() > 4).double() if family == "bernoulli" else blobs()
    product_dtype = torch.float32 if family in ("poisson", "bernoulli") else None
    model = MixtureModel(MixtureConfig(num_components=3, family=family), x.shape[1], dtype=torch.float64,
                         product_dtype=product_dtype)
    assert model.em_constants(x) is None  # float64 data in float64 products, or a family without products to cast


@pytest.mark.parametrize("family", GAUSSIANS)
def test_fit_em_with_its_constants_repeats_scikit_learns_iterations(family):
    x = blobs()
    model = started(family, x, steps=0)
    sk = GaussianMixture(3, covariance_type=family.removeprefix("gaussian-"), reg_covar=1e-6, max_iter=8, tol=0.0,
                         **sklearn_start(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(x.numpy())
    result = fit_em(model, x, max_iter=8, tol=0.0, warn=False)
    # scikit-learn's lower bound is the mean log-likelihood before its last M-step: EM's 8th objective.
    np.testing.assert_allclose(result.log_likelihood_history[7] / len(x), sk.lower_bound_, rtol=1e-11)
    np.testing.assert_allclose(model.weights.detach().numpy(), sk.weights_, rtol=1e-9)
    np.testing.assert_allclose(model.means.detach().numpy(), sk.means_, rtol=1e-9, atol=1e-10)
    covariance = model.scale_tril if family in ("gaussian-full", "gaussian-tied") else model.variances
    np.testing.assert_allclose(covariance_matrices(family, covariance.detach()).numpy(), sk.covariances_, rtol=1e-8,
                               atol=1e-10)
    history = torch.tensor(result.log_likelihood_history)
    assert (history.diff() >= -1e-12 * history.abs()[1:]).all()  # EM never decreases the log-likelihood


@pytest.mark.parametrize("family", GAUSSIANS)
def test_fit_prepares_the_constants_once_and_ends_where_the_fit_without_them_ends(family, monkeypatch):
    x = blobs()
    with_constants, without = (started(family, x, steps=0, product_dtype=torch.float32) for _ in range(2))
    calls = []
    prepare = with_constants.em_constants
    monkeypatch.setattr(with_constants, "em_constants", lambda data: calls.append(1) or prepare(data))
    history = fit_em(with_constants, x, max_iter=10, tol=0.0, warn=False).log_likelihood_history
    assert len(calls) == 1
    monkeypatch.setattr(without, "em_constants", lambda data: None)  # every E-step casts its chunks itself
    plain = fit_em(without, x, max_iter=10, tol=0.0, warn=False).log_likelihood_history
    np.testing.assert_allclose(history, plain, rtol=1e-12)
    for name in with_constants.parameter_names():
        torch.testing.assert_close(getattr(with_constants, name), getattr(without, name), rtol=1e-12, atol=1e-14)
