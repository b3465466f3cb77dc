"""gmvae and ssvae: the enumerated ELBO against explicit sums, M2 as the conditional VAE plus its classification term,
evaluation free of that term, enumeration really used, labelled subsets, and the CLI from fit to analyze."""

import json
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from torch.nn.functional import log_softmax

import emvi
from emvi.catalog.declared import build, build_declared, evaluate_declared
from emvi.catalog.deep_mixture import build_gmvae, build_ssvae, label_view
from emvi.data import DataInfo, load_dataset
from emvi.declaration import Declaration, declare, latent, mlp, observed
from emvi.errors import ConfigError, DataError
from emvi.inference import TrainConfig
from emvi.inference.likelihood import without_training_terms
from emvi.inference.starts import SSVAEStart
from emvi.models.deep_mixture import GMVAEConfig, SSVAEConfig, gmvae_declaration, ssvae_declaration

N, D = 12, 6


def binary(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand(N, D, generator=g), generator=g)


def info(arrays):
    return DataInfo(N, (D,), arrays={k: list(v.shape[1:]) for k, v in arrays.items()})


def perturbed(model):
    with torch.no_grad():  # move the tables off their symmetric starts
        for p in model.learned.values():
            p.add_(0.3 * torch.randn(p.shape))
    return model


def test_gmvae_enumerated_elbo_is_the_q_weighted_sum_over_clusters_plus_the_entropy():
    """ELBO = Σ_n Σ_k q(k | x_n) [log π_k + log N(t_nk; μ_k, σ_k) + log p(x_n | t_nk) - log q(t_nk | x_n, k)]
    + H(q(z | x_n)), with t_nk ~ q(t | x_n, k): one draw per cluster, the same draws (same seed) on both sides."""
    x = binary()
    torch.manual_seed(0)
    model, guide = build_gmvae(GMVAEConfig(num_components=3, latent_dim=2, hidden_dims=(8,), learn_weights=True,
                                           cluster_posterior="amortised", prior_covariance="diag"), info({"x": x}))
    perturbed(model)
    pyro.set_rng_seed(7)
    with torch.no_grad():
        elbo = -TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)
    pyro.set_rng_seed(7)
    with torch.no_grad():
        node = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(x).nodes["t"]
        t = node["value"]  # (K, N, q)
        log_q_t = node["fn"].log_prob(t)
        q_z = guide.classifier_probs("z", x)  # (N, K)
        tables = model.learned
        log_p = (log_softmax(tables["z__logits"], -1)[:, None]
                 + dist.Normal(tables["t__loc"][:, None], tables["t__scale"].exp()[:, None]).log_prob(t).sum(-1)
                 + dist.Bernoulli(logits=model.networks["x__logits"](t)).log_prob(x).sum(-1))
        entropy = -(q_z * q_z.log()).sum(-1)
        explicit = (q_z.T * (log_p - log_q_t)).sum(0) + entropy
    assert t.shape == (3, N, 2)
    assert elbo == pytest.approx(float(explicit.sum()), rel=1e-6)


def test_gmvae_with_z_summed_in_the_model_has_the_mixture_prior_density_and_the_exact_cluster_posterior():
    """Guide q(t | x): ELBO = Σ_n log p(x_n | t_n) + log Σ_k π_k N(t_n; μ_k, σ_k) - log q(t_n | x_n) at the guide's
    draw, and the reported cluster posterior is π_k N(m_n; μ_k, σ_k) normalised, at m_n = the mean of q(t | x_n)."""
    from emvi.analysis.deep_mixture import cluster_probabilities

    x = binary()
    torch.manual_seed(0)
    model, guide = build_gmvae(GMVAEConfig(num_components=3, latent_dim=2, hidden_dims=(8,), learn_weights=True,
                                           prior_covariance="diag"), info({"x": x}))
    perturbed(model)
    assert "z" not in guide.encoders and "t_n ~ Normal(loc=table[z], scale=table[z])  shape (2,); guide q(t | data)" \
        in model.declaration.story()
    pyro.set_rng_seed(7)
    with torch.no_grad():
        elbo = -TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)
    pyro.set_rng_seed(7)
    tables = model.learned

    def log_joint_z(t):  # (K, N): log π_k + log N(t_n; μ_k, σ_k)
        return (log_softmax(tables["z__logits"], -1)[:, None]
                + dist.Normal(tables["t__loc"][:, None], tables["t__scale"].exp()[:, None]).log_prob(t).sum(-1))

    with torch.no_grad():
        node = poutine.trace(guide).get_trace(x).nodes["t"]
        t = node["value"]  # (N, q): one draw, no cluster dimension
        explicit = (dist.Bernoulli(logits=model.networks["x__logits"](t)).log_prob(x).sum(-1)
                    + torch.logsumexp(log_joint_z(t), 0) - node["fn"].log_prob(t))
        posterior = torch.softmax(log_joint_z(guide.continuous_loc("t", x)), 0).T
    assert t.shape == (N, 2)
    assert elbo == pytest.approx(float(explicit.sum()), rel=1e-6)
    assert torch.allclose(cluster_probabilities(model, guide, "z", (x,)), posterior, atol=1e-6)


def test_the_full_covariance_prior_is_the_mixture_of_multivariate_normals_with_the_exact_cluster_posterior():
    """prior_covariance="full": t | z=k ~ Normal(μ_k, L_k L_kᵀ) with L_k the table row as a lower-triangular (q, q)
    matrix, its diagonal exp of the table's; the ELBO is log p(x | t) + log Σ_k π_k N(t; μ_k, L_k L_kᵀ) - log q(t | x)
    at the guide's draw (a diagonal Gaussian guide), and the cluster posterior is exact at the guide's mean."""
    from emvi.analysis.deep_mixture import cluster_probabilities

    x = binary()
    torch.manual_seed(0)
    model, guide = build_gmvae(GMVAEConfig(num_components=3, latent_dim=2, hidden_dims=(8,), learn_weights=True,
                                           prior_covariance="full"), info({"x": x}))
    perturbed(model)
    assert "t_n ~ MultivariateNormal(loc=table[z], scale_tril=table[z])  shape (2,)" in model.declaration.story()
    raw = model.learned["t__scale_tril"].detach().reshape(3, 2, 2)
    tril = torch.stack([torch.tensor([[r[0, 0].exp(), 0.0], [r[1, 0], r[1, 1].exp()]]) for r in raw])
    assert raw[:, 0, 1].abs().min() > 0  # the upper entry is ignored, not assumed zero
    tables = model.learned

    def log_joint_z(t):  # (K, N)
        prior = torch.distributions.MultivariateNormal(tables["t__loc"].detach()[:, None], scale_tril=tril[:, None])
        return log_softmax(tables["z__logits"].detach(), -1)[:, None] + prior.log_prob(t)

    pyro.set_rng_seed(7)
    with torch.no_grad():
        elbo = -TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x)
    pyro.set_rng_seed(7)
    with torch.no_grad():
        node = poutine.trace(guide).get_trace(x).nodes["t"]
        t = node["value"]
        explicit = (dist.Bernoulli(logits=model.networks["x__logits"](t)).log_prob(x).sum(-1)
                    + torch.logsumexp(log_joint_z(t), 0) - node["fn"].log_prob(t))
        posterior = torch.softmax(log_joint_z(guide.continuous_loc("t", x)), 0).T
    assert elbo == pytest.approx(float(explicit.sum()), rel=1e-6)
    assert torch.allclose(cluster_probabilities(model, guide, "z", (x,)), posterior, atol=1e-6)


