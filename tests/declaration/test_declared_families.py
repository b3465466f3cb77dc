"""Any Pyro family by name in a declaration: a two-component mixture of each, fitted by SVI, has the exact
log-likelihood scipy's densities give at the fitted parameters; tables indexed by two discrete latents are the
hand enumeration over both; a Pyro family as a global prior, a finite-support latent and a continuous latent with
the guide through its support's bijection; one-line refusals."""

import math

import numpy as np
import pyro.poutine as poutine
import pytest
import torch
from scipy import special, stats
from scipy.integrate import quad

from emvi.catalog.declared import build
from emvi.data import DataInfo
from emvi.declaration import Declaration, covariate, declare, latent, learned, linear, observed, param, table
from emvi.errors import ConfigError, EmviError
from emvi.inference.elbo import make_elbo
from emvi.inference.likelihood import enumerated_log_joint, log_importance_weights

N = 300


def built(decl, arrays):
    info = DataInfo(N, tuple(arrays["x"].shape[1:]), arrays={k: list(v.shape[1:]) for k, v in arrays.items()})
    return build(decl, info)


def exact_log_likelihood(model, data) -> np.ndarray:
    """``(N,)`` log p(x_n) from the model's own enumerated trace (every discrete latent summed out)."""
    with torch.no_grad():
        trace = poutine.trace(poutine.enum(model, first_available_dim=-2)).get_trace(*data)
        return enumerated_log_joint(trace, data[0].shape[0]).reshape(-1).numpy()


def fit(model, guide, data, steps=150, learning_rate=0.05, elbo="enum"):
    """SVI: ``steps`` full-batch Adam steps on the ELBO (exact -log p(x) when every latent is enumerated)."""
    loss = make_elbo(elbo, max_plate_nesting=1)
    parameters = [p for p in [*model.parameters(), *guide.parameters()] if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=learning_rate)
    for _ in range(steps):
        optimiser.zero_grad()
        loss.differentiable_loss(model, guide, *data).backward()
        optimiser.step()


def natural(model, site, param, transform=None):
    """``(K,)`` a table's entries on the parameter's scale (log-scale tables of positive parameters exp'd)."""
    value = model.learned[f"{site}__{param}"].detach().reshape(-1).numpy()
    return np.exp(value) if transform == "exp" else value


def mixture_of(family, **params):
    return declare(f"{family.lower()}_mixture", latent("z", "categorical", categories=2),
                   observed("x", family, **{p: table("z") for p in params}))


def zero_inflated_poisson_logpmf(x, rate, gate_logits):
    gate = special.expit(gate_logits)
    return np.where(x == 0, np.log(gate + (1 - gate) * np.exp(-rate)), np.log1p(-gate) + stats.poisson.logpmf(x, rate))


