"""Plain hand-written Pyro models are accepted: enumeration, plate nesting and an auto-guide are inferred."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from emvi import TrainConfig, train
from emvi.errors import ConfigError
from emvi.inference.auto import prepare_model


def poisson_mixture(x):
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    rates = pyro.sample("rates", dist.Gamma(2.0, 0.2).expand([2]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Poisson(rates[z]), obs=x)


def test_enumeration_plates_and_guide_are_inferred():
    x = torch.poisson(torch.full((10,), 3.0))
    prepared = prepare_model(poisson_mixture, (x,), auto_guide="delta")
    assert prepared.discrete_sites == ("z",) and set(prepared.continuous_sites) == {"weights", "rates"}
    assert prepared.elbo == "enum" and prepared.max_plate_nesting == 1


def test_nested_plates_are_counted():
    def model(x):
        with pyro.plate("rows", x.shape[0], dim=-2), pyro.plate("cols", x.shape[1], dim=-1):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    assert prepare_model(model, (torch.zeros(3, 4),)).max_plate_nesting == 2


def test_hand_written_mixture_fit_by_map_recovers_rates():
    torch.manual_seed(0)
    x = torch.poisson(torch.cat([torch.full((300,), 2.0), torch.full((200,), 12.0)]))
    result = train(poisson_mixture, None, x, auto_guide="delta",
                   config=TrainConfig(epochs=300, batch_size=500, learning_rate=0.05, progress=False))
    with torch.no_grad():
        median = result.guide.median(x)
    rates = median["rates"].sort().values
    weights = median["weights"][median["rates"].argsort()]
    # Standard errors: sqrt(2/300) ~ 0.08 and sqrt(12/200) ~ 0.25 for the rates, sqrt(.24/500) ~ 0.02 for the weights.
    assert rates[0] == pytest.approx(2.0, abs=0.35) and rates[1] == pytest.approx(12.0, abs=1.0)
    assert weights[0] == pytest.approx(0.6, abs=0.08)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_broken_model_error_is_one_line():
    def model(x):
        pyro.sample("x", dist.Normal(torch.zeros(3), 1.0).to_event(1), obs=x)

    with pytest.raises(ConfigError, match="the model failed on a batch of the data"):
        prepare_model(model, (torch.zeros(4, 5),))
