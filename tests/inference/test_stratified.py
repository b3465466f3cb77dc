"""Stratified SVI steps (``TrainConfig.stratify``): the batches, the unbiased full-data loss, M2's use of them."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from emvi import TrainConfig, train
from emvi.data import ArrayDataset
from emvi.errors import ConfigError, DataError
from emvi.inference.svi_loop import epoch_batches


def test_without_strata_the_batches_are_the_slices_of_one_seeded_permutation():
    # The batches of every fit before stratification existed: old checkpoints resume onto the same ones.
    steps = epoch_batches(103, 10, seed=3, epoch=2)
    order = torch.randperm(103, generator=torch.Generator().manual_seed(3 * 1_000_003 + 2))
    assert [len(parts) for parts in steps] == [1] * 11
    assert torch.equal(torch.cat([index for (index, n), in steps]), order)
    assert {n for (_, n), in steps} == {103}


def test_strata_the_largest_is_passed_once_a_small_one_is_whole_in_every_step_a_middle_one_cycles():
    strata = torch.cat([torch.zeros(95), torch.ones(7), torch.full((23,), 2.0)]).long()[torch.randperm(125)]
    members = [set(torch.nonzero(strata == s).squeeze(-1).tolist()) for s in range(3)]
    steps = epoch_batches(125, 10, seed=1, epoch=4, strata=strata)
    assert len(steps) == 10  # ceil(95 / 10)
    seen = [[], [], []]
    for parts in steps:
        assert [n for _, n in parts] == [95, 7, 23]  # each part scaled by its stratum's size
        for s, (index, _) in enumerate(parts):
            assert set(index.tolist()) <= members[s]
            seen[s].extend(index.tolist())
        assert set(parts[1][0].tolist()) == members[1] and len(parts[1][0]) == 7
        assert len(parts[2][0]) == 10
    assert sorted(seen[0]) == sorted(members[0])  # one pass over the largest, the last step partial
    counts = torch.bincount(torch.tensor(seen[2]), minlength=125)[sorted(members[2])]
    assert counts.sum() == 100 and counts.min() >= 4 and counts.max() <= 5  # 100 draws: 4 or 5 passes of 23
    again = epoch_batches(125, 10, seed=1, epoch=4, strata=strata)
    assert all(torch.equal(a, b) for pa, pb in zip(steps, again, strict=True)
               for (a, _), (b, _) in zip(pa, pb, strict=True))
    other = epoch_batches(125, 10, seed=1, epoch=5, strata=strata)
    assert not torch.equal(other[0][0][0], steps[0][0][0])


def _global_and_local(x, num_data):
    """theta ~ N(0, 1) global; x_n ~ N(theta, 1) in the data plate. Its guide is a point mass (deterministic ELBO)."""
    theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
    with pyro.plate("data", num_data, subsample_size=x.shape[0]):
        pyro.sample("x", dist.Normal(theta, 1.0), obs=x)


def _point_guide(x, num_data):
    pyro.sample("theta", dist.Delta(pyro.param("theta_loc", torch.tensor(0.7, dtype=torch.float64))))


@pytest.mark.parametrize("batch_size", [8, 64])
def test_a_stratified_epoch_estimates_the_full_data_loss_with_the_global_site_counted_once(batch_size):
    # 40 items in one stratum, 4 in the other: with batch 8, five steps each of 8 + 4 items (weights 40/8 and 4/4),
    # so the mean of the steps' losses is the full-data loss exactly; with batch 64, one step of everything. The
    # global theta's term is in both strata's ELBO calls and must count once: with it counted twice the loss would
    # be off by -log N(theta; 0, 1).
    g = torch.Generator().manual_seed(0)
    x = 2.0 + torch.randn(44, generator=g, dtype=torch.float64)
    group = torch.arange(44) >= 40
    data = ArrayDataset(x=x, arrays={"group": group})
    config = TrainConfig(epochs=1, batch_size=batch_size, optimizer="sgd", learning_rate=1e-14, stratify="group",
                         progress=False, seed=0)
    result = train(_global_and_local, _point_guide, data, config=config)
    theta = result.param_store_state["theta_loc"]
    full = -(dist.Normal(theta, 1.0).log_prob(x).sum() + dist.Normal(0.0, 1.0).log_prob(theta))
    assert result.history[0]["train_loss"] * 44 == pytest.approx(float(full), rel=1e-9)


def test_stratify_names_an_integer_array_of_the_data():
    x = torch.randn(20, dtype=torch.float64)
    with pytest.raises(DataError, match="no array 'group'"):
        train(_global_and_local, _point_guide, ArrayDataset(x=x), config=TrainConfig(stratify="group", progress=False))
    with pytest.raises(DataError, match="bool or integer stratum label per item"):
        train(_global_and_local, _point_guide, ArrayDataset(x=x, arrays={"group": torch.rand(20)}),
              config=TrainConfig(stratify="group", progress=False))
    with pytest.raises(ConfigError, match="needs an ArrayDataset"):
        train(_global_and_local, _point_guide, x, config=TrainConfig(stratify="group", progress=False))
    with pytest.raises(ConfigError, match="stratify must name a data array"):
        TrainConfig(stratify="")


@pytest.mark.parametrize("every_batch", [True, False])
def test_ssvae_puts_its_labelled_images_in_every_step_unless_told_not_to(tmp_path, every_batch):
    from emvi.cli import main

    run = tmp_path / "run"
    flag = [] if every_batch else ["--stratify", "off"]
    assert main(["fit", "ssvae", "--dataset", "digits", "--binarize", "static", "--limit", "300", "--epochs", "1",
                 "--latent-dim", "2", "--hidden-dims", "8", "--labels-per-class", "2", "--batch-size", "64",
                 "--progress", "false", "--no-plots", *flag, "--run-dir", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["method_config"]["stratify"] == ("y_mask" if every_batch else "off")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(metrics[0]["train_loss"])
    # ceil(280 unlabelled / 64) = 5 steps of 64 (+ 20 labelled), against ceil(300 / 64) = 5 uniform ones:
    # the items seen per epoch tell them apart.
    seen = metrics[0]["items_per_second"] * metrics[0]["seconds"]
    assert seen == pytest.approx(280 + 5 * 20 if every_batch else 300, rel=1e-6)


def test_a_resumed_stratified_fit_replays_the_same_batches(tmp_path):
    g = torch.Generator().manual_seed(2)
    x = 1.0 + torch.randn(50, generator=g, dtype=torch.float64)
    data = ArrayDataset(x=x, arrays={"group": torch.arange(50) % 10 == 0})  # 45 and 5 items
    config = TrainConfig(epochs=3, batch_size=8, learning_rate=0.05, stratify="group", progress=False, seed=4)
    straight = train(_global_and_local, _point_guide, data, config=config)
    train(_global_and_local, _point_guide, data, config=TrainConfig(**{**config.to_dict(), "epochs": 2}),
          run_dir=tmp_path / "run")
    resumed = train(_global_and_local, _point_guide, data, config=config, run_dir=tmp_path / "run", resume=True)
    assert resumed.param_store_state["theta_loc"].item() == straight.param_store_state["theta_loc"].item()
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert straight.param_store_state["theta_loc"].item() != pytest.approx(0.7, abs=1e-3)  # it did train
