"""The Bayesian Poisson HMM's written-out potential (forward-backward, no autograd): its flat potential equals the
autograd path's (``flat_potential`` of the view's ``log_density``, the tree recursion differentiated by torch.autograd)
in value and gradient at random unconstrained points, for one or several sequences of unequal lengths, K ∈ {1, 2, 3},
free and stationary π; the log joint and its gradient in the constrained globals equal autograd of
``HMMModel.bayesian_log_density`` (along the simplices for π and A); and the product tree's sweeps equal the vectors multiplied one step at a time."""


import numpy as np
import pytest
import torch
from test_nuts_written_gradient import points_and_autograd, value_and_gradient
from torch.distributions import biject_to

from emvi.catalog.hmm import HMM
from emvi.inference.mcmc import flat_potential, flat_potential_with_grad
from emvi.models.hmm import HMMConfig
from emvi.models.hmm_density_grad import PoissonHMMLogJointAndGrad, pairwise_products, sweep_forward_backward

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


@pytest.mark.parametrize("lengths", [[1], [7], [500], [1000, 333, 1, 64]])
@pytest.mark.parametrize("states", [2, 3])
@pytest.mark.parametrize("initial", ["free", "stationary"])
def test_log_joint_and_its_gradient_equal_autograd_of_the_bayesian_log_density(lengths, states, initial):
    view, x, lengths, _, _ = bayesian_hmm(states, 2, lengths, initial)
    generator = torch.Generator().manual_seed(states)

    def simplex(*shape):  # Dirichlet(1) draws: normalised exponentials
        draws = -torch.rand(*shape, states, dtype=torch.float64, generator=generator).log()
        return draws / draws.sum(-1, keepdim=True)
    for _ in range(2):  # random globals inside the support
        values = {"initial_probs": simplex(), "transition": simplex(states),
                  "rates": 0.5 + 8 * torch.rand(states, 2, dtype=torch.float64, generator=generator)}
        values = {name: values[name] for name in view["init_values"]}
        leaves = {name: value.clone().requires_grad_(True) for name, value in values.items()}
        expected = view["model"].bayesian_log_density(x, lengths, leaves)
        expected_grads = dict(zip(leaves, torch.autograd.grad(expected, list(leaves.values())), strict=True))
        value, grads = view["log_density_and_grad"]({name: v.numpy() for name, v in values.items()})
        assert abs(value - expected.item()) <= 1e-10 * abs(expected.item())
        for name, grad in grads.items():
            reference = expected_grads[name].numpy()
            if name != "rates":  # a simplex's rows: only the gradient along the simplex (sum zero) is defined
                grad, reference = grad - grad.mean(-1, keepdims=True), reference - reference.mean(-1, keepdims=True)
            np.testing.assert_allclose(grad, reference, rtol=0, atol=1e-10 * max(1.0, np.abs(reference).max()))


@pytest.mark.parametrize("steps", [1, 2, 3, 11, 64, 100])
def test_product_tree_sweeps_equal_vectors_multiplied_one_step_at_a_time(steps):
    generator = np.random.default_rng(steps)
    matrices = generator.uniform(0.1, 2.0, size=(2, steps, 3, 3))  # (N, S, K, K)
    first = generator.uniform(0.1, 1.0, size=(2, 3))
    levels = pairwise_products(np.ascontiguousarray(np.moveaxis(matrices, (2, 3), (0, 1))))  # states first
    entering, leaving = (np.moveaxis(v, 0, -1) for v in sweep_forward_backward(levels, first.T.copy()))  # (N, S, K)
    for n in range(2):
        forward, backward = first[n], np.ones(3)
        for s in range(steps):
            np.testing.assert_allclose(entering[n, s], forward / forward.sum(), rtol=1e-12)
            forward = forward @ matrices[n, s]
            np.testing.assert_allclose(leaving[n, steps - 1 - s], backward / backward.sum(), rtol=1e-12)
            backward = matrices[n, steps - 1 - s] @ backward


def test_views_without_a_written_out_gradient_fall_back_to_autograd():
    x = torch.randn(1, 20, 2, dtype=torch.float64)
    view = HMM(HMMConfig(num_states=2, emission="gaussian"), 2, dtype=torch.float64).bayesian_view(x, torch.tensor([20]))
    assert view["log_density_and_grad"] is None