def ssvae_pair(alpha, labels_per_class=None, classes=3):
    config = SSVAEConfig(num_classes=classes, latent_dim=2, hidden_dims=(8,), classify_weight=alpha,
                         labels_per_class=labels_per_class)
    g = torch.Generator().manual_seed(1)
    arrays = {"x": binary(), "y": torch.randint(0, classes, (N,), generator=g), "y_mask": torch.ones(N, dtype=bool)}
    torch.manual_seed(0)
    model, guide = build_ssvae(config, info(arrays))
    return model, guide, arrays


def test_m2_with_every_label_is_the_conditional_vae_plus_the_classification_term():
    """All labels given: -loss_M2 = ELBO of the supervised conditional VAE (q(t | x, y), p(y) = 1/C) + α Σ log q(y_n |
    x_n), at the same draw t_n (the M2 guide's draw for the given label)."""
    alpha = 0.7
    model, guide, arrays = ssvae_pair(alpha)
    x, y, mask = arrays["x"], arrays["y"], arrays["y_mask"]
    pyro.set_rng_seed(3)
    with torch.no_grad():
        m2_loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x, y, mask)
    pyro.set_rng_seed(3)
    with torch.no_grad():
        m2_elbo_loss = TraceEnum_ELBO(max_plate_nesting=1).loss(model, without_training_terms(guide), x, y, mask)
    pyro.set_rng_seed(3)
    with torch.no_grad():
        t = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(x, y, mask).nodes["t"]["value"]
    t_given = t[y, torch.arange(N)]  # (N, q): the draw where y_missing takes the given label
    cvae = declare("cvae", latent("t", "normal", dim=2), observed("x", "bernoulli", logits=mlp("t", "y", hidden=(8,))),
                   observed("y", "categorical", categories=3, logits=0.0))
    cvae_model, cvae_guide = build(cvae, info(arrays), emvi.catalog.declared.DeclaredConfig(guide_hidden_dims=(8,)))
    cvae_model.networks.load_state_dict(model.networks.state_dict())
    cvae_guide.encoders["t"].load_state_dict(guide.encoders["t"].state_dict())  # the same input [x, one-hot y]
    with torch.no_grad():
        log_p, log_q = (poutine.trace(poutine.condition(f, data={"t": t_given})).get_trace(x, y).log_prob_sum()
                        for f in (cvae_model, cvae_guide))
        cvae_loss = -float(log_p - log_q)  # Trace_ELBO's single-draw loss, at the draw t_given
        classification = alpha * guide.classifier_probs("y", x, y, mask)[torch.arange(N), y].log().sum()
    assert m2_loss == pytest.approx(cvae_loss - float(classification), rel=1e-6)
    assert m2_elbo_loss == pytest.approx(cvae_loss, rel=1e-6)  # what evaluation sees: the ELBO alone


def test_evaluation_and_importance_estimates_do_not_depend_on_alpha():
    losses, evaluations = [], []
    for alpha in (0.0, 5.0):
        model, guide, arrays = ssvae_pair(alpha, labels_per_class=2)
        arrays["y_mask"] = torch.arange(N) % 2 == 0  # some labels given, some enumerated
        data = (arrays["x"], arrays["y"], arrays["y_mask"])
        pyro.set_rng_seed(0)
        losses.append(float(TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, *data)))
        pyro.set_rng_seed(0)
        evaluations.append(evaluate_declared(model, guide, data, num_samples=4))
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)  # the term is in the training loss...
    assert evaluations[0] == pytest.approx(evaluations[1], rel=1e-9)  # ...and nowhere in the evaluation


@pytest.mark.parametrize("which", ["gmvae", "ssvae"])
def test_enumeration_is_really_used_in_the_guide(which):
    """The guide never samples the cluster or a missing label: every discrete guide site is enumerated in parallel
    (its value is all K values along an enumeration dim), and t is drawn once per value."""
    if which == "gmvae":
        x = binary()
        model, guide = build_gmvae(GMVAEConfig(num_components=4, latent_dim=2, hidden_dims=(8,),
                                               cluster_posterior="amortised"), info({"x": x}))
        data, name, k = (x,), "z", 4
    else:
        model, guide, arrays = ssvae_pair(0.1, labels_per_class=2, classes=4)
        arrays["y_mask"] = torch.arange(N) % 3 == 0
        data, name, k = (arrays["x"], arrays["y"], arrays["y_mask"]), "y_missing", 4
    trace = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(*data)
    discrete = [n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]
                and isinstance(s["fn"], (dist.Categorical, dist.Bernoulli))]
    assert discrete == [name]
    node = trace.nodes[name]
    assert node["infer"]["enumerate"] == "parallel" and node["infer"]["_enumerate_dim"] == -2
    assert torch.equal(node["value"].flatten(), torch.arange(k))
    assert trace.nodes["t"]["value"].shape == (k, N, 2)
    model_trace = poutine.trace(model).get_trace(*data)
    assert "enumerate" not in model_trace.nodes[name]["infer"]  # summed by the guide, not again by the model


@pytest.mark.parametrize("which", ["gmvae", "ssvae"])
def test_the_runner_default_elbo_sums_out_the_sites_the_guide_marks_for_enumeration(which):
    """``TrainConfig(elbo="auto")``, as a script calling ``train`` gets it, picks TraceEnum_ELBO for an amortised
    cluster or M2's missing label, marked for enumeration in the guide (Trace_ELBO would sample them); an explicit
    Trace_ELBO says so in a warning."""
    from emvi.inference.train_config import follow_discrete_sites as _follow_discrete_sites

    if which == "gmvae":
        x = binary()
        model, guide = build_gmvae(GMVAEConfig(num_components=4, latent_dim=2, hidden_dims=(8,),
                                               cluster_posterior="amortised"), info({"x": x}))
        data, name = (x,), "z"
    else:
        model, guide, arrays = ssvae_pair(0.1, labels_per_class=2, classes=4)
        arrays["y_mask"] = torch.arange(N) % 3 == 0
        data, name = (arrays["x"], arrays["y"], arrays["y_mask"]), "y_missing"
    loss_model, config = _follow_discrete_sites(TrainConfig(), model, guide, data, N)
    assert config.elbo == "enum" and config.max_plate_nesting == 1 and loss_model is model
    with pytest.warns(UserWarning, match=f"samples the guide's site\\(s\\) {name} marked for enumeration"):
        _follow_discrete_sites(TrainConfig(elbo="trace"), model, guide, data, N)


