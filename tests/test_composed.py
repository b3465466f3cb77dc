"""A declaratively composed model gives the same ELBO as the same model hand-written in Pyro."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from emvi import TrainConfig, train
from emvi.errors import ConfigError
from emvi.guides.amortised import AmortisedNormalGuide
from emvi.inference.elbo import make_elbo
from emvi.models.composed import ComposedConfig, ComposedModel
from emvi.registry import DataInfo, get_model


def test_poisson_vae_elbo_equals_hand_written_pyro_model():
    torch.manual_seed(0)
    x = torch.poisson(torch.full((16, 5), 3.0))
    config = ComposedConfig(latent="gaussian", mapping="mlp", likelihood="poisson", latent_dim=2, hidden_dims=(8,))
    model, guide = get_model("composed").build(config, DataInfo(num_data=16, event_shape=(5,)))

    def hand_written_model(x, num_data=None):
        with pyro.plate("data", x.shape[0]):
            t = pyro.sample("t", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            rate = model.decoder(t).exp()  # the same decoder weights
            pyro.sample("x", dist.Poisson(rate).to_event(1), obs=x)

    elbo = make_elbo("trace", num_particles=1)
    with torch.no_grad():
        pyro.set_rng_seed(1)
        declarative = elbo.differentiable_loss(model, guide, x).item()
        pyro.set_rng_seed(1)
        by_hand = elbo.differentiable_loss(hand_written_model, guide, x).item()
    assert declarative == pytest.approx(by_hand, rel=1e-6)


def test_enumerated_mixture_elbo_equals_explicit_marginal():
    torch.manual_seed(0)
    x = torch.poisson(torch.cat([torch.full((10, 3), 1.0), torch.full((10, 3), 8.0)]))
    config = ComposedConfig(latent="discrete", mapping="index", likelihood="poisson", num_components=2,
                            weight_concentration=2.0)
    model, guide = get_model("composed").build(config, DataInfo(num_data=20, event_shape=(3,)))
    with torch.no_grad():
        model.component_params.copy_(torch.tensor([[0.0, 0.1, 0.2], [2.0, 2.1, 1.9]]))
    loss = make_elbo("enum", max_plate_nesting=1).differentiable_loss(model, guide, x).item()
    with torch.no_grad():
        weights = model.weights
        log_joint = weights.log() + dist.Poisson(model.component_params.exp()).log_prob(x.unsqueeze(1)).sum(-1)
        explicit = torch.logsumexp(log_joint, dim=1).sum() + dist.Dirichlet(torch.full((2,), 2.0)).log_prob(weights)
    assert -loss == pytest.approx(explicit.item(), rel=1e-6)


def test_composed_mixture_trains_and_separates_components():
    torch.manual_seed(0)
    x = torch.poisson(torch.cat([torch.full((100, 4), 1.0), torch.full((100, 4), 10.0)]))
    config = ComposedConfig(latent="discrete", mapping="index", likelihood="poisson", num_components=2)
    model, guide = get_model("composed").build(config, DataInfo(num_data=200, event_shape=(4,)))
    train(model, guide, x, config=TrainConfig(epochs=150, batch_size=200, learning_rate=0.05, elbo="enum",
                                              max_plate_nesting=1, progress=False))
    rates = model.component_params.detach().exp().mean(1).sort().values
    # Each rate is estimated from ~400 Poisson counts: standard error sqrt(rate / 400) ~ 0.05 and 0.16.
    assert rates[0] == pytest.approx(1.0, abs=0.25) and rates[1] == pytest.approx(10.0, abs=0.8)


def test_amortised_guide_shapes():
    guide = AmortisedNormalGuide(num_features=6, latent_dim=3, hidden_dims=(5,))
    trace = pyro.poutine.trace(guide).get_trace(torch.rand(7, 6))
    assert trace.nodes["t"]["value"].shape == (7, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"latent": "discrete", "mapping": "mlp"}, "does not fit latent 'discrete'"),
        ({"latent": "gaussian", "mapping": "index"}, "does not fit latent 'gaussian'"),
        ({"likelihood": "gamma"}, "likelihood must be one of"),
        ({"latent_dim": 0}, "latent_dim must be an integer >= 1"),
    ],
)
def test_malformed_declarations_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ComposedConfig(**kwargs)


def test_categorical_likelihood_shapes():
    config = ComposedConfig(latent="gaussian", mapping="linear", likelihood="categorical", num_categories=4)
    model = ComposedModel(config, num_features=3)
    x = torch.randint(0, 4, (5, 3)).float()
    trace = pyro.poutine.trace(model).get_trace(x)
    assert trace.nodes["x"]["fn"].event_shape == (3,)
    assert math.isfinite(trace.log_prob_sum().item())


def test_pointwise_log_likelihood_sums_out_the_enumerated_site():
    from emvi.inference.pointwise import pointwise_log_likelihood, posterior_predictive

    torch.manual_seed(0)
    x = torch.poisson(torch.full((12, 3), 4.0))
    config = ComposedConfig(latent="discrete", mapping="index", likelihood="poisson", num_components=3)
    model, _ = get_model("composed").build(config, DataInfo(num_data=12, event_shape=(3,)))
    pointwise = pointwise_log_likelihood(model, x)
    with torch.no_grad():
        log_joint = model.weights.log() + dist.Poisson(model.component_params.exp()).log_prob(x.unsqueeze(1)).sum(-1)
    assert pointwise.shape == (12,)
    assert torch.allclose(pointwise, torch.logsumexp(log_joint, dim=1), atol=1e-5)
    replicated = posterior_predictive(model, x)
    assert replicated.shape == x.shape and not torch.equal(replicated, x)
