"""Factor analysis by profile-likelihood ascent reaches scikit-learn's optimum (or a higher one), monotonically.

Each case fits emvi's ``FactorAnalysis`` and scikit-learn's at a tight tolerance (scikit-learn's ``tol`` is on the total
log-likelihood) and checks (1) that emvi's exact log-likelihood at scikit-learn's fitted parameters equals
scikit-learn's own ``score`` and (2) that emvi's fit is at least as likely as scikit-learn's.
"""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.preprocessing import StandardScaler

import emvi  # noqa: F401
from emvi.errors import ConfigError
from emvi.estimators.ppca import FactorAnalysis
from emvi.inference.factor_analysis import fit_factor_analysis, smc_uniquenesses
from emvi.models.ppca import FactorAnalysisConfig, LinearGaussianModel, PPCAConfig


def _digits():
    x = load_digits().data.astype(np.float64)
    return x[:, x.std(0) > 0]  # the 61 non-constant pixels


def _low_rank_plus_noise(seed=0, n=500, d=30, rank=4):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(d, rank))
    noise = rng.uniform(0.1, 1.0, size=d)
    return rng.normal(size=(n, rank)) @ weight.T + rng.normal(size=(n, d)) * np.sqrt(noise) + rng.normal(size=d)


def _standardized(loader):
    return StandardScaler().fit_transform(loader().data.astype(np.float64))


DATASETS = {
    "digits": _digits,
    "low_rank": _low_rank_plus_noise,
    "iris": lambda: _standardized(load_iris),
    "wine": lambda: _standardized(load_wine),
    "breast_cancer": lambda: _standardized(load_breast_cancer),
}
# digits at q = 20 is left to test_digits_q20_default_fit_beats_sklearn_default_in_comparable_iterations: scikit-learn's
# tight reference alone takes a minute there (it creeps towards a boundary for thousands of iterations).
CASES = [("digits", 5), ("low_rank", 2), ("low_rank", 4), ("low_rank", 8), ("iris", 1), ("iris", 2),
         ("wine", 2), ("wine", 5), ("breast_cancer", 3), ("breast_cancer", 10)]


@pytest.fixture(scope="module")
def data():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = DATASETS[name]()
        return cache[name]

    return get


def _sklearn_tight(x, q):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SklearnConvergenceWarning)
        return SklearnFactorAnalysis(q, tol=1e-4, max_iter=5000, svd_method="lapack").fit(x)


def _model_at(sklearn, q):
    model = LinearGaussianModel(FactorAnalysisConfig(latent_dim=q), sklearn.mean_.shape[0], dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(sklearn.components_.T))
        model.mean.copy_(torch.as_tensor(sklearn.mean_))
        model.log_noise.copy_(torch.as_tensor(sklearn.noise_variance_).log())
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name,q", CASES)
def test_fa_reaches_at_least_sklearn_optimum_and_scores_its_parameters_alike(data, name, q):
    x = data(name)
    sklearn = _sklearn_tight(x, q)
    sklearn_score = sklearn.score(x)
    # (1) the same log-likelihood at scikit-learn's parameters, by the Woodbury form and from the sample covariance
    model = _model_at(sklearn, q)
    xt = torch.as_tensor(x)
    assert float(model.log_likelihood(xt).detach().mean()) == pytest.approx(sklearn_score, rel=1e-6)
    centred = xt - xt.mean(0)
    from_covariance = model.log_likelihood_from_covariance(centred.T @ centred / len(x), len(x)) / len(x)
    assert float(from_covariance) == pytest.approx(sklearn_score, rel=1e-6)
    # (2) emvi's optimum is at least scikit-learn's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = FactorAnalysis(q, tol=1e-8 * len(x), max_iter=5000).fit(x)  # tol: total nats, as scikit-learn's
    assert ours.score(x) >= sklearn_score - 1e-6 * abs(sklearn_score)
    assert ours.lower_bound_ == pytest.approx(ours.history_[-1], rel=1e-10)
    history = np.asarray(ours.history_)
    assert (np.diff(history) >= -1e-10 * np.abs(history[1:])).all()  # the ascent never goes down


@pytest.mark.slow
def test_digits_q20_default_fit_beats_sklearn_default_in_comparable_iterations(data):
    """The issue's case: plain EM ended at -118.6377 after 20000 iterations; scikit-learn's defaults give -118.5869 in
    26. Measured here: emvi passes scikit-learn's default value within 26 iterations and ends higher."""
    x = data("digits")
    sklearn = SklearnFactorAnalysis(20, random_state=0).fit(x)
    ours = FactorAnalysis(20).fit(x)
    assert ours.converged_
    assert ours.score(x) > sklearn.score(x)
    assert ours.history_[min(sklearn.n_iter_, len(ours.history_) - 1)] > sklearn.score(x)


def test_profile_update_maximises_w_given_psi():
    """After the W half of the update, no perturbation of W raises the likelihood at the same Ψ (W is the exact
    maximiser); the whole update never lowers the likelihood."""
    x = torch.as_tensor(_low_rank_plus_noise(seed=1, n=300, d=12, rank=3))
    centred = x - x.mean(0)
    covariance = centred.T @ centred / len(x)
    model = LinearGaussianModel(FactorAnalysisConfig(latent_dim=3), 12, dtype=torch.float64)
    model.initialise(x, torch.Generator().manual_seed(0))
    before = float(model.log_likelihood_from_covariance(covariance, len(x)))
    psi = model.noise_variance.clone()
    model.profile_update(covariance)
    after = float(model.log_likelihood_from_covariance(covariance, len(x)))
    assert after >= before
    # restore Ψ and keep the maximising W: random perturbations of W only lower the likelihood
    with torch.no_grad():
        model.log_noise.copy_(psi.log())
    best = float(model.log_likelihood_from_covariance(covariance, len(x)))
    gen = torch.Generator().manual_seed(0)
    weight = model.weight.detach().clone()
    for _ in range(20):
        with torch.no_grad():
            model.weight.copy_(weight + 1e-3 * torch.randn(weight.shape, generator=gen, dtype=weight.dtype))
        assert float(model.log_likelihood_from_covariance(covariance, len(x))) <= best + 1e-9


def test_smc_start_is_the_unexplained_regression_variance():
    x = _low_rank_plus_noise(seed=2, n=400, d=6, rank=2)
    xt = torch.as_tensor(x)
    centred = xt - xt.mean(0)
    psi = smc_uniquenesses(centred.T @ centred / len(x)).numpy()
    for d in range(x.shape[1]):
        others = np.delete(x, d, axis=1)
        design = np.column_stack([others, np.ones(len(x))])
        residual = x[:, d] - design @ np.linalg.lstsq(design, x[:, d], rcond=None)[0]
        assert psi[d] == pytest.approx(residual.var(), rel=1e-5)


def test_profile_update_is_for_factor_analysis_only_and_init_is_checked():
    x = torch.as_tensor(_low_rank_plus_noise(n=50, d=5, rank=1))
    model = LinearGaussianModel(PPCAConfig(latent_dim=1), 5, dtype=torch.float64)
    with pytest.raises(ConfigError, match="diagonal"):
        model.profile_update(torch.eye(5, dtype=torch.float64))
    fa = LinearGaussianModel(FactorAnalysisConfig(latent_dim=1), 5, dtype=torch.float64)
    with pytest.raises(ConfigError, match="init"):
        fit_factor_analysis(fa, x, init="ones")