def test_a_cluster_summed_in_the_model_is_enumerated_there_and_absent_from_the_guide():
    """cluster_posterior="exact": the guide samples only t; under TraceEnum_ELBO the model's z carries an enumeration
    dimension (all K values) and t's prior log-density one row per cluster."""
    x = binary()
    model, guide = build_gmvae(GMVAEConfig(num_components=4, latent_dim=2, hidden_dims=(8,)), info({"x": x}))
    guide_trace = poutine.trace(guide).get_trace(x)
    assert [n for n, s in guide_trace.nodes.items() if s["type"] == "sample"] == ["data", "t"]
    replayed = poutine.enum(poutine.replay(model, trace=guide_trace), first_available_dim=-2)
    model_trace = poutine.trace(replayed).get_trace(x)
    z, t = model_trace.nodes["z"], model_trace.nodes["t"]
    assert z["infer"]["enumerate"] == "parallel" and z["infer"]["_enumerate_dim"] == -2
    assert torch.equal(z["value"].flatten(), torch.arange(4))
    assert t["fn"].log_prob(t["value"]).shape == (4, N)
    assert math.isfinite(TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, x))


def test_guide_given_and_classify_are_validated_printed_and_round_trip():
    decl = build_ssvae(SSVAEConfig(num_classes=3, latent_dim=2, hidden_dims=(8,), labels_per_class=None),
                       info(ssvae_pair(0.1)[2]))[0].declaration
    assert "t_n ~ Normal(loc=0, scale=1)  shape (2,); guide q(t | data, y)" in decl.story()
    assert "else enumerated in the guide q(y | data)" in decl.story()
    assert Declaration.from_dict("ssvae", decl.to_dict()).sites == decl.sites
    gmvae = gmvae_declaration(GMVAEConfig())
    assert gmvae.to_dict()["sites"]["z"]["summed_in"] == "model"
    assert Declaration.from_dict("gmvae", gmvae.to_dict()).sites == gmvae.sites
    x = observed("x", "bernoulli", logits=mlp("t", hidden=(4,)))
    with pytest.raises(ConfigError, match="site 't': guide_given lists 'u'; only discrete local sites"):
        declare("m", latent("u", "normal", dim=2), latent("t", "normal", dim=2, guide_given=("u",)), x)
    with pytest.raises(ConfigError, match="site 'z': guide_given is for continuous latents"):
        declare("m", latent("z", "categorical", categories=2, guide_given=("z",)), latent("t", "normal", dim=2), x)
    with pytest.raises(ConfigError, match="site 'y': classify needs a classifier q\\(y \\| data\\)"):
        declare("m", observed("y", "categorical", categories=2, mask="m", classify=1.0),
                latent("t", "normal", dim=2), x)
    with pytest.raises(ConfigError, match="site 't': summed_in is for discrete latents"):
        declare("m", latent("t", "normal", dim=2, summed_in="model"), x)
    with pytest.raises(ConfigError, match=r"model.sites.y.guide_given: only latent sites take guide_given"):
        Declaration.from_dict("m", {"sites": {"y": {"role": "observed", "family": "categorical", "categories": 2,
                                                    "guide_given": ["t"]}}})


def test_the_label_view_hides_every_label_outside_a_balanced_seeded_subset():
    digits = load_dataset("digits")
    config = SSVAEConfig(labels_per_class=3, label_seed=4)
    view = label_view(config, digits, "train")
    mask, hidden = view.array("y_mask"), view.array("y")
    assert torch.equal(torch.bincount(digits.y[mask]), torch.full((10,), 3))
    assert torch.equal(hidden[mask], digits.y[mask]) and (hidden[~mask] == -1).all()
    assert torch.equal(view.y, digits.y)  # the true labels stay for scoring
    assert torch.equal(label_view(config, digits, "train").array("y_mask"), mask)  # same seed, same subset
    assert not label_view(config, load_dataset("digits", split="test"), "test").array("y_mask").any()
    with pytest.raises(DataError, match="fewer than the 1000 labels per class"):
        label_view(SSVAEConfig(labels_per_class=1000), digits, "train")
    with pytest.raises(DataError, match="ssvae needs a labelled data set"):
        label_view(config, emvi.data.ArrayDataset(x=digits.x), "train")


def test_uniform_weights_keep_every_cluster_in_use_after_a_short_fit():
    """The collapse-avoidance claim of docs/experiments/deep_mixture.md: with π fixed uniform, a short fit on the digits
    spreads the data over most of the K = 10 clusters (effective number exp H(mean q(z | x)) > K / 2)."""
    from emvi.analysis.clustering import effective_num_clusters
    from emvi.analysis.deep_mixture import cluster_probabilities

    digits = load_dataset("digits", binarize="static", limit=400)
    torch.manual_seed(0)
    model, guide = build_gmvae(GMVAEConfig(latent_dim=4, hidden_dims=(32,)), digits.info())
    emvi.train(model, guide, digits, config=emvi.TrainConfig(epochs=10, batch_size=100, learning_rate=3e-3,
                                                             progress=False))
    probs = cluster_probabilities(model, guide, "z", (digits.x,))
    assert effective_num_clusters(probs.numpy()) > 5


@pytest.mark.slow
def test_gmvae_and_ssvae_fit_evaluate_and_analyze_through_the_cli(tmp_path, capsys):
    from emvi.cli import main

    common = ["--dataset", "digits", "--binarize", "static", "--limit", "300", "--epochs", "2", "--latent-dim", "3",
              "--hidden-dims", "16", "--progress", "false"]
    runs = {"gmvae": ["-k", "4"], "ssvae": ["--labels-per-class", "3", "--pretrain-epochs", "2"]}
    for name, extra in runs.items():
        run = tmp_path / name
        assert main(["fit", name, *common, *extra, "--run-dir", str(run)]) == 0
        assert (run / "conditional_samples.png").is_file() and (run / "latent_map.png").is_file()
        summary = json.loads((run / "summary.json").read_text())
        key = "train_cluster_accuracy" if name == "gmvae" else "train_unlabelled_accuracy"
        assert 0 < summary[key] <= 1 and summary["pretrain_epochs"] == (2 if name == "ssvae" else 10)
        if name == "ssvae":  # the start's cluster-then-label step ran
            assert 0 <= summary["pretrain_labelled_cluster_agreement"] <= 1
        assert main(["evaluate", str(run), "--num-samples", "5", "--limit", "40"]) == 0
        metrics = json.loads((run / "evaluation_test.json").read_text())
        assert math.isfinite(metrics["is_loglik_nats"]) and metrics["is_loglik_nats"] < 0
        if name == "gmvae":
            assert 0 < metrics["cluster_accuracy"] <= 1 and 1 <= metrics["effective_num_clusters"] <= 4
        else:
            assert 0 <= metrics["accuracy"] <= 1 and metrics["num_labelled"] == 0
        assert main(["analyze", str(run), "--num-samples", "3"]) == 0
        assert (run / "inference_data.nc").is_file()
    assert main(["fit", "ssvae", *common, "--labels-per-class", "500", "--run-dir", str(tmp_path / "bad")]) == 2
    assert "lower --labels-per-class" in capsys.readouterr().err


# -- VaDE's start: autoencoder pretraining and the mixture fit to its codes -------------------------------------------


