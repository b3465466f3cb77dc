"""NUTS on a model's hand-derived log density (the Bayesian view's ``log_density``): its potential is Pyro's potential
of the traced model, in value and gradient, for the mixture and the HMM; the HMM's pairwise-product forward recursion
equals the sequential one; a point-fit start on the support's boundary is moved inside."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model
from torch.distributions import biject_to

from emvi.catalog.hmm import HMM
from emvi.catalog.mixture import Mixture
from emvi.inference.mcmc import START_SHRINK, density_potential, interior_start
from emvi.models.hmm import HMMConfig
from emvi.models.hmm_recursions import forward_log_likelihood, tree_forward_log_likelihood
from emvi.models.mixture import MixtureConfig

TOLERANCE = 1e-10
"""Relative to the largest of 1 and the compared vector's largest entry: float64 sums of ~10^3 terms."""


def assert_equal_to_rounding(actual: torch.Tensor, expected: torch.Tensor):
    scale = max(1.0, float(expected.abs().max()))
    assert float((actual - expected).abs().max()) <= TOLERANCE * scale, (actual, expected)


def value_and_gradient(potential, point: dict[str, torch.Tensor]) -> torch.Tensor:
    point = {name: value.detach().clone().requires_grad_() for name, value in point.items()}
    value = potential(point)
    grads = torch.autograd.grad(value, list(point.values()))
    return torch.cat([value.detach().reshape(1), *(g.reshape(-1) for g in grads)])


def check_potentials_agree(view: dict, data: tuple, kwargs: dict, points: int = 4):
    """Pyro's potential of the traced ``view["model"]`` and :func:`density_potential` of ``view["log_density"]``
    at random unconstrained points (standard normal around Pyro's start)."""
    with pyro.validation_enabled(False):
        start, pyro_potential, transforms, _ = initialize_model(view["model"], data, kwargs, max_plate_nesting=1)
    ours = density_potential(view["log_density"], transforms)
    generator = torch.Generator().manual_seed(1)
    for _ in range(points):
        point = {name: u + torch.randn(u.shape, generator=generator, dtype=u.dtype) for name, u in start.items()}
        expected = value_and_gradient(pyro_potential, point)
        assert torch.isfinite(expected).all()
        assert_equal_to_rounding(value_and_gradient(ours, point), expected)


@pytest.mark.parametrize("family", ["gaussian-diag", "poisson", "bernoulli", "categorical"])
def test_mixture_log_density_potential_equals_pyros_traced_potential_in_value_and_gradient(family):
    config = MixtureConfig(num_components=3, family=family, num_categories=4)
    truth = Mixture(config, 2, dtype=torch.float64)
    truth.break_symmetry(torch.Generator().manual_seed(0))
    x, _ = truth.sample(200, generator=torch.Generator().manual_seed(0))
    x = x.to(torch.float64)  # categorical codes arrive as floats, as from a data file
    model = Mixture(config, 2, dtype=torch.float64)
    check_potentials_agree(model.bayesian_view(x), (x,), {})


@pytest.mark.parametrize("emission,initial", [("gaussian", "free"), ("poisson", "stationary"), ("poisson", "free"),
                                              ("categorical", "free")])
@pytest.mark.parametrize("sum_states_by", ["enumeration", "recursion"])
def test_hmm_log_density_potential_equals_pyros_traced_potential_in_value_and_gradient(emission, initial,
                                                                                      sum_states_by):
    """Against both Pyro models: the states enumerated step by step (TraceEnum's einsum) and the recursion factor;
    padded sequences (lengths 9, 4, 1 and 7) for the recursion. (The enumerated potential counts each padded step's
    masked state as a sum over K values of weight 1: log K per padded step, a constant, so unpadded there.)"""
    config = HMMConfig(3, emission, initial=initial, num_categories=4)
    truth = HMM(config, 2, dtype=torch.float64)
    x, _ = truth.sample(4, 9, generator=torch.Generator().manual_seed(3))
    x = x.to(torch.float64)  # categorical codes arrive as floats, as from a data file
    lengths = torch.tensor([9, 4, 1, 7]) if sum_states_by == "recursion" else torch.full((4,), 9)
    x = torch.where((torch.arange(9) < lengths[:, None])[..., None], x, torch.zeros(()).to(x))
    view = HMM(config, 2, dtype=torch.float64).bayesian_view(x, lengths)
    check_potentials_agree(view, (x, lengths), {"sum_states_by": sum_states_by})


