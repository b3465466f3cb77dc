"""emvi.estimators.PCA is scikit-learn's PCA with its probabilistic surface: every attribute, the covariance,
precision, log-likelihoods, transform and inverse equal scikit-learn's (exact solver) to 1e-8 relative for every kind
of n_components, with and without whitening; the model it scores with is emvi's probabilistic PCA; scikit-learn's
estimator checks pass; a script written for scikit-learn runs unchanged."""

import numpy as np
import pytest
import sklearn.decomposition
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import estimator_checks_generator

from emvi.errors import ConfigError
from emvi.estimators import PCA

RNG = np.random.RandomState(0)
X = RNG.randn(100, 6) @ RNG.randn(6, 6) + 2.0
ATTRIBUTES = ("components_", "explained_variance_", "explained_variance_ratio_", "singular_values_", "mean_",
              "noise_variance_", "n_components_", "n_samples_", "n_features_in_")


def assert_close(ours, theirs, what):
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, what
    scale = np.abs(theirs).max() if theirs.size else 0.0
    np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-8 * scale, err_msg=what)


@pytest.mark.parametrize("n_components", [None, 0, 1, 3, 6, 0.9])
@pytest.mark.parametrize("whiten", [False, True])
def test_every_attribute_and_method_equals_scikit_learns(n_components, whiten):
    theirs = sklearn.decomposition.PCA(n_components, whiten=whiten, svd_solver="full").fit(X)
    ours = PCA(n_components, whiten=whiten).fit(X)
    for name in ATTRIBUTES:
        assert_close(getattr(ours, name), getattr(theirs, name), name)
    for method in ("get_covariance", "get_precision"):
        assert_close(getattr(ours, method)(), getattr(theirs, method)(), method)
    for method in ("score_samples", "transform"):
        assert_close(getattr(ours, method)(X), getattr(theirs, method)(X), method)
    assert ours.score(X) == pytest.approx(theirs.score(X), rel=1e-8)
    if theirs.n_components_:  # scikit-learn's inverse_transform refuses 0 columns
        assert_close(ours.inverse_transform(ours.transform(X)), theirs.inverse_transform(theirs.transform(X)),
                     "inverse")


def test_scores_are_emvi_probabilistic_pca_at_the_fitted_values():
    ours = PCA(2).fit(X)
    model = ours.model_  # x ~ Normal(mean, W Wᵀ + σ² I)
    np.testing.assert_allclose(ours.get_covariance(), (model.weight @ model.weight.T).detach().numpy()
                               + ours.noise_variance_ * np.eye(6), rtol=1e-12)
    np.testing.assert_allclose(ours.get_precision() @ ours.get_covariance(), np.eye(6), atol=1e-10)


def test_bad_n_components_is_refused():
    with pytest.raises(ConfigError, match="n_components=7 must be None, an int between 0 and"):
        PCA(7).fit(X)


def _checks():
    for estimator, check in estimator_checks_generator(PCA(2), mark="skip"):
        name = getattr(check, "func", check).__name__
        if name != "check_array_api_input":  # scikit-learn skips it unless SCIPY_ARRAY_API is set
            yield pytest.param(estimator, check, id=name)


@pytest.mark.parametrize("estimator, check", list(_checks()))
def test_scikit_learn_estimator_checks_pass(estimator, check):
    check(estimator)


def sklearn_script(PCA):  # noqa: N803  (the class, as the import binds it)
    pipeline = make_pipeline(StandardScaler(), PCA(n_components=0.95, whiten=True))
    scores = pipeline.fit_transform(X)
    pca = pipeline[-1]
    return {"scores": scores, "ratio": pca.explained_variance_ratio_, "loglik": pipeline.score(X),
            "back": pipeline.inverse_transform(scores)}


def test_a_scikit_learn_script_runs_unchanged_with_the_import_changed():
    theirs = sklearn_script(sklearn.decomposition.PCA)
    ours = sklearn_script(PCA)
    for key, value in theirs.items():
        assert_close(ours[key], value, key)
