"""More components than distinct rows: emptied components must not turn the EM objective into NaN."""

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from emvi.estimators import Mixture


# scikit-learn's k-means start warns that it found 2 distinct clusters for 10; that is the case under test.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("family, covariance_type", [("gaussian-diag", "diag"), ("gaussian-full", "full")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_more_components_than_distinct_rows_fits_as_scikit_learn(family, covariance_type, seed):
    # 5 rows of ones and 5 of zeros with K = 10: k-means++ repeats centres and EM empties components, whose weight
    # is 0; the Dirichlet(1) log-prior term (alpha - 1) log w must count 0 * log 0 as 0, not NaN.
    x = np.vstack([np.ones((5, 5)), np.zeros((5, 5))])
    ours = Mixture(10, family, seed=seed).fit(x)
    theirs = GaussianMixture(10, covariance_type=covariance_type, random_state=seed).fit(x)
    assert np.isfinite(ours.score(x))
    assert ours.score(x) == pytest.approx(theirs.score(x), rel=1e-6)
    assert ours.predict(x)[:5].tolist() == [ours.predict(x)[0]] * 5
    assert ours.predict(x)[0] != ours.predict(x)[5]


@pytest.mark.parametrize("family", ["poisson", "bernoulli", "categorical"])
def test_more_components_than_distinct_rows_discrete_families(family):
    x = np.vstack([np.ones((5, 4)), np.zeros((5, 4))])
    model = Mixture(6, family, seed=0).fit(x)
    assert np.isfinite(model.score(x))