def test_hmm_log_density_potential_equals_pyros_on_one_long_sequence():
    """T = 1000: the pairwise products span ten rounds and the padding to 1024 steps."""
    config = HMMConfig(2, "poisson")
    truth = HMM(config, 1, dtype=torch.float64)
    truth.set_parameter("rates", torch.tensor([[2.0], [8.0]], dtype=torch.float64))
    x, _ = truth.sample(1, 1000, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([1000])
    view = HMM(config, 1, dtype=torch.float64).bayesian_view(x, lengths)
    check_potentials_agree(view, (x, lengths), view["kwargs"], points=2)


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 9, 100])
def test_pairwise_product_forward_equals_the_sequential_forward_in_value_and_gradient(steps):
    """Far-apart emission log-densities (gaps of hundreds of nats) included: the scaling keeps both finite."""
    generator = torch.Generator().manual_seed(steps)
    k, n = 3, 2
    start = torch.softmax(torch.randn(k, generator=generator, dtype=torch.float64), 0).requires_grad_()
    transition = torch.softmax(torch.randn(k, k, generator=generator, dtype=torch.float64), 1).requires_grad_()
    log_b = (200 * torch.randn(n, steps, k, generator=generator, dtype=torch.float64)).requires_grad_()

    def both(function):
        value = function(start, transition, log_b)
        inputs = [start, transition, log_b]
        grads = torch.autograd.grad(value.sum(), inputs, allow_unused=True)  # one step: A unused
        grads = [torch.zeros_like(v) if g is None else g for g, v in zip(grads, inputs, strict=True)]
        return torch.cat([value.detach(), *(g.reshape(-1) for g in grads)])

    assert_equal_to_rounding(both(tree_forward_log_likelihood), both(forward_log_likelihood))


def test_interior_start_moves_a_boundary_start_toward_the_prior_mean():
    """EM's π = (1, 2e-29) becomes 0.99 π + 0.01 (1/2, 1/2), inside the simplex; a real site moves by the same
    formula; a prior without a mean (Cauchy) leaves its site alone."""
    priors = {"pi": dist.Dirichlet(torch.ones(2, dtype=torch.float64)),
              "mu": dist.Normal(torch.tensor(3.0, dtype=torch.float64), 1.0),
              "c": dist.Cauchy(torch.tensor(0.0, dtype=torch.float64), 1.0)}
    transforms = {name: biject_to(prior.support).inv for name, prior in priors.items()}
    values = {"pi": torch.tensor([1.0, 2e-29], dtype=torch.float64), "mu": torch.tensor(-1.0, dtype=torch.float64),
              "c": torch.tensor(5.0, dtype=torch.float64)}
    params = {name: transforms[name](value) for name, value in values.items()}
    moved = interior_start(params, transforms, priors)
    pi = transforms["pi"].inv(moved["pi"])
    torch.testing.assert_close(pi, (1 - START_SHRINK) * values["pi"] + START_SHRINK * 0.5, rtol=1e-12, atol=0)
    assert params["pi"].abs().max() > 60 and moved["pi"].abs().max() < 6  # stick-breaking coordinates
    torch.testing.assert_close(moved["mu"], torch.tensor(-1 + 4 * START_SHRINK, dtype=torch.float64))
    assert moved["c"] is params["c"]
