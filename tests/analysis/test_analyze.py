"""emvi analyze on composed mixtures: netCDF round trip, exact pointwise likelihood, plots, held-out comparison."""

import warnings

import numpy as np
import pytest
import torch

from emvi.cli import main


@pytest.fixture
def counts_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    rates = torch.tensor([[1.0, 6.0], [9.0, 2.0]])
    z = torch.randint(0, 2, (300,), generator=g)
    np.save(tmp_path / "counts.npy", torch.poisson(rates[z], generator=g).numpy())
    return tmp_path / "counts.npy"


def _fit(counts_file, run_dir, k):
    args = ["fit", "composed", str(counts_file), "--latent", "discrete", "--mapping", "index", "--likelihood", "poisson",
            "--num-components", str(k), "--epochs", "150", "--batch-size", "300", "--learning-rate", "0.05",
            "--valid-fraction", "0.2", "--run-dir", str(run_dir), "--progress", "false", "--no-plots"]
    assert main(args) == 0


@pytest.mark.slow
def test_analyze_writes_netcdf_summary_plots_and_compares_k(counts_file, tmp_path, capsys):
    import arviz as az

    from emvi.runs import load_run

    _fit(counts_file, tmp_path / "k2", 2)
    _fit(counts_file, tmp_path / "k1", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. ArviZ's warnings about missing groups
        assert main(["analyze", str(tmp_path / "k2"), str(tmp_path / "k1"), "--compare-out", str(tmp_path)]) == 0
    for name in ("inference_data.nc", "posterior_summary.csv", "estimates.png", "posterior_predictive.png"):
        assert (tmp_path / "k2" / name).is_file(), name
    idata = az.from_netcdf(str(tmp_path / "k2" / "inference_data.nc"))
    assert {"posterior", "log_likelihood", "observed_data", "posterior_predictive"} <= set(idata.groups())
    assert idata.posterior["rates"].dims == ("chain", "draw", "component", "feature")

    # the pointwise marginal log-likelihood sums to the model's exact log-likelihood on the training part
    entry, model, guide, data, resolved = load_run(tmp_path / "k2")
    from emvi.data import train_valid_split

    train_part, _ = train_valid_split(data, 0.2, seed=0)
    x = train_part.x
    with torch.no_grad():
        rates = model.component_params.exp()
        log_joint = model.weights.log() + torch.distributions.Poisson(rates).log_prob(x.unsqueeze(1)).sum(-1)
        exact = torch.logsumexp(log_joint, 1).sum().item()
    assert float(idata.log_likelihood["x"].sum()) == pytest.approx(exact, rel=1e-5)

    table = (tmp_path / "comparison.csv").read_text()
    assert "held-out log-likelihood" in table
    first = table.splitlines()[1].split(",")[0]
    assert first == "k2"  # two components explain the held-out counts better than one
    assert (tmp_path / "comparison.png").is_file()


def test_analyze_exports_per_item_latents_of_a_gaussian_composed_model(tmp_path):
    import arviz as az

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((40, 4)).round())
    assert main(["fit", "composed", str(tmp_path / "x.npy"), "--epochs", "1", "--valid-fraction", "0.1",
                 "--run-dir", str(tmp_path / "r"),
                 "--progress", "false", "--no-plots"]) == 0
    assert main(["analyze", str(tmp_path / "r"), "--num-samples", "6"]) == 0
    idata = az.from_netcdf(str(tmp_path / "r" / "inference_data.nc"))
    assert idata.posterior.attrs["latent_posterior"] == "local"
    assert idata.posterior["t"].sizes["draw"] == 6 and idata.posterior["t"].sizes["obs"] == 36  # 10% held out
    from emvi.runs import from_run

    again = from_run(tmp_path / "r", num_samples=3)
    np.testing.assert_array_equal(again.observed_data["x"].values, idata.observed_data["x"].values)


def test_prodlda_export_replicates_each_document_with_its_own_length(tmp_path):
    import arviz as az

    counts = np.random.default_rng(0).poisson(2.0, size=(30, 6)) + 1
    np.save(tmp_path / "counts.npy", counts.astype(float))
    assert main(["fit", "prodlda", str(tmp_path / "counts.npy"), "--num-topics", "2", "--epochs", "1",
                 "--valid-fraction", "0", "--run-dir", str(tmp_path / "r"), "--progress", "false", "--no-plots"]) == 0
    assert main(["analyze", str(tmp_path / "r"), "--num-samples", "4"]) == 0
    idata = az.from_netcdf(str(tmp_path / "r" / "inference_data.nc"))
    assert idata.posterior["h"].shape == (1, 4, 30, 2)
    replicated = idata.posterior_predictive["x"].values  # (1, 4, docs, vocabulary)
    np.testing.assert_array_equal(replicated.sum(-1), np.broadcast_to(counts.sum(-1), (1, 4, 30)))
    assert np.isfinite(idata.log_likelihood["x"].values).all()


@pytest.mark.slow
def test_evaluation_reads_only_the_split_it_scores(tmp_path, monkeypatch):
    """``evaluation_data`` decides the split from the run's configuration first: scoring the test split never reads
    the training images (a full MNIST run would load 60,000 images for nothing), and valid/train read the training
    split alone."""
    import emvi.runs
    from emvi.errors import ConfigError

    run = tmp_path / "vae"
    assert main(["fit", "vae", "--dataset", "digits", "--limit", "100", "--epochs", "1", "--latent-dim", "2",
                 "--valid-fraction", "0.2", "--progress", "false", "--run-dir", str(run)]) == 0
    read = []
    original = emvi.runs.load_data
    monkeypatch.setattr(emvi.runs, "load_data", lambda data, split="train", **kw: read.append(split) or
                        original(data, split=split, **kw))
    for split, expected_items in (("auto", 360), ("test", 360), ("valid", 20), ("train", 100)):
        read.clear()
        *_, dataset, _, chosen = emvi.runs.evaluation_data(run, split)
        assert chosen == ("test" if split == "auto" else split) and len(dataset) == expected_items
        assert read == ["test" if chosen == "test" else "train"]
    with pytest.raises(ConfigError, match="split must be"):
        emvi.runs.evaluation_data(run, "held-out")