def pretrained_gmvae(seed=0, epochs=3, **options):
    from emvi.inference.starts import GMVAEStart, pretrain_gmvae

    digits = load_dataset("digits", binarize="static", limit=200)
    start_options = {key: options.pop(key) for key in list(options) if key.startswith("pretrain_")}
    config = GMVAEConfig(num_components=4, latent_dim=3, hidden_dims=(16,), **options)
    start = GMVAEStart(pretrain_epochs=epochs, pretrain_restarts=2, **start_options)
    model, guide = emvi.runs.build_model("gmvae", config, digits.info(), seed=seed)
    train_config = emvi.TrainConfig(batch_size=50, learning_rate=1e-2, seed=seed)
    streams = torch.get_rng_state()
    out = pretrain_gmvae(model, guide, digits, config, start, train_config)
    assert torch.equal(torch.get_rng_state(), streams)  # SVI then draws what it would have drawn without it
    return model, guide, digits, out


def test_pretraining_lowers_the_reconstruction_error_and_puts_the_prior_on_a_gmm_of_the_codes():
    """After pretraining, μ_k, σ_k² (and π if learned) are the diagonal GMM that emvi's EM fits to the encoder means
    m(x_n), a fixed point of EM on those codes; and the autoencoder reconstructs better than the random start."""
    from emvi.estimators import Mixture
    from emvi.inference.pretraining import reconstruction_nats
    from emvi.inference.starts import gmvae_autoencoder

    digits = load_dataset("digits", binarize="static", limit=200)
    model, guide = emvi.runs.build_model("gmvae", GMVAEConfig(num_components=4, latent_dim=3, hidden_dims=(16,)),
                                         digits.info(), seed=0)
    before = reconstruction_nats(*gmvae_autoencoder(model, guide)[:2], digits.x)
    model, guide, _, out = pretrained_gmvae(epochs=10, learn_weights=True, pretrain_clusters="gmm",
                                            prior_covariance="diag")
    encode, decode, _ = gmvae_autoencoder(model, guide)
    after = reconstruction_nats(encode, decode, digits.x)
    assert after < before - 5 and out["pretrain_reconstruction_nats"] == pytest.approx(after, rel=0.1)
    with torch.no_grad():
        codes = encode(digits.x)
    gmm = Mixture(4, "gaussian-diag", n_init=2, max_iter=300, tol=1e-3, floor=1e-4, seed=0).fit(codes.double())
    loc, scale, logits = (model.learned[k].detach().double() for k in ("t__loc", "t__scale", "z__logits"))
    assert torch.allclose(loc, torch.as_tensor(gmm.means_), atol=1e-5)
    assert torch.allclose((2 * scale).exp(), torch.as_tensor(gmm.covariances_), rtol=1e-4)
    assert torch.allclose(torch.softmax(logits, -1), torch.as_tensor(gmm.weights_), atol=1e-5)
    # one more EM step on the codes moves the means by little: they are a GMM fit, not the random start
    log_joint = torch.log_softmax(logits, -1) + dist.Normal(loc, scale.exp()).log_prob(codes.double()[:, None]).sum(-1)
    r = torch.softmax(log_joint, -1)  # (N, K)
    step = (r.T @ codes.double()) / r.sum(0)[:, None]
    assert (step - loc).abs().max() < 0.05 * codes.std()


def test_the_spectral_start_puts_the_prior_on_the_moments_of_the_spectral_clusters_of_the_codes():
    """The spectral start: μ_k, σ_k² and π_k are the mean, variance (+ floor) and share of the codes m(x_n) in each
    cluster that spectral clustering of their neighbour graph finds, with the same seed; the reported log-likelihood
    is that of the codes under this mixture."""
    from emvi.inference.pretraining import spectral_clusters
    from emvi.inference.starts import gmvae_autoencoder

    model, guide, digits, out = pretrained_gmvae(epochs=10, learn_weights=True, prior_covariance="diag",
                                                 pretrain_clusters="spectral")
    with torch.no_grad():
        codes = gmvae_autoencoder(model, guide)[0](digits.x).double()
    labels = spectral_clusters(codes, 4, neighbors=10, restarts=2, seed=0).numpy()
    points = codes.numpy()
    loc, scale, logits = (model.learned[k].detach().double() for k in ("t__loc", "t__scale", "z__logits"))
    for k in range(4):
        members = points[labels == k]
        assert np.allclose(loc[k].numpy(), members.mean(0), atol=1e-5)
        assert np.allclose((2 * scale[k]).exp().numpy(), members.var(0) + 1e-4, rtol=1e-4)
        assert torch.softmax(logits, -1)[k].item() == pytest.approx(len(members) / len(points), abs=1e-6)
    log_joint = torch.log_softmax(logits, -1) + dist.Normal(loc, scale.exp()).log_prob(codes[:, None]).sum(-1)
    assert out["pretrain_start_loglik"] == pytest.approx(float(log_joint.logsumexp(-1).mean()), rel=1e-4)


@pytest.mark.parametrize("start", ["tsne", "spectral", "gmm"])
def test_the_full_covariance_start_puts_each_component_on_its_clusters_covariance(start):
    """prior_covariance="full": L_k L_kᵀ is the covariance (+ floor I) of the codes in cluster k (tsne: the clusters
    of the codes' t-SNE map; spectral), or the full-covariance GMM that emvi's EM fits to the codes (gmm), and μ_k,
    π_k as in the diagonal start."""
    from emvi.estimators import Mixture
    from emvi.inference.pretraining import spectral_clusters
    from emvi.inference.starts import cluster_moments, embedded_clusters, gmvae_autoencoder

    model, guide, digits, out = pretrained_gmvae(epochs=10, learn_weights=True, prior_covariance="full",
                                                 pretrain_clusters=start)
    with torch.no_grad():
        codes = gmvae_autoencoder(model, guide)[0](digits.x).double()
    if start in ("tsne", "spectral"):
        labels = (embedded_clusters(codes, 4, restarts=2, seed=0) if start == "tsne" else
                  spectral_clusters(codes, 4, neighbors=10, restarts=2, seed=0))
        weights, means, covariances = cluster_moments(codes, labels, 4, floor=1e-4, full=True)
    else:
        gmm = Mixture(4, "gaussian-full", n_init=2, max_iter=300, tol=1e-3, floor=1e-4, seed=0).fit(codes)
        weights, means, covariances = (torch.as_tensor(a) for a in (gmm.weights_, gmm.means_, gmm.covariances_))
    raw = model.learned["t__scale_tril"].detach().double().reshape(4, 3, 3)
    tril = raw.tril(-1) + raw.diagonal(dim1=-2, dim2=-1).exp().diag_embed()
    assert torch.allclose(tril @ tril.transpose(-1, -2), covariances, rtol=1e-4, atol=1e-6)
    assert torch.allclose(model.learned["t__loc"].detach().double(), means, atol=1e-5)
    assert torch.allclose(torch.softmax(model.learned["z__logits"].detach().double(), -1), weights, atol=1e-5)
    prior = torch.distributions.MultivariateNormal(means, covariance_matrix=covariances)
    log_joint = weights.log() + prior.log_prob(codes[:, None])
    assert out["pretrain_start_loglik"] == pytest.approx(float(log_joint.logsumexp(-1).mean()), rel=1e-4)


