"""The written-out potential gradient (no autograd) of the Bayesian mixture: its flat potential equals the autograd
path's (``flat_potential`` of ``log_density``, differentiated by torch.autograd) in value and gradient; each bijection's
and each prior's written-out gradient equals autograd's; and a seeded NUTS run on it gives the autograd run's
posterior means within Monte Carlo error."""

import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import biject_to, constraints

from emvi.catalog.mixture import Mixture
from emvi.inference.mcmc import bijection_with_grad, fast_bijection, fit_mcmc, flat_potential, flat_potential_with_grad
from emvi.models.mixture import MixtureConfig
from emvi.models.mixture_density_grad import MixtureLogJointAndGrad
from emvi.models.prior_density import NUMPY_OPS, TORCH_OPS, summed_log_density_and_grad

TOLERANCE = 1e-10
"""Relative to the largest of 1 and the compared vector's largest entry: float64 sums of ~10^3 terms."""


def assert_equal_to_rounding(actual: torch.Tensor, expected: torch.Tensor):
    scale = max(1.0, float(expected.abs().max()))
    assert float((actual - expected).abs().max()) <= TOLERANCE * scale, (actual, expected)


def value_and_gradient(potential, q: torch.Tensor) -> torch.Tensor:
    q = q.detach().clone().requires_grad_()
    value = potential(q)
    (grad,) = torch.autograd.grad(value, q)
    return torch.cat([value.detach().reshape(1), grad])


def points_and_autograd(autograd_potential, shapes: dict, seed: int, count: int):
    """``count`` seeded standard-normal unconstrained points ``q`` (the flat size of ``shapes``), each with the
    autograd potential's ``[value, *gradient]`` there (checked finite)."""
    generator = torch.Generator().manual_seed(seed)
    size = sum(math.prod(shape) for shape in shapes.values())
    for _ in range(count):
        q = torch.randn(size, generator=generator, dtype=torch.float64)
        expected = value_and_gradient(autograd_potential, q)
        assert torch.isfinite(expected).all()
        yield q, expected


def bayesian_mixture(family: str, components: int, features: int, items: int = 300):
    """``(view, x, transforms, shapes)``: the Bayesian view of a mixture on data drawn from a random one."""
    config = MixtureConfig(num_components=components, family=family, num_categories=3, weight_concentration=1.5)
    generator = torch.Generator().manual_seed(features)
    groups = torch.randint(3, (items, 1), generator=generator).to(torch.float64)  # three clusters of items
    if family == "gaussian-diag":
        x = 2 * groups + torch.randn(items, features, generator=generator, dtype=torch.float64)
    elif family == "poisson":
        x = torch.poisson((1 + 3 * groups).expand(items, features), generator=generator)
    elif family == "bernoulli":
        x = torch.bernoulli((0.2 + 0.3 * groups).expand(items, features), generator=generator)
    else:
        x = torch.remainder(groups + torch.randint(2, (items, features), generator=generator), 3)  # codes in [0, 3)
    view = Mixture(config, features, dtype=torch.float64).bayesian_view(x)
    priors = view["model"].__dict__["_pyro_samples"]
    transforms = {name: biject_to(prior.support).inv for name, prior in priors.items()}  # constrained -> free
    shapes = {name: transforms[name](view["init_values"][name]).shape for name in priors}
    return view, x, transforms, shapes


@pytest.mark.parametrize("components", [1, 2, 3])
@pytest.mark.parametrize("features", [1, 3])
@pytest.mark.parametrize("family", ["gaussian-diag", "poisson", "bernoulli", "categorical"])
@pytest.mark.parametrize("ops", [NUMPY_OPS, TORCH_OPS], ids=["numpy", "torch"])
def test_written_out_potential_equals_autograd_potential_in_value_and_gradient(family, components, features, ops):
    view, x, transforms, shapes = bayesian_mixture(family, components, features)
    assert isinstance(view["log_density_and_grad"], MixtureLogJointAndGrad)
    autograd_potential = flat_potential(view["log_density"], transforms, shapes)
    density = MixtureLogJointAndGrad(view["model"], x, ops)
    written = flat_potential_with_grad(density, transforms, shapes)
    for q, expected in points_and_autograd(autograd_potential, shapes, seed=2, count=4):
        assert_equal_to_rounding(value_and_gradient(written, q), expected)


