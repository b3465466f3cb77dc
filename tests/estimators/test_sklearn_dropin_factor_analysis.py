"""emvi.estimators.FactorAnalysis is scikit-learn's FactorAnalysis: from the same start (``noise_variance_init``) its
iteration, log-likelihoods, noise variances, covariance, precision, scores and (rotated) loadings equal scikit-learn's
to 1e-8 relative (loadings up to each factor's sign, which an eigendecomposition does not fix); the rotations equal
scikit-learn's on the same loadings and leave the model's covariance unchanged; a scikit-learn script runs unchanged."""

import warnings

import numpy as np
import pytest
import sklearn.decomposition
import sklearn.exceptions
import torch

from emvi.errors import ConfigError
from emvi.estimators import FactorAnalysis
from emvi.inference.factor_analysis import rotate_loadings

RTOL = 1e-8


def two_factor_data(n=300, d=6, seed=0):
    rng = np.random.RandomState(seed)
    loadings = 2 * rng.randn(d, 2)
    noise = np.sqrt(rng.uniform(0.2, 1.5, d))
    return rng.randn(n, 2) @ loadings.T + rng.randn(n, d) * noise + 3.0


X = two_factor_data()


def assert_close(ours, theirs, what=""):
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, what
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=RTOL * np.abs(theirs).max(), err_msg=what)


@pytest.mark.parametrize("n_components", [1, 2, 3])
@pytest.mark.parametrize("rotation", [None, "varimax", "quartimax"])
@pytest.mark.parametrize("max_iter, tol", [(3, 0.0), (1000, 1e-2)])
def test_fit_from_the_same_start_equals_scikit_learn(n_components, rotation, max_iter, tol):
    params = {"n_components": n_components, "rotation": rotation, "max_iter": max_iter, "tol": tol,
              "noise_variance_init": np.ones(X.shape[1])}  # scikit-learn's default start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        theirs = sklearn.decomposition.FactorAnalysis(svd_method="lapack", **params).fit(X)
        ours = FactorAnalysis(**params).fit(X)
    assert ours.n_iter_ == theirs.n_iter_ and (max_iter == 3) == (ours.n_iter_ == 3)
    for name in ("loglike_", "noise_variance_", "mean_"):
        assert_close(getattr(ours, name), getattr(theirs, name), name)
    for method in ("get_covariance", "get_precision"):
        assert_close(getattr(ours, method)(), getattr(theirs, method)(), method)
    assert_close(ours.score_samples(X), theirs.score_samples(X), "score_samples")
    assert ours.score(X) == pytest.approx(theirs.score(X), rel=RTOL)
    signs = np.sign((ours.components_ * theirs.components_).sum(1))  # each factor's sign is arbitrary
    assert_close(signs[:, None] * ours.components_, theirs.components_, "components_")
    assert_close(ours.transform(X) * signs, theirs.transform(X), "transform")


@pytest.mark.parametrize("method", ["varimax", "quartimax"])
def test_rotation_of_the_same_loadings_equals_scikit_learns_and_keeps_the_covariance(method):
    unrotated = sklearn.decomposition.FactorAnalysis(3, svd_method="lapack", random_state=0).fit(X)
    rotated = sklearn.decomposition.FactorAnalysis(3, svd_method="lapack", rotation=method, random_state=0).fit(X)
    ours = rotate_loadings(torch.as_tensor(unrotated.components_.T), method).numpy().T
    assert_close(ours, rotated.components_, method)
    assert_close(ours.T @ ours, unrotated.components_.T @ unrotated.components_, "W Wᵀ")


def test_precision_is_the_inverse_covariance_and_full_rank_fits():
    fitted = FactorAnalysis(None, tol=1e-6).fit(X)  # n_components=None: q = D, as scikit-learn
    assert fitted.components_.shape == (X.shape[1], X.shape[1])
    np.testing.assert_allclose(fitted.get_precision() @ fitted.get_covariance(), np.eye(X.shape[1]), atol=1e-10)


def test_not_converged_is_scikit_learns_warning_and_bad_options_are_refused():
    with pytest.warns(sklearn.exceptions.ConvergenceWarning, match="^FactorAnalysis did not converge. You might "
                                                                   "want to increase the number of iterations."):
        FactorAnalysis(2, max_iter=2, tol=0.0).fit(X)
    with pytest.raises(ConfigError, match="rotation"):
        FactorAnalysis(2, rotation="promax").fit(X)
    with pytest.raises(ConfigError, match="svd_method"):
        FactorAnalysis(2, svd_method="arpack").fit(X)


def sklearn_script(FactorAnalysis):  # noqa: N803  (the class, as the import binds it)
    """A script written for scikit-learn: fit, transform, rotate, score, covariance."""
    x = two_factor_data(seed=4)
    model = FactorAnalysis(n_components=2, rotation="varimax", random_state=0)
    scores = model.fit_transform(x)
    return {"score": model.score(x), "covariance": model.get_covariance(), "scores_shape": scores.shape,
            "n_features_in": model.n_features_in_, "noise": model.noise_variance_}


def test_a_scikit_learn_script_runs_unchanged_with_the_import_changed():
    theirs = sklearn_script(sklearn.decomposition.FactorAnalysis)
    ours = sklearn_script(FactorAnalysis)
    # Different starts (emvi's SMC uniquenesses, scikit-learn's ones) stopped by tol=1e-2 nats: the same optimum
    # to within that tolerance's reach.
    assert ours["score"] == pytest.approx(theirs["score"], rel=1e-4)
    np.testing.assert_allclose(ours["covariance"], theirs["covariance"], rtol=1e-2, atol=1e-2)
    assert (ours["scores_shape"], ours["n_features_in"]) == (theirs["scores_shape"], theirs["n_features_in"])