def assert_seeded_and_exact(cluster, truth):
    """``cluster()`` leaves the global random streams alone, gives the same labels twice and recovers ``truth``."""
    from emvi.analysis.clustering import cluster_accuracy

    streams = torch.get_rng_state()
    labels = cluster()
    assert torch.equal(torch.get_rng_state(), streams)
    assert torch.equal(labels, cluster())
    assert cluster_accuracy(labels.numpy(), truth) == 1.0


def test_spectral_clusters_follow_the_manifold_where_a_gaussian_mixture_cannot():
    """Two concentric rings: spectral clustering of the 10-neighbour graph recovers the rings exactly, a diagonal
    GMM (emvi's EM, best of 3 starts) cuts them in halves (accuracy near 1/2). Seeded, global streams untouched."""
    from sklearn.datasets import make_circles

    from emvi.analysis.clustering import cluster_accuracy
    from emvi.estimators import Mixture
    from emvi.inference.pretraining import spectral_clusters

    points, rings = make_circles(600, factor=0.4, noise=0.03, random_state=0)
    codes = torch.as_tensor(points)
    assert_seeded_and_exact(lambda: spectral_clusters(codes, 2, neighbors=10, seed=0), rings)
    gmm = Mixture(2, "gaussian-diag", n_init=3, seed=0).fit(codes)
    assert cluster_accuracy(gmm.predict(codes), rings) < 0.75
    with pytest.raises(DataError, match="more items"):
        spectral_clusters(codes[:8], 2, neighbors=10)


def test_tsne_clusters_separate_what_touches_where_a_gaussian_mixture_cannot():
    """Two interleaved half-moons in 10 dimensions (the moons in the first two, small noise elsewhere): a GMM on the
    t-SNE map recovers the moons exactly, a full-covariance GMM on the points themselves (emvi's EM, best of 3
    starts) does not. Seeded (same labels twice), global streams untouched; too few items are refused."""
    from sklearn.datasets import make_moons

    from emvi.analysis.clustering import cluster_accuracy
    from emvi.estimators import Mixture
    from emvi.inference.starts import embedded_clusters

    points, moons = make_moons(400, noise=0.05, random_state=0)
    noise = 0.05 * np.random.default_rng(0).standard_normal((400, 8))
    codes = torch.as_tensor(np.hstack([points, noise]))
    assert_seeded_and_exact(lambda: embedded_clusters(codes, 2, restarts=3, seed=0), moons)
    gmm = Mixture(2, "gaussian-full", n_init=3, seed=0).fit(codes)
    assert cluster_accuracy(gmm.predict(codes), moons) < 0.95
    with pytest.raises(DataError, match="at least 4 items"):
        embedded_clusters(codes[:3], 2)


def test_cluster_moments_are_the_hard_assignment_m_step_and_refuse_an_empty_cluster():
    from emvi.inference.starts import cluster_moments

    codes = torch.tensor([[0.0, 1.0], [2.0, 3.0], [10.0, -1.0]], dtype=torch.float64)
    weights, means, variances = cluster_moments(codes, torch.tensor([0, 0, 1]), 2, floor=1e-4)
    assert torch.allclose(weights, torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    assert torch.allclose(means, torch.tensor([[1.0, 2.0], [10.0, -1.0]], dtype=torch.float64))
    assert torch.allclose(variances, torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64) + 1e-4)
    with pytest.raises(DataError, match="cluster 1 has no item"):
        cluster_moments(codes, torch.tensor([0, 0, 2]), 3)


def test_full_cluster_moments_are_each_clusters_biased_covariance_plus_the_floor():
    from emvi.inference.starts import cluster_moments

    g = torch.Generator().manual_seed(0)
    codes = torch.randn(40, 3, generator=g, dtype=torch.float64)
    labels = torch.arange(40) % 3
    weights, means, covariances = cluster_moments(codes, labels, 3, floor=1e-3, full=True)
    for k in range(3):
        members = codes[labels == k].numpy()
        assert np.allclose(covariances[k].numpy(), np.cov(members.T, bias=True) + 1e-3 * np.eye(3), atol=1e-12)
        assert np.allclose(means[k].numpy(), members.mean(0))
    assert torch.allclose(covariances.diagonal(dim1=-2, dim2=-1), cluster_moments(codes, labels, 3, floor=1e-3)[2])


def test_pretraining_is_seeded_and_leaves_the_global_random_streams_alone():
    first = pretrained_gmvae(seed=3)[0].state_dict()  # (pretrained_gmvae checks the global streams)
    second = pretrained_gmvae(seed=3)[0].state_dict()
    other = pretrained_gmvae(seed=4)[0].state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["learned.t__loc"], other["learned.t__loc"])


def test_pretraining_is_off_at_zero_and_works_with_the_amortised_guide():
    model, guide, digits, out = pretrained_gmvae(epochs=0)
    assert out == {}
    for start in ("tsne", "spectral", "gmm"):
        model, guide, digits, out = pretrained_gmvae(cluster_posterior="amortised", pretrain_clusters=start)
        assert math.isfinite(out["pretrain_start_loglik"]) and model.learned["t__loc"].shape == (4, 3)
        assert math.isfinite(TraceEnum_ELBO(max_plate_nesting=1).loss(model, guide, digits.x[:20]))
    from emvi.inference.starts import GMVAEStart

    with pytest.raises(ConfigError, match="pretrain_epochs"):
        GMVAEStart(pretrain_epochs=-1)
    with pytest.raises(ConfigError, match="pretrain_clusters"):
        GMVAEStart(pretrain_clusters="kmeans")
    with pytest.raises(ConfigError, match="pretrain_neighbors"):
        GMVAEStart(pretrain_neighbors=0)
    with pytest.raises(ConfigError, match="pretrain_perplexity"):
        GMVAEStart(pretrain_perplexity=0.5)
    with pytest.raises(ConfigError, match="prior_covariance"):
        GMVAEConfig(prior_covariance="spherical")


def pretrained_ssvae(seed=0, epochs=3, label_seed=0, parts=None, classifier_epochs=0):
    from emvi.catalog.deep_mixture import pretrain_ssvae

    config = SSVAEConfig(latent_dim=2, hidden_dims=(16,), labels_per_class=2, label_seed=label_seed)
    start_options = SSVAEStart(pretrain_epochs=epochs, pretrain_classifier_epochs=classifier_epochs)
    digits = label_view(config, load_dataset("digits", binarize="static", limit=200), "train")
    torch.manual_seed(seed)
    model, guide = build_declared(ssvae_declaration(config, config.classify_weight), config, digits.info(),
                                  hidden_dims=config.hidden_dims, parts=parts)
    start = {k: v.clone() for k, v in (model.state_dict() | guide.state_dict()).items()}
    streams = torch.get_rng_state()
    out = pretrain_ssvae(model, guide, digits, config, start_options,
                         emvi.TrainConfig(batch_size=50, learning_rate=1e-2, seed=seed))
    assert torch.equal(torch.get_rng_state(), streams)  # SVI then draws what it would have drawn without it
    return model, guide, start, out, digits


