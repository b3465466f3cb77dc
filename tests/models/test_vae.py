"""The seed's VAE: its loss equivalences, the lower bound at work, and the estimators of log p(x).

Closed forms used: for a linear-Gaussian decoder x | t ~ Normal(W t + b, diag ψ), t ~ Normal(0, I), the marginal is
x ~ Normal(b, W Wᵀ + diag ψ) and the posterior t | x is Gaussian with precision I + Wᵀ diag(ψ)⁻¹ W, so
log p(x) = ELBO(q) + KL(q || p(t | x)) can be checked exactly for any Gaussian q.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

import emvi  # noqa: F401  (module-local params)
from emvi.data import DataInfo, load_dataset
from emvi.errors import ConfigError
from emvi.guides.amortised import AmortisedNormalGuide
from emvi.inference import TrainConfig, train
from emvi.inference.elbo import LeanTrace_ELBO, LeanTraceMeanField_ELBO
from emvi.inference.likelihood import estimate_log_likelihood, log_importance_weights
from emvi.models import ComposedConfig, ComposedModel, VAEConfig, build_vae_pair
from emvi.plates import data_plate
from emvi.registry import get_model


def _small_vae(num_features=12, latent_dim=3, seed=0, architecture="mlp", image_shape=None):
    torch.manual_seed(seed)
    model, guide = build_vae_pair(VAEConfig(latent_dim=latent_dim, hidden_dims=(7,), architecture=architecture),
                                  num_features, image_shape)
    return model.double(), guide.double()


def _keras_loss(model, guide, x, t):
    """Binary cross-entropy summed over pixels plus the closed-form KL(q(t|x) || N(0, I)), summed over the batch."""
    q = guide.distribution(x)
    logits = model.decoder(t)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    kl = 0.5 * (q.loc.pow(2) + q.scale.pow(2) - 1.0 - 2.0 * q.scale.log()).sum(-1)
    return (bce + kl).sum()


def _guide_draw(guide, x, seed):
    pyro.set_rng_seed(seed)
    return poutine.trace(guide).get_trace(x).nodes["t"]["value"]


def test_keras_loss_equals_minus_meanfield_elbo_for_the_same_noise():
    model, guide = _small_vae()
    x = torch.bernoulli(torch.rand(5, 12, dtype=torch.float64))
    for seed in range(3):
        t = _guide_draw(guide, x, seed)
        pyro.set_rng_seed(seed)
        meanfield = TraceMeanField_ELBO().differentiable_loss(model, guide, x)
        assert meanfield.item() == pytest.approx(_keras_loss(model, guide, x, t).item(), rel=1e-12)


LEAN_PAIRS = pytest.mark.parametrize("pyro_elbo, lean_elbo", [(Trace_ELBO, LeanTrace_ELBO),
                                                              (TraceMeanField_ELBO, LeanTraceMeanField_ELBO)])


def _assert_lean_equals_pyro(pyro_elbo, lean_elbo, model, guide, x, params, *, seed, num_data):
    """The lean ELBO's own path (not its fallback) gives Pyro's value and gradient for the same noise."""
    values, grads = [], []
    for lean in (False, True):
        pyro.set_rng_seed(seed)
        with pyro.validation_enabled(False):  # validation sends the lean ELBOs to Pyro's path
            if lean:
                loss = lean_elbo()._lean_loss(model, guide, (x,), {"num_data": num_data})
                assert loss is not None, f"{lean_elbo.__name__} fell back to Pyro's path"
            else:
                loss = pyro_elbo().differentiable_loss(model, guide, x, num_data=num_data)
        values.append(loss.item())
        grads.append(torch.autograd.grad(loss, params))
    assert values[0] == pytest.approx(values[1], rel=1e-12)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@LEAN_PAIRS
def test_lean_elbos_equal_pyro_on_the_vae(pyro_elbo, lean_elbo):
    model, guide = _small_vae()
    x = torch.bernoulli(torch.rand(6, 12, dtype=torch.float64))
    params = list(model.parameters()) + list(guide.parameters())
    _assert_lean_equals_pyro(pyro_elbo, lean_elbo, model, guide, x, params, seed=3, num_data=60)


@LEAN_PAIRS
def test_lean_elbos_equal_pyro_with_globals_masks_and_per_item_scales(pyro_elbo, lean_elbo):
    """The lean sum groups per-item terms by plate scale; sites with a mask, a tensor scale or another shape (a global
    latent, a down-weighted local one) take the general path; a latent without a closed-form KL ("rate") is scored at
    the guide's draw by the mean-field estimator. The total must still be Pyro's."""
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64)
    mask = torch.tensor([True, False, True, True, False, True])
    weights = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    loc = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    global_loc = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    log_rate_loc = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    decoder = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)

    def model(x, num_data):
        mean = pyro.sample("mean", dist.Normal(torch.zeros(3, dtype=x.dtype), 1.0).to_event(1))
        rate = pyro.sample("rate", dist.Gamma(torch.tensor(2.0, dtype=x.dtype), 2.0))
        with data_plate(x, num_data):
            with poutine.scale(scale=0.3):
                t = pyro.sample("t", dist.Normal(torch.zeros(6, 2, dtype=x.dtype), 1.0).to_event(1))
            with poutine.scale(scale=weights), poutine.mask(mask=mask):
                pyro.sample("x", dist.Normal(t @ decoder + mean, rate.rsqrt()).to_event(1), obs=x)

    def guide(x, num_data):
        pyro.sample("mean", dist.Normal(global_loc, 0.5).to_event(1))
        pyro.sample("rate", dist.LogNormal(log_rate_loc, 0.3))
        with data_plate(x, num_data), poutine.scale(scale=0.3):
            pyro.sample("t", dist.Normal(loc, 0.7).to_event(1))

    _assert_lean_equals_pyro(pyro_elbo, lean_elbo, model, guide, x, [loc, global_loc, log_rate_loc, decoder],
                             seed=5, num_data=30)


@pytest.mark.slow
def test_trace_elbo_is_unbiased_for_the_keras_loss():
    """Same noise, so the reconstruction terms cancel: the difference is log q(t) - log p(t) - KL, of mean exactly 0."""
    model, guide = _small_vae(latent_dim=2)
    x = torch.bernoulli(torch.rand(4, 12, dtype=torch.float64))
    differences = []
    for seed in range(1000):
        t = _guide_draw(guide, x, seed)
        pyro.set_rng_seed(seed)
        trace_loss = Trace_ELBO().differentiable_loss(model, guide, x).item()
        differences.append(trace_loss - _keras_loss(model, guide, x, t).item())
    differences = torch.tensor(differences)
    standard_error = differences.std() / math.sqrt(len(differences))
    assert differences.std() > 0  # Trace_ELBO does sample the KL term
    assert abs(differences.mean()) < 4 * standard_error


class _LinearGaussian:
    """x | t ~ Normal(W t + b, diag ψ), t ~ Normal(0, I_q), as a composed model with its closed forms."""

    def __init__(self, num_features=5, latent_dim=2, seed=0):
        torch.manual_seed(seed)
        self.model = ComposedModel(ComposedConfig(latent="gaussian", latent_dim=latent_dim, mapping="linear",
                                                  likelihood="normal"), num_features).double()
        with torch.no_grad():
            self.model.decoder.weight.normal_()
            self.model.decoder.bias.normal_()
            self.model.likelihood.log_scale.uniform_(-1.0, 0.0)
        self.w = self.model.decoder.weight.detach()
        self.b = self.model.decoder.bias.detach()
        self.psi = (2 * self.model.likelihood.log_scale.detach()).exp()

    def log_marginal(self, x):
        covariance = self.w @ self.w.T + torch.diag(self.psi)
        return dist.MultivariateNormal(self.b, covariance).log_prob(x)

    def posterior(self, x):
        precision = torch.eye(self.w.shape[1], dtype=x.dtype) + self.w.T @ (self.w / self.psi[:, None])
        covariance = torch.linalg.inv(precision)
        mean = (x - self.b) @ (self.w / self.psi[:, None]) @ covariance
        return dist.MultivariateNormal(mean, covariance)


def test_importance_estimate_is_exact_with_the_exact_posterior_guide():
    lg = _LinearGaussian()
    x = torch.randn(7, 5, dtype=torch.float64) * 2

    def exact_guide(x, num_data=None):
        with data_plate(x, num_data):
            pyro.sample("t", lg.posterior(x))

    log_w = log_importance_weights(lg.model, exact_guide, x, 50)
    torch.testing.assert_close(log_w, lg.log_marginal(x).expand(50, -1), rtol=1e-10, atol=1e-10)
    estimates = estimate_log_likelihood(lg.model, exact_guide, x, num_samples=64, prior=False)
    torch.testing.assert_close(estimates.elbo.double(), lg.log_marginal(x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(estimates.importance.double(), lg.log_marginal(x), rtol=1e-9, atol=1e-9)


def test_elbo_plus_kl_to_the_posterior_is_the_log_likelihood():
    """The seed's identity log p(x) = ELBO(q) + KL(q || p(t | x)) for an arbitrary amortised Gaussian q."""
    lg = _LinearGaussian()
    torch.manual_seed(1)
    guide = AmortisedNormalGuide(5, 2, (4,)).double()
    x = torch.randn(6, 5, dtype=torch.float64)
    num_samples = 20000
    pyro.set_rng_seed(0)
    log_w = log_importance_weights(lg.model, guide, x, num_samples)
    q = guide.distribution(x)
    q_full = dist.MultivariateNormal(q.loc, scale_tril=torch.diag_embed(q.scale))
    kl_to_posterior = torch.distributions.kl_divergence(q_full, lg.posterior(x))
    standard_error = log_w.std(0) / math.sqrt(num_samples)
    gap = log_w.mean(0) + kl_to_posterior - lg.log_marginal(x)
    assert (kl_to_posterior > 0.01).all()  # q really is not the posterior
    assert (gap.abs() < 4 * standard_error).all(), (gap, standard_error)


