"""Declared models: the same ELBO as the built-ins and as hand-written Pyro pairs, generic EM step for step, one-line
errors naming the site."""

import math
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from torch.distributions import biject_to, constraints
from torch.nn.functional import one_hot, softplus

import emvi
from emvi.catalog.declared import build
from emvi.data import DataInfo
from emvi.declaration import Declaration, covariate, declare, latent, learned, linear, mlp, observed, param, table
from emvi.declaration.capabilities import elbo_name, em_ready
from emvi.errors import ConfigError, DataError, EmviError
from emvi.inference.elbo import make_elbo
from emvi.registry import get_model

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples" / "declared"
sys.path.insert(0, str(EXAMPLES_DIR))
import models as examples  # noqa: E402

N = 24


def info(arrays):
    return DataInfo(N, tuple(arrays["x"].shape[1:]), arrays={k: list(v.shape[1:]) for k, v in arrays.items()})


def example_data(name, generator=None):
    g = generator or torch.Generator().manual_seed(0)
    x_bin = torch.bernoulli(torch.rand(N, 6, generator=g), generator=g)
    return {
        "mixture_prior_vae": {"x": x_bin},
        "semi_supervised_vae": {"x": x_bin, "y": torch.randint(0, 10, (N,), generator=g),
                                "y_mask": torch.arange(N) % 3 == 0},
        "poisson_regression_mixture": {"x": torch.poisson(torch.full((N, 1), 3.0), generator=g),
                                       "c": torch.randn(N, 2, generator=g)},
        "poisson_vae": {"x": torch.poisson(torch.full((N, 5), 3.0), generator=g)},
        "hierarchical_mixture": {"x": torch.randn(N, 2, generator=g)},
    }[name]


def loss_of(elbo_name, model, guide, *data, seed=1):
    elbo = make_elbo(elbo_name, max_plate_nesting=1)
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        return float(elbo.loss(model, guide, *data)) if elbo_name == "enum" else \
            float(elbo.differentiable_loss(model, guide, *data))


# -- the built-ins, declared ---------------------------------------------------------------------------------------------


def test_declared_vae_elbo_equals_the_builtin_vae():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(N, 12))
    vae_model, vae_guide = get_model("vae").build(emvi.models.vae.VAEConfig(latent_dim=3, hidden_dims=(7,)),
                                                  DataInfo(N, (12,)))
    decl = declare("vae", latent("t", "normal", dim=3), observed("x", "bernoulli", logits=mlp("t", hidden=(7,))))
    model, guide = build(decl, info({"x": x}), emvi.catalog.declared.DeclaredConfig(guide_hidden_dims=(7,)))
    model.networks["x__logits"].load_state_dict(vae_model.decoder.state_dict())
    guide.encoders["t"].load_state_dict(vae_guide.encoder.state_dict())
    declared = loss_of("trace", model, guide, x)
    builtin = loss_of("trace", vae_model, vae_guide, x)
    assert declared == pytest.approx(builtin, rel=1e-6)


def test_declared_poisson_mixture_elbo_equals_the_composed_builtin():
    torch.manual_seed(0)
    x = torch.poisson(torch.cat([torch.full((12, 3), 1.0), torch.full((12, 3), 8.0)]))
    config = emvi.models.composed.ComposedConfig(latent="discrete", mapping="index", likelihood="poisson",
                                                 num_components=3, weight_concentration=2.0)
    composed, composed_guide = get_model("composed").build(config, DataInfo(N, (3,)))
    decl = declare("poisson_mixture",
                   param("pi", "dirichlet", shape=(3,), concentration=2.0),
                   latent("z", "categorical", categories=3, probs="pi"),
                   observed("x", "poisson", rate=table("z")))
    model, guide = build(decl, info({"x": x}))
    with torch.no_grad():
        composed.weight_logits.copy_(torch.tensor([0.2, -0.1, 0.5]))
        model.globals_["pi"].copy_(biject_to(constraints.simplex).inv(composed.weights))
        model.learned["x__rate"].copy_(composed.component_params)
    declared = loss_of("enum", model, guide, x)
    builtin = loss_of("enum", composed, composed_guide, x)
    assert declared == pytest.approx(builtin, rel=1e-6)


