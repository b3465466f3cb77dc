"""More components than distinct rows: emptied components must not turn the EM objective into NaN."""

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from emvi.estimators import GaussianMixture as EmviGaussianMixture
from emvi.estimators import Mixture
from emvi.inference.initialization import kmeans_plusplus_indices, lloyd_kmeans


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


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied", "spherical"])
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaussian_mixture_with_more_components_than_distinct_rows_fits(covariance_type, init_params, seed):
    # k-means++ must repeat centres here (2 distinct rows, 10 centres) and Lloyd's k-means leaves 8 clusters empty:
    # the emptied components get weight 0 and the fit stays finite. scikit-learn reaches the same likelihood for
    # full and diag (its tied start from single items fails: X^T X minus the means' outer products cancels to
    # round-off, and its spherical variances at the empty components' means do not matter to the likelihood).
    x = np.vstack([np.ones((5, 5)), np.zeros((5, 5))])
    ours = EmviGaussianMixture(10, covariance_type=covariance_type, init_params=init_params, random_state=seed).fit(x)
    labels = ours.predict(x)
    assert np.isfinite(ours.score(x)) and np.isfinite(ours.lower_bound_)
    assert len(set(labels[:5])) == len(set(labels[5:])) == 1  # (tied: one component holding both rows is a fixed point)
    if covariance_type in ("full", "diag"):
        assert labels[0] != labels[5]
        theirs = GaussianMixture(10, covariance_type=covariance_type, init_params=init_params,
                                 random_state=seed).fit(x)
        assert ours.score(x) == pytest.approx(theirs.score(x), rel=1e-8)


def test_kmeans_plusplus_repeats_centres_when_rows_repeat_and_lloyd_keeps_the_two_clusters():
    x = torch.cat([torch.ones(5, 5), torch.zeros(5, 5)]).double()
    for seed in range(3):
        indices = kmeans_plusplus_indices(x, 10, torch.Generator().manual_seed(seed))
        assert indices.shape == (10,) and {int(i) < 5 for i in indices} == {True, False}  # both rows chosen
        labels = lloyd_kmeans(x, 10, torch.Generator().manual_seed(seed))
        assert len(set(labels[:5].tolist())) == len(set(labels[5:].tolist())) == 1 and labels[0] != labels[5]