# family, its tables (name -> "exp" for a log-scale table), a sampler of the data, scipy's log density
FAMILIES = {
    "StudentT": ({"df": "exp", "loc": None, "scale": "exp"},
                 lambda rng: np.concatenate([rng.standard_t(3, N // 2) - 3, 2 * rng.standard_t(5, N // 2) + 4]),
                 lambda x, p: stats.t.logpdf(x, p["df"], p["loc"], p["scale"])),
    "ZeroInflatedPoisson": ({"rate": "exp", "gate_logits": None},
                            lambda rng: np.concatenate([rng.poisson(2, N // 2) * (rng.random(N // 2) > 0.3),
                                                        rng.poisson(9, N // 2)]).astype(float),
                            lambda x, p: zero_inflated_poisson_logpmf(x, p["rate"], p["gate_logits"])),
    "GammaPoisson": ({"concentration": "exp", "rate": "exp"},
                     lambda rng: np.concatenate([rng.negative_binomial(2, 0.5, N // 2),
                                                 rng.negative_binomial(5, 0.2, N // 2)]).astype(float),
                     lambda x, p: stats.nbinom.logpmf(x, p["concentration"], p["rate"] / (1 + p["rate"]))),
    "NegativeBinomial": ({"total_count": "exp", "logits": None},
                         lambda rng: np.concatenate([rng.negative_binomial(3, 0.6, N // 2),
                                                     rng.negative_binomial(4, 0.15, N // 2)]).astype(float),
                         lambda x, p: stats.nbinom.logpmf(x, p["total_count"], special.expit(-p["logits"]))),
    "Weibull": ({"scale": "exp", "concentration": "exp"},
                lambda rng: np.concatenate([rng.weibull(1.5, N // 2), 5 * rng.weibull(4.0, N // 2)]),
                lambda x, p: stats.weibull_min.logpdf(x, p["concentration"], scale=p["scale"])),
    "VonMises": ({"loc": None, "concentration": "exp"},
                 lambda rng: np.concatenate([rng.vonmises(-2.0, 4.0, N // 2), rng.vonmises(1.0, 1.0, N // 2)]),
                 lambda x, p: stats.vonmises.logpdf(x, p["concentration"], loc=p["loc"])),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_mixture_of_a_pyro_family_fits_and_its_exact_log_likelihood_is_scipys(family, float64):
    """z_n ~ Categorical(π), x_n | z_n = k ~ F(θ_k): after SVI on the enumerated ELBO (exact: no guide site), the
    model's log p(x_n) = log Σ_k π_k F(x_n | θ_k) equals scipy's at the same parameters to 1e-6 nats per item, and
    it rose from the start."""
    tables, sample, logpdf = FAMILIES[family]
    x = torch.tensor(sample(np.random.default_rng(0)))
    model, guide = built(mixture_of(family, **tables), {"x": x})
    start = exact_log_likelihood(model, (x,)).mean()
    fit(model, guide, (x,))
    weights = torch.softmax(model.learned["z__logits"].detach().reshape(-1), 0).numpy()
    params = {p: natural(model, "x", p, how) for p, how in tables.items()}
    scipy_components = np.stack([logpdf(x.numpy(), {p: v[k] for p, v in params.items()}) for k in range(2)])
    expected = special.logsumexp(scipy_components + np.log(weights)[:, None], axis=0)
    fitted = exact_log_likelihood(model, (x,))
    assert np.abs(fitted - expected).max() <= 1e-6
    assert fitted.mean() > start + 0.05, (start, fitted.mean())
    assert max(np.abs(v[0] - v[1]) for v in params.values()) > 0.1  # two distinct components, not one twice


def test_tables_indexed_by_two_categorical_latents_are_the_hand_enumeration_over_both(float64):
    """z_n ~ Cat(π) (2 values), s_n ~ Cat(ρ) (3 values), x_n ~ Normal(μ[z_n, s_n], σ[z_n, s_n]): the tables are
    (2, 3, 1), and log p(x_n) = log Σ_z Σ_s π_z ρ_s N(x_n | μ_zs, σ_zs) after an SVI fit (to 1e-6 nats)."""
    decl = declare("two_way", latent("z", "categorical", categories=2), latent("s", "categorical", categories=3),
                   observed("x", "normal", loc=table("z", "s"), scale=table("z", "s")))
    assert Declaration.from_dict(decl.name, decl.to_dict()).sites == decl.sites
    assert "x_n ~ Normal(loc=table[z, s], scale=table[z, s])" in decl.story()
    rng = np.random.default_rng(1)
    x = torch.tensor(np.concatenate([rng.normal(m, 0.5, N // 6) for m in (-6, -3, 0, 2, 5, 9)]))
    model, guide = built(decl, {"x": x})
    assert model.learned["x__loc"].shape == (2, 3, 1)
    start = exact_log_likelihood(model, (x,)).mean()
    fit(model, guide, (x,), steps=200)
    pi = torch.log_softmax(model.learned["z__logits"].detach().reshape(-1), 0).numpy()
    rho = torch.log_softmax(model.learned["s__logits"].detach().reshape(-1), 0).numpy()
    loc, scale = natural(model, "x", "loc").reshape(2, 3), natural(model, "x", "scale", "exp").reshape(2, 3)
    joint = (pi[:, None, None] + rho[None, :, None]
             + stats.norm.logpdf(x.numpy()[None, None, :], loc[:, :, None], scale[:, :, None]))
    expected = special.logsumexp(joint.reshape(6, -1), axis=0)
    fitted = exact_log_likelihood(model, (x,))
    assert np.abs(fitted - expected).max() <= 1e-6
    assert fitted.mean() > start + 0.5


def test_a_linear_map_per_pair_of_discrete_values_is_the_hand_enumeration(float64):
    """x_n ~ Normal(w[z_n, s_n]·c_n + b[z_n, s_n], 1), z and s latent: the model's log p(x_n | c_n) is
    log Σ_z Σ_s π_z ρ_s N(x_n | w_zs·c_n + b_zs, 1) (to 1e-6 nats)."""
    decl = declare("two_way_regression", latent("z", "categorical", categories=2),
                   latent("s", "categorical", categories=2), covariate("c"),
                   observed("x", "normal", loc=linear("c", by=("z", "s")), scale=1.0))
    assert Declaration.from_dict(decl.name, decl.to_dict()).sites == decl.sites
    rng = np.random.default_rng(2)
    c = torch.tensor(rng.normal(size=(N, 2)))
    x = torch.tensor(rng.normal(size=N))
    model, _ = built(decl, {"x": x, "c": c})
    weight = model.learned["x__loc"].detach().numpy().reshape(2, 2, 2)  # (z, s, in)
    bias = model.learned["x__loc__bias"].detach().numpy().reshape(2, 2)
    pi = torch.log_softmax(model.learned["z__logits"].detach().reshape(-1), 0).numpy()
    rho = torch.log_softmax(model.learned["s__logits"].detach().reshape(-1), 0).numpy()
    mean = np.einsum("zsi,ni->zsn", weight, c.numpy()) + bias[:, :, None]
    joint = pi[:, None, None] + rho[None, :, None] + stats.norm.logpdf(x.numpy(), mean, 1.0)
    expected = special.logsumexp(joint.reshape(4, -1), axis=0)
    assert np.abs(exact_log_likelihood(model, (x, c)) - expected).max() <= 1e-6


def test_a_pyro_family_as_a_global_prior_adds_its_log_density(float64):
    """nu ~ Exponential(0.1) (MAP global, positive through exp), x_n ~ StudentT(nu, 0, 2): the model's log joint is
    log Exponential(nu) + Σ_n log t_nu(x_n / 2) - N log 2, as scipy computes it."""
    decl = declare("robust", param("nu", "Exponential", rate=0.1), observed("x", "StudentT", df="nu", scale=2.0))
    x = torch.tensor(np.random.default_rng(3).standard_t(4, N))
    model, _ = built(decl, {"x": x})
    with torch.no_grad():
        model.globals_["nu"].fill_(math.log(4.5))
        log_joint = float(poutine.trace(model).get_trace(x).log_prob_sum())
    expected = stats.expon.logpdf(4.5, scale=10.0) + stats.t.logpdf(x.numpy(), 4.5, 0.0, 2.0).sum()
    assert log_joint == pytest.approx(expected, abs=1e-8)


def test_a_latent_with_a_finite_pyro_support_is_enumerated_exactly(float64):
    """k_n ~ Binomial(3, sigmoid(a)) (has_enumerate_support: summed out in the model), x_n ~ Normal(k_n, 0.5):
    log p(x_n) = log Σ_{k=0..3} Binom(k | 3, p) N(x_n | k, 0.5) (to 1e-6 nats)."""
    decl = declare("counts", latent("k", "Binomial", total_count=3, logits=learned()),
                   observed("x", "normal", loc="k", scale=0.5))
    assert decl.by_name["k"].enumerated and "k_n ~ Binomial(logits=learned, total_count=3)  values 0..3; enumerated" in decl.story()
    x = torch.tensor(np.random.default_rng(4).binomial(3, 0.7, N) + 0.5 * np.random.default_rng(5).normal(size=N))
    model, guide = built(decl, {"x": x})
    fit(model, guide, (x,), steps=60)
    p = float(torch.sigmoid(model.learned["k__logits"].detach()).reshape(-1)[0])
    values = np.arange(4)[:, None]
    expected = special.logsumexp(stats.binom.logpmf(values, 3, p) + stats.norm.logpdf(x.numpy(), values, 0.5), 0)
    assert np.abs(exact_log_likelihood(model, (x,)) - expected).max() <= 1e-6
    assert abs(p - 0.7) < 0.05  # 4 standard errors of p̂ from N·3 Bernoulli trials: sqrt(0.21 / 900) = 0.015


@pytest.mark.slow
def test_a_bounded_continuous_latent_gets_a_guide_through_its_supports_bijection(float64):
    """u_n ~ Beta(2, 2) (a Pyro family as a latent), x_n ~ Normal(3 u_n - 1, 0.3) (d = 2 features, a constant map):
    the guide's draws lie in (0, 1) (a Normal pushed through sigmoid); after training it, the importance-sampled
    log p(x_n) matches the quadrature of ∫ Beta(u | 2, 2) Π_d N(x_nd | 3u - 1, 0.3) du within 1e-3 nats per item
    and within four of its standard errors."""
    decl = declare("bounded", latent("u", "Beta", dim=1, concentration1=2.0, concentration0=2.0),
                   observed("x", "normal", loc=linear("u"), scale=0.3))
    rng = np.random.default_rng(6)
    u = rng.beta(2, 2, 40)
    x = torch.tensor(3 * u[:, None] - 1 + 0.3 * rng.normal(size=(40, 2)))
    model, guide = build(decl, DataInfo(40, (2,), arrays={"x": [2]}))
    with torch.no_grad():
        model.networks["x__loc"].weight.fill_(3.0)
        model.networks["x__loc"].bias.fill_(-1.0)
    model.networks.requires_grad_(False)  # the likelihood stays the hand-written one; only the guide learns
    fit(model, guide, (x,), steps=1000, learning_rate=0.02, elbo="trace")
    draws = poutine.trace(guide).get_trace(x).nodes["u"]["value"]
    assert bool(((draws > 0) & (draws < 1)).all())

    def marginal(row):
        def density(v):
            return stats.beta.pdf(v, 2, 2) * np.prod(stats.norm.pdf(row, 3 * v - 1, 0.3))
        return math.log(quad(density, 0, 1, epsabs=0, epsrel=1e-12, limit=200)[0])

    expected = np.array([marginal(row) for row in x.numpy()])
    with torch.no_grad():
        log_w = log_importance_weights(model, guide, (x,), 20000)  # (K, N)
    estimate = torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])
    w = torch.exp(log_w - torch.logsumexp(log_w, 0))  # normalised: se of log mean(w) ≈ std(w) / (√K mean(w))
    standard_error = float(((w.std(0) / w.mean(0)).pow(2).sum() / log_w.shape[0]).sqrt() / log_w.shape[1])
    error = float(estimate.mean()) - expected.mean()
    assert abs(error) <= 1e-3
    assert abs(error) <= 4 * standard_error + 1e-6


@pytest.mark.parametrize("sites, message", [
    ([latent("k", "Poisson", rate=2.0), observed("x", "normal", loc="k", scale=1.0)],
     "site 'k': an enumerated site needs finite support, and poisson has unbounded support (it cannot be "
     "enumerated, and a discrete site has no reparameterised guide)"),
    ([latent("k", "GammaPoisson", concentration=2.0, rate=1.0), observed("x", "normal", loc="k", scale=1.0)],
     "site 'k': an enumerated site needs finite support, and GammaPoisson has unbounded support"),
    ([latent("z", "categorical", categories=2),
      observed("x", "ZeroInflatedPoisson", rate=table("z"), gate=0.1, gate_logits=0.0)],
     "site 'x': give gate or gate_logits, not both"),
    ([observed("x", "ZeroInflatedPoisson", rate=2.0)], "site 'x': ZeroInflatedPoisson needs parameter(s) "
                                                        "['gate or gate_logits']"),
    ([latent("k", "Binomial", total_count=learned(), logits=0.0), observed("x", "normal", loc="k", scale=1.0)],
     "site 'k': parameter 'total_count' of Binomial is a whole number; give it as a constant"),
    ([param("n", "GammaPoisson", concentration=1.0, rate=1.0), observed("x", "normal", loc="n", scale=1.0)],
     "site 'n': a global's prior needs a fixed continuous support"),
])
def test_pyro_families_that_cannot_serve_are_refused_in_one_line(sites, message):
    with pytest.raises(ConfigError) as caught:
        declare("bad", *sites)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, EmviError)


@pytest.mark.parametrize("family, message", [
    ("NoSuchFamily", "unknown family 'NoSuchFamily'; use one of normal, mvnormal"),
    ("LowRankMultivariateNormal", "family 'LowRankMultivariateNormal' has a vector event"),
    ("Uniform", "family 'Uniform': its parameters' constraints depend on each other"),
    ("LKJCholesky", "family 'LKJCholesky' needs the non-tensor argument 'dim'"),
    ("OneOneMatching", "family 'OneOneMatching' does not build a scalar distribution from scalar parameters"),
    ("Delta", "family 'Delta': its parameters' constraints depend on each other"),
])
def test_unknown_or_unusable_family_names_are_refused_in_one_line(family, message):
    with pytest.raises(ConfigError, match=None) as caught:
        observed("x", family)
    assert message in str(caught.value) and str(caught.value).startswith("site 'x': ")


def test_a_spec_file_names_a_pyro_family_as_the_python_declaration_does():
    python = mixture_of("StudentT", df=None, loc=None, scale=None)
    spec = Declaration.from_dict(python.name, {"sites": {
        "z": {"role": "latent", "family": "categorical", "categories": 2},
        "x": {"role": "observed", "family": "StudentT", "df": {"table": "z"}, "loc": {"table": "z"},
              "scale": {"table": "z"}}}})
    assert spec.sites == python.sites
    assert "x_n ~ StudentT(df=table[z], loc=table[z], scale=table[z])" in spec.story()
    pyro_spelling = declare("same", latent("z", "Categorical", categories=2),
                            observed("x", "Normal", loc=table("z"), scale=1.0))
    assert pyro_spelling.sites == declare("same", latent("z", "categorical", categories=2),
                                          observed("x", "normal", loc=table("z"), scale=1.0)).sites


def test_the_export_gives_a_constrained_table_of_any_family_on_its_natural_scale_with_both_index_dims(float64):
    """A Binomial's ``probs`` table over (z, s) is exported as probabilities (the sigmoid of the stored value, as
    the model reads it), shape (2, 3) for a scalar site (stored as (2, 3, 1)), its dims named after both sites."""
    from emvi.models.declared_parameters import fitted_parameters

    decl = declare("two_way_counts", latent("z", "categorical", categories=2),
                   latent("s", "categorical", categories=3),
                   observed("x", "Binomial", total_count=5, probs=table("z", "s")))
    x = torch.tensor(np.random.default_rng(2).binomial(5, 0.4, N).astype(float))
    model, _ = built(decl, {"x": x})
    with torch.no_grad():
        model.learned["x__probs"].normal_()
    exported = fitted_parameters(model)["x_probs"]
    stored = model.learned["x__probs"].detach()
    assert exported.dims == ("z", "s") and tuple(exported.value.shape) == (2, 3)
    assert torch.allclose(exported.value.reshape(-1), torch.sigmoid(stored).reshape(-1), rtol=0, atol=1e-15)
    assert torch.equal(model.parameters_dict()["x_probs"], exported.value)