def test_declared_gaussian_mixture_em_follows_the_builtin_mixture_em_step_for_step():
    from emvi.inference.em import fit_em
    from emvi.models.mixture import MixtureConfig, MixtureModel

    g = torch.Generator().manual_seed(0)
    z = torch.randint(0, 2, (400,), generator=g)
    x = torch.randn(400, 3, generator=g, dtype=torch.float64) + torch.tensor([[-2.0, 0, 2], [2, 1, -1]],
                                                                             dtype=torch.float64)[z]
    decl = declare("gmm", latent("z", "categorical", categories=2),
                   observed("x", "normal", loc=table("z"), scale=table("z")))
    assert em_ready(decl) is None and fits_by_em(decl, (3,))
    model, _ = build(decl, DataInfo(400, (3,), arrays={"x": [3]}))
    model.double()
    reference = MixtureModel(MixtureConfig(2, "gaussian-diag"), 3, dtype=torch.float64)
    start = torch.zeros(400, 2, dtype=torch.float64)
    start[::2, 0] = start[1::2, 1] = 1.0  # the same responsibilities: one M-step each from them
    model.m_step(start, x)
    reference.m_step(start, x)
    ours = fit_em(model, x, max_iter=30, tol=0.0, warn=False).log_likelihood_history
    theirs = fit_em(reference, x, max_iter=30, tol=0.0, warn=False).log_likelihood_history
    assert ours == pytest.approx(theirs, rel=1e-9)
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(ours, ours[1:], strict=False))


# -- each example against a hand-written Pyro model/guide pair ------------------------------------------------------------


def hand_written(name, m, g):
    """The example written directly in Pyro, with the declared model's and guide's parameters and networks."""
    L, N_ = m.learned, m.networks

    def enc(site, *inputs):
        return g.encoders[site](torch.cat(inputs, -1) if len(inputs) > 1 else inputs[0])

    def normal_guide(site, *inputs):
        loc, raw = enc(site, *inputs).chunk(2, -1)
        return pyro.sample(site, dist.Normal(loc, softplus(raw) + 1e-5).to_event(1))

    if name == "mixture_prior_vae":
        def model(x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Categorical(logits=L["z__logits"]))
                t = pyro.sample("t", dist.Normal(L["t__loc"][z], L["t__scale"][z].exp()).to_event(1))
                pyro.sample("x", dist.Bernoulli(logits=N_["x__logits"](t)).to_event(1), obs=x)

        def guide(x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Categorical(logits=enc("z", x)), infer={"enumerate": "parallel"})
                z1 = one_hot(z, 10).float().expand(10, x.shape[0], 10)  # (10 values, N, 10)
                normal_guide("t", x.expand(10, *x.shape), z1)
        return model, guide

    if name == "semi_supervised_vae":
        def model(x, y, mask):  # labelled items: y observed; the others: y enumerated; the point mass does both
            with pyro.plate("data", x.shape[0]):
                logits = L["y__logits"]
                with poutine.mask(mask=mask):
                    pyro.sample("y", dist.Categorical(logits=logits), obs=y)
                point = torch.where(one_hot(y, 10).bool(), 0.0, -1e30)
                y_all = pyro.sample("y_missing", dist.Categorical(logits=torch.where(mask[:, None], point, logits)),
                                    infer={"enumerate": "parallel"})
                t = pyro.sample("t", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                y1 = one_hot(y_all, 10).float()
                batch = torch.broadcast_shapes(t.shape[:-1], y1.shape[:-1])  # (10 values, N)
                inputs = torch.cat([t.expand(*batch, 2), y1.expand(*batch, 10)], -1)
                pyro.sample("x", dist.Bernoulli(logits=N_["x__logits"](inputs)).to_event(1), obs=x)

        def guide(x, y, mask):
            with pyro.plate("data", x.shape[0]):
                normal_guide("t", x)
        return model, guide

    if name == "poisson_regression_mixture":
        def model(x, c):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Categorical(logits=L["z__logits"]), infer={"enumerate": "parallel"})
                weight = L["x__rate"][z].reshape(*z.shape, 2, 1)
                log_rate = (c.unsqueeze(-2) @ weight).squeeze(-2) + L["x__rate__bias"][z]
                pyro.sample("x", dist.Poisson(log_rate.exp()).to_event(1), obs=x)

        def guide(x, c):
            pass
        return model, guide

    if name == "poisson_vae":
        def model(x):
            with pyro.plate("data", x.shape[0]):
                t = pyro.sample("t", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                pyro.sample("x", dist.Poisson(N_["x__rate"](t).exp()).to_event(1), obs=x)

        def guide(x):
            with pyro.plate("data", x.shape[0]):
                normal_guide("t", x)
        return model, guide

    def model(x):  # hierarchical_mixture
        tau = m.globals_["tau"].exp()
        mu = m.globals_["mu"]
        pyro.factor("mu_prior", dist.Normal(0.0, tau).log_prob(mu).sum())
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Categorical(logits=L["z__logits"]), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(mu[z], L["x__scale"].exp()).to_event(1), obs=x)

    def guide(x):
        pass
    return model, guide