def test_prior_sampling_estimate_converges_to_the_closed_form_in_two_dimensions():
    lg = _LinearGaussian(num_features=3)
    x = lg.posterior(torch.zeros(1, 3, dtype=torch.float64)).loc @ lg.w.T + lg.b  # a typical point
    pyro.set_rng_seed(0)
    log_w = log_importance_weights(lg.model, None, x.expand(4, -1), 200000, from_prior=True)
    weights = (log_w - lg.log_marginal(x)).exp()  # p(x|t)/p(x): mean 1
    standard_error = weights.std(0) / math.sqrt(weights.shape[0])
    assert ((weights.mean(0) - 1).abs() < 4 * standard_error).all()


@pytest.fixture(scope="module")
def trained_digits_vae():
    data = load_dataset("digits", binarize="static")
    torch.manual_seed(0)
    model, guide = build_vae_pair(VAEConfig(latent_dim=4, hidden_dims=(64,)), data.x.shape[1], data.image_shape)
    result = train(model, guide, data, config=TrainConfig(epochs=8, batch_size=64, learning_rate=3e-3, progress=False))
    return model, guide, data, result


def test_training_lowers_the_loss(trained_digits_vae):
    _, _, _, result = trained_digits_vae
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] - 5


def test_importance_estimate_grows_with_k_and_is_above_the_elbo(trained_digits_vae):
    model, guide, data, _ = trained_digits_vae
    x = data.x[:100]
    pyro.set_rng_seed(0)
    estimates = {k: estimate_log_likelihood(model, guide, x, num_samples=k, prior=False) for k in (1, 10, 100, 1000)}
    means = {k: float(e.importance.mean()) for k, e in estimates.items()}
    # K = 1 is the ELBO estimate itself; a larger K tightens the bound by a margin well beyond Monte-Carlo noise.
    assert means[1] == pytest.approx(float(estimates[1].elbo.mean()))
    assert means[1] < means[10] < means[100] < means[1000]
    assert float(estimates[1000].importance.mean()) > float(estimates[1000].elbo.mean()) + 0.1