def test_ssvae_pretraining_trains_the_classifiers_hidden_layer_as_an_encoder_and_reads_no_label():
    """The autoencoder start changes q(y | x)'s hidden layer and nothing else, except q(t | x, y)'s image columns,
    which take that layer; more epochs reconstruct better; the same seed gives the same weights whichever labels
    are kept (no label is read), another seed other weights."""
    model, guide, start, out, _ = pretrained_ssvae(epochs=20)
    after = model.state_dict() | guide.state_dict()
    changed = {k for k in after if not torch.equal(after[k], start[k])}
    assert changed == {"encoders.y.net.0.weight", "encoders.y.net.0.bias", "encoders.t.net.0.weight",
                       "encoders.t.net.0.bias"}
    image_columns = after["encoders.y.net.0.weight"].shape[1]  # 64 pixels, then y one-hot in q(t | x, y)
    assert torch.equal(after["encoders.t.net.0.weight"][:, :image_columns], after["encoders.y.net.0.weight"])
    assert torch.equal(after["encoders.t.net.0.weight"][:, image_columns:],
                       start["encoders.t.net.0.weight"][:, image_columns:])
    assert torch.equal(after["encoders.t.net.0.bias"], after["encoders.y.net.0.bias"])
    assert out["pretrain_epochs"] == 20 and out["pretrain_seconds"] > 0
    assert out["pretrain_reconstruction_nats"] < pretrained_ssvae(epochs=1)[3]["pretrain_reconstruction_nats"] - 3
    other_labels = pretrained_ssvae(epochs=20, label_seed=5)[1].state_dict()
    assert all(torch.equal(other_labels[k], v) for k, v in guide.state_dict().items())
    other_seed = pretrained_ssvae(epochs=20, seed=1)[1].state_dict()
    assert not torch.equal(other_seed["encoders.y.net.0.weight"], after["encoders.y.net.0.weight"])


def test_ssvae_cluster_then_label_start_trains_q_y_on_the_codes_clusters_named_by_the_labelled_items(record_calls):
    """With classifier epochs, q(y | x) is trained on the labelled items' own labels and, elsewhere, on the name
    that the labelled items give their code's cluster (the best one-to-one map); its cross-entropy falls."""
    import emvi.inference.starts as starts
    from emvi.analysis.clustering import cluster_names

    seen, wrap = record_calls
    wrap(starts, "embedded_clusters"), wrap(starts, "pretrain_classifier")
    model, guide, start, out, digits = pretrained_ssvae(epochs=5, classifier_epochs=8)
    clusters = seen["embedded_clusters"][1]
    mask, labels = digits.array("y_mask"), digits.array("y")
    names = torch.as_tensor(cluster_names(clusters[mask], labels[mask], 10, 10))
    targets = seen["pretrain_classifier"][0][3]
    assert torch.equal(targets, torch.where(mask, labels, names[clusters]))
    assert out["pretrain_labelled_cluster_agreement"] == pytest.approx(float((names[clusters] == labels)[mask]
                                                                             .float().mean()))
    nats = seen["pretrain_classifier"][1]["pretrain_classifier_nats"]
    assert len(nats) == 8 and nats[-1] < nats[0] - 0.3 and out["pretrain_classifier_nats"] == nats[-1]
    assert not torch.equal(guide.state_dict()["encoders.y.net.2.weight"], start["encoders.y.net.2.weight"])
    again = pretrained_ssvae(epochs=5, classifier_epochs=8)[1].state_dict()
    assert all(torch.equal(again[k], v) for k, v in guide.state_dict().items())
    with pytest.raises(ConfigError, match="pretrain_classifier_epochs"):
        SSVAEStart(pretrain_classifier_epochs=-1)


def test_ssvae_pretraining_is_off_at_zero_and_reaches_a_classifier_given_as_a_part():
    model, guide, start, out, _ = pretrained_ssvae(epochs=0)
    assert out == {}
    assert all(torch.equal(v, start[k]) for k, v in (model.state_dict() | guide.state_dict()).items())
    with pytest.raises(ConfigError, match="pretrain_epochs"):
        SSVAEStart(pretrain_epochs=-1)
    # a classifier of another shape: its hidden features (what its last linear layer reads) are pretrained, and
    # q(t | x, y), whose first layer no longer matches, keeps its start
    part = torch.nn.Sequential(torch.nn.Linear(64, 12), torch.nn.Tanh(), torch.nn.Linear(12, 10))
    model, guide, start, out, _ = pretrained_ssvae(epochs=5, parts={"y": part})
    after = guide.state_dict()
    assert not torch.equal(after["encoders.y.0.weight"], start["encoders.y.0.weight"])
    assert torch.equal(after["encoders.y.2.weight"], start["encoders.y.2.weight"])
    assert all(torch.equal(after[k], start[k]) for k in after if k.startswith("encoders.t."))
    with pytest.raises(ConfigError, match="no linear layer.*pretrain_epochs=0"):
        pretrained_ssvae(epochs=1, parts={"y": torch.nn.LogSoftmax(-1)})