@pytest.mark.parametrize("decl", examples.EXAMPLES, ids=[d.name for d in examples.EXAMPLES])
def test_each_example_elbo_equals_a_hand_written_pyro_pair(decl):
    arrays = example_data(decl.name)
    torch.manual_seed(3)
    model, guide = build(decl, info(arrays))
    with torch.no_grad():  # move the learned tables off their symmetric starts
        for p in model.learned.values():
            p.add_(0.3 * torch.randn(p.shape))
    hand_model, hand_guide = hand_written(decl.name, model, guide)
    declared = loss_of(elbo_name(decl), model, guide, *(arrays[n] for n in decl.data_names))
    hand_args = {"semi_supervised_vae": ("x", "y", "y_mask"), "poisson_regression_mixture": ("x", "c")}
    by_hand = loss_of(elbo_name(decl), hand_model, hand_guide, *(arrays[n] for n in hand_args.get(decl.name, ("x",))))
    assert math.isfinite(declared)
    assert declared == pytest.approx(by_hand, rel=1e-6)


def test_semi_supervised_elbo_is_the_explicit_labelled_plus_unlabelled_sum():
    """Labelled items contribute log p(y_n) + log p(x_n | y_n, t_n), the others log Σ_k p(k) p(x_n | k, t_n); both
    plus log p(t_n) - log q(t_n | x_n), at the guide's draw."""
    decl = examples.semi_supervised_vae
    arrays = example_data(decl.name)
    model, guide = build(decl, info(arrays))
    data = tuple(arrays[n] for n in decl.data_names)
    declared = -loss_of("enum", model, guide, *data, seed=5)
    pyro.set_rng_seed(5)
    with torch.no_grad():
        q = poutine.trace(guide).get_trace(*data).nodes["t"]
        t, log_q = q["value"], q["fn"].log_prob(q["value"])
        x, y, mask = arrays["x"], arrays["y"], arrays["y_mask"]
        log_prior_y = torch.log_softmax(model.learned["y__logits"], -1)  # (10,)
        inputs = torch.cat([t.expand(10, N, 2), one_hot(torch.arange(10), 10).float()[:, None].expand(10, N, 10)], -1)
        log_px = dist.Bernoulli(logits=model.networks["x__logits"](inputs)).log_prob(x).sum(-1)  # (10, N)
        labelled = log_prior_y[y] + log_px[y, torch.arange(N)]
        unlabelled = torch.logsumexp(log_prior_y[:, None] + log_px, 0)
        explicit = torch.where(mask, labelled, unlabelled) + dist.Normal(0.0, 1.0).log_prob(t).sum(-1) - log_q
    assert declared == pytest.approx(float(explicit.sum()), rel=1e-6)


