"""ssvae's cluster-then-label start on its inputs (``SSVAEStart.pretrain_cluster_on = "inputs"``), M1+M2's start:
the inputs are already codes, so no autoencoder is trained; they are clustered as they are, each cluster named by
its labelled items, and q(y | x) alone is trained on those names."""

from dataclasses import replace

import pytest
import torch

import emvi
import emvi.inference.starts as starts
from emvi.analysis.clustering import cluster_names
from emvi.catalog.declared import build_declared
from emvi.catalog.deep_mixture import label_view, pretrain_ssvae
from emvi.data import load_dataset
from emvi.errors import ConfigError
from emvi.inference.starts import SSVAEStart
from emvi.models.deep_mixture import SSVAEConfig, ssvae_declaration


def standardised_digits(config: SSVAEConfig):
    """200 digits, standardised grey levels as real-valued features (M1+M2's codes stand in this place)."""
    digits = load_dataset("digits", limit=200)
    x = digits.x
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)
    return label_view(config, replace(digits, x=x, binarize=None, image_shape=None), "train")


def started(start: SSVAEStart, seed: int = 0):
    config = SSVAEConfig(latent_dim=2, hidden_dims=(16,), labels_per_class=2, likelihood="normal")
    data = standardised_digits(config)
    torch.manual_seed(seed)
    model, guide = build_declared(ssvae_declaration(config, config.classify_weight), config, data.info(),
                                  hidden_dims=config.hidden_dims)
    before = {k: v.clone() for k, v in (model.state_dict() | guide.state_dict()).items()}
    streams = torch.get_rng_state()
    out = pretrain_ssvae(model, guide, data, config, start, emvi.TrainConfig(batch_size=50, learning_rate=1e-2,
                                                                              seed=seed))
    assert torch.equal(torch.get_rng_state(), streams)  # the global random streams are untouched
    return model, guide, before, out, data


def test_the_inputs_themselves_are_clustered_and_q_y_alone_learns_their_names(record_calls, monkeypatch):
    seen, wrap = record_calls
    wrap(starts, "embedded_clusters"), wrap(starts, "pretrain_classifier")
    monkeypatch.setattr(starts, "pretrain_autoencoder", lambda *a, **k: pytest.fail("no autoencoder on codes"))
    model, guide, before, out, data = started(SSVAEStart(pretrain_cluster_on="inputs", pretrain_classifier_epochs=8))
    x = data.array("x")
    assert torch.equal(seen["embedded_clusters"][0][0], x.double())  # the inputs as they are, no learned code
    clusters = seen["embedded_clusters"][1]
    mask, labels = data.array("y_mask"), data.array("y")
    names = torch.as_tensor(cluster_names(clusters[mask], labels[mask], 10, 10))
    assert torch.equal(seen["pretrain_classifier"][0][3], torch.where(mask, labels, names[clusters]))
    assert out["pretrain_labelled_cluster_agreement"] == pytest.approx(
        float((names[clusters] == labels)[mask].float().mean()))
    nats = seen["pretrain_classifier"][1]["pretrain_classifier_nats"]
    assert len(nats) == 8 and nats[-1] < nats[0] and out["pretrain_classifier_nats"] == nats[-1]
    after = model.state_dict() | guide.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith("encoders.y.") for k in changed)  # q(y | x) alone
    again = started(SSVAEStart(pretrain_cluster_on="inputs", pretrain_classifier_epochs=8))[1].state_dict()
    assert all(torch.equal(again[k], v) for k, v in guide.state_dict().items())  # seeded


def test_no_classifier_epochs_is_no_start_and_an_unused_autoencoder_is_refused():
    model, guide, before, out, _ = started(SSVAEStart(pretrain_cluster_on="inputs", pretrain_classifier_epochs=0))
    assert out == {}
    assert all(torch.equal(v, before[k]) for k, v in (model.state_dict() | guide.state_dict()).items())
    with pytest.raises(ConfigError, match="pretrain_epochs to 0"):
        SSVAEStart(pretrain_cluster_on="inputs", pretrain_epochs=5)
    with pytest.raises(ConfigError, match="pretrain_cluster_on must be one of"):
        SSVAEStart(pretrain_cluster_on="pixels")