@pytest.mark.parametrize("constraint,shape", [
    (constraints.real, (3, 2)), (constraints.positive, (3, 2)), (constraints.unit_interval, (4,)),
    (constraints.interval(-2.0, 5.0), (4,)), (constraints.simplex, (1,)), (constraints.simplex, (4,)),
    (constraints.simplex, (2, 3, 4)), (constraints.greater_than(1.5), (3,))])
@pytest.mark.parametrize("ops", [NUMPY_OPS, TORCH_OPS], ids=["numpy", "torch"])
def test_bijection_gradient_equals_autograd_of_the_bijection(constraint, shape, ops):
    """backward(g) = ∂(g·v(u) + log|det ∂v/∂u|)/∂u, with v and log|det| those of fast_bijection."""
    inverse = biject_to(constraint)
    generator = torch.Generator().manual_seed(3)
    u = torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True)
    value, log_det = fast_bijection(inverse, u.shape)(u)
    log_det = torch.as_tensor(log_det, dtype=u.dtype)
    written_value, written_log_det, backward = bijection_with_grad(inverse, u.shape, ops)(ops.convert(u.detach()))
    outer = torch.randn(value.shape, generator=generator, dtype=torch.float64)
    (expected,) = torch.autograd.grad((outer * value).sum() + log_det, u, allow_unused=True)
    expected = torch.zeros_like(u) if expected is None else expected  # no dependence: a zero gradient
    written_value, written_grad = torch.as_tensor(written_value), torch.as_tensor(backward(ops.convert(outer)))
    assert_equal_to_rounding(written_value, value.detach())
    assert abs(float(written_log_det) - float(log_det.detach())) <= TOLERANCE * max(1.0, abs(float(log_det.detach())))
    assert_equal_to_rounding(written_grad, expected)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("make_prior", [
    lambda: dist.Normal(t(0.5, -1.0), t(2.0, 0.3)).expand([3, 2]).to_event(2),
    lambda: dist.InverseGamma(t(2.0), t(0.7)).expand([3]).to_event(1),
    lambda: dist.Gamma(t(1.0, 3.5), t(2.0)).to_event(1),
    lambda: dist.Dirichlet(t(1.0, 2.5, 0.5)),
    lambda: dist.Beta(t(1.5), t(0.8, 3.0)).to_event(1)])
@pytest.mark.parametrize("ops", [NUMPY_OPS, TORCH_OPS], ids=["numpy", "torch"])
def test_prior_gradient_equals_autograd_of_log_prob(make_prior, ops):
    prior = make_prior()
    torch.manual_seed(4)
    value = prior.sample().requires_grad_()
    expected = prior.log_prob(value).sum()
    (expected_grad,) = torch.autograd.grad(expected, value)
    expected = expected.detach()
    written, written_grad = summed_log_density_and_grad(prior, ops)(ops.convert(value.detach()))
    written_grad = torch.as_tensor(written_grad)
    assert abs(float(written) - float(expected)) <= TOLERANCE * max(1.0, abs(float(expected)))
    assert_equal_to_rounding(written_grad, expected_grad)


@pytest.mark.slow
def test_seeded_nuts_on_the_written_out_gradient_matches_the_autograd_runs_posterior_means():
    """Same seed, same start: the two runs' posterior means of every site agree within 4 Monte Carlo standard errors
    (each run's variance / its effective sample size, the runs treated as independent)."""
    view, x, _, _ = bayesian_mixture("gaussian-diag", 2, 1, items=200)
    runs = []
    for written in (False, True):
        runs.append(fit_mcmc(view["model"], x, num_samples=300, warmup_steps=200, num_chains=2, seed=5,
                             init_values=view["init_values"], log_density=view["log_density"],
                             log_density_and_grad=view["log_density_and_grad"] if written else None))
    for name in view["init_values"]:
        errors = []
        for run in runs:
            draws = run.samples[name].flatten(0, 1)
            errors.append(draws.var(0) / torch.as_tensor(run.diagnostics[name]["n_eff"]).clamp_min(1.0))
        difference = runs[0].samples[name].mean((0, 1)) - runs[1].samples[name].mean((0, 1))
        assert (difference.abs() <= 4 * (errors[0] + errors[1]).sqrt() + 1e-12).all(), (name, difference)
        assert runs[0].num_divergent == runs[1].num_divergent == 0