# -- likelihood, sampling, printing, round trips ----------------------------------------------------------------------------


def test_importance_sampled_log_likelihood_of_a_pure_mixture_is_its_exact_marginal():
    from emvi.inference.likelihood import estimate_log_likelihood

    decl = examples.hierarchical_mixture
    arrays = example_data(decl.name)
    model, guide = build(decl, info(arrays))
    estimates = estimate_log_likelihood(model, guide, (arrays["x"],), num_samples=3, prior=False)
    with torch.no_grad():
        joint = (torch.log_softmax(model.learned["z__logits"], -1)[:, None]
                 + dist.Normal(model.globals_["mu"][:, None], model.learned["x__scale"].exp()).log_prob(arrays["x"]).sum(-1))
    assert torch.allclose(estimates.importance.float(), torch.logsumexp(joint, 0), rtol=1e-5)


def test_mixture_prior_vae_importance_estimate_sums_the_cluster_inside_each_weight():
    from emvi.inference.likelihood import estimate_log_likelihood

    decl = examples.mixture_prior_vae
    arrays = example_data(decl.name)
    model, guide = build(decl, info(arrays))
    estimates = estimate_log_likelihood(model, guide, arrays["x"], num_samples=50, prior=False)
    assert estimates.importance.shape == (N,) and torch.isfinite(estimates.importance).all()
    assert (estimates.importance >= estimates.elbo - 1e-4).all()  # log-mean-exp >= mean


def test_printing_a_declared_model_shows_its_generative_story():
    text = str(examples.semi_supervised_vae)
    assert "y_n ~ Categorical(logits=learned)" in text and "observed where y_mask, else enumerated" in text
    assert "x_n ~ Bernoulli(logits=mlp(t, y; hidden [64]))" in text
    model, _ = build(examples.poisson_vae, info(example_data("poisson_vae")))
    assert "shape (5,); observed" in repr(model)


@pytest.mark.parametrize("decl", examples.EXAMPLES, ids=[d.name for d in examples.EXAMPLES])
def test_python_and_spec_declarations_are_the_same(decl):
    import tomllib

    import tomli_w

    data = tomllib.loads(tomli_w.dumps(decl.to_dict()))
    assert Declaration.from_dict(decl.name, {**data, "description": decl.description}) == decl


def test_sampling_draws_every_local_site():
    model, _ = build(examples.semi_supervised_vae, info(example_data("semi_supervised_vae")))
    draws = model.sample(7)
    assert draws["x"].shape == (7, 6) and draws["y"].shape == (7,) and draws["t"].shape == (7, 2)


# -- one-line errors naming the site ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sites, message", [
    ([latent("t", "normal", dim=2, loc="w"), observed("x", "normal", loc=linear("t"), scale=1.0)],
     "site 't': parameter 'loc' refers to unknown parent 'w'"),
    ([latent("a", "normal", dim=1, loc=linear("b")), latent("b", "normal", dim=1, loc=linear("a")),
      observed("x", "normal", loc=linear("a"), scale=1.0)], "cycle through sites"),
    ([latent("k", "poisson", rate=2.0), observed("x", "normal", loc=linear("k"), scale=1.0)],
     "site 'k': an enumerated site needs finite support"),
    ([latent("b", "gamma", dim=2), param("p", "beta", concentration1=1.0, concentration0=1.0),
      observed("x", "normal", loc=linear("b"), scale=1.0)], None),
    ([param("mu", "normal", shape=(3, 2), loc=0.0, scale=1.0), latent("z", "categorical", categories=4),
      observed("x", "normal", loc="mu[z]", scale=1.0)], "site 'x': parameter table 'mu' has 3 rows but 'z' takes 4 values"),
])
def test_bad_declarations_raise_one_line_errors_naming_the_site(sites, message):
    if message is None:  # a valid declaration (control)
        declare("ok", *sites)
        return
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        declare("bad", *sites)
    assert "\n" not in str(caught.value) and isinstance(caught.value, EmviError)


