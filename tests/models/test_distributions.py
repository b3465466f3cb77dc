"""emvi.distributions against torch's Independent(Normal) / Independent(Bernoulli): densities, gradients, the cached
noise path, expansion, sampling moments and the registered KL."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from emvi.distributions import BernoulliLogits, DiagonalNormal, StandardNormal


def _loc_scale(requires_grad=False):
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    scale = torch.rand(5, 3, generator=generator, dtype=torch.float64) + 0.2
    return loc.requires_grad_(requires_grad), scale.requires_grad_(requires_grad)


def test_diagonal_normal_density_equals_torch_for_any_value():
    loc, scale = _loc_scale()
    value = torch.randn(4, 5, 3, dtype=torch.float64)
    reference = dist.Normal(loc, scale).to_event(1).log_prob(value)
    torch.testing.assert_close(DiagonalNormal(loc, scale).log_prob(value), reference, rtol=1e-12, atol=1e-12)


def test_scoring_its_own_draw_through_the_noise_has_the_same_value_and_total_gradient():
    loc, scale = _loc_scale(requires_grad=True)
    q = DiagonalNormal(loc, scale)
    torch.manual_seed(1)
    t = q.rsample()
    downstream = (t.sin() * 3).sum()  # t also feeds the rest of the objective, as in the ELBO
    ours = q.log_prob(t).sum() + downstream
    grads = torch.autograd.grad(ours, (loc, scale), retain_graph=True)
    reference = dist.Normal(loc, scale).to_event(1).log_prob(t).sum() + downstream
    reference_grads = torch.autograd.grad(reference, (loc, scale))
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert q._last_draw[0] is t and t is not t.clone()  # any other tensor takes the general formula


def test_expand_and_sample_shapes_and_moments():
    loc, scale = _loc_scale()
    q = DiagonalNormal(loc, scale).expand(torch.Size([2000, 5]))
    draws = q.rsample()
    assert q.batch_shape == (2000, 5) and q.event_shape == (3,) and draws.shape == (2000, 5, 3)
    # each mean within 5 standard errors (sd / sqrt(2000))
    assert ((draws.mean(0) - loc).abs() < 5 * scale / math.sqrt(2000)).all()
    prior = StandardNormal(3, dtype=torch.float64).expand(torch.Size([7]))
    assert prior.rsample().shape == (7, 3) and prior.log_prob(torch.zeros(7, 3, dtype=torch.float64)).shape == (7,)
    torch.testing.assert_close(prior.log_prob(draws[:7, 0]), dist.Normal(0.0, 1.0).log_prob(draws[:7, 0]).sum(-1))


def test_bernoulli_logits_equals_torch_and_samples_its_mean():
    logits = torch.randn(6, 4, dtype=torch.float64)
    value = torch.bernoulli(torch.full((6, 4), 0.5, dtype=torch.float64))
    ours = BernoulliLogits(logits)
    reference = dist.Bernoulli(logits=logits).to_event(1)
    torch.testing.assert_close(ours.log_prob(value), reference.log_prob(value), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.mean, reference.mean)
    draws = ours.expand(torch.Size([3000, 6])).sample()
    assert draws.shape == (3000, 6, 4) and set(draws.unique().tolist()) <= {0.0, 1.0}
    standard_error = (ours.variance / 3000).sqrt()
    assert ((draws.mean(0) - ours.mean).abs() < 5 * standard_error).all()


def test_registered_kl_is_the_closed_form():
    loc, scale = _loc_scale()
    kl = torch.distributions.kl_divergence(DiagonalNormal(loc, scale), StandardNormal(3, dtype=torch.float64))
    reference = torch.distributions.kl_divergence(dist.Normal(loc, scale).to_event(1),
                                                  dist.Normal(torch.zeros_like(loc), 1.0).to_event(1))
    torch.testing.assert_close(kl, reference, rtol=1e-12, atol=1e-12)
    other = DiagonalNormal(loc.flip(0), scale.flip(0))
    reference = torch.distributions.kl_divergence(dist.Normal(loc, scale).to_event(1),
                                                  dist.Normal(loc.flip(0), scale.flip(0)).to_event(1))
    torch.testing.assert_close(torch.distributions.kl_divergence(DiagonalNormal(loc, scale), other), reference)


def test_validation_rejects_values_outside_the_support():
    # the support is the unit interval: grey levels are Bernoulli means (the cross-entropy the VAE trains with)
    with pytest.raises(ValueError):
        BernoulliLogits(torch.zeros(2, 3), validate_args=True).log_prob(torch.full((2, 3), 1.5))
    with pytest.raises(ValueError):
        BernoulliLogits(torch.zeros(2, 3), validate_args=True).log_prob(torch.full((2, 3), -0.5))
    half = BernoulliLogits(torch.zeros(2, 3), validate_args=True).log_prob(torch.full((2, 3), 0.5))
    assert torch.allclose(half, torch.full((2,), 3 * math.log(0.5)))
    with pyro.validation_enabled(True):
        with pytest.raises(ValueError):
            DiagonalNormal(torch.zeros(3), -torch.ones(3), validate_args=True)
