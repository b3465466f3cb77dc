"""Gradients beside values: the enumerated ELBOs' identities hold for the gradient as well as the value.

Each test computes the loss twice, once by Pyro's ``TraceEnum_ELBO`` and once as the explicit sum it must equal
(the marginal log-likelihood plus the log-prior, or the q-weighted sum over clusters plus the entropy), and compares
both the values and their gradients with respect to every parameter of the model and the guide, in float64.
"""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from torch.nn.functional import log_softmax

from emvi.data import DataInfo
from emvi.models.composed import ComposedConfig
from emvi.models.mixture import MixtureConfig, MixtureGuide, MixtureModel
from emvi.registry import get_model


def gradients(value, parameters):
    return torch.autograd.grad(value, parameters, allow_unused=True)


def assert_same_value_and_gradient(loss, explicit, parameters, rtol=1e-9):
    torch.testing.assert_close(loss, explicit, rtol=rtol, atol=1e-10)
    ours, theirs = gradients(loss, parameters), gradients(explicit, parameters)
    assert any(g is not None and g.abs().sum() > 0 for g in ours), "the loss does not depend on the parameters"
    for name, a, b in zip(range(len(parameters)), ours, theirs, strict=True):
        if a is None or b is None:
            assert a is None and b is None, f"parameter {name}: one loss uses it, the other does not"
            continue
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-10, msg=f"gradient of parameter {name}")


@pytest.mark.parametrize("family", ["poisson", "gaussian-diag", "bernoulli"])
def test_mixture_enumerated_loss_is_minus_log_marginal_and_prior_value_and_gradient(family, float64):
    g = torch.Generator().manual_seed(0)
    x = {"poisson": torch.poisson(torch.full((9, 3), 3.0), generator=g),
         "gaussian-diag": torch.randn(9, 3, generator=g),
         "bernoulli": torch.bernoulli(torch.full((9, 3), 0.4), generator=g)}[family]
    model = MixtureModel(MixtureConfig(num_components=3, family=family, weight_concentration=2.0), 3,
                         dtype=torch.float64)
    model.break_symmetry(torch.Generator().manual_seed(1))
    parameters = list(model.parameters())
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, MixtureGuide(), x)
    components = {"poisson": lambda: dist.Poisson(model.rates),
                  "gaussian-diag": lambda: dist.Normal(model.means, model.variances.sqrt()),
                  "bernoulli": lambda: dist.Bernoulli(probs=model.probs)}[family]()
    log_joint = model.weights.log() + components.log_prob(x.unsqueeze(1)).sum(-1)  # (N, K)
    # The MAP prior enters as the Dirichlet(2) kernel (α - 1) Σ log π_k: its normaliser is a constant.
    log_prior = dist.Dirichlet(torch.full((3,), 2.0)).log_prob(model.weights) \
        - (torch.lgamma(torch.tensor(6.0)) - 3 * torch.lgamma(torch.tensor(2.0)))  # its log-normaliser
    explicit = -(torch.logsumexp(log_joint, -1).sum() + log_prior)
    assert_same_value_and_gradient(loss, explicit, parameters)


def test_composed_discrete_loss_is_minus_log_marginal_value_and_gradient(float64):
    x = torch.poisson(torch.cat([torch.full((10, 3), 1.0), torch.full((10, 3), 8.0)]),
                      generator=torch.Generator().manual_seed(0))
    config = ComposedConfig(latent="discrete", mapping="index", likelihood="poisson", num_components=2,
                            weight_concentration=2.0)
    model, guide = get_model("composed").build(config, DataInfo(num_data=20, event_shape=(3,)))
    model.double()
    with torch.no_grad():
        model.component_params.copy_(torch.tensor([[0.0, 0.1, 0.2], [2.0, 2.1, 1.9]]))
    parameters = list(model.parameters())
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x)
    log_joint = model.weights.log() + dist.Poisson(model.component_params.exp()).log_prob(x.unsqueeze(1)).sum(-1)
    explicit = -(torch.logsumexp(log_joint, 1).sum() + dist.Dirichlet(torch.full((2,), 2.0)).log_prob(model.weights))
    assert_same_value_and_gradient(loss, explicit, parameters)


def test_gmvae_enumerated_loss_is_the_q_weighted_sum_plus_entropy_value_and_gradient(float64):
    """With q(z | x) q(t | x, z), the same reparameterised draws on both sides (same seed): value and gradient with
    respect to the prior's tables, the decoder and both encoders."""
    n, d = 12, 6
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(n, d, generator=g), generator=g)
    entry = get_model("gmvae")
    torch.manual_seed(0)
    model, guide = entry.build(entry.config_class(num_components=3, latent_dim=2, hidden_dims=(8,), learn_weights=True,
                                                  cluster_posterior="amortised", prior_covariance="diag"),
                               DataInfo(n, (d,), arrays={"x": [d]}))
    model.double(), guide.double()
    with torch.no_grad():  # off the symmetric start
        for p in model.learned.values():
            p.add_(0.3 * torch.randn(p.shape))
    parameters = list(model.parameters()) + list(guide.parameters())
    pyro.set_rng_seed(7)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, x)
    pyro.set_rng_seed(7)
    node = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(x).nodes["t"]
    t = node["value"]  # (K, N, q), a differentiable function of the encoder's weights
    log_q_t = node["fn"].log_prob(t)
    q_z = guide.classifier_probs("z", x)  # (N, K)
    tables = model.learned
    log_p = (log_softmax(tables["z__logits"], -1)[:, None]
             + dist.Normal(tables["t__loc"][:, None], tables["t__scale"].exp()[:, None]).log_prob(t).sum(-1)
             + dist.Bernoulli(logits=model.networks["x__logits"](t)).log_prob(x).sum(-1))
    entropy = -(q_z * q_z.log()).sum(-1)
    explicit = -((q_z.T * (log_p - log_q_t)).sum(0) + entropy).sum()
    assert_same_value_and_gradient(loss, explicit, parameters, rtol=1e-7)
