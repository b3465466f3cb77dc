"""emvi.estimators.GaussianHMM / PoissonHMM / CategoricalHMM against hmmlearn 0.3 itself: the same parameters set on
both give the same scores, posteriors, decodings, criteria and EM steps (<= 1e-8 relative), the same start and draws
for the same random_state; hmmlearn's documented behaviours hold for emvi (monotone EM, n_iter=0, frozen parameters,
MAP priors); a tutorial script runs with only its import changed."""

import numpy as np
import pytest
import torch

from emvi import estimators
from emvi.errors import ConfigError, DataError
from emvi.estimators import CategoricalHMM, GaussianHMM, NotFittedError, PoissonHMM
from emvi.inference.em import fit_em
from emvi.inference.initialization import initialise_hmm
from emvi.models.hmm import HMMConfig, HMMModel
from emvi.models.hmm_map import HMMPrior, map_m_step

hmm = pytest.importorskip("hmmlearn.hmm")

K, D = 3, 2
LENGTHS = [30, 20, 25]
CASES = ["gaussian-diag", "gaussian-full", "gaussian-tied", "gaussian-spherical", "poisson", "categorical"]
LETTERS = {"gaussian": "stmc", "poisson": "stl", "categorical": "ste"}
PRIORS = {"gaussian": dict(startprob_prior=2.0, transmat_prior=3.0, means_prior=0.5, means_weight=2.0, covars_prior=0.3,
                           covars_weight=5.0),
          "poisson": dict(startprob_prior=2.0, transmat_prior=1.5, lambdas_prior=2.0, lambdas_weight=1.5),
          "categorical": dict(startprob_prior=2.0, transmat_prior=3.0, emissionprob_prior=2.5)}


def _data(family: str) -> np.ndarray:
    rs = np.random.RandomState(0)
    n = sum(LENGTHS)
    if family == "poisson":
        return rs.poisson(rs.choice([1.0, 4.0, 9.0], size=(n, 1)), size=(n, D))
    if family == "categorical":
        return rs.randint(0, 4, size=(n, 1))
    return rs.randn(n, D) + rs.choice([-2.0, 0.0, 2.5], size=(n, 1))


def _parameters(family: str, covariance_type: str = "diag") -> dict:
    rs = np.random.RandomState(1)
    values = {"startprob_": rs.dirichlet(np.full(K, 2.0)), "transmat_": rs.dirichlet(np.full(K, 2.0), size=K)}
    if family == "gaussian":
        values["means_"] = 2 * rs.randn(K, D)
        factors = rs.randn(K, D, D)
        full = factors @ factors.transpose(0, 2, 1) + np.eye(D)
        values["covars_"] = {"spherical": rs.uniform(0.5, 1.5, K), "diag": rs.uniform(0.5, 1.5, (K, D)),
                             "full": full, "tied": full[0]}[covariance_type]
    elif family == "poisson":
        values["lambdas_"] = rs.uniform(0.5, 9.0, (K, D))
    else:
        values["emissionprob_"] = rs.dirichlet(np.ones(4), size=K)
    return values


def _pair(case: str, **options):
    """hmmlearn's model and emvi's, built with the same options and given the same parameters."""
    family, _, covariance_type = case.partition("-")
    ours_class = {"gaussian": GaussianHMM, "poisson": PoissonHMM, "categorical": CategoricalHMM}[family]
    theirs_class = {"gaussian": hmm.GaussianHMM, "poisson": hmm.PoissonHMM, "categorical": hmm.CategoricalHMM}[family]
    if covariance_type:
        options["covariance_type"] = covariance_type
    models = theirs_class(n_components=K, **options), ours_class(n_components=K, **options)
    for model in models:
        for name, value in _parameters(family, covariance_type or "diag").items():
            setattr(model, name, value.copy())
    return (*models, _data(family))


