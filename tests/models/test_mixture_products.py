"""The mixture's chunked E-step: the full and tied path (whitened residuals, the scatter from one batched product)
equals one scikit-learn EM iteration from the same start; ``product_dtype=float32`` (float32 products, float64
sums) gives the float64 statistics within float32 round-off and an EM whose log-likelihood never decreases beyond it,
ending where the float64 fit ends."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from toy_models import FLOAT32_EPS, GAUSSIANS, correlated_blobs
from toy_models import started_mixture as started

from emvi.errors import ConfigError
from emvi.inference.em import fit_em
from emvi.models.mixture import MixtureConfig, MixtureModel
from emvi.models.mixture_covariances import covariance_matrices, precision_cholesky

SCATTER = ("gaussian-full", "gaussian-tied")


def blobs(n=600, d=4, seed=0):
    """Three correlated clusters (a mean far from 0 makes the float32 products' cancellation visible)."""
    return correlated_blobs(n, d, seed)




def sklearn_precisions(model):
    upper = precision_cholesky(model.config.family, model.scale_tril.detach())
    return (upper @ upper.mT).numpy()


@pytest.mark.parametrize("family", SCATTER)
@pytest.mark.parametrize("chunk_size", [1, 7, 64, None])
def test_fused_full_and_tied_step_equals_one_scikit_learn_iteration(family, chunk_size):
    x = blobs()
    model = started(family, x)
    sk = GaussianMixture(3, covariance_type=family.removeprefix("gaussian-"), reg_covar=1e-6, max_iter=1, tol=0.0,
                         weights_init=model.weights.detach().numpy(), means_init=model.means.detach().numpy(),
                         precisions_init=sklearn_precisions(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(x.numpy())
    stats, objective = model.expected_statistics(x, chunk_size=chunk_size)
    # scikit-learn's lower bound of its one iteration is the mean log-likelihood at the start.
    np.testing.assert_allclose(float(objective) / len(x), sk.lower_bound_, rtol=1e-12)
    model.m_step(stats, x)
    np.testing.assert_allclose(model.weights.detach().numpy(), sk.weights_, rtol=1e-11)
    np.testing.assert_allclose(model.means.detach().numpy(), sk.means_, rtol=1e-11, atol=1e-12)
    covariances = covariance_matrices(family, model.scale_tril.detach()).numpy()
    np.testing.assert_allclose(covariances, sk.covariances_, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", GAUSSIANS)
def test_float32_products_give_the_float64_statistics_within_float32_round_off(family):
    x = blobs()
    exact = started(family, x)
    fast = MixtureModel(exact.config, x.shape[1], dtype=torch.float64, product_dtype=torch.float32)
    fast.load_state_dict(exact.state_dict())
    (want, want_objective), (got, got_objective) = exact.expected_statistics(x), fast.expected_statistics(x)
    assert got.counts.dtype == got.sums.dtype == torch.float64  # the sums add up in the parameters' dtype
    # Relative round-off of a float32 log-density of magnitude |log p| is ~eps |x|² / σ² per item; 1e3 eps is
    # ample for these clusters (|x| <= ~15, σ >= 0.5) and fails by orders of magnitude if a product is wrong.
    tolerance = 1e3 * FLOAT32_EPS
    np.testing.assert_allclose(float(got_objective), float(want_objective), rtol=tolerance)
    torch.testing.assert_close(got.counts, want.counts, rtol=tolerance, atol=tolerance * len(x))
    if want.scatter is None:  # Σ r [x, x²]
        torch.testing.assert_close(got.sums, want.sums, rtol=tolerance, atol=tolerance * want.sums.abs().max().item())
        return
    # Σ_n r_nk (x_n - μ_k) nearly cancels; its round-off scales with Σ_n r_nk |x_nd - μ_kd| <= sqrt(N_k S_kdd).
    scale = (want.counts[:, None] * want.scatter.diagonal(0, -2, -1)).sqrt()
    assert ((got.sums - want.sums).abs() <= tolerance * scale).all()
    torch.testing.assert_close(got.scatter, want.scatter, rtol=tolerance,
                               atol=tolerance * want.scatter.abs().max().item())


@pytest.mark.parametrize("family", GAUSSIANS)
def test_em_with_float32_products_never_decreases_beyond_float32_round_off(family):
    x = blobs()
    exact, fast = started(family, x, steps=0), started(family, x, steps=0, product_dtype=torch.float32)
    history = torch.tensor(fit_em(fast, x, max_iter=60, tol=0.0, warn=False).log_likelihood_history)
    # The objective is a float64 sum of float32 per-chunk terms: its error is ~eps |objective|.
    assert (history.diff() >= -10 * FLOAT32_EPS * history.abs()[1:]).all()
    assert history[-1] > history[0]
    fit_em(exact, x, max_iter=60, tol=0.0, warn=False)
    with torch.no_grad():  # both fits' final parameters, evaluated in float64
        final_fast, final_exact = fast.log_likelihood(x).sum().item(), exact.log_likelihood(x).sum().item()
    np.testing.assert_allclose(final_fast, final_exact, rtol=1e2 * FLOAT32_EPS)


def test_product_dtype_must_be_a_floating_torch_dtype():
    with pytest.raises(ConfigError, match="product_dtype"):
        MixtureModel(MixtureConfig(), 3, dtype=torch.float64, product_dtype="float32")
    with pytest.raises(ConfigError, match="product_dtype"):
        MixtureModel(MixtureConfig(), 3, dtype=torch.float64, product_dtype=torch.int32)
