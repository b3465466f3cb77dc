"""Models users write themselves train as written: their parameters are found, their discrete sites are summed out
(or a warning says they are not), and estimators refuse what they cannot compute exactly."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import emvi
from emvi.errors import ConfigError
from emvi.inference import TrainConfig, train
from emvi.inference.auto import prepare_model
from emvi.inference.pointwise import pointwise_log_likelihood
from emvi.plates import data_plate


class PoissonMixture(nn.Module):
    """z_n ~ Categorical(softmax(a)), x_n | z_n ~ Poisson(exp(b_z)) per feature: parameters in the module."""

    def __init__(self, k=2, d=2):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(k))
        self.log_rates = nn.Parameter(torch.tensor([[0.0, 1.0], [1.0, 0.0]])[:k, :d])

    def forward(self, x, num_data=None):
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Categorical(logits=self.logits))
            pyro.sample("x", dist.Poisson(self.log_rates[z].exp()).to_event(1), obs=x)

    def log_likelihood(self, x):
        weights = torch.log_softmax(self.logits, 0)
        per_component = dist.Poisson(self.log_rates.exp()[:, None]).log_prob(x).sum(-1)  # (K, N)
        return torch.logsumexp(weights[:, None] + per_component, 0)


class EmptyGuide(nn.Module):
    def forward(self, x, num_data=None):
        pass


def normal_means_model(x):
    """t_n ~ Normal(0, 1), x_n | t_n ~ Normal(t_n, 1): a continuous latent per item."""
    with pyro.plate("data", x.shape[0]):
        t = pyro.sample("t", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(t, 1.0), obs=x)


def _counts(n=200, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rates = torch.tensor([[1.0, 6.0], [7.0, 1.0]])
    z = torch.randint(2, (n,), generator=generator)
    return torch.poisson(rates[z], generator=generator)


def test_emvi_train_trains_the_parameters_of_a_module_model_with_discrete_sites():
    x = _counts()
    model = PoissonMixture()
    prepared = prepare_model(model, (x[:50],))
    assert prepared.discrete_sites == ("z",) and prepared.elbo == "enum"
    before = model.log_likelihood(x).mean().item()
    result = emvi.train(model, None, x, config=TrainConfig(epochs=60, batch_size=50, learning_rate=0.05,
                                                           progress=False))
    after = model.log_likelihood(x).mean().item()
    assert after > before + 0.5  # the model's own parameters moved (they did not when hidden by the wrapper)
    # with z summed out the loss is the exact negative log-likelihood per item at the epoch's parameters
    assert result.history[-1]["train_loss"] == pytest.approx(-after, abs=0.05)


def test_train_follows_the_models_discrete_sites_by_default():
    x = _counts()
    model = PoissonMixture()
    config = TrainConfig(epochs=1, batch_size=200, learning_rate=1e-9, progress=False)
    exact = -model.log_likelihood(x).mean().item()
    result = train(model, EmptyGuide(), x, config=config)  # elbo="auto" -> TraceEnum_ELBO, z summed out
    assert result.history[0]["train_loss"] == pytest.approx(exact, rel=1e-5)
    with pytest.warns(UserWarning, match=r"samples the discrete site\(s\) z from the prior"):
        train(model, EmptyGuide(), x, config=TrainConfig(epochs=1, elbo="trace", progress=False))


def test_pointwise_likelihood_refuses_a_continuous_local_latent():
    with pytest.raises(ConfigError, match="site 't' is a continuous latent inside the 'data' plate"):
        pointwise_log_likelihood(normal_means_model, torch.zeros(5))
    # a discrete local is summed out exactly: log p(x) of a two-component mixture
    mixture = PoissonMixture()
    x = _counts(20)
    assert torch.allclose(pointwise_log_likelihood(mixture, x), mixture.log_likelihood(x).detach(), rtol=1e-6)


def test_an_automatic_guide_refuses_plated_continuous_latents_with_mini_batches():
    with pytest.raises(ConfigError, match="continuous latents inside a plate"):
        emvi.train(normal_means_model, None, torch.zeros(300),
                   config=TrainConfig(epochs=1, batch_size=128, progress=False))
    result = emvi.train(normal_means_model, None, torch.zeros(30),
                        config=TrainConfig(epochs=2, batch_size=30, progress=False))
    assert math.isfinite(result.history[-1]["train_loss"])