def _assert_same_parameters(theirs, ours, rtol=1e-8):
    names = ["startprob_", "transmat_", "means_", "covars_", "lambdas_", "emissionprob_"]
    for name in [n for n in names if hasattr(theirs, n)]:
        expected = getattr(theirs, name)
        if name == "covars_" and theirs.covariance_type == "spherical":  # hmmlearn 0.3.3 reads (K D, D, D) here
            expected = theirs._covars_.reshape(K, -1).mean(1)[:, None, None] * np.eye(D)
        np.testing.assert_allclose(getattr(ours, name), expected, rtol=rtol, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("case", CASES)
def test_given_parameters_score_decode_and_criteria_equal_hmmlearn(case):
    theirs, ours, x = _pair(case)
    assert ours.score(x, LENGTHS) == pytest.approx(theirs.score(x, LENGTHS), rel=1e-10)
    (log_prob, posteriors), (expected_log_prob, expected_posteriors) = (ours.score_samples(x, LENGTHS),
                                                                         theirs.score_samples(x, LENGTHS))
    assert log_prob == pytest.approx(expected_log_prob, rel=1e-10)
    assert posteriors.shape == (sum(LENGTHS), K)
    np.testing.assert_allclose(posteriors, expected_posteriors, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(x, LENGTHS), expected_posteriors, rtol=1e-8, atol=1e-12)
    viterbi, expected_viterbi = ours.decode(x, LENGTHS), theirs.decode(x, LENGTHS, algorithm="viterbi")
    assert viterbi[0] == pytest.approx(expected_viterbi[0], rel=1e-10)
    # Equal observations can tie two paths (the Poisson case does): the path must score hmmlearn's optimum.
    assert _path_log_joint(theirs, x, viterbi[1]) == pytest.approx(expected_viterbi[0], rel=1e-10)
    assert (viterbi[1] == expected_viterbi[1]).mean() > 0.9
    np.testing.assert_array_equal(ours.predict(x, LENGTHS), viterbi[1])
    smoothed = ours.decode(x, LENGTHS, algorithm="map")
    np.testing.assert_array_equal(smoothed[1], theirs.decode(x, LENGTHS, algorithm="map")[1])
    # hmmlearn 0.3.3 sums the probabilities here (its issue #188); the log-probability is their logs' sum.
    assert smoothed[0] == pytest.approx(np.log(expected_posteriors.max(1)).sum(), rel=1e-10)
    assert ours.bic(x, LENGTHS) == pytest.approx(theirs.bic(x, LENGTHS), rel=1e-10)
    assert ours.aic(x, LENGTHS) == pytest.approx(theirs.aic(x, LENGTHS), rel=1e-10)
    np.testing.assert_allclose(ours.get_stationary_distribution(), theirs.get_stationary_distribution(), rtol=1e-10)


def _path_log_joint(theirs, x: np.ndarray, states: np.ndarray) -> float:
    """Σ over the sequences of log p(x, z) for the path ``states``, from hmmlearn's own emission log-densities."""
    total, start = 0.0, 0
    for length in LENGTHS:
        z, frames = states[start:start + length], theirs._compute_log_likelihood(x[start:start + length])
        total += (np.log(theirs.startprob_[z[0]]) + np.log(theirs.transmat_[z[:-1], z[1:]]).sum()
                  + frames[np.arange(length), z].sum())
        start += length
    return total


def _subsets(case: str) -> list[str]:
    letters = LETTERS[case.partition("-")[0]]
    # Gaussian "c" without "m": hmmlearn 0.3.3 skips the counts its covariance step needs (tested by hand below).
    return [letters, "st", letters[2:], "t" + letters[2:]] if case.startswith("gaussian") else [
        letters, "st", letters[2:], "s" + letters[2:]]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("priors", [False, True], ids=["ml", "map"])
def test_em_steps_from_given_parameters_equal_hmmlearn_for_every_frozen_subset(case, priors):
    for params in _subsets(case):
        options = PRIORS[case.partition("-")[0]] if priors else {}
        theirs, ours, x = _pair(case, n_iter=2, init_params="", params=params, tol=-np.inf, **options)
        before = {name: np.copy(getattr(ours, name)) for name in ("startprob_", "transmat_")}
        theirs.fit(x, LENGTHS)
        ours.fit(x, LENGTHS)
        _assert_same_parameters(theirs, ours)
        np.testing.assert_allclose(list(ours.monitor_.history), list(theirs.monitor_.history), rtol=1e-10)
        for letter, name in (("s", "startprob_"), ("t", "transmat_")):
            if letter not in params:  # frozen: exactly the given value
                np.testing.assert_array_equal(getattr(ours, name), before[name])


@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "full", "tied"])
def test_covariance_step_with_means_frozen_is_the_closed_form(covariance_type):
    """params="c": Σ_k = (Ψ + Σ_t γ_tk (x_t - μ_k)(x_t - μ_k)ᵀ) / (weight + N_k) at the given means (hmmlearn 0.3.3
    leaves its counts at zero here), with the posteriors γ from hmmlearn at the given parameters."""
    theirs, ours, x = _pair(f"gaussian-{covariance_type}", n_iter=1, init_params="", params="c")
    gamma = theirs.predict_proba(x, LENGTHS)
    ours.fit(x, LENGTHS)
    centred = x[:, None, :] - theirs.means_  # (T, K, D)
    scatter = np.einsum("tk,tkd,tke->kde", gamma, centred, centred)
    counts = gamma.sum(0)
    if covariance_type == "diag":
        expected = (1e-2 + np.diagonal(scatter, axis1=1, axis2=2)) / counts[:, None]
        np.testing.assert_allclose(ours._covars_, expected, rtol=1e-8)
    elif covariance_type == "spherical":
        expected = ((1e-2 + np.diagonal(scatter, axis1=1, axis2=2)) / counts[:, None]).mean(1)
        np.testing.assert_allclose(ours._covars_, expected, rtol=1e-8)
    elif covariance_type == "full":
        np.testing.assert_allclose(ours._covars_, (1e-2 + scatter) / counts[:, None, None], rtol=1e-8)
    else:
        np.testing.assert_allclose(ours._covars_, (1e-2 + scatter.sum(0)) / counts.sum(), rtol=1e-8)
    np.testing.assert_array_equal(ours.means_, theirs.means_)


