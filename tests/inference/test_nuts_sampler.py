"""emvi's own NUTS (emvi.inference.nuts) against closed forms: a correlated Gaussian, a Gamma-Poisson and a
Beta-Binomial conjugate posterior (through fit_mcmc, traced model and log_density). Tolerances are 4 Monte Carlo
standard errors with the chain's own effective sample size (seeded). Step-size adaptation reaches the target
acceptance; Stan's warm-up windows; the flat potential's written-out bijections equal Pyro's in value and gradient;
the mixture posterior agrees with Pyro's NUTS within Monte Carlo error."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.stats import effective_sample_size
from torch.distributions import biject_to, constraints

from emvi.errors import ConfigError, NonFiniteLossError
from emvi.inference.mcmc import density_potential, fit_mcmc, flat_potential
from emvi.inference.nuts import Potential, adaptation_windows, curvature_inverse_metric, sample_nuts

MEAN = torch.tensor([1.0, -2.0], dtype=torch.float64)
COVARIANCE = torch.tensor([[1.0, 2.4], [2.4, 9.0]], dtype=torch.float64)  # correlation 0.8, scales 1 and 3


def gaussian_potential(q: torch.Tensor) -> torch.Tensor:
    centred = q - MEAN
    return 0.5 * centred @ torch.linalg.solve(COVARIANCE, centred)


def mc_error(draws: torch.Tensor) -> torch.Tensor:
    """Standard error of the mean of each column of one chain ``(draws, D)``: sd / sqrt(ESS)."""
    ess = effective_sample_size(draws[None])
    return draws.std(0) / ess.sqrt()


def assert_mean_and_variance(draws: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor):
    """Sample mean within 4 SE of ``mean``; sample variance within 4 SE of ``variance``, its SE that of the mean of
    the squared deviations (their own ESS)."""
    mean, variance = torch.as_tensor(mean, dtype=draws.dtype), torch.as_tensor(variance, dtype=draws.dtype)
    assert ((draws.mean(0) - mean).abs() <= 4 * mc_error(draws)).all(), (draws.mean(0), mean, mc_error(draws))
    squared = (draws - mean) ** 2
    assert ((squared.mean(0) - variance).abs() <= 4 * mc_error(squared)).all(), (squared.mean(0), variance)


def test_correlated_gaussian_draws_have_its_mean_covariance_and_no_divergence():
    draws, stats = sample_nuts(gaussian_potential, torch.zeros(2, dtype=torch.float64), num_samples=2000,
                               warmup_steps=500, seed=1)
    assert draws.shape == (2000, 2) and draws.dtype == torch.float64
    assert_mean_and_variance(draws, MEAN, COVARIANCE.diagonal())
    product = (draws[:, 0] - MEAN[0]) * (draws[:, 1] - MEAN[1])  # its mean is the covariance 2.4
    assert abs(float(product.mean()) - 2.4) <= 4 * float(mc_error(product[:, None]))
    assert not stats["diverging"].any()
    # The adapted inverse metric makes the scales comparable: few leapfrog steps per draw.
    assert stats["num_steps"].float().mean() < 16


def test_step_size_adaptation_reaches_the_target_acceptance():
    """Dual averaging drives the mean acceptance statistic towards the target: averaged over three seeds, within
    [target - 0.05, target + 0.25] (the averaged step size of the sampling phase errs on the cautious side after
    Stan's 50-step terminal window, as in Stan and NumPyro; on this easy 2-D target a low target's acceptance lands
    near 0.85, so a single seed's bound of + 0.2 sat on the edge), and a higher target gives a higher acceptance and
    a smaller step."""
    accepts, steps = [], []
    for target in (0.65, 0.9):
        per_seed = []
        for seed in (0, 1, 2):
            _, stats = sample_nuts(gaussian_potential, torch.zeros(2, dtype=torch.float64), num_samples=1000,
                                   warmup_steps=500, seed=seed, target_accept_prob=target)
            per_seed.append((float(stats["accept_prob"].mean()), float(stats["step_size"][0])))
            assert (stats["step_size"] == stats["step_size"][0]).all()  # fixed after warm-up
        accepts.append(sum(a for a, _ in per_seed) / 3)
        steps.append(sum(s for _, s in per_seed) / 3)
        assert target - 0.05 <= accepts[-1] <= min(target + 0.25, 0.995), (target, per_seed)
    assert accepts[0] < accepts[1] and steps[0] > steps[1]


def test_the_sampler_is_seeded_by_its_seed_alone():
    first, _ = sample_nuts(gaussian_potential, torch.zeros(2, dtype=torch.float64), num_samples=20, warmup_steps=30,
                           seed=5)
    torch.manual_seed(123)
    second, _ = sample_nuts(gaussian_potential, torch.zeros(2, dtype=torch.float64), num_samples=20, warmup_steps=30,
                            seed=5)
    assert torch.equal(first, second)


def test_a_start_outside_the_support_is_refused_in_one_line():
    with pytest.raises(NonFiniteLossError, match="start the chain inside the support"):
        sample_nuts(lambda q: -torch.log(q).sum(), -torch.ones(2, dtype=torch.float64), num_samples=4,
                    warmup_steps=0, seed=0)


def test_a_start_with_a_non_finite_gradient_is_refused_in_one_line():
    """U = Σ |q| as sqrt(q²): finite at 0, its autograd gradient 0 · ∞ = NaN; the error names the gradient."""
    with pytest.raises(NonFiniteLossError, match=r"gradient has 2 non-finite of 2 entries .*start the chain inside"):
        sample_nuts(lambda q: (q * q).sqrt().sum(), torch.zeros(2, dtype=torch.float64), num_samples=4,
                    warmup_steps=10, seed=0)


def test_an_improper_flat_potential_is_refused_in_one_line_not_overflowed():
    """U flat beyond |q| = 10 (an improper posterior), started at 1000: the step-size search doubles ε while every
    step is accepted; it stops with the error instead of steps of 2¹⁰⁰ whose positions overflow."""
    with pytest.raises(ConfigError, match="the potential is flat around .*an improper posterior"):
        sample_nuts(lambda q: 0.5 * (q.clamp(-10.0, 10.0) ** 2).sum(), torch.full((2,), 1e3, dtype=torch.float64),
                    num_samples=10, warmup_steps=10, seed=0)


def test_an_empty_vector_is_not_a_flat_potential():
    """D = 0: nothing moves, so the step-size search ends at once instead of refusing a 'flat' potential."""
    draws, _ = sample_nuts(lambda q: (q * q).sum(), torch.zeros(0, dtype=torch.float64), num_samples=3,
                           warmup_steps=30, seed=0)
    assert draws.shape == (3, 0)


def test_first_metric_is_the_laplace_marginal_variances_capped_at_one():
    """At a Gaussian's mean, diag(H⁻¹) = diag(Σ) exactly (U quadratic: central differences are exact), capped at
    Stan's unit metric; a coordinate of negative curvature (a saddle: H not positive definite) keeps 1, the others
    1 / H_ii."""
    small = COVARIANCE / 100  # variances 0.01 and 0.09
    quadratic = Potential(lambda q: 0.5 * (q - MEAN) @ torch.linalg.solve(small, q - MEAN), "cpu")
    inverse = curvature_inverse_metric(quadratic, MEAN.numpy())
    assert inverse == pytest.approx(small.diagonal().numpy(), rel=1e-6)
    wide = curvature_inverse_metric(Potential(gaussian_potential, "cpu"), MEAN.numpy())
    assert wide == pytest.approx([1.0, 1.0])  # variances 1 and 9
    saddle = Potential(lambda q: 50.0 * q[0] ** 2 - 0.5 * q[1] ** 2, "cpu")
    assert curvature_inverse_metric(saddle, MEAN.numpy()) == pytest.approx([0.01, 1.0], rel=1e-6)
    # Next to the support's edge (U = 10⁴ q on q > 0, NaN below: +∞), the shift below is outside: that row is
    # unknown (unit), not a curvature made from the zero gradient that stands for +∞.
    edge = Potential(lambda q: 1e4 * q.sum() + 0.0 * q.log().sum(), "cpu")
    assert curvature_inverse_metric(edge, np.array([1e-5])) == pytest.approx([1.0])


def test_warmup_windows_are_stans():
    """Stan's windows: 75-step buffer, windows of 25, 50, 100, 200 ending 50 steps before the end (500 warm-up);
    15% / 75% / 10% for a short warm-up; none under 20 steps."""
    assert adaptation_windows(500) == (75, [99, 149, 249, 449])
    assert adaptation_windows(1000) == (75, [99, 149, 249, 449, 949])
    assert adaptation_windows(100) == (15, [89])
    assert adaptation_windows(10) == (10, [])


COUNTS = torch.tensor([3.0, 5.0, 2.0, 4.0, 6.0, 1.0, 3.0, 4.0], dtype=torch.float64)


def gamma_poisson(counts):
    rate = pyro.sample("rate", dist.Gamma(torch.tensor(2.0, dtype=torch.float64), 0.5))
    with pyro.plate("data", counts.shape[0]):
        pyro.sample("x", dist.Poisson(rate), obs=counts)


def gamma_poisson_log_density(counts, values):
    rate = values["rate"]
    return dist.Gamma(torch.tensor(2.0, dtype=torch.float64), 0.5).log_prob(rate) + dist.Poisson(rate).log_prob(
        counts).sum()


@pytest.mark.parametrize("with_log_density", [pytest.param(False, marks=pytest.mark.slow), True])
def test_gamma_poisson_posterior_mean_and_variance(with_log_density):
    """rate | x ~ Gamma(2 + Σx, 0.5 + n): mean a / b, variance a / b²; the traced model and its log_density."""
    a, b = 2.0 + float(COUNTS.sum()), 0.5 + COUNTS.numel()
    log_density = (lambda values: gamma_poisson_log_density(COUNTS, values)) if with_log_density else None
    result = fit_mcmc(gamma_poisson, COUNTS, num_samples=1500, warmup_steps=300, seed=3, log_density=log_density)
    draws = result.samples["rate"][0][:, None]
    assert result.samples["rate"].shape == (1, 1500)
    assert_mean_and_variance(draws, a / b, a / b**2)
    assert result.num_divergent == 0 and result.extra_fields["diverging"].shape == (1, 1500)


def test_a_start_far_in_the_tail_gives_the_gamma_poisson_posterior_without_warnings():
    """Started at rate = e⁻³⁰⁰ (log rate -300, about 1750 posterior sds below; the random start a point fit may begin
    from): U is linear there, so the step-size search doubles ε until one step reaches the e^u wall, where the
    momentum overflows (a RuntimeWarning, an error under this suite's filterwarnings, before the fix); the draws
    have rate | x ~ Gamma(2 + Σx, 0.5 + n)'s mean and variance."""
    a, b = 2.0 + float(COUNTS.sum()), 0.5 + COUNTS.numel()
    init = {"rate": torch.tensor(math.exp(-300.0), dtype=torch.float64)}
    result = fit_mcmc(gamma_poisson, COUNTS, num_samples=1500, warmup_steps=300, seed=3, init_values=init,
                      log_density=lambda values: gamma_poisson_log_density(COUNTS, values))
    assert_mean_and_variance(result.samples["rate"][0][:, None], a / b, a / b**2)
    assert result.num_divergent == 0


def beta_binomial(successes, trials):
    p = pyro.sample("p", dist.Beta(torch.tensor(2.0, dtype=torch.float64), 3.0))
    pyro.sample("x", dist.Binomial(trials, p), obs=successes)


@pytest.mark.slow
def test_beta_binomial_posterior_mean_and_variance_over_two_chains():
    """p | x ~ Beta(2 + x, 3 + n - x) on the unit interval (sigmoid bijection); two chains, seeded apart."""
    successes, trials = torch.tensor(7.0, dtype=torch.float64), torch.tensor(20.0, dtype=torch.float64)
    a, b = 2.0 + 7.0, 3.0 + 13.0
    result = fit_mcmc(beta_binomial, successes, trials, num_samples=1000, warmup_steps=300, num_chains=2, seed=4)
    samples = result.samples["p"]
    assert samples.shape == (2, 1000) and not torch.equal(samples[0], samples[1])
    for chain in samples:
        assert_mean_and_variance(chain[:, None], a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1)))
    assert set(result.diagnostics["p"]) == {"n_eff", "r_hat"} and abs(float(result.diagnostics["p"]["r_hat"]) - 1) < 0.05


