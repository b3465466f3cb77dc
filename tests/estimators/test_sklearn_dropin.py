"""emvi.estimators.GaussianMixture is scikit-learn's GaussianMixture: from the same start (given weights, means and
precisions, or the same random_state with the "random" starts, which draw the same numbers) every fitted attribute
and every method's output equals scikit-learn's to 1e-8 relative, for each covariance type; scikit-learn's
documented behaviours hold (monotone EM, warm_start continues EM, max_iter=0 keeps the start, n_init keeps the best);
its estimator checks pass; a script written for scikit-learn runs unchanged after changing only the import."""

import warnings

import numpy as np
import pytest
import sklearn.exceptions
import sklearn.mixture
from sklearn.base import clone
from sklearn.utils.estimator_checks import estimator_checks_generator

from emvi.errors import ConfigError, DataError
from emvi.estimators import GaussianMixture

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_", "lower_bound_",
              "lower_bounds_")
RTOL = 1e-8


def three_blobs(seed=0, n=(80, 60, 60)):
    """Three overlapping Gaussian clusters in 3-D, one of them correlated and one narrow."""
    rng = np.random.RandomState(seed)
    shear = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 1.0]])
    return np.vstack([rng.randn(n[0], 3), 0.5 * rng.randn(n[1], 3) + [3, 1, -2],
                      rng.randn(n[2], 3) @ shear + [-3, 2, 1]])


X = three_blobs()
START = {"weights_init": np.array([0.3, 0.3, 0.4]), "means_init": X[[0, 100, 170]] + 0.1}
PRECISIONS = {"full": np.stack([np.eye(3) * (k + 1) + 0.2 for k in range(3)]), "tied": np.eye(3) * 2 + 0.1,
              "diag": np.array([[1.0, 2.0, 3.0]] * 3) * [[1], [2], [0.5]], "spherical": np.array([1.0, 2.0, 3.0])}