@pytest.mark.parametrize("case", CASES)
def test_fit_from_hmmlearns_start_recipe_equals_hmmlearn(case):
    """The default start (Dirichlet draws, k-means / moments / uniform draws) with the same random_state, then EM."""
    family, _, covariance_type = case.partition("-")
    options = {"covariance_type": covariance_type} if covariance_type else {}
    theirs_class = {"gaussian": hmm.GaussianHMM, "poisson": hmm.PoissonHMM, "categorical": hmm.CategoricalHMM}[family]
    ours_class = {"gaussian": GaussianHMM, "poisson": PoissonHMM, "categorical": CategoricalHMM}[family]
    x = _data(family)
    theirs = theirs_class(K, n_iter=8, random_state=3, **options).fit(x, LENGTHS)
    ours = ours_class(K, n_iter=8, random_state=3, **options).fit(x, LENGTHS)
    _assert_same_parameters(theirs, ours, rtol=1e-7)
    np.testing.assert_allclose(list(ours.monitor_.history), list(theirs.monitor_.history), rtol=1e-10)
    assert (ours.monitor_.iter, ours.monitor_.converged) == (theirs.monitor_.iter, theirs.monitor_.converged)
    assert ours.n_features == theirs.n_features


@pytest.mark.parametrize("case", CASES)
def test_em_log_probability_never_decreases(case):
    _, ours, x = _pair(case, n_iter=40, tol=1e-9, init_params="")
    ours.fit(x, LENGTHS)
    history = np.array(ours.monitor_.history)
    assert len(history) >= 5
    assert (np.diff(history) >= -1e-9 * np.abs(history[1:])).all()


@pytest.mark.parametrize("case", CASES)
def test_n_iter_zero_leaves_the_start(case):
    _, ours, x = _pair(case, n_iter=0, init_params="")
    given = _parameters(case.partition("-")[0], case.partition("-")[2] or "diag")
    ours.fit(x, LENGTHS)
    for name, value in given.items():
        stored = ours._covars_ if name == "covars_" else getattr(ours, name)
        np.testing.assert_array_equal(stored, value)
    assert list(ours.monitor_.history) == [] and ours.monitor_.iter == 0


def test_frozen_parameters_never_move_over_many_iterations():
    _, ours, x = _pair("gaussian-full", n_iter=6, init_params="", params="m", tol=-np.inf)
    ours.fit(x, LENGTHS)
    given = _parameters("gaussian", "full")
    for name in ("startprob_", "transmat_", "covars_"):
        np.testing.assert_array_equal(getattr(ours, name), given[name])
    assert not np.allclose(ours.means_, given["means_"])


@pytest.mark.parametrize("case", CASES)
def test_samples_have_hmmlearns_shapes_and_draws(case):
    theirs, ours, _ = _pair(case)
    x, z = ours.sample(40, random_state=5)
    expected_x, expected_z = theirs.sample(40, random_state=5)
    assert x.shape == expected_x.shape == (40, 1 if case == "categorical" else D) and z.shape == (40,)
    np.testing.assert_allclose(x, expected_x, rtol=1e-10)
    np.testing.assert_array_equal(z, expected_z)
    _, continued = ours.sample(5, random_state=6, currstate=z[-1])
    assert continued.shape == (5,) and continued[0] == z[-1]


def test_spherical_covars_read_as_matrices_and_accept_hmmlearns_tiled_form():
    model = GaussianHMM(K, "spherical")
    model.means_ = np.zeros((K, D))
    model.covars_ = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])  # hmmlearn's internal (K, D) tiles
    np.testing.assert_array_equal(model.covars_, np.array([1.0, 2.0, 3.0])[:, None, None] * np.eye(D))


