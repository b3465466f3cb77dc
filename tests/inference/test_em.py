"""The generic EM loop: stopping rule, history, warnings and errors, on a toy model with a closed-form trajectory."""

import math

import pytest
import torch

from emvi.errors import ConfigError, NonFiniteLossError
from emvi.inference.em import ConvergenceWarning, fit_em


class HalfwayModel:
    """Objective f(θ) = -(θ - 3)²; the "M-step" moves θ halfway to 3, so from θ = 0: f_t = -9 / 4^t and the
    change f_t - f_{t-1} = 27 / 4^t. The loop must stop at the first t with 27 / 4^t < tol (num_data = 1)."""

    def __init__(self, theta=0.0, broken_at=None):
        self.theta, self.broken_at, self.calls = theta, broken_at, 0

    def e_step(self, x):
        self.calls += 1
        if self.broken_at is not None and self.calls > self.broken_at:
            return None, torch.tensor(math.nan)
        return None, torch.tensor(-((self.theta - 3.0) ** 2))

    def m_step(self, stats, x):
        self.theta = (self.theta + 3.0) / 2


DATA = torch.zeros(1, 1)


def test_stops_at_the_predicted_iteration_and_records_history():
    tol = 1e-3
    expected = next(t for t in range(1, 100) if 27 / 4**t < tol)
    calls = []
    result = fit_em(HalfwayModel(), DATA, max_iter=100, tol=tol, callback=lambda i, f: calls.append((i, f)))
    assert result.converged and result.n_iter == expected  # f_t is evaluated after t M-steps
    assert len(result.log_likelihood_history) == expected + 1
    assert result.log_likelihood_history == pytest.approx([-9 / 4**t for t in range(expected + 1)], rel=1e-6)
    assert [i for i, _ in calls] == list(range(expected + 1))
    assert all(b >= a for a, b in zip(result.seconds_history, result.seconds_history[1:], strict=False))
    assert result.lower_bound == result.log_likelihood  # num_data = 1


def test_warns_when_max_iter_is_reached():
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        result = fit_em(HalfwayModel(), DATA, max_iter=3, tol=1e-12)
    assert not result.converged and result.n_iter == 3 and len(result.log_likelihood_history) == 4


def test_per_item_tolerance_uses_num_data():
    # The same trajectory counted as 1000 items stops much earlier: the change per item is 27 / 4^t / 1000.
    result = fit_em(HalfwayModel(), DATA, max_iter=100, tol=1e-3, num_data=1000)
    expected = next(t for t in range(1, 100) if 27 / 4**t / 1000 < 1e-3)
    assert len(result.log_likelihood_history) == expected + 1


def test_non_finite_objective_raises():
    with pytest.raises(NonFiniteLossError, match="iteration 2"):
        fit_em(HalfwayModel(broken_at=2), DATA, max_iter=10, tol=0.0)


@pytest.mark.parametrize("kwargs", [{"max_iter": -1}, {"tol": -0.1}, {"tol": "small"}])
def test_bad_settings_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        fit_em(HalfwayModel(), DATA, **{"max_iter": 5, "tol": 1e-3, **kwargs})


def test_convergence_warnings_are_scikit_learns_and_one_switch_silences_them():
    """Every fit warns scikit-learn's ConvergenceWarning (EM's loop and the estimators alike), which a filter on
    scikit-learn's class or on emvi's name catches; inside ``convergence_reported()`` none is emitted."""
    import warnings

    import numpy as np
    import sklearn.exceptions

    import emvi.estimators
    from emvi.inference import convergence_reported

    ScikitLearn = sklearn.exceptions.ConvergenceWarning
    assert emvi.estimators.ConvergenceWarning is ScikitLearn and issubclass(ScikitLearn, ConvergenceWarning)
    assert not issubclass(UserWarning, ConvergenceWarning)
    with pytest.warns(ScikitLearn, match="max_iter=3") as caught:
        fit_em(HalfwayModel(), DATA, max_iter=3, tol=1e-12)
    assert [w.category for w in caught] == [ScikitLearn] and caught[0].filename == __file__  # the caller's line
    x = np.random.default_rng(0).poisson(3.0, size=(60, 2)).astype(float)
    fits = {"Mixture": lambda: emvi.estimators.Mixture(2, "poisson", max_iter=2, tol=0.0).fit(x),
            "PPCA": lambda: emvi.estimators.PPCA(1, max_iter=2, tol=0.0).fit(x),
            "HMM": lambda: emvi.estimators.HMM(2, "poisson", max_iter=2, tol=0.0).fit(x)}
    for fit in fits.values():
        with pytest.warns(ScikitLearn):
            fit()
        for category in (ScikitLearn, ConvergenceWarning):  # scikit-learn's class, or emvi's name for it
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                warnings.simplefilter("ignore", category)
                fit()  # silenced: no error
        with warnings.catch_warnings(), convergence_reported():
            warnings.simplefilter("error")
            fit()  # not emitted at all
            fit_em(HalfwayModel(), DATA, max_iter=3, tol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ScikitLearn, match="did not converge"):
            fits["Mixture"]()


def test_filtering_on_emvis_convergence_warning_does_not_import_scikit_learn():
    import subprocess
    import sys

    code = ("import sys, warnings, emvi; from emvi.inference.em import ConvergenceWarning; "
            "warnings.simplefilter('ignore', ConvergenceWarning); warnings.warn('x', UserWarning); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
