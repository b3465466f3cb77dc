"""WeightAverage: the fit ends with the mean of the per-epoch weights from its start epoch on (modules and param
store), a fit shorter than the start keeps its last weights, and a bad start epoch is refused. As the training option
average_weights_from: the same weights, a run directory whose fitted weights are the mean, an exact resume. A run
directory of an early-stopped fit evaluates its best epoch's weights."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from toy_models import build_pair, flat_parameters, linear_gaussian_data

import emvi
from emvi import TrainConfig
from emvi.errors import CheckpointError, ConfigError
from emvi.inference import WeightAverage, train
from emvi.inference.runner import load_run_modules
from emvi.inference.svi_loop import Callback, param_store_values
from emvi.rundir import RunDirectory, load_checkpoint

FAST = dict(batch_size=50, learning_rate=0.02, progress=False)


class Snapshots(Callback):
    """The module weights and param-store values after every epoch (runs before the averager)."""

    def __init__(self, *modules):
        self.modules, self.weights, self.store = modules, [], []

    def on_epoch_end(self, loop, metrics):
        if self.modules:
            self.weights.append(flat_parameters(*self.modules).clone())
        self.store.append(param_store_values(loop.store))


def stopped_and_resumed(data, config: TrainConfig, path, averagers=tuple) -> torch.Tensor:
    """The weights of a ``config`` fit into run directory ``path`` stopped after epoch 4, then resumed to its end from
    other initial weights; ``averagers()`` gives each part its fresh WeightAverage callbacks."""
    emvi.train(*build_pair(seed=2), data, config=TrainConfig(**{**config.to_dict(), "epochs": 4}), run_dir=path,
               callbacks=averagers())
    model, guide = build_pair(seed=99)
    emvi.train(model, guide, data, config=config, run_dir=path, resume=True, callbacks=averagers())
    return flat_parameters(model, guide)


def test_the_fit_ends_with_the_mean_of_the_weights_from_the_start_epoch_on():
    data = linear_gaussian_data(200)
    model, guide = build_pair()
    snapshots, averager = Snapshots(model, guide), WeightAverage(start_epoch=3)
    train(model, guide, data, config=TrainConfig(epochs=6, **FAST), callbacks=(snapshots, averager))
    expected = torch.stack(snapshots.weights[2:]).mean(0)
    assert averager.epochs_averaged == 4
    torch.testing.assert_close(flat_parameters(model, guide), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected, snapshots.weights[-1])  # the average is not the last epoch's weights


def test_param_store_values_are_averaged_unconstrained():
    data = linear_gaussian_data(120, data_dim=1, latent_dim=1)[:, 0]

    def model(x, num_data=None):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        with pyro.plate("data", x.shape[0], subsample_size=x.shape[0] if num_data is None else None):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x, num_data=None):
        loc = pyro.param("q_loc", torch.tensor(0.0))
        scale = pyro.param("q_scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        pyro.sample("loc", dist.Normal(loc, scale))

    snapshots, averager = Snapshots(), WeightAverage(start_epoch=2)
    result = train(model, guide, data, config=TrainConfig(epochs=5, **FAST), callbacks=(snapshots, averager))
    # the fit's param store (its own scope) as it ended: unconstrained values; the positive scale's is its log, so
    # the scale that ends the fit is the geometric mean of the epochs' scales
    for name in ("q_loc", "q_scale"):
        expected = torch.stack([store[name] for store in snapshots.store[1:]]).mean(0)
        torch.testing.assert_close(result.param_store_state[name], expected)
    assert not torch.allclose(result.param_store_state["q_loc"], snapshots.store[-1]["q_loc"])


def test_a_fit_shorter_than_the_start_epoch_keeps_its_last_weights():
    data = linear_gaussian_data(200)
    model, guide = build_pair()
    snapshots, averager = Snapshots(model, guide), WeightAverage(start_epoch=10)
    train(model, guide, data, config=TrainConfig(epochs=2, **FAST), callbacks=(snapshots, averager))
    assert averager.epochs_averaged == 0
    torch.testing.assert_close(flat_parameters(model, guide), snapshots.weights[-1])


@pytest.mark.parametrize("start", [0, -1, 1.5])
def test_a_start_epoch_that_is_not_a_positive_whole_number_is_refused(start):
    with pytest.raises(ConfigError, match="positive whole epoch"):
        WeightAverage(start_epoch=start)


def test_under_early_stopping_the_average_replaces_the_best_epochs_weights():
    data = linear_gaussian_data(300)
    model, guide = build_pair()
    snapshots, averager = Snapshots(model, guide), WeightAverage(start_epoch=2)
    config = TrainConfig(epochs=40, early_stopping_patience=1, **FAST)
    result = train(model, guide, data[:200], valid_data=data[200:], config=config, callbacks=(snapshots, averager))
    assert result.stopped_early and result.epochs_run == len(snapshots.weights) == averager.epochs_averaged + 1
    torch.testing.assert_close(flat_parameters(model, guide), torch.stack(snapshots.weights[1:]).mean(0),
                               rtol=1e-5, atol=1e-6)


def test_the_training_option_averages_as_the_callback_does():
    data = linear_gaussian_data(200)
    by_callback, by_option = build_pair(seed=4), build_pair(seed=4)
    train(*by_callback, data, config=TrainConfig(epochs=6, **FAST), callbacks=(WeightAverage(3),))
    train(*by_option, data, config=TrainConfig(epochs=6, average_weights_from=3, **FAST))
    assert torch.equal(flat_parameters(*by_callback), flat_parameters(*by_option))


@pytest.mark.parametrize("start", [0, -2, 1.5])
def test_a_bad_average_weights_from_is_refused(start):
    with pytest.raises(ConfigError, match="average_weights_from"):
        TrainConfig(average_weights_from=start)


def test_a_run_directory_keeps_the_average_as_the_fitted_weights_and_the_last_epoch_to_resume(tmp_path):
    data = linear_gaussian_data(200)
    model, guide = build_pair(seed=2)
    snapshots = Snapshots(model, guide)
    emvi.train(model, guide, data, config=TrainConfig(epochs=5, average_weights_from=2, **FAST), run_dir=tmp_path,
          callbacks=(snapshots,))
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["weight_average"]["epochs_averaged"] == 4
    fresh = build_pair(seed=9)
    load_run_modules(RunDirectory(tmp_path), *fresh)  # what emvi evaluate loads
    torch.testing.assert_close(flat_parameters(*fresh), torch.stack(snapshots.weights[1:]).mean(0), rtol=1e-5, atol=1e-6)
    last = build_pair(seed=9)
    last[0].load_state_dict(state["model"]), last[1].load_state_dict(state["guide"])
    torch.testing.assert_close(flat_parameters(*last), snapshots.weights[-1])  # the training state resumes from


def test_a_resumed_fit_averages_as_an_uninterrupted_one(tmp_path):
    data = linear_gaussian_data(200)
    config = TrainConfig(epochs=6, seed=3, average_weights_from=2, **FAST)
    model, guide = build_pair(seed=2)
    emvi.train(model, guide, data, config=config, run_dir=tmp_path / "straight")
    expected = flat_parameters(model, guide)
    resumed = stopped_and_resumed(data, config, tmp_path / "resumed")
    torch.testing.assert_close(resumed, expected, rtol=0, atol=1e-6)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["weight_average"]["epochs_averaged"] == 5


def test_an_early_stopped_run_directory_evaluates_the_best_epochs_weights(tmp_path):
    data = linear_gaussian_data(300)
    model, guide = build_pair()
    config = TrainConfig(epochs=300, early_stopping_patience=2, **FAST)
    result = emvi.train(model, guide, data[:200], valid_data=data[200:], config=config, run_dir=tmp_path)
    assert result.stopped_early
    best = load_checkpoint(tmp_path / "best.pt")
    fresh = build_pair(seed=9)
    load_run_modules(RunDirectory(tmp_path), *fresh)
    torch.testing.assert_close(fresh[0].state_dict()["weight"], best["model"]["weight"])
    assert not torch.equal(best["model"]["weight"], load_checkpoint(tmp_path / "checkpoint.pt")["model"]["weight"])


def test_a_weight_average_passed_as_a_callback_is_checkpointed_and_resumes(tmp_path):
    data = linear_gaussian_data(200)
    config = TrainConfig(epochs=6, seed=3, **FAST)
    model, guide = build_pair(seed=2)
    emvi.train(model, guide, data, config=config, run_dir=tmp_path / "straight", callbacks=(WeightAverage(2),))
    expected = flat_parameters(model, guide)
    resumed = stopped_and_resumed(data, config, tmp_path / "resumed", lambda: (WeightAverage(2),))
    torch.testing.assert_close(resumed, expected, rtol=0, atol=1e-6)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["weight_average"]["epochs_averaged"] == 5


def test_several_weight_averages_each_keep_their_mean_and_the_fit_ends_on_the_last(tmp_path):
    data = linear_gaussian_data(200)
    config = TrainConfig(epochs=6, seed=3, average_weights_from=2, **FAST)
    model, guide = build_pair(seed=2)
    snapshots, later = Snapshots(model, guide), WeightAverage(4)
    emvi.train(model, guide, data, config=config, run_dir=tmp_path / "straight", callbacks=(snapshots, later))
    torch.testing.assert_close(flat_parameters(model, guide), torch.stack(snapshots.weights[3:]).mean(0),
                               rtol=1e-5, atol=1e-6)
    saved = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["weight_average"]
    assert [averaged["epochs_averaged"] for averaged in saved] == [5, 3]
    expected = flat_parameters(model, guide)
    resumed = stopped_and_resumed(data, config, tmp_path / "resumed", lambda: (WeightAverage(4),))
    torch.testing.assert_close(resumed, expected, rtol=0, atol=1e-6)
    with pytest.raises(CheckpointError, match="holds 2 weight averages but this fit has 1"):
        emvi.train(*build_pair(seed=2), data, config=TrainConfig(**{**config.to_dict(), "epochs": 8}),
                   run_dir=tmp_path / "resumed", resume=True)
