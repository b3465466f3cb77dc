"""The Bayesian Poisson HMM's written-out potential (forward-backward, no autograd): its flat potential equals the
autograd path's (``flat_potential`` of the view's ``log_density``, the tree recursion differentiated by torch.autograd)
in value and gradient at random unconstrained points, for one or several sequences of unequal lengths, K ∈ {1, 2, 3},
free and stationary π; and its doubling scan equals the products multiplied one by one."""


import numpy as np
import pytest
import torch
from test_nuts_written_gradient import points_and_autograd, value_and_gradient
from torch.distributions import biject_to

from emvi.catalog.hmm import HMM
from emvi.inference.mcmc import flat_potential, flat_potential_with_grad
from emvi.models.hmm import HMMConfig
from emvi.models.hmm_density_grad import PoissonHMMLogJointAndGrad, scaled_scan

TOLERANCE = 1e-9
"""Relative to the largest of 1 and the compared vector's largest entry: float64 sums over ~10^3-10^4 steps."""


def bayesian_hmm(states: int, features: int, lengths: list[int], initial: str):
    """``(view, x, lengths, transforms, shapes)``: the Bayesian view of a Poisson HMM on sequences drawn from a
    sticky chain with well separated rates (padded to the longest)."""
    generator = torch.Generator().manual_seed(sum(lengths) + states)
    steps = max(lengths)
    x = torch.zeros(len(lengths), steps, features, dtype=torch.float64)
    for n, length in enumerate(lengths):
        state, rates = 0, []
        for _ in range(length):
            if torch.rand((), generator=generator) < 0.1:
                state = int(torch.randint(states, (), generator=generator))
            rates.append(1.0 + 4.0 * state)
        rate = torch.tensor(rates, dtype=torch.float64)[:, None].expand(length, features)
        x[n, :length] = torch.poisson(rate, generator=generator)
    lengths = torch.tensor(lengths)
    config = HMMConfig(num_states=states, emission="poisson", initial=initial)
    view = HMM(config, features, dtype=torch.float64).bayesian_view(x, lengths)
    priors = view["model"].__dict__["_pyro_samples"]
    transforms = {name: biject_to(prior.support).inv for name, prior in priors.items()}  # constrained -> free
    shapes = {name: transforms[name](view["init_values"][name]).shape for name in priors}
    return view, x, lengths, transforms, shapes


@pytest.mark.parametrize("lengths", [[500], [5000], [300, 120, 1], [2, 1]])
@pytest.mark.parametrize("states", [1, 2, 3])
@pytest.mark.parametrize("features", [1, 2])
@pytest.mark.parametrize("initial", ["free", "stationary"])
def test_written_out_hmm_potential_equals_autograd_potential_in_value_and_gradient(lengths, states, features,
                                                                                  initial):
    view, x, lengths, transforms, shapes = bayesian_hmm(states, features, lengths, initial)
    assert isinstance(view["log_density_and_grad"], PoissonHMMLogJointAndGrad)
    autograd_potential = flat_potential(view["log_density"], transforms, shapes)
    written = flat_potential_with_grad(view["log_density_and_grad"], transforms, shapes)
    for q, expected in points_and_autograd(autograd_potential, shapes, seed=3, count=3):
        actual = value_and_gradient(written, q)
        scale = max(1.0, float(expected.abs().max()))
        assert float((actual - expected).abs().max()) <= TOLERANCE * scale, (actual, expected)
        value, grad = written.value_and_grad(q.numpy())  # NUTS's direct call, no autograd
        assert np.allclose(np.concatenate([[value], grad]), actual.numpy(), rtol=0, atol=TOLERANCE * scale)


@pytest.mark.parametrize("reverse", [False, True])
def test_doubling_scan_equals_products_multiplied_one_by_one(reverse):
    generator = np.random.default_rng(0)
    matrices = generator.uniform(0.1, 2.0, size=(2, 11, 3, 3))
    products, log_scales = scaled_scan(np.moveaxis(matrices, (2, 3), (0, 1)), reverse)  # the scan's states first
    products = np.moveaxis(products, (0, 1), (2, 3))
    for n in range(2):
        for s in range(11):
            expected = np.eye(3)
            for step in (range(s, 11) if reverse else range(s + 1)):
                expected = expected @ matrices[n, step]
            np.testing.assert_allclose(products[n, s] * np.exp(log_scales[n, s]), expected, rtol=1e-12)


def test_views_without_a_written_out_gradient_fall_back_to_autograd():
    x = torch.randn(1, 20, 2, dtype=torch.float64)
    view = HMM(HMMConfig(num_states=2, emission="gaussian"), 2, dtype=torch.float64).bayesian_view(x, torch.tensor([20]))
    assert view["log_density_and_grad"] is None
