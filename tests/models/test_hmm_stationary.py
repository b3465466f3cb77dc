"""HMMs whose initial distribution is the stationary one reach the constrained maximum likelihood: equal to an
independent direct maximisation (NumPy forward algorithm, SciPy L-BFGS-B from many starts)."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import gammaln, softmax

from emvi.estimators import HMM


def _simulate(emission, k, length=150, seed=0):
    rng = np.random.default_rng(seed)
    transition = np.full((k, k), 0.1 / (k - 1)) + np.eye(k) * (0.9 - 0.1 / (k - 1))
    locations = np.array([2.0, 9.0, 20.0])[:k] if emission == "poisson" else np.array([-2.0, 0.5, 3.0])[:k]
    states = [0]
    for _ in range(length - 1):
        states.append(rng.choice(k, p=transition[states[-1]]))
    states = np.array(states)
    x = rng.poisson(locations[states]) if emission == "poisson" else rng.normal(locations[states], 0.7)
    return x.astype(float)


def _stationary(transition):
    k = transition.shape[0]
    system = np.vstack([transition.T - np.eye(k), np.ones((1, k))])
    return np.linalg.lstsq(system, np.r_[np.zeros(k), 1.0], rcond=None)[0]


def _log_likelihood(theta, x, emission, k):
    """Scaled forward algorithm; θ = (transition logits (k, k), log rates | means and log variances)."""
    transition = softmax(theta[: k * k].reshape(k, k), axis=1)
    rest = theta[k * k:]
    if emission == "poisson":
        log_emit = x[:, None] * rest[None] - np.exp(rest)[None] - gammaln(x + 1)[:, None]           # (T, k)
    else:
        mean, log_var = rest[:k], rest[k:]
        log_emit = -0.5 * ((x[:, None] - mean) ** 2 / np.exp(log_var) + log_var + np.log(2 * np.pi))
    shift = log_emit.max(1, keepdims=True)
    emit = np.exp(log_emit - shift)
    alpha = np.clip(_stationary(transition), 1e-300, None) * emit[0]
    total = np.log(alpha.sum()) + shift[0, 0]
    alpha /= alpha.sum()
    for t in range(1, len(x)):
        alpha = (alpha @ transition) * emit[t]
        norm = alpha.sum()
        total += np.log(norm) + shift[t, 0]
        alpha /= norm
    return total


def _scipy_optimum(x, emission, k, starts=6):
    rng = np.random.default_rng(1)
    best = -np.inf
    for _ in range(starts):
        logits = rng.normal(size=k * k) + 2 * np.eye(k).ravel()
        if emission == "poisson":
            rest = np.log(np.sort(rng.uniform(0.5, x.max(), k)))
        else:
            rest = np.r_[np.sort(rng.uniform(x.min(), x.max(), k)), np.log(np.full(k, x.var()))]
        result = minimize(lambda th: -_log_likelihood(th, x, emission, k), np.r_[logits, rest], method="L-BFGS-B",
                          options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-8})
        best = max(best, -result.fun)
    return best


@pytest.mark.slow
@pytest.mark.parametrize("emission", ["poisson", "gaussian"])
@pytest.mark.parametrize("k", [2, 3])
def test_stationary_hmm_reaches_the_constrained_optimum(emission, k):
    x = _simulate(emission, k)
    fitted = HMM(k, emission, initial="stationary", n_init=2, max_iter=1000, tol=1e-8, floor=1e-12).fit(x[:, None])
    reference = _scipy_optimum(x, emission, k)
    assert fitted.log_likelihood_ == pytest.approx(reference, abs=1e-4)