@pytest.mark.parametrize("constraint,shape", [
    (constraints.simplex, (4,)), (constraints.positive, (3, 2)), (constraints.unit_interval, (2,)),
    (constraints.real, (3,)), (constraints.greater_than(2.0), (2,)), (constraints.interval(-1.0, 3.0), (2,)),
    (constraints.corr_cholesky, (3,))])
def test_flat_potential_equals_the_potential_with_pyros_bijections_in_value_and_gradient(constraint, shape):
    """The written-out bijections (and the fallback for the others) against torch's, through a log density that
    depends on every entry."""
    transform = biject_to(constraint).inv  # constrained -> unconstrained, as Pyro's initialize_model gives them
    generator = torch.Generator().manual_seed(0)
    constrained = biject_to(constraint)(torch.randn(shape, generator=generator, dtype=torch.float64))
    weights = torch.randn(constrained.shape, generator=generator, dtype=torch.float64)

    def log_density(values):
        return (weights * values["site"]).sum() + values["site"].pow(2).sum()

    unconstrained = transform(constrained)
    flat = flat_potential(log_density, {"site": transform}, {"site": unconstrained.shape})
    reference = density_potential(log_density, {"site": transform})
    for _ in range(3):
        u = (unconstrained + 0.5 * torch.randn(unconstrained.shape, generator=generator, dtype=torch.float64))
        q = u.reshape(-1).clone().requires_grad_()
        ours = flat(q)
        (ours_grad,) = torch.autograd.grad(ours, q)
        point = u.clone().requires_grad_()
        theirs = reference({"site": point})
        (theirs_grad,) = torch.autograd.grad(theirs, point)
        assert math.isclose(float(ours.detach()), float(theirs.detach()), rel_tol=1e-12, abs_tol=1e-12)
        torch.testing.assert_close(ours_grad, theirs_grad.reshape(-1), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_mixture_posterior_agrees_with_pyros_nuts_within_monte_carlo_error():
    """The same Bayesian mixture view (N=300, K=2) by emvi's NUTS and by Pyro's: posterior means of the sorted
    component means and of the weights agree within 4 combined Monte Carlo standard errors."""
    from emvi.catalog.mixture import Mixture
    from emvi.models.mixture import MixtureConfig

    generator = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(150, 1, generator=generator) - 3, torch.randn(150, 1, generator=generator) + 2])
    x = x.to(torch.float64)
    model = Mixture(MixtureConfig(num_components=2, family="gaussian-diag"), 1, dtype=torch.float64)
    view = model.bayesian_view(x)
    init = {"weights": torch.tensor([0.5, 0.5], dtype=torch.float64),
            "means": torch.tensor([[-3.0], [2.0]], dtype=torch.float64),
            "variances": torch.ones(2, 1, dtype=torch.float64)}
    summaries = []
    for sampler in ("emvi", "pyro"):
        result = fit_mcmc(view["model"], x, num_samples=400, warmup_steps=200, seed=0, init_values=init,
                          log_density=view["log_density"], sampler=sampler)
        means, order = result.samples["means"][0, :, :, 0].sort(-1)  # one labelling: by the mean
        weights = result.samples["weights"][0].gather(1, order)
        draws = torch.cat([means, weights], 1)
        summaries.append((draws.mean(0), mc_error(draws)))
    (ours, our_error), (theirs, their_error) = summaries
    assert ((ours - theirs).abs() <= 4 * (our_error**2 + their_error**2).sqrt()).all(), (ours, theirs)