def test_a_tutorial_script_runs_by_changing_only_the_import():
    """hmmlearn's tutorial ("Sampling" / "Training HMM parameters and inferring the hidden states")."""
    script = """
import numpy as np
from hmmlearn import hmm

np.random.seed(42)
model = hmm.GaussianHMM(n_components=3, covariance_type="full")
model.startprob_ = np.array([0.6, 0.3, 0.1])
model.transmat_ = np.array([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.3, 0.3, 0.4]])
model.means_ = np.array([[0.0, 0.0], [3.0, -3.0], [5.0, 10.0]])
model.covars_ = np.tile(np.identity(2), (3, 1, 1))
X, Z = model.sample(100, random_state=1)
remodel = hmm.GaussianHMM(n_components=3, covariance_type="full", n_iter=100, random_state=7)
remodel.fit(X)
Z2 = remodel.predict(X)
result = (X, Z, Z2, remodel.score(X), remodel.monitor_.converged, remodel.transmat_)
"""
    theirs, ours = {}, {}
    exec(script, theirs)
    exec(script.replace("from hmmlearn import hmm", "from emvi import estimators as hmm"), ours)
    for expected, value in zip(theirs["result"][:3], ours["result"][:3], strict=True):
        np.testing.assert_allclose(value, expected, rtol=1e-10)
    assert ours["result"][3] == pytest.approx(theirs["result"][3], rel=1e-8)
    assert ours["result"][4] == theirs["result"][4]
    np.testing.assert_allclose(ours["result"][5], theirs["result"][5], rtol=1e-6, atol=1e-10)
    assert isinstance(ours["remodel"], estimators.GaussianHMM)


def test_bad_input_gets_one_line_errors():
    _, ours, x = _pair("gaussian-diag")
    with pytest.raises(DataError, match="lengths must"):
        ours.score(x, [10, 10])
    with pytest.raises(ConfigError, match="algorithm"):
        ours.decode(x, LENGTHS, algorithm="beam")
    with pytest.raises(NotFittedError):
        GaussianHMM(K).score(x)
    with pytest.raises(DataError, match="covars must be positive"):
        ours.covars_ = -np.ones((K, D))
    _, categorical, symbols = _pair("categorical")
    with pytest.raises(DataError, match="Largest symbol is 7"):
        categorical.score(np.array([[0], [7]]))
    with pytest.raises(DataError, match="non-negative integers"):
        categorical.score(np.array([[0.5], [1.0]]))


def test_categorical_infers_its_symbols_from_the_data():
    symbols = _data("categorical")
    model = CategoricalHMM(2, n_iter=3, random_state=0).fit(symbols, LENGTHS)
    assert model.n_features == int(symbols.max()) + 1 and model.emissionprob_.shape == (2, model.n_features)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "spherical"])
def test_hmm_model_covariance_types_ml_step_is_map_step_with_flat_priors_and_em_is_monotone(covariance_type):
    """HMMModel's own Baum-Welch M-step for the new covariance types is hmmlearn's MAP step with Ψ = 0, ν = 0 and
    w = 0 (plus the model's floor on the diagonal), and EM on it never decreases the log-likelihood."""
    torch.manual_seed(0)
    x = torch.as_tensor(np.stack([_data("gaussian")[:25], _data("gaussian")[25:50]]))
    lengths = torch.tensor([25, 18])
    model = HMMModel(HMMConfig(num_states=K, covariance_type=covariance_type, floor=1e-9), D, dtype=torch.float64)
    initialise_hmm(model, x, lengths, torch.Generator().manual_seed(0))
    stats, _ = model.e_step(x, lengths)
    statistics = model.additive_statistics(stats, x, lengths)
    name = model.parameter_names()[-1]
    current = {n: getattr(model, n).detach().clone() for n in model.parameter_names()}
    prior = HMMPrior(covars=0.0, covars_weight=1.0 if covariance_type == "spherical" else 0.0)
    expected = map_m_step(statistics, current, prior, {"means", name}, covariance_type)[name]
    model.m_step(stats, x, lengths)
    floor = 1e-9 if covariance_type == "spherical" else 1e-9 * torch.eye(D, dtype=torch.float64)
    torch.testing.assert_close(getattr(model, name), expected + floor, rtol=1e-8, atol=1e-12)
    history = np.array(fit_em(model, x, lengths, max_iter=25, tol=0.0, warn=False).log_likelihood_history)
    assert (np.diff(history) >= -1e-9 * np.abs(history[1:])).all()
    assert model.num_parameters() == (K - 1) + K * (K - 1) + K * D + {"full": K * 3, "tied": 3, "spherical": K}[
        covariance_type]