def test_a_continuous_latent_needs_a_reparameterisable_family():
    with pytest.raises(ConfigError, match="site 'p': a continuous latent needs a reparameterisable family"):
        declare("bad", latent("p", "beta", dim=1, concentration1=1.0, concentration0=1.0),
                observed("x", "normal", loc=linear("p"), scale=1.0))


def test_an_observed_site_missing_from_the_data_is_named():
    with pytest.raises(DataError, match="observed site 'y' is missing from the data"):
        build(examples.semi_supervised_vae, info({"x": torch.zeros(N, 6)}))
    with pytest.raises(DataError, match="covariate site 'c' is missing"):
        build(examples.poisson_regression_mixture, info({"x": torch.zeros(N, 1)}))


def test_em_is_refused_with_the_reason_when_a_latent_is_continuous():
    assert not fits_by_em(examples.poisson_vae, (6,))
    assert em_ready(examples.poisson_regression_mixture) is not None
    assert covariate("c").role == "covariate" and learned().kind == "learned"


# -- composed is one case of declared models ------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    dict(latent="gaussian", mapping="mlp", likelihood="bernoulli", hidden_dims=(5,)),
    dict(latent="gaussian", mapping="linear", likelihood="normal"),
    dict(latent="gaussian", mapping="mlp", likelihood="categorical", num_categories=3, hidden_dims=(4,)),
    dict(latent="discrete", mapping="index", likelihood="poisson", num_components=3, weight_concentration=2.0),
    dict(latent="discrete", mapping="index", likelihood="normal", num_components=2),
], ids=["vae", "ppca-like", "categorical", "poisson-mixture", "gaussian-mixture"])
def test_a_composed_config_builds_a_declaration_with_the_same_elbo(kwargs):
    from emvi.models.composed import ComposedConfig

    torch.manual_seed(0)
    config = ComposedConfig(latent_dim=2, **kwargs)
    x = {"bernoulli": torch.bernoulli(torch.rand(N, 4)), "normal": torch.randn(N, 4),
         "categorical": torch.randint(0, 3, (N, 4)).float(), "poisson": torch.poisson(torch.full((N, 4), 3.0))}[
        config.likelihood]
    composed, composed_guide = get_model("composed").build(config, DataInfo(N, (4,)))
    decl = config.declaration()
    model, guide = build(decl, info({"x": x}), emvi.catalog.declared.DeclaredConfig(guide_hidden_dims=config.hidden_dims))
    with torch.no_grad():
        if config.latent == "discrete":
            model.globals_["pi"].copy_(biject_to(constraints.simplex).inv(composed.weights))
            key = "x__" + ("rate" if config.likelihood == "poisson" else "loc")
            model.learned[key].copy_(composed.component_params)
        else:
            key = "x__" + {"bernoulli": "logits", "normal": "loc", "categorical": "logits"}[config.likelihood]
            model.networks[key].load_state_dict(composed.decoder.state_dict())
            if config.likelihood == "categorical":  # the derived guide one-hot encodes codes; composed's reads them raw
                guide = composed_guide
            else:
                guide.encoders["t"].load_state_dict(composed_guide.encoder.state_dict())
        if config.likelihood == "normal":
            composed.likelihood.log_scale.copy_(0.1 * torch.randn(4))
            model.learned["x__scale"].copy_(composed.likelihood.log_scale)
    declared = loss_of(elbo_name(decl), model, guide, x)
    builtin = loss_of(elbo_name(decl), composed, composed_guide, x)
    assert declared == pytest.approx(builtin, rel=1e-6)


