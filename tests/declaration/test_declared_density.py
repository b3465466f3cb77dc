"""The declared model's log joint as one torch function (``bayesian_view(...)["log_density"]``,
:mod:`emvi.models.declared_density`): its potential is Pyro's potential of the traced NUTS target in value and
gradient, for globals only, a Dirichlet (simplex) global with an enumerated categorical, several enumerated locals
with a partly observed label and a table indexed by a latent, covariates through per-component linear maps, priors
outside prior_density's written families, and a prior whose parameters are other sampled globals or point values.
The written-out gradient (:mod:`emvi.models.declared_density_grad`) equals autograd's where it applies; NUTS on
either agrees with NUTS on the traced potential; a model neither covers keeps the traced potential."""

import math

import pyro
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model

from emvi.catalog.declared import build
from emvi.data import DataInfo
from emvi.declaration import covariate, declare, latent, learned, linear, observed, param, table
from emvi.inference.mcmc import (
    MCMCConfig,
    density_potential,
    fit_posterior,
    flat_potential,
    flat_potential_with_grad,
    map_start,
)
from emvi.models.declared_density import declared_log_density, uncovered_reason
from emvi.models.declared_density_grad import DeclaredLogJointAndGrad, declared_log_density_and_grad
from emvi.models.prior_density import NUMPY_OPS, TORCH_OPS

TOLERANCE = 1e-10
"""Relative to the largest of 1 and the compared vector's largest entry: float64 sums of ~10^2 terms."""
N = 120