def assert_same(ours, theirs, what=""):
    """Equal to RTOL relative to the array's largest entry (a fitted value near 0 carries the round-off of its
    neighbours), with equal shapes and dtypes."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, what
    assert ours.dtype == theirs.dtype, what
    scale = np.abs(theirs).max() if theirs.size else 0.0
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def fit_both(x=X, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        theirs = sklearn.mixture.GaussianMixture(3, **params).fit(x)
        ours = GaussianMixture(3, **params).fit(x)
    return ours, theirs


def assert_fits_equal(ours, theirs, x=X):
    for name in ATTRIBUTES:
        assert_same(getattr(ours, name), getattr(theirs, name), name)
    assert (ours.n_iter_, ours.converged_, ours.n_features_in_) == (theirs.n_iter_, theirs.converged_,
                                                                     theirs.n_features_in_)
    for method in ("score_samples", "predict_proba", "predict"):
        assert_same(getattr(ours, method)(x), getattr(theirs, method)(x), method)
    for method in ("score", "bic", "aic"):
        value = getattr(ours, method)(x)
        assert type(value) is float and value == pytest.approx(getattr(theirs, method)(x), rel=RTOL), method
    seed = ours.random_state if isinstance(ours.random_state, int) else 7  # None: the global stream, not repeatable
    draws = [estimator.set_params(random_state=seed).sample(25) for estimator in (ours, theirs)]
    for ours_draw, theirs_draw in zip(*draws, strict=True):  # the same draws
        assert_same(ours_draw, theirs_draw, "sample")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("max_iter, tol", [(1, 0.0), (3, 0.0), (200, 1e-6)])
def test_fit_from_given_parameters_equals_scikit_learn(covariance_type, max_iter, tol):
    # max_iter=1 is one E-step and one M-step; 200 with tol=1e-6 converges and stops at the same iteration.
    ours, theirs = fit_both(covariance_type=covariance_type, precisions_init=PRECISIONS[covariance_type],
                            max_iter=max_iter, tol=tol, **START)
    assert_fits_equal(ours, theirs)
    assert theirs.converged_ == (max_iter == 200)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", ["random", "random_from_data"])
def test_random_starts_draw_scikit_learns_numbers_and_n_init_keeps_the_best(covariance_type, init_params):
    # Three starts drawn one after the other from one RandomState, as scikit-learn draws them; the kept start is
    # the one with the highest final lower bound, so the fit equals scikit-learn's.
    # reg_covar=1e-2: a start at single items has variances reg_covar, and 1e-6 would leave the first lower bound to
    # scikit-learn's 10 eps added to every N_k (1e-6 relative).
    params = {"covariance_type": covariance_type, "init_params": init_params, "random_state": 0, "max_iter": 20,
              "tol": 0.0, "reg_covar": 1e-2}
    ours, theirs = fit_both(n_init=3, **params)
    assert_fits_equal(ours, theirs)
    first_start_only, _ = fit_both(n_init=1, **params)  # the first of the three draws
    assert ours.lower_bound_ >= first_start_only.lower_bound_


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_em_lower_bound_never_decreases(covariance_type):
    ours, _ = fit_both(covariance_type=covariance_type, init_params="random", random_state=1, max_iter=60, tol=0.0)
    bounds = np.array(ours.lower_bounds_)
    assert len(bounds) == ours.n_iter_ == 60
    assert (np.diff(bounds) >= -1e-12 * np.abs(bounds[1:])).all()
    assert bounds[-1] > bounds[0]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_warm_start_continues_em_as_scikit_learn(covariance_type):
    params = {"covariance_type": covariance_type, "init_params": "random", "random_state": 0, "tol": 0.0}
    ours, theirs = fit_both(max_iter=3, warm_start=True, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        ours.fit(X)
        theirs.fit(X)
    assert_fits_equal(ours, theirs)
    six, _ = fit_both(max_iter=6, **params)  # 3 + 3 M-steps from the same start
    assert_same(ours.means_, six.means_)
    assert_same(ours.lower_bounds_, six.lower_bounds_[3:])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_max_iter_zero_keeps_the_start_as_scikit_learn(covariance_type):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn does not warn when max_iter=0: the start is what was asked for
        ours, theirs = fit_both(covariance_type=covariance_type, init_params="random", random_state=0, max_iter=0,
                                **START)
    assert_fits_equal(ours, theirs)
    assert (ours.n_iter_, ours.converged_, ours.lower_bound_, ours.lower_bounds_) == (0, False, -np.inf, [])
    assert_same(ours.means_, START["means_init"])
    assert_same(ours.weights_, START["weights_init"])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_precisions_init_is_the_start_precision(covariance_type):
    # All three given: no k-means; scikit-learn's max_iter=0 has no covariances_ here, so read the first E-step.
    ours, theirs = fit_both(covariance_type=covariance_type, precisions_init=PRECISIONS[covariance_type], max_iter=1,
                            tol=0.0, **START)
    start = GaussianMixture(3, covariance_type=covariance_type, precisions_init=PRECISIONS[covariance_type],
                            max_iter=0, **START).fit(X)
    assert_same(start.precisions_, PRECISIONS[covariance_type])
    assert_same(start.score_samples(X).mean(), np.float64(ours.lower_bound_))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_data_gives_float32_fits_as_scikit_learn(covariance_type):
    x32 = X.astype(np.float32)
    params = {"covariance_type": covariance_type, "init_params": "random", "random_state": 0, "max_iter": 5,
              "tol": 0.0}
    ours, theirs = fit_both(x32, **params)
    ours64, _ = fit_both(X, **params)
    for name in ATTRIBUTES[:-1]:
        assert np.asarray(getattr(ours, name)).dtype == np.asarray(getattr(theirs, name)).dtype == np.float32
        # float32 round-off over five EM steps, against the float64 fit of the same start
        np.testing.assert_allclose(getattr(ours, name), getattr(ours64, name), rtol=1e-4, atol=1e-5)
    for method in ("score_samples", "predict_proba"):
        assert getattr(ours, method)(x32).dtype == getattr(theirs, method)(x32).dtype == np.float32
    draws, labels = ours.sample(4)
    with warnings.catch_warnings():  # scikit-learn's float32 covariances are not exactly symmetric: numpy warns
        warnings.simplefilter("ignore", RuntimeWarning)
        assert (draws.dtype, labels.dtype) == (theirs.sample(4)[0].dtype, np.int64)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++"])
def test_kmeans_starts_reach_scikit_learns_optimum(covariance_type, init_params):
    # emvi's own k-means (Lloyd's from k-means++ centres) and scikit-learn's start differently, but on separated
    # clusters both converge to the same maximum of the likelihood.
    x = three_blobs(seed=2) + np.repeat([[0, 0, 0], [8, 0, 0], [0, 8, 0]], [80, 60, 60], axis=0)
    ours, theirs = fit_both(x, covariance_type=covariance_type, init_params=init_params, random_state=0, tol=1e-10,
                            max_iter=500)
    assert ours.converged_ and theirs.converged_
    assert ours.score(x) == pytest.approx(theirs.score(x), rel=1e-8)
    def in_order(means):  # the components' labels may differ: sort them by position
        return means[np.argsort(means[:, 0] + 2 * means[:, 1])]

    np.testing.assert_allclose(in_order(ours.means_), in_order(theirs.means_), rtol=1e-6, atol=1e-6)


def test_convergence_warning_and_not_fitted_error_are_scikit_learns():
    estimator = GaussianMixture(3, max_iter=2, tol=0.0, random_state=0)
    with pytest.raises(sklearn.exceptions.NotFittedError, match="This GaussianMixture instance is not fitted yet. "
                                                                "Call 'fit' with appropriate arguments"):
        estimator.predict(X)
    with pytest.warns(sklearn.exceptions.ConvergenceWarning, match="^Best performing initialization did not "
                                                                   "converge. Try different init parameters"):
        estimator.fit(X)


@pytest.mark.parametrize("params, error, match", [
    ({"max_iter": -1}, ConfigError, r"The 'max_iter' parameter of GaussianMixture must be an int in the range \[0"),
    ({"covariance_type": "banded"}, ConfigError, "The 'covariance_type' parameter of GaussianMixture must be a str"),
    ({"init_params": "kmeans+"}, ConfigError, "'init_params' parameter"),
    ({"reg_covar": -1e-6}, ConfigError, r"'reg_covar' parameter of GaussianMixture must be a float in the range \[0"),
    ({"weights_init": [0.2, 0.2, 0.2]}, DataError, r"should be normalized, but got sum\(weights\) = 0.60000"),
    ({"means_init": np.zeros((2, 3))}, DataError, r"The parameter 'means' should have the shape of \(3, 3\)"),
    ({"precisions_init": -np.ones(3), "covariance_type": "spherical"}, DataError, "'spherical precision' should be "
                                                                                  "positive"),
    ({"precisions_init": -np.eye(3), "covariance_type": "tied"}, DataError, "'tied precision' should be symmetric"),
])
def test_bad_parameters_are_refused_in_scikit_learns_words(params, error, match):
    with pytest.raises(error, match=match) as info:
        GaussianMixture(3, **params).fit(X)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match=match.split(" of GaussianMixture")[0]):
        sklearn.mixture.GaussianMixture(3, **params).fit(X)


def test_too_few_items_are_refused_in_scikit_learns_words():
    with pytest.raises(DataError, match="Expected n_samples >= n_components but got n_components = 5, n_samples = 4"):
        GaussianMixture(5).fit(X[:4])
    with pytest.raises(DataError, match=r"Found array with 1 sample\(s\)"):
        GaussianMixture(1).fit(X[:1])


def _checks():
    for estimator, check in estimator_checks_generator(GaussianMixture(2, max_iter=5), mark="skip"):
        name = getattr(check, "func", check).__name__
        if name != "check_array_api_input":  # scikit-learn skips it unless SCIPY_ARRAY_API is set
            yield pytest.param(estimator, check, id=name)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator, check", list(_checks()))
def test_scikit_learn_estimator_checks_pass(estimator, check):
    check(estimator)


def sklearn_script(GaussianMixture):  # noqa: N803  (the class, passed as the import would bind it)
    """A script written for scikit-learn: BIC model selection, a refit, soft labels, sampling, clone and
    set_params, warm start. Returns what it prints."""
    x = three_blobs(seed=3)
    results = {}
    for covariance_type in ["spherical", "tied", "diag", "full"]:
        for n_components in range(1, 5):
            model = GaussianMixture(n_components=n_components, covariance_type=covariance_type,
                                    init_params="random_from_data", random_state=42, n_init=2)
            model.fit(x)
            results[covariance_type, n_components] = model.bic(x)
    best = min(results, key=results.get)
    model = GaussianMixture(best[1], covariance_type=best[0], init_params="random_from_data", random_state=42,
                            n_init=2)
    labels = model.fit_predict(x)
    twin = clone(model).set_params(max_iter=5, warm_start=True).fit(x)
    samples, sample_labels = model.sample(10)
    return {"best": best, "bics": results, "labels": labels, "proba": model.predict_proba(x[:5]),
            "score": model.score(x), "aic": model.aic(x), "twin": twin.fit(x).lower_bound_, "samples": samples,
            "sample_labels": sample_labels, "converged": model.converged_, "n_iter": model.n_iter_}


@pytest.mark.slow  # 32 fits on each side
def test_a_scikit_learn_script_runs_unchanged_with_the_import_changed():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        theirs = sklearn_script(sklearn.mixture.GaussianMixture)
        ours = sklearn_script(GaussianMixture)
    assert ours["best"] == theirs["best"]
    for key, value in theirs.items():
        if key == "bics":
            for case, bic in value.items():
                assert ours[key][case] == pytest.approx(bic, rel=RTOL), case
        elif key not in ("best", "converged", "n_iter"):
            assert_same(ours[key], value, key)
        else:
            assert ours[key] == value, key


def test_parameters_round_trip_and_clone_keeps_emvi_extras():
    model = GaussianMixture(4, covariance_type="tied", reg_covar=1e-4, device="cpu")
    params = model.get_params()
    sklearn_params = sklearn.mixture.GaussianMixture().get_params()
    assert set(params) == set(sklearn_params) | {"device"}
    assert clone(model).get_params() == params


def test_verbose_prints_scikit_learns_progress_lines(capsys):
    params = {"covariance_type": "diag", "init_params": "random", "random_state": 0, "n_init": 2, "max_iter": 5,
              "tol": 0.0, "verbose": 1, "verbose_interval": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        sklearn.mixture.GaussianMixture(3, **params).fit(X)
        theirs = capsys.readouterr().out
        GaussianMixture(3, **params).fit(X)
        ours = capsys.readouterr().out
    assert ours == theirs and "  Iteration 4\n" in ours


def test_warm_start_with_another_shape_is_refused_in_one_line():
    model = GaussianMixture(2, warm_start=True, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        model.fit(X)
    with pytest.raises(ConfigError, match="warm_start continues the last fit"):
        model.set_params(n_components=3).fit(X)