@pytest.mark.parametrize("covariance_type", ["full", "tied", "spherical"])
def test_hmm_estimator_with_a_covariance_type_scores_as_the_dropin_with_its_parameters(covariance_type):
    """emvi's own HMM estimator fits the new covariance types by Baum-Welch (never decreasing) and scores like
    GaussianHMM given its fitted parameters."""
    x = _data("gaussian")
    sequences = [x[:30], x[30:50], x[50:]]
    fitted = estimators.HMM(num_states=2, covariance_type=covariance_type, max_iter=30, tol=0.0, seed=0)
    with pytest.warns(estimators.ConvergenceWarning):
        fitted.fit(sequences)
    assert (np.diff(fitted.history_) >= -1e-9 * np.abs(np.array(fitted.history_[1:]))).all()
    dropin = GaussianHMM(2, covariance_type)
    dropin.startprob_, dropin.transmat_ = fitted.startprob_, fitted.transmat_
    dropin.means_, dropin.covars_ = fitted.params_["means"], fitted.params_[fitted.model_.parameter_names()[-1]]
    assert dropin.score(x, LENGTHS) == pytest.approx(fitted.score(sequences), rel=1e-10)


def test_covariance_types_other_than_diag_are_refused_where_they_do_not_apply():
    from emvi.catalog.hmm import HMM as CatalogHMM

    with pytest.raises(ConfigError, match="gaussian emissions only"):
        HMMConfig(emission="poisson", covariance_type="full")
    assert "diagonal Gaussian covariances only" in CatalogHMM(HMMConfig(covariance_type="tied"), D).mcmc_ready()
    assert CatalogHMM(HMMConfig(), D).mcmc_ready() is None


@pytest.mark.parametrize("family", ["gaussian", "poisson", "categorical"])
def test_constructor_parameters_and_defaults_are_hmmlearns(family):
    from sklearn.base import clone

    ours_class = {"gaussian": GaussianHMM, "poisson": PoissonHMM, "categorical": CategoricalHMM}[family]
    theirs_class = {"gaussian": hmm.GaussianHMM, "poisson": hmm.PoissonHMM, "categorical": hmm.CategoricalHMM}[family]
    ours, theirs = ours_class().get_params(), theirs_class().get_params()
    assert ours.pop("device") == "cpu"
    assert ours == theirs
    assert clone(ours_class(n_components=4, random_state=2)).get_params()["n_components"] == 4


def test_random_state_instances_implementation_and_verbose_follow_hmmlearn(capsys):
    x = _data("gaussian")
    theirs = hmm.GaussianHMM(K, n_iter=4, random_state=np.random.RandomState(9), implementation="scaling",
                             verbose=True).fit(x, LENGTHS)
    expected_report = capsys.readouterr().err
    ours = GaussianHMM(K, n_iter=4, random_state=np.random.RandomState(9), implementation="scaling",
                       verbose=True).fit(x, LENGTHS)
    report = capsys.readouterr().err
    _assert_same_parameters(theirs, ours, rtol=1e-7)
    assert len(report.splitlines()) == len(expected_report.splitlines()) == 4
    for line, expected in zip(report.splitlines(), expected_report.splitlines(), strict=True):
        assert [float(v) for v in line.split()[:2]] == pytest.approx([float(v) for v in expected.split()[:2]], rel=1e-10)
    with pytest.raises(ConfigError, match="implementation"):
        GaussianHMM(K, implementation="fast").fit(x, LENGTHS)


def test_a_left_right_model_keeps_its_forbidden_transitions_at_zero_as_hmmlearn():
    """hmmlearn's left-right recipe: zeros in startprob_/transmat_ stay zero through EM (init_params="mc")."""
    x = np.sort(_data("gaussian"), axis=0)
    models = []
    for model_class in (hmm.GaussianHMM, GaussianHMM):
        model = model_class(K, "full", init_params="mc", params="stmc", n_iter=5, random_state=0)
        model.startprob_ = np.array([1.0, 0.0, 0.0])
        model.transmat_ = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
        models.append(model.fit(x, LENGTHS))
    theirs, ours = models
    assert (ours.transmat_[np.tril_indices(K, -1)] == 0).all() and (ours.transmat_[0, 2] == 0)
    assert (ours.startprob_[1:] == 0).all()
    _assert_same_parameters(theirs, ours, rtol=1e-7)
    np.testing.assert_array_equal(ours.predict(x, LENGTHS), theirs.predict(x, LENGTHS))