def simulated(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Data arrays for every model below (each model's ``data_names`` picks its own)."""
    z = torch.randint(0, 3, (N,), generator=generator)
    x = torch.tensor([[-3.0, 0.0], [0.0, 2.0], [3.0, -1.0]])[z] + torch.randn(N, 2, generator=generator)
    return {"x": x.double(), "y": (z == 1).double(), "y_mask": torch.arange(N) % 3 != 0,
            "counts": torch.poisson(torch.full((N, 2), 4.0), generator=generator).double(),
            "c": torch.randn(N, 2, generator=generator).double()}


MODELS = {
    "normal_globals": declare(  # the benchmark's model (benchmarks/mcmc.py, case declared)
        "normal_globals", param("mu", "normal", shape=(2,), loc=0.0, scale=3.0),
        param("sigma", "gamma", shape=(2,), concentration=2.0, rate=1.0),
        observed("x", "normal", loc="mu", scale="sigma")),
    "dirichlet_mixture": declare(
        "dirichlet_mixture", param("pi", "dirichlet", shape=(3,), concentration=2.0),
        param("mu", "normal", shape=(3, 2), loc=0.0, scale=3.0),
        latent("z", "categorical", categories=3, probs="pi"),
        observed("x", "normal", loc="mu[z]", scale=learned())),
    "several_locals": declare(  # z, b and the missing labels enumerated: joint values (2, 2, 3) per item
        "several_locals", param("pi", "dirichlet", shape=(3,), concentration=1.5),
        param("mu", "normal", shape=(3, 2), loc=0.0, scale=3.0),
        latent("z", "categorical", categories=3, probs="pi"), latent("b", "bernoulli"),
        observed("y", "bernoulli", logits=table("z"), mask="y_mask"),
        observed("x", "normal", loc="mu[z]", scale=table("b"))),
    "unlisted_priors": declare(  # LogNormal and a Pyro family: no written-out prior density, their own log_prob
        "unlisted_priors", param("nu", "Exponential", rate=0.1),
        param("loc", "lognormal", shape=(2,), loc=0.0, scale=1.0),
        observed("x", "StudentT", df="nu", loc="loc", scale=2.0)),
    "hierarchical": declare(  # mu's prior reads a sampled global (m) and a point value (s): rebuilt at each call
        "hierarchical", param("s", positive=True), param("m", "normal", loc=0.0, scale=2.0),
        param("mu", "normal", shape=(3, 2), loc="m", scale="s"),
        latent("z", "categorical", categories=3), observed("x", "normal", loc="mu[z]", scale=1.0)),
    "poisson_gamma": declare(
        "poisson_gamma", param("rate", "gamma", shape=(2,), concentration=2.0, rate=0.5),
        observed("counts", "poisson", rate="rate")),
    "regression_mixture": declare(  # covariates through one linear map per component (point values)
        "regression_mixture", param("pi", "dirichlet", shape=(3,), concentration=2.0), covariate("c"),
        latent("z", "categorical", categories=3, probs="pi"), observed("counts", "poisson", rate=linear("c", by="z"))),
    "shared_scale": declare(  # a scalar global broadcast over two features and read by two sites; point values
        "shared_scale", param("tau", "gamma", concentration=3.0, rate=2.0), param("m", positive=True),
        param("mu", "normal", shape=(2,), loc=1.0, scale="m"),
        observed("x", "normal", loc="mu", scale="tau"), observed("counts", "poisson", rate="tau")),
}
WRITTEN = ("normal_globals", "poisson_gamma", "shared_scale")
"""The models :mod:`emvi.models.declared_density_grad` covers; the others keep autograd."""


def built(name: str, arrays: dict[str, torch.Tensor]):
    decl = MODELS[name]
    data = tuple(arrays[n] for n in decl.data_names)
    first = data[0]
    info = DataInfo(N, tuple(first.shape[1:]), arrays={n: list(arrays[n].shape[1:]) for n in decl.data_names})
    model, _ = build(decl, info)
    model.double()
    with torch.no_grad():  # point values away from 0, as after a MAP fit
        for value in model.learned.values():
            value.copy_(torch.randn(value.shape, generator=torch.Generator().manual_seed(5), dtype=value.dtype))
    return model, data


def value_and_gradient(potential, point: dict[str, torch.Tensor]) -> torch.Tensor:
    point = {name: value.detach().clone().requires_grad_() for name, value in point.items()}
    value = potential(point)
    grads = torch.autograd.grad(value, list(point.values()))
    return torch.cat([value.detach().reshape(1), *(g.reshape(-1) for g in grads)])


@pytest.mark.parametrize("name", list(MODELS))
def test_declared_log_density_potential_equals_pyros_traced_potential_in_value_and_gradient(name):
    """At 4 seeded unconstrained points (standard normal around Pyro's start), through Pyro's own bijections."""
    model, data = built(name, simulated(torch.Generator().manual_seed(0)))
    view = model.bayesian_view(*data)
    assert uncovered_reason(model) is None and view["log_density"] is not None
    with pyro.validation_enabled(False):
        start, pyro_potential, transforms, _ = initialize_model(view["model"], data, {}, max_plate_nesting=1)
        ours = density_potential(view["log_density"], transforms)
        generator = torch.Generator().manual_seed(1)
        for _ in range(4):
            point = {site: u + torch.randn(u.shape, generator=generator, dtype=u.dtype) for site, u in start.items()}
            expected = value_and_gradient(pyro_potential, point)
            actual = value_and_gradient(ours, point)
            assert torch.isfinite(expected).all()
            scale = max(1.0, float(expected.abs().max()))
            assert float((actual - expected).abs().max()) <= TOLERANCE * scale, (actual, expected)


@pytest.mark.parametrize("ops", [NUMPY_OPS, TORCH_OPS], ids=["numpy", "torch"])
@pytest.mark.parametrize("name", WRITTEN)
def test_written_gradient_potential_equals_autograd_of_the_declared_log_density(name, ops):
    """:func:`flat_potential_with_grad` of the written-out log joint against autograd through
    :func:`flat_potential` of ``log_density``, value and gradient, at 4 seeded points around Pyro's start."""
    model, data = built(name, simulated(torch.Generator().manual_seed(0)))
    view = model.bayesian_view(*data)
    assert isinstance(view["log_density_and_grad"], DeclaredLogJointAndGrad)
    with pyro.validation_enabled(False):
        start, _, transforms, _ = initialize_model(view["model"], data, {}, max_plate_nesting=1)
    shapes = {site: u.shape for site, u in start.items()}
    written = flat_potential_with_grad(declared_log_density_and_grad(model, data, ops), transforms, shapes)
    autograd = flat_potential(view["log_density"], transforms, shapes)
    generator = torch.Generator().manual_seed(1)
    centre = torch.cat([u.reshape(-1) for u in start.values()])
    for _ in range(4):
        q = centre + torch.randn(centre.shape, generator=generator, dtype=centre.dtype)
        expected = flat_value_and_gradient(autograd, q)
        value, grad = written.value_and_grad(q.numpy())
        actual = torch.cat([torch.tensor([value], dtype=torch.float64), torch.as_tensor(grad)])
        assert torch.isfinite(expected).all()
        scale = max(1.0, float(expected.abs().max()))
        assert float((actual - expected).abs().max()) <= TOLERANCE * scale, (actual, expected)
        assert float((flat_value_and_gradient(written, q) - expected).abs().max()) <= TOLERANCE * scale


@pytest.mark.parametrize("name", [name for name in MODELS if name not in WRITTEN])
def test_models_outside_the_written_gradient_keep_autograd(name):
    model, data = built(name, simulated(torch.Generator().manual_seed(0)))
    assert model.bayesian_view(*data)["log_density_and_grad"] is None


def flat_value_and_gradient(potential, q: torch.Tensor) -> torch.Tensor:
    q = q.detach().clone().requires_grad_()
    value = potential(q)
    (grad,) = torch.autograd.grad(value, q)
    return torch.cat([value.detach().reshape(1), grad])


def test_a_continuous_local_latent_keeps_the_traced_potential():
    decl = declare("with_t", param("mu", "normal", loc=0.0, scale=10.0),
                   latent("t", "normal", dim=1, loc="mu", scale=1.0), observed("x", "normal", dim=1, loc="t", scale=1.0))
    model, _ = build(decl, DataInfo(N, (1,), arrays={"x": [1]}))
    x = torch.randn(N, 1)
    assert "continuous per-item latent" in uncovered_reason(model)
    assert declared_log_density(model, (x,)) is None and model.bayesian_view(x)["log_density"] is None


@pytest.mark.slow
def test_nuts_on_the_declared_log_density_agrees_with_nuts_on_the_traced_potential():
    """The benchmark's model on 100 items, started at the MAP as the mcmc method does: two chains of 300 draws on
    each potential; each posterior mean agrees within 5 combined Monte Carlo standard errors (sd / √ESS per run)."""
    model, data = built("normal_globals", simulated(torch.Generator().manual_seed(2)))
    data = (data[0][:100],)
    map_start(model, data, seed=0)
    model.double()
    config = MCMCConfig(num_samples=300, warmup_steps=200, num_chains=2, seed=3, progress=False)
    view = model.bayesian_view(*data)
    assert view["log_density"] is not None
    assert view["log_density_and_grad"] is not None
    views = [view, dict(view, log_density_and_grad=None), dict(view, log_density=None, log_density_and_grad=None)]
    runs = [fit_posterior(model, *data, config=config, view=v) for v in views]  # written, autograd, traced
    for site in ("mu", "sigma"):
        means, errors = [], []
        for run in runs:
            draws = run.samples[site].reshape(-1, 2)
            ess = torch.as_tensor(run.diagnostics[site]["n_eff"]).reshape(-1)
            means.append(draws.mean(0))
            errors.append(draws.std(0) / ess.sqrt())
        for run in (0, 1):
            gap = (means[run] - means[2]).abs() / (errors[run] ** 2 + errors[2] ** 2).sqrt()
            assert float(gap.max()) < 5, (site, means, gap)
    assert all(math.isfinite(run.summary()["max_r_hat"]) for run in runs)
