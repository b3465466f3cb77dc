"""The gmvae's clustering in ``benchmarks/deep_mixture.py``: the exact cluster posterior at the encoder's location
for the grey-level or the drawn images, and the validation curve that scores the start before any SVI step."""

from dataclasses import replace

import pytest
import torch
from benchmark_scripts import load_benchmark
from torch.nn.functional import log_softmax

from emvi.data import load_dataset, train_valid_split
from emvi.inference import TrainConfig
from emvi.inference.starts import GMVAEStart
from emvi.models.deep_mixture import GMVAEConfig
from emvi.runs import build_model, pretrain


def _benchmark_module():
    return load_benchmark("deep_mixture")


def test_gmvae_clusters_are_the_exact_posterior_at_the_encoders_location_for_the_grey_or_the_drawn_images():
    """p(z = k | x, t) ∝ π_k N(t; μ_k, diag σ_k²) at t = the location of q(t | x), written out by hand, with x the
    grey levels (``grey``) or the fixed Bernoulli draw the benchmark scores log p(x) on (``draw``)."""
    bench = _benchmark_module()
    images = load_dataset("digits").subset(range(60))
    drawn = bench.binarized_test(images, "dynamic")
    torch.manual_seed(0)
    model, guide = build_model("gmvae", GMVAEConfig(num_components=4, latent_dim=3, hidden_dims=(16,),
                                                    prior_covariance="diag"), images.info(), seed=0)
    with torch.no_grad():  # tables off their symmetric start
        for table in model.learned.values():
            table.add_(0.5 * torch.randn(table.shape))
        means, scales = model.learned["t__loc"].detach(), model.learned["t__scale"].detach().exp()

    def by_hand(x):  # (N, K)
        with torch.no_grad():
            t = guide.continuous_loc("t", x)
            log_prior = torch.distributions.Normal(means, scales).log_prob(t[:, None]).sum(-1)
            return torch.softmax(log_softmax(torch.zeros(4), -1) + log_prior, -1)

    grey = bench.gmvae_cluster_probabilities(model, guide, images, drawn, "grey")
    draw = bench.gmvae_cluster_probabilities(model, guide, images, drawn, "draw")
    assert torch.allclose(grey, by_hand(images.x), atol=1e-6)
    assert torch.allclose(draw, by_hand(drawn.x), atol=1e-6)
    assert not torch.allclose(grey, draw, atol=1e-3)  # the draw is another image


@pytest.mark.slow
def test_the_validation_curve_scores_the_start_before_any_svi_step_and_every_epoch_after():
    """``fit_gmvae``'s curve: entry 0 is the start (the model right after its seeded pretraining, rebuilt here
    independently), then one entry per SVI epoch, the last one the returned model's; the fit's history holds the
    validation loss of every epoch."""
    bench = _benchmark_module()
    train_data, valid_data = train_valid_split(load_dataset("digits").subset(range(300)), 0.3, seed=0)
    config = GMVAEConfig(num_components=4, latent_dim=2, hidden_dims=(16,))
    schedule = TrainConfig(epochs=3, batch_size=64, learning_rate=3e-3, seed=1, progress=False)
    start = GMVAEStart(pretrain_epochs=2, pretrain_clusters="gmm", pretrain_restarts=2)
    data = bench.binarized(train_data, "dynamic")
    drawn = bench.binarized_test(valid_data, "dynamic")

    def score(model, guide):
        probs = bench.gmvae_cluster_probabilities(model, guide, valid_data, drawn, "grey")
        return bench.clustering_scores(probs.argmax(-1).numpy(), valid_data.y.numpy(), "gmvae")

    model, guide, result, curve = bench.fit_gmvae(config, data, schedule, start, drawn, score)
    assert len(curve.curve) == result.epochs_run + 1 == 4
    assert [h["valid_loss"] for h in result.history] and all("valid_loss" in h for h in result.history)
    assert curve.curve[-1] == score(model, guide)["cluster_acc_gmvae"]
    started, started_guide = build_model("gmvae", config, data.info(), seed=1)
    pretrain("gmvae", started, started_guide, data, config, schedule, start)
    assert curve.start == score(started, started_guide)
    assert curve.curve[0] == curve.start["cluster_acc_gmvae"]
    assert replace(valid_data, binarize=None).x.unique().numel() > 2  # scored on grey levels, not a draw


def test_the_gmvae_takes_its_own_options_where_given_and_the_shared_ones_elsewhere():
    """``--gmvae-*`` set the gmvae's sizes, epochs and learning rate (its autoencoder's too: the pretraining reads
    the schedule); unset, the shared ``--latent-dim``, ``--hidden-dims``, ``--epochs``, ``--learning-rate`` apply;
    ``GMVAE_SETTING`` (what ``--quick`` keeps) gives the gmvae's own."""
    from argparse import Namespace

    bench = _benchmark_module()
    shared = dict(latent_dim=4, hidden_dims=[64], epochs=10, learning_rate=3e-3, prior_covariance="diag",
                  early_stopping=2)
    schedule = TrainConfig(epochs=10, learning_rate=3e-3, seed=5, progress=False)
    unset = Namespace(**shared, gmvae_latent_dim=None, gmvae_hidden_dims=None, gmvae_epochs=None,
                      gmvae_learning_rate=None)
    config, own_schedule = bench.gmvae_setting(unset, schedule)
    assert (config.latent_dim, config.hidden_dims, config.prior_covariance) == (4, (64,), "diag")
    assert own_schedule == replace(schedule, early_stopping_patience=2)
    given = Namespace(**shared, **bench.GMVAE_SETTING)
    config, own_schedule = bench.gmvae_setting(given, schedule)
    assert (config.latent_dim, config.hidden_dims, config.num_components) == (10, (500,), 10)
    assert (own_schedule.epochs, own_schedule.learning_rate, own_schedule.seed) == (30, 2e-3, 5)
