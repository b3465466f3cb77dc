"""A declaratively composed model gives the same ELBO as the same model hand-written in Pyro."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from emvi import TrainConfig, train
from emvi.data import DataInfo
from emvi.errors import ConfigError
from emvi.guides.amortised import AmortisedNormalGuide
from emvi.inference.elbo import make_elbo
from emvi.models.composed import ComposedConfig, ComposedModel
from emvi.registry import get_model


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


# -- EM on the declarative mixture -------------------------------------------------------------------------------------


def _em_data(likelihood, n=400, d=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randint(0, 2, (n,), generator=generator)
    if likelihood == "poisson":
        return torch.poisson(torch.tensor([[1.0, 4.0, 9.0], [8.0, 2.0, 0.5]])[z], generator=generator)
    if likelihood == "bernoulli":
        return torch.bernoulli(torch.tensor([[0.1, 0.8, 0.5], [0.9, 0.2, 0.4]])[z], generator=generator)
    if likelihood == "categorical":
        probs = torch.tensor([[[0.7, 0.2, 0.1]] * d, [[0.1, 0.1, 0.8]] * d])
        return torch.distributions.Categorical(probs=probs[z]).sample().double()
    return torch.randn(n, d, generator=generator, dtype=torch.float64) + torch.tensor([[-2.0, 0, 2], [2, 1, -1]])[z]


@pytest.mark.parametrize("likelihood", ["poisson", "bernoulli", "categorical"])
def test_declarative_em_follows_the_mixture_estimators_em_step_for_step(likelihood):
    """Same model, two implementations of EM (the declarative one reads its E-step off the composed model's trace;
    emvi.models.mixture uses natural parameters): from the same start, the same log-likelihood at every iteration."""
    from emvi.inference.em import fit_em
    from emvi.models.mixture import MixtureConfig, MixtureModel

    x = _em_data(likelihood).double()
    composed = ComposedModel(ComposedConfig(latent="discrete", mapping="index", likelihood=likelihood,
                                            num_components=2, num_categories=3), 3).double()
    mixture = MixtureModel(MixtureConfig(2, likelihood, num_categories=3, floor=ComposedModel.FLOOR), 3,
                           dtype=torch.float64)
    start = torch.zeros(400, 2, dtype=torch.float64)
    start[::2, 0] = start[1::2, 1] = 1.0  # alternating hard assignments: one M-step from the same responsibilities
    composed.m_step(start, x)
    mixture.m_step(start, x)
    ours = fit_em(composed, x, max_iter=25, tol=0.0, warn=False).log_likelihood_history
    reference = fit_em(mixture, x, max_iter=25, tol=0.0, warn=False).log_likelihood_history
    assert ours == pytest.approx(reference, rel=1e-9)
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(ours, ours[1:], strict=False))


def test_declarative_em_with_normal_likelihood_is_monotone_and_stops_at_a_stationary_point():
    from emvi.inference.em import fit_em

    x = _em_data("normal")
    model = ComposedModel(ComposedConfig(latent="discrete", mapping="index", likelihood="normal",
                                         num_components=2, weight_concentration=2.0), 3).double()
    start = torch.zeros(400, 2, dtype=torch.float64)
    start[:, 0] = (x[:, 0] < 0).double()
    start[:, 1] = 1 - start[:, 0]
    model.m_step(start, x)
    history = fit_em(model, x, max_iter=200, tol=1e-12, warn=False).log_likelihood_history
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(history, history[1:], strict=False))
    # the objective it reports is the exact marginal (TraceEnum_ELBO) plus the weights' log prior
    exact = -make_elbo("enum", max_plate_nesting=1).loss(model, lambda x, num_data=None: None, x)
    assert history[-1] == pytest.approx(exact, rel=1e-10)
    # a fixed point of EM is a stationary point of log p(x) + log p(π): the gradient vanishes
    model.zero_grad()
    (-make_elbo("enum", max_plate_nesting=1).differentiable_loss(model, lambda x, num_data=None: None, x)).backward()
    for parameter in model.parameters():
        assert parameter.grad.abs().max() < 1e-4, parameter.grad


def test_cli_fits_a_declarative_poisson_mixture_by_em_then_evaluates_and_analyzes(tmp_path):
    import json

    import numpy as np

    from emvi.cli import main

    np.save(tmp_path / "counts.npy", _em_data("poisson").numpy())
    run_dir = tmp_path / "em"
    assert main(["fit", "composed", str(tmp_path / "counts.npy"), "--latent", "discrete", "--mapping", "index",
                 "--likelihood", "poisson", "--num-components", "2", "--method", "em", "--max-iter", "100",
                 "--valid-fraction", "0.1", "--run-dir", str(run_dir), "--no-plots"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "em" and summary["converged"] and summary["n_iter"] > 1
    assert summary["valid_log_likelihood_per_item"] < 0
    assert main(["evaluate", str(run_dir)]) == 0
    assert main(["analyze", str(run_dir)]) == 0
    import arviz as az

    rates = az.from_netcdf(str(run_dir / "inference_data.nc")).posterior["rates"].values[0, 0]  # (component, feature)
    rates = rates[np.argsort(rates[:, 0])]
    truth = np.array([[1.0, 4.0, 9.0], [8.0, 2.0, 0.5]])
    # each rate is a mean of about 180 Poisson counts: standard error sqrt(rate / 180)
    assert (np.abs(rates - truth) < 5 * np.sqrt(truth / 150)).all(), rates
    # a gaussian latent cannot be fit by em: a one-line error
    assert main(["fit", "composed", str(tmp_path / "counts.npy"), "--method", "em", "--run-dir",
                 str(tmp_path / "bad")]) == 2