def test_a_mean_field_global_trains_and_is_exported():
    decl = declare("mf", param("tau", positive=True), param("mu", "normal", shape=(3, 2), loc=0.0, scale="tau",
                                                             guide="meanfield"),
                   latent("z", "categorical", categories=3), observed("x", "normal", loc="mu[z]", scale=learned()))
    arrays = example_data("hierarchical_mixture")
    model, guide = build(decl, info(arrays))
    assert "loc.mu" in dict(guide.named_parameters())
    result = emvi.train(model, guide, arrays["x"], config=emvi.TrainConfig(epochs=2, batch_size=12, elbo="enum",
                                                                          max_plate_nesting=1, progress=False))
    assert math.isfinite(result.history[-1]["train_loss"])
    from emvi.analysis.declared import declared_inference_data

    idata = declared_inference_data(model, guide, (arrays["x"],), num_samples=4)
    assert idata.posterior["mu"].shape == (1, 4, 3, 2)


def test_user_modules_guide_parts_and_more_families_train():
    """A user's nn.Module as a mapping (instance and factory), a replaced guide encoder, a LogNormal latent, a Gamma
    observation and multinomial word counts: the derived pair trains and its IS estimate is finite."""
    from emvi.declaration import module

    class Net(torch.nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.layer = torch.nn.Linear(in_features, out_features)

        def forward(self, h):
            return self.layer(h)

    encoder = torch.nn.Linear(8 + 5, 2 * 3)  # the guide's input: word counts (8) and the gamma site (5)
    decl = declare("custom", latent("s", "lognormal", dim=3),
                   observed("w", "multinomial", logits=module(Net(3, 8), "s")),
                   observed("g", "gamma", dim=5, concentration=2.0, rate=module(Net, "s")))
    arrays = {"w": torch.poisson(torch.full((N, 8), 2.0)), "g": torch.rand(N, 5) + 0.1}
    model, guide = build(decl, DataInfo(N, (8,), arrays={k: list(v.shape[1:]) for k, v in arrays.items()}),
                         parts={"s": encoder})
    assert guide.encoders["s"] is encoder and isinstance(model.networks["w__logits"], Net)
    data = tuple(arrays[n] for n in decl.data_names)
    result = emvi.train(model, guide, data, config=emvi.TrainConfig(epochs=2, batch_size=12, progress=False))
    assert math.isfinite(result.history[-1]["train_loss"])
    from emvi.inference.likelihood import estimate_log_likelihood

    assert torch.isfinite(estimate_log_likelihood(model, guide, data, num_samples=4, prior=False).importance).all()


def test_a_guide_enumerated_cluster_is_summed_inside_each_importance_weight():
    """log w_n = log Σ_z p(z) p(t_z | z) p(x_n | t_z) / q(t_z | x_n, z), with one t_z ~ q(t | x_n, z) per value of z."""
    from emvi.inference.likelihood import enumerated_log_joint, importance_traces

    decl = examples.mixture_prior_vae
    x = example_data(decl.name)["x"]
    model, guide = build(decl, info({"x": x}))
    with torch.no_grad():
        guide_trace, model_trace = importance_traces(model, guide, x, 1, enumerate_model=True, enumerate_guide=True)
        weights = enumerated_log_joint(model_trace, N, guide_trace=guide_trace).reshape(N)
        t = guide_trace.nodes["t"]["value"].reshape(10, N, 2)  # one draw per cluster value
        q = guide_trace.nodes["t"]["fn"].log_prob(guide_trace.nodes["t"]["value"]).reshape(10, N)
        L = model.learned
        log_p = (torch.log_softmax(L["z__logits"], -1)[:, None]
                 + dist.Normal(L["t__loc"][:, None], L["t__scale"].exp()[:, None]).log_prob(t).sum(-1)
                 + dist.Bernoulli(logits=model.networks["x__logits"](t)).log_prob(x).sum(-1))
    assert torch.allclose(weights, torch.logsumexp(log_p - q, 0), rtol=1e-6)


def test_an_mvnormal_site_scores_normal_with_covariance_l_lt_and_a_constant_scale_tril_is_c_times_identity():
    """observed x ~ MultivariateNormal(linear(t), L Lᵀ), L = learned (3, 3) lower triangular with exp diagonal: the
    model trace's log p(x | t) equals torch's MultivariateNormal at the same t; t ~ mvnormal(0, scale_tril=2) is
    Normal(0, 2 I)."""
    decl = declare("full_noise", latent("t", "mvnormal", dim=2, scale_tril=2.0),
                   observed("x", "mvnormal", loc=linear("t"), scale_tril=learned()))
    x = torch.randn(N, 3)
    model, guide = build(decl, info({"x": x}))
    with torch.no_grad():
        model.learned["x__scale_tril"].copy_(torch.tensor([0.3, 9.0, 9.0, 0.5, -0.2, 9.0, -0.4, 0.1, 0.2]))
        trace = poutine.trace(model).get_trace(x)
        t = trace.nodes["t"]["value"]
        tril = torch.tensor([[0.3, 0.0, 0.0], [0.5, -0.2, 0.0], [-0.4, 0.1, 0.2]])
        tril = tril.tril(-1) + tril.diagonal().exp().diag()
        loc = model.networks["x__loc"](t)
        expected = torch.distributions.MultivariateNormal(loc, scale_tril=tril).log_prob(x)
        assert torch.allclose(trace.nodes["x"]["fn"].log_prob(x), expected, atol=1e-5)
        assert torch.allclose(trace.nodes["t"]["fn"].log_prob(t), dist.Normal(0.0, 2.0).log_prob(t).sum(-1))
    assert "x_n ~ MultivariateNormal(loc=linear(t), scale_tril=learned)" in decl.story()
    assert Declaration.from_dict(decl.name, decl.to_dict()).sites == decl.sites  # a spec file holds it as well
    result = emvi.train(model, guide, (x,), config=emvi.TrainConfig(epochs=3, batch_size=N, progress=False))
    assert math.isfinite(result.history[-1]["train_loss"])


def test_an_mvnormal_site_refuses_a_scalar_and_a_site_reference_for_its_scale_tril():
    with pytest.raises(ConfigError, match="scale_tril.*constant c .*or a learned expression"):
        declare("bad", param("L", shape=(2, 2)), latent("t", "mvnormal", dim=2, scale_tril="L"),
                observed("x", "bernoulli", logits=mlp("t")))
    decl = declare("scalar", latent("t", "normal", dim=1), observed("x", "mvnormal", loc=linear("t"), scale_tril=1.0))
    with pytest.raises(DataError, match="an mvnormal site is a vector; its data must be \\(N, D\\)"):
        build(decl, info({"x": torch.randn(N)}))


def test_an_observed_bernoulli_vector_given_by_probs_scores_grey_levels_by_the_cross_entropy():
    """x ~ Bernoulli(p), p a Beta-distributed global (D,): under validation, grey levels x ∈ [0, 1] are scored as
    -Σ_d BCE(x_d, p_d), and 0/1 data exactly as Pyro's Bernoulli(probs) scores it."""
    decl = declare("grey_probs", param("p", "beta", shape=(3,), concentration1=2.0, concentration0=2.0),
                   observed("x", "bernoulli", probs="p"))
    grey = torch.rand(N, 3)
    model, _ = build(decl, info({"x": grey}))
    with torch.no_grad(), pyro.validation_enabled(True):
        p = model.global_value("p")
        values = {"p": p, "__dtype__": p.dtype, "__device__": p.device}
        d = model.local_distribution(decl.by_name["x"], values, grey)
        expected = -torch.nn.functional.binary_cross_entropy(p.expand(N, 3), grey, reduction="none").sum(-1)
        assert torch.allclose(d.log_prob(grey), expected, atol=1e-5)
        binary = torch.bernoulli(grey)
        assert torch.allclose(d.log_prob(binary), dist.Bernoulli(probs=p).to_event(1).log_prob(binary), atol=1e-5)


def fits_by_em(decl, shape):
    """Whether the method table's em can fit the model built from ``decl`` (its protocols decide)."""
    from emvi.inference.methods import get_method

    model, guide = emvi.catalog.declared.build(decl, DataInfo(10, shape, arrays={"x": list(shape)}))
    return get_method("em").why_not(model, guide) is None