def test_prior_samples_are_worth_far_fewer_than_guide_samples(trained_digits_vae):
    """The seed's point in numbers: the effective sample size (Σw)²/Σw² of K prior draws is a fraction of q's."""
    model, guide, data, _ = trained_digits_vae
    pyro.set_rng_seed(0)
    ess = {}
    with torch.no_grad():
        for from_prior in (False, True):
            log_w = log_importance_weights(model, guide, data.x[:50], 1000, from_prior=from_prior)
            ess[from_prior] = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)).median()
    assert ess[True] < 0.5 * ess[False]
    summary = estimate_log_likelihood(model, guide, data.x[:10], num_samples=10).summary()
    assert summary["is_loglik_bits_per_dim"] == pytest.approx(-summary["is_loglik_nats"] / (64 * math.log(2)))


def test_chunking_does_not_change_the_estimate(trained_digits_vae):
    model, guide, data, _ = trained_digits_vae
    x = data.x[:20]
    results = []
    for chunk_elements in (2**23, 64 * 20 * 7):  # all K at once, then chunks of 7 samples
        pyro.set_rng_seed(5)
        results.append(estimate_log_likelihood(model, guide, x, num_samples=50, prior=False, chunk_elements=chunk_elements))
    # The same 50 draws in both cases (sampling order per chunk differs), so compare statistically: same mean +- noise.
    assert abs(float(results[0].importance.mean() - results[1].importance.mean())) < 0.2