def test_run_fit_pretrains_a_new_fit_once_and_a_resumed_fit_never(tmp_path, monkeypatch):
    import dataclasses

    from emvi.cli import main
    from emvi.registry import _MODELS

    calls = []
    entry = _MODELS["gmvae"]

    def counting(*args):
        calls.append(args[4])  # the start options
        return entry.pretrain(*args)

    monkeypatch.setitem(_MODELS, "gmvae", dataclasses.replace(entry, pretrain=counting))
    run = tmp_path / "run"
    common = ["fit", "gmvae", "--dataset", "digits", "--binarize", "static", "--limit", "200", "-k", "4",
              "--latent-dim", "3", "--hidden-dims", "16", "--pretrain-epochs", "2", "--progress", "false", "--no-plots",
              "--run-dir", str(run)]
    assert main([*common, "--epochs", "1"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["pretrain_epochs"] == 2 and summary["pretrain_reconstruction_nats"] > 0
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["start_config"]["pretrain_epochs"] == 2 and "pretrain_epochs" not in recorded["model_config"]
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    assert len(calls) == 1 and calls[0].pretrain_epochs == 2
    assert "pretrain_epochs" not in json.loads((run / "summary.json").read_text())


def test_start_options_are_their_own_table_not_the_models():
    """The start before SVI is training procedure: a spec's [start] table (refused under [model], with the fix),
    and a run recorded before the split (pretrain_* among the model's options) still loads."""
    from emvi.inference.starts import GMVAEStart
    from emvi.registry import get_model
    from emvi.runs import run_model_config
    from emvi.spec import parse_spec

    spec = parse_spec({"model": {"name": "gmvae"}, "start": {"pretrain_epochs": 2}})
    assert spec.start_config == GMVAEStart(pretrain_epochs=2)
    assert spec.to_dict()["start"]["pretrain_epochs"] == 2 and "pretrain_epochs" not in spec.to_dict()["model"]
    assert parse_spec({"model": {"name": "gmvae"}}).start_config == GMVAEStart()
    with pytest.raises(ConfigError, match=r"model.pretrain_epochs is a start option .*move it to the \[start\] table"):
        parse_spec({"model": {"name": "gmvae", "pretrain_epochs": 2}})
    with pytest.raises(ConfigError, match="has no start options"):
        parse_spec({"model": {"name": "vae"}, "start": {"pretrain_epochs": 2}})
    old = run_model_config(get_model("gmvae"), {"model_config": {"num_components": 4, "pretrain_epochs": 120}})
    assert old == GMVAEConfig(num_components=4)


# -- any torchvision image data set: Fashion-MNIST through the same path as MNIST -------------------------------------


def write_idx(path, array):
    """torchvision's raw MNIST format: magic (0x08 = unsigned bytes, then the number of dimensions), sizes, bytes."""
    import struct

    import numpy as np

    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def fake_fashion_mnist(root, per_class_train=12, per_class_test=4):
    """FashionMNIST/raw under ``root`` in torchvision's layout: class c lights rows 2c..2c+3 of a 28 x 28 image."""
    import numpy as np

    rng = np.random.default_rng(0)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, per_class in (("train", per_class_train), ("t10k", per_class_test)):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 40, size=(labels.size, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c : 2 * c + 4, 4:24] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return labels


@pytest.mark.slow
def test_fashion_mnist_needs_no_code_change_from_label_subsets_to_the_cli(tmp_path):
    from emvi.cli import main

    test_labels = fake_fashion_mnist(tmp_path)
    train = load_dataset("fashion-mnist", root=tmp_path)
    test = load_dataset("fashion-mnist", root=tmp_path, split="test")
    assert train.x.shape == (120, 784) and train.image_shape == (1, 28, 28) and train.name == "fashion-mnist"
    assert torch.equal(test.y, torch.as_tensor(test_labels)) and float(train.x.max()) == 1.0
    bands = test.x.reshape(-1, 28, 28)[torch.arange(40), 2 * test.y, 4:24]
    assert (bands == 1.0).all()  # each image's class band, read back as written
    view = label_view(SSVAEConfig(labels_per_class=3, label_seed=1), train, "train")
    kept = view.y[view.array("y_mask")]
    assert torch.equal(torch.bincount(kept, minlength=10), torch.full((10,), 3))
    assert (view.array("y")[~view.array("y_mask")] == -1).all()

    common = ["--dataset", "fashion-mnist", "--data-root", str(tmp_path), "--binarize", "static", "--epochs", "2",
              "--latent-dim", "2", "--hidden-dims", "16", "--progress", "false"]
    for name, extra in {"gmvae": ["-k", "10", "--pretrain-epochs", "2"], "ssvae": ["--labels-per-class", "3"]}.items():
        run = tmp_path / name
        assert main(["fit", name, *common, *extra, "--run-dir", str(run)]) == 0
        assert main(["evaluate", str(run), "--num-samples", "4"]) == 0
        metrics = json.loads((run / "evaluation_test.json").read_text())
        assert math.isfinite(metrics["is_loglik_nats"]) and metrics["is_loglik_nats"] < 0
        key = "cluster_accuracy" if name == "gmvae" else "accuracy"
        assert key in metrics


def test_grey_level_images_fit_and_evaluate_as_bernoulli_means(tmp_path, capsys):
    """Grey levels in [0, 1] (the digits unbinarised) are Bernoulli means: the declared decoder scores them by the
    cross-entropy -Σ_d BCE(x_d, sigmoid f_d) in training, clustering and validated evaluation alike."""
    from emvi.cli import main

    digits = load_dataset("digits", limit=40)
    assert ((digits.x > 0) & (digits.x < 1)).any()
    model, guide = emvi.runs.build_model("gmvae", GMVAEConfig(num_components=3, latent_dim=2, hidden_dims=(8,)),
                                         digits.info(), seed=0)
    t = torch.zeros(40, 2)
    with pyro.validation_enabled(True):
        d = model.local_distribution(model.declaration.by_name["x"], {"t": t, "__dtype__": t.dtype}, digits.x)
        logits = model.networks["x__logits"](t)
        expected = -torch.nn.functional.binary_cross_entropy_with_logits(logits, digits.x, reduction="none").sum(-1)
        assert torch.allclose(d.log_prob(digits.x), expected)
    run = tmp_path / "grey"
    assert main(["fit", "gmvae", "--dataset", "digits", "--limit", "120", "-k", "3", "--latent-dim", "2",
                 "--hidden-dims", "8", "--pretrain-epochs", "2", "--epochs", "1", "--progress", "false",
                 "--no-plots", "--run-dir", str(run)]) == 0
    assert main(["evaluate", str(run), "--num-samples", "3"]) == 0
    assert "cluster_accuracy" in capsys.readouterr().out


# -- the benchmark's protocol ---------------------------------------------------------------------------------------


def _benchmark_module():
    from benchmark_scripts import load_benchmark

    return load_benchmark("deep_mixture")


def test_benchmark_scores_the_test_draw_that_emvi_evaluate_scores():
    """With dynamic binarisation every VAE in the benchmark is scored on one fixed Bernoulli draw of the test images,
    the same draw ``evaluate_gmvae`` / ``evaluate_ssvae`` take from a dynamically binarised data set; training keeps
    the grey levels and draws per step."""
    from dataclasses import replace

    from emvi.data.binarize import evaluation_tensors

    bench = _benchmark_module()
    data = load_dataset("digits").subset(range(50))
    drawn = bench.binarized_test(data, "dynamic")
    assert set(drawn.x.unique().tolist()) == {0.0, 1.0} and drawn.binarize == "static"
    assert torch.equal(drawn.x, evaluation_tensors(replace(data, binarize="dynamic"))[0])
    assert not torch.equal(drawn.x, (data.x > 0.5).to(data.x.dtype))  # a draw, not the threshold
    train = bench.binarized(data, "dynamic")
    assert train.binarize == "dynamic" and torch.equal(train.x, data.x)
    assert torch.equal(bench.binarized_test(data, "static").x, (data.x > 0.5).to(data.x.dtype))


def test_tsne_clusters_survive_codes_at_any_spread_and_refuse_equal_or_non_finite_codes():
    """scikit-learn's Barnes-Hut t-SNE kills the process on identical points and on spreads near 1e40 or 1e-30
    (found by the fuzz suite through a diverged autoencoder); embedded_clusters divides such a spread out, so two
    separated blobs are still found at either scale, and refuses codes that are all equal or not finite."""
    from emvi.analysis.clustering import cluster_accuracy
    from emvi.inference.starts import embedded_clusters

    g = torch.Generator().manual_seed(0)
    blobs = torch.cat([torch.randn(30, 3, generator=g, dtype=torch.float64) - 5,
                       torch.randn(30, 3, generator=g, dtype=torch.float64) + 5])
    truth = np.repeat([0, 1], 30)
    for scale in (1e40, 1e-30):
        labels = embedded_clusters(blobs * scale, 2, perplexity=10, restarts=2, seed=0)
        assert cluster_accuracy(labels.numpy(), truth) == 1.0
    with pytest.raises(DataError, match="codes are all equal"):
        embedded_clusters(torch.ones(60, 3, dtype=torch.float64), 2, restarts=2)
    with pytest.raises(DataError, match="codes are not finite"):
        embedded_clusters(blobs.index_fill(0, torch.tensor([3]), float("nan")), 2, restarts=2)


@pytest.mark.slow
def test_benchmark_seeds_in_worker_processes_give_the_results_of_one_process(capsys):
    """--jobs 2 fits the seeds in two spawned processes of one torch thread each: the per-seed results equal one
    process's with one thread, in the seeds' order; a --jobs beyond the seeds is refused with exit code 2."""
    bench = _benchmark_module()
    argv = ["--quick", "--models", "pixels", "--seeds", "0", "1", "--num-test", "100"]
    apart = bench.main([*argv, "--jobs", "2", "--threads", "2"])["results"]["digits"]["per_seed"]
    together = bench.main([*argv, "--threads", "1"])["results"]["digits"]["per_seed"]
    assert apart == together and apart[0] != apart[1]
    with pytest.raises(SystemExit) as refused:
        bench.main([*argv, "--jobs", "3"])
    assert refused.value.code == 2 and "--jobs must be between 1 and the number of seeds" in capsys.readouterr().err


# -- M1+M2: M2 with a normal likelihood on real-valued codes -----------------------------------------------------------


def test_m2_with_a_normal_likelihood_is_the_enumerated_elbo_written_out_in_value_and_gradient():
    """likelihood="normal" (M2 on the codes of M1): with half the labels hidden, TraceEnum_ELBO's loss equals, value
    and gradient, the sum written out at the guide's draws t_{y,n} (one per class y, reparameterised):

        labelled n:   log p(y_n) + log N(t_{y_n,n}; 0, I) + log N(x_n; f, diag g²) - log q(t_{y_n,n} | x_n, y_n)
                      + c log q(y_n | x_n)
        unlabelled n: Σ_y q(y | x_n) [log p(y) + log N(t_{y,n}; 0, I) + log N(x_n; f, diag g²)
                                      - log q(t_{y,n} | x_n, y) - log q(y | x_n)]

    f, g = the decoder's two networks at [t, one-hot y] (g through exp), p(y) = 1/C; real-valued x is refused by the
    Bernoulli likelihood's check and taken by the normal one's."""
    from emvi.catalog.deep_mixture import check_ssvae_data

    classes, c = 3, 0.7
    config = SSVAEConfig(num_classes=classes, latent_dim=2, hidden_dims=(8,), classify_weight=c, likelihood="normal")
    g = torch.Generator().manual_seed(1)
    x = 3.0 * torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (N,), generator=g)
    mask = torch.arange(N) % 2 == 0
    y_seen = torch.where(mask, y, 0)
    arrays = {"x": x, "y": y_seen, "y_mask": mask}
    torch.manual_seed(0)
    model, guide = build_ssvae(config, info(arrays))
    model, guide = model.double(), guide.double()
    parameters = [*model.parameters(), *guide.parameters()]
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(3)
    loss = elbo.differentiable_loss(model, guide, x, y_seen, mask)
    expected_grads = torch.autograd.grad(loss, parameters, allow_unused=True)

    pyro.set_rng_seed(3)
    node = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(x, y_seen, mask).nodes["t"]
    t_all = node["value"].reshape(classes, N, -1)  # (C, N, q): the draw for every class
    log_q_t = node["fn"].log_prob(node["value"]).reshape(classes, N)
    one_hot = torch.eye(classes, dtype=x.dtype)[:, None].expand(classes, N, classes)
    decoder_input = torch.cat([t_all, one_hot], -1)  # (C, N, q + C)
    likelihood = dist.Normal(model.networks["x__loc"](decoder_input),
                             model.networks["x__scale"](decoder_input).exp()).log_prob(x).sum(-1)  # (C, N)
    prior_t = dist.Normal(0.0, 1.0).log_prob(t_all).sum(-1)
    per_class = math.log(1 / classes) + prior_t + likelihood - log_q_t  # (C, N)
    q_y = guide.classifier_probs("y", x, y_seen, mask).T  # (C, N)
    labelled = per_class[y, torch.arange(N)] + c * q_y[y, torch.arange(N)].log()
    unlabelled = (q_y * (per_class - q_y.log())).sum(0)
    hand = -torch.where(mask, labelled, unlabelled).sum()
    assert float(loss.detach()) == pytest.approx(float(hand.detach()), rel=1e-10)
    for got, want in zip(torch.autograd.grad(hand, parameters, allow_unused=True), expected_grads, strict=True):
        if want is None:
            assert got is None or torch.all(got == 0)
        else:
            assert torch.allclose(got, want, rtol=1e-8, atol=1e-10)
    with pytest.raises(DataError, match="must lie in"):
        check_ssvae_data(SSVAEConfig(), emvi.data.ArrayDataset(x=x.float()))
    check_ssvae_data(config, emvi.data.ArrayDataset(x=x.float()))
    with pytest.raises(DataError, match="flat, finite features"):
        check_ssvae_data(config, emvi.data.ArrayDataset(x=x.float().index_fill(0, torch.tensor([0]), math.nan)))


@pytest.mark.slow
def test_benchmark_fixes_its_settings_on_validation_before_scoring_the_test_images_once(tmp_path, capsys):
    """``benchmarks/deep_mixture.py --dataset fashion`` on generated Fashion-MNIST files: the validation images are
    held out of training, the line with the settings and the validation scores (no test score in it) is printed
    before any test score, every metric comes as ``valid_*`` and ``test_*``, and NMI/ARI are scikit-learn's."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    bench = _benchmark_module()
    fake_fashion_mnist(tmp_path, per_class_train=20)
    summary = bench.main(["--dataset", "fashion", "--data-root", str(tmp_path), "--valid-fraction", "0.3",
                          "--valid-labels-per-class", "1", "--labels-per-class", "2", "--epochs", "2",
                          "--early-stopping", "1", "--ssvae-epochs", "1", "--m1m2-epochs", "1",
                          "--pretrain-epochs", "1", "--ssvae-pretrain-epochs", "1", "--hidden-dims", "8",
                          "--latent-dim", "2", "--num-samples", "2", "--num-test", "40", "--classifier-steps", "2",
                          "--threads", "1"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert "settings_fixed_before_test" in lines[0] and not any(k.startswith("test_") for k in lines[0])
    assert lines[0]["settings_fixed_before_test"]["early_stopping"] == 1
    result = summary["results"]["fashion"]
    assert (result["num_train"], result["num_valid"], result["num_test"]) == (140, 60, 40)
    for metric in bench.METRICS:
        assert f"valid_{metric}" in result and f"test_{metric}" in result
        assert lines[0][f"valid_{metric}"] == result[f"valid_{metric}"]
    assert len(result["per_seed"][0]["valid_curve_gmvae_loss"]) == result["gmvae_epochs_run"] <= 2
    assert len(result["per_seed"][0]["valid_curve_ssvae_acc_100"]) == 2  # the start, then one epoch
    clusters, labels = np.array([0, 0, 1, 1, 2, 2]), np.array([1, 1, 0, 0, 0, 2])
    scores = bench.clustering_scores(clusters, labels, "x")
    assert scores["nmi_x"] == normalized_mutual_info_score(labels, clusters)
    assert scores["ari_x"] == adjusted_rand_score(labels, clusters) and scores["cluster_acc_x"] == 5 / 6