@pytest.mark.parametrize("elbo,extra", [("meanfield", {}), ("renyi", {"num_particles": 4}),
                                        ("trace", {"kl_warmup_epochs": 2.0})])
def test_training_options_run_through_the_runner(elbo, extra):
    data = load_dataset("digits", binarize="dynamic", limit=256)
    torch.manual_seed(0)
    model, guide = build_vae_pair(VAEConfig(latent_dim=2, hidden_dims=(32,)), 64, data.image_shape)
    result = train(model, guide, data, config=TrainConfig(epochs=3, batch_size=64, learning_rate=3e-3, elbo=elbo,
                                                          progress=False, **extra))
    losses = [h["train_loss"] for h in result.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    if "kl_warmup_epochs" in extra:
        assert result.history[0]["kl_weight"] < 1.0


def test_conv_architecture_on_8x8_and_28x28_shapes():
    for image_shape in ((1, 8, 8), (1, 28, 28)):
        num_features = math.prod(image_shape)
        model, guide = _small_vae(num_features=num_features, architecture="conv", image_shape=image_shape)
        x = torch.bernoulli(torch.rand(3, num_features, dtype=torch.float64))
        loss = Trace_ELBO().differentiable_loss(model, guide, x)
        assert loss.shape == () and torch.isfinite(loss)
        assert model.observation_distribution(torch.zeros(2, 5, 3, dtype=torch.float64)).batch_shape == (2, 5)


def test_conv_needs_images_with_sides_divisible_by_four():
    entry = get_model("vae")
    with pytest.raises(ConfigError, match="divisible by 4"):
        entry.build(VAEConfig(architecture="conv"), DataInfo(num_data=10, event_shape=(36,), image_shape=(1, 6, 6)))
    with pytest.raises(ConfigError, match="needs image data"):
        entry.build(VAEConfig(architecture="conv"), DataInfo(num_data=10, event_shape=(36,)))
    with pytest.raises(ConfigError, match="architecture"):
        VAEConfig(architecture="transformer")
    with pytest.raises(ConfigError, match="latent_dim"):
        VAEConfig(latent_dim=0)


def test_estimator_rejects_bad_input(trained_digits_vae):
    model, guide, data, _ = trained_digits_vae
    with pytest.raises(ConfigError, match="num_samples"):
        estimate_log_likelihood(model, guide, data.x[:3], num_samples=0)
    with pytest.raises(ConfigError, match="non-empty"):
        estimate_log_likelihood(model, guide, data.x[:0], num_samples=3)


@pytest.mark.slow
def test_cli_fit_evaluate_sample_round_trip(tmp_path):
    from emvi.cli import main

    run_dir = tmp_path / "run"
    assert main(["fit", "vae", "--dataset", "digits", "--binarize", "dynamic", "--latent-dim", "2", "--hidden-dims", "16",
                 "--epochs", "2", "--elbo", "renyi", "--num-particles", "3", "--run-dir", str(run_dir),
                 "--progress", "false"]) == 0
    for name in ("checkpoint.pt", "metrics.jsonl", "config.json", "loss_curve.png", "reconstructions.png",
                 "prior_samples.png", "latent_space.png", "manifold.png"):
        assert (run_dir / name).is_file(), name
    assert main(["evaluate", str(run_dir), "--num-samples", "20", "--limit", "30"]) == 0
    import json

    metrics = json.loads((run_dir / "evaluation_test.json").read_text())
    assert metrics["num_items"] == 30 and metrics["num_samples"] == 20
    assert metrics["is_loglik_nats"] >= metrics["elbo_nats"]  # log-mean-exp >= mean for every item, so also on average
    assert main(["sample", str(run_dir), "--num-samples", "8"]) == 0
    assert (run_dir / "samples.npy").is_file() and (run_dir / "samples.png").is_file()


def test_arviz_export_draws_latents_from_the_guide_and_its_weights_are_the_models_densities(trained_digits_vae):
    """Recompute every exported number by hand: log p(x | t) from the decoder, log p(t) from Normal(0, I) and
    log q(t | x) from the guide's distribution at the exported draws."""
    from emvi.analysis.local_latents import held_out_log_likelihood, local_latent_inference_data
    from emvi.analysis.report import loo_applies

    model, guide, data, _ = trained_digits_vae
    idata = local_latent_inference_data(model, guide, data, num_samples=7, max_items=40, model_name="vae")
    t = torch.as_tensor(idata.posterior["t"].values[0]).float()  # (S, N, q)
    x = data.x[:40]
    assert t.shape == (7, 40, 4) and idata.posterior["t"].dims == ("chain", "draw", "obs", "t_dim")
    with torch.no_grad():
        conditional = model.observation_distribution(t).log_prob(x)  # (S, N)
        prior = torch.distributions.Normal(0.0, 1.0).log_prob(t).sum(-1)
        guide_density = guide.distribution(x).log_prob(t).sum(-1)
    torch.testing.assert_close(torch.as_tensor(idata.log_likelihood["x"].values[0]).float(), conditional,
                               rtol=1e-5, atol=1e-4)
    weights = torch.as_tensor(idata.sample_stats["log_importance_weight"].values[0]).float()
    torch.testing.assert_close(weights, conditional + prior - guide_density, rtol=1e-5, atol=1e-4)
    assert idata.posterior_predictive["x"].shape == (1, 7, 40, 64)
    # per item, log-mean-exp of the weights (importance) is at least their mean (the ELBO): Jensen, draw by draw
    importance = torch.logsumexp(weights, 0) - math.log(7)
    assert (importance >= weights.mean(0) - 1e-6).all()
    assert held_out_log_likelihood(idata) == pytest.approx(float(importance.sum()), rel=1e-6)
    assert not loo_applies(idata) and idata.posterior.attrs["latent_posterior"] == "local"


def test_cli_analyze_compares_vae_runs_by_held_out_likelihood_not_loo(tmp_path):
    import pandas as pd

    from emvi.cli import main

    for name, latent in (("q2", "2"), ("q4", "4")):
        assert main(["fit", "vae", "--dataset", "digits", "--binarize", "static", "--latent-dim", latent,
                     "--hidden-dims", "16", "--epochs", "1", "--limit", "300", "--valid-fraction", "0.1",
                     "--run-dir", str(tmp_path / name),
                     "--no-plots", "--progress", "false"]) == 0
    assert main(["analyze", str(tmp_path / "q2"), str(tmp_path / "q4"), "--num-samples", "5",
                 "--compare-out", str(tmp_path)]) == 0
    for name in ("inference_data.nc", "posterior_summary.csv", "bounds.png", "posterior_predictive.png"):
        assert (tmp_path / "q2" / name).is_file(), name
    table = pd.read_csv(tmp_path / "comparison.csv", index_col=0)
    assert set(table.index) == {"q2", "q4"} and "held-out" in table["criterion"].iloc[0]
