"""The SVI runner: convergence to the closed form, determinism, resume (also after SIGKILL), isolation, errors."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from toy_models import build_pair, flat_parameters, linear_gaussian_data

from emvi import NonFiniteLossError, TrainConfig, train
from emvi.errors import CheckpointError, ConfigError, DataError
from emvi.rundir import load_checkpoint

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, where resume_script.py lives
FAST = dict(batch_size=50, learning_rate=0.02, progress=False)


def test_elbo_approaches_exact_log_likelihood_and_stays_below_it():
    data = linear_gaussian_data(400)
    model, guide = build_pair()
    result = train(model, guide, data, config=TrainConfig(epochs=60, **FAST))
    with torch.no_grad():
        exact = model.log_marginal(data).mean().item()
    final_elbo = -result.history[-1]["train_loss"]
    first_elbo = -result.history[0]["train_loss"]
    assert final_elbo > first_elbo + 1.0
    # The linear-Gaussian posterior is Gaussian, so an amortised Gaussian guide can close the gap almost entirely;
    # the training ELBO is a noisy mini-batch average, hence the tolerance.
    assert final_elbo < exact + 0.05
    assert final_elbo > exact - 0.3


def test_same_seed_gives_identical_parameters():
    data = linear_gaussian_data(200)
    finals = []
    for _ in range(2):
        model, guide = build_pair(seed=3)
        train(model, guide, data, config=TrainConfig(epochs=3, seed=11, **FAST))
        finals.append(flat_parameters(model, guide))
    assert torch.equal(finals[0], finals[1])
    model, guide = build_pair(seed=3)
    train(model, guide, data, config=TrainConfig(epochs=3, seed=12, **FAST))
    assert not torch.equal(finals[0], flat_parameters(model, guide))


def test_build_model_seeds_the_initial_weights_so_a_script_repeats_from_epoch_one():
    """The documented script path (README): build_model(..., seed) then train(TrainConfig(seed)) twice, with other
    random draws in between, gives the same weights before and after training; another seed differs."""
    from emvi import build_model
    from emvi.data import load_dataset
    from emvi.models.vae import VAEConfig

    data = load_dataset("digits", binarize="static")
    config = VAEConfig(latent_dim=2, hidden_dims=(16,))
    runs = []
    for _ in range(2):
        torch.randn(100)  # whatever the script drew before
        model, guide = build_model("vae", config, data.info(), seed=5)
        initial = flat_parameters(model, guide).clone()
        result = train(model, guide, data, config=TrainConfig(epochs=1, seed=5, **FAST))
        runs.append((initial, flat_parameters(model, guide), result.history[-1]["train_loss"]))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]
    other, other_guide = build_model("vae", config, data.info(), seed=6)
    assert not torch.equal(runs[0][0], flat_parameters(other, other_guide))
    with pytest.raises(ConfigError, match="takes a VAEConfig"):
        build_model("vae", TrainConfig(), data.info())


def test_resume_in_process_matches_uninterrupted_run(tmp_path):
    data = linear_gaussian_data(200)
    config = TrainConfig(epochs=5, seed=5, lr_schedule="exponential", lr_decay=0.8, **FAST)
    model, guide = build_pair(seed=2)
    straight = train(model, guide, data, config=config, run_dir=tmp_path / "a")
    expected = flat_parameters(model, guide)

    model, guide = build_pair(seed=2)
    train(model, guide, data, config=TrainConfig(**{**config.to_dict(), "epochs": 2}), run_dir=tmp_path / "b")
    model, guide = build_pair(seed=99)  # a fresh process would build with other values; the checkpoint must win
    resumed = train(model, guide, data, config=config, run_dir=tmp_path / "b", resume=True)
    assert torch.allclose(flat_parameters(model, guide), expected, atol=1e-5, rtol=0)
    assert [h["train_loss"] for h in resumed.history] == pytest.approx([h["train_loss"] for h in straight.history], abs=1e-6)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5]


def _run_script(run_dir, epochs, out, *extra):
    env = {**os.environ, "PYTHONPATH": HERE + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return [sys.executable, os.path.join(HERE, "resume_script.py"), str(run_dir), str(epochs), str(out), *extra], env


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_to_the_same_parameters(tmp_path):
    epochs = 6
    cmd, env = _run_script(tmp_path / "straight", epochs, tmp_path / "straight.pt")
    subprocess.run(cmd, env=env, check=True, timeout=300)

    killed_dir = tmp_path / "killed"
    cmd, env = _run_script(killed_dir, epochs, tmp_path / "never.pt", "--slow")
    proc = subprocess.Popen(cmd, env=env)
    metrics = killed_dir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail("training finished before it could be killed")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "never.pt").exists()
    done = load_checkpoint(killed_dir / "checkpoint.pt")["epoch"]
    assert 2 <= done < epochs  # metrics line of epoch 3 may precede its checkpoint

    cmd, env = _run_script(killed_dir, epochs, tmp_path / "resumed.pt", "--resume")
    subprocess.run(cmd, env=env, check=True, timeout=300)
    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert torch.allclose(resumed, straight, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, reference", [
    ("adam", lambda p: torch.optim.Adam(p, lr=0.1, weight_decay=0.01, foreach=False)),
    ("adamw", lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.01, foreach=False)),
    ("sgd", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01, foreach=False)),
])
def test_runner_optimizers_are_torch_fused_kernels_with_the_same_steps(name, reference):
    from emvi.inference.train_config import make_optimizer as _make_optimizer

    start = torch.randn(5, 4, dtype=torch.float64)
    trajectories = []
    for make in (lambda p: _make_optimizer(TrainConfig(optimizer=name, learning_rate=0.1, weight_decay=0.01,
                                                       momentum=0.9), p), reference):
        weight = torch.nn.Parameter(start.clone())
        optimizer = make([weight])
        for step in range(5):
            optimizer.zero_grad()
            ((weight - step) ** 2).sum().backward()
            optimizer.step()
        trajectories.append((optimizer, weight.detach()))
    (fused, fused_weight), (_, reference_weight) = trajectories
    assert fused.defaults["fused"] is True
    torch.testing.assert_close(fused_weight, reference_weight, rtol=1e-12, atol=1e-12)


def test_two_models_in_one_process_do_not_share_parameters():
    data = linear_gaussian_data(100)
    first_model, first_guide = build_pair(seed=0)
    train(first_model, first_guide, data, config=TrainConfig(epochs=2, **FAST))
    after_first = flat_parameters(first_model, first_guide)

    second_model, second_guide = build_pair(seed=1)
    initial_second = flat_parameters(second_model, second_guide)
    assert not torch.equal(initial_second, after_first)
    train(second_model, second_guide, data + 5.0, config=TrainConfig(epochs=2, **FAST))
    assert torch.equal(flat_parameters(first_model, first_guide), after_first)  # untouched by the second fit
    assert len(pyro.get_param_store()) == 0


def test_hand_written_pyro_param_model_is_isolated_and_trained():
    def model(x, num_data=None):
        loc = pyro.param("loc", torch.zeros(x.shape[-1]))
        with pyro.plate("data", num_data or x.shape[0], subsample_size=x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(x, num_data=None):
        pass

    data = torch.randn(300, 3) + torch.tensor([1.0, -2.0, 0.5])
    pyro.get_param_store().clear()
    pyro.param("loc", torch.full((3,), 100.0))  # a user's own param of the same name must survive the fit
    result = train(model, guide, data, config=TrainConfig(epochs=300, batch_size=300, learning_rate=0.05, progress=False))
    assert torch.allclose(result.param_store_state["loc"], data.mean(0), atol=0.05)
    assert torch.equal(pyro.param("loc").detach(), torch.full((3,), 100.0))
    pyro.get_param_store().clear()


def test_kl_warmup_scales_latent_terms_only():
    from emvi.inference.elbo import make_elbo
    from emvi.inference.svi_loop import _loss

    data = linear_gaussian_data(64)
    model, guide = build_pair()
    elbo = make_elbo("meanfield")
    with torch.no_grad():
        pyro.set_rng_seed(0)
        full = _loss(elbo, model, guide, (data,), 64, 1.0).item()
        pyro.set_rng_seed(0)
        half = _loss(elbo, model, guide, (data,), 64, 0.5).item()
        pyro.set_rng_seed(0)
        none = _loss(elbo, model, guide, (data,), 64, 0.0).item()
    # loss(w) = reconstruction + w * KL is affine in w
    assert half == pytest.approx((full + none) / 2, rel=1e-5)
    assert full > none  # the KL is positive


def test_renyi_alpha_zero_loss_matches_pyro_renyi_value():
    from emvi.inference.elbo import make_elbo

    data = linear_gaussian_data(32)
    model, guide = build_pair()
    ours = make_elbo("renyi", num_particles=8, renyi_alpha=0.0)
    reference = pyro.infer.RenyiELBO(alpha=0.0, num_particles=8)
    with torch.no_grad():
        pyro.set_rng_seed(3)
        value = ours.differentiable_loss(model, guide, data).item()
        pyro.set_rng_seed(3)
        expected = reference.loss(model, guide, data)
    assert value == pytest.approx(expected, rel=1e-5)


class _Exploding(PyroModule):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x, num_data=None):
        with pyro.plate("data", num_data or x.shape[0], subsample_size=x.shape[0]):
            # NaN once the parameter is driven past 2: log of a negative number
            pyro.sample("x", dist.Normal(0.0, torch.log(3.0 - self.scale)).expand(x.shape[-1:]).to_event(1), obs=x)


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tmp_path):
    model = _Exploding()
    data = torch.full((64, 2), 0.01)  # tiny data pushes the scale parameter up each step
    with pytest.raises(NonFiniteLossError, match="lower --learning-rate"):
        train(model, lambda x, num_data=None: None, data,
              config=TrainConfig(epochs=50, batch_size=64, learning_rate=0.2, optimizer="sgd", progress=False, validate=False),
              run_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] >= 1
    assert torch.isfinite(state["model"]["scale"]).all()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == state["epoch"]


def test_early_stopping_restores_the_best_parameters(tmp_path):
    data = linear_gaussian_data(200)
    model, guide = build_pair()
    result = train(model, guide, data[:150], valid_data=data[150:], run_dir=tmp_path,
                   config=TrainConfig(epochs=300, early_stopping_patience=2, batch_size=150, learning_rate=0.05, progress=False))
    assert result.stopped_early and result.epochs_run < 300
    best = load_checkpoint(tmp_path / "best.pt")
    assert torch.equal(model.state_dict()["weight"], best["model"]["weight"])
    assert result.best_valid_loss == pytest.approx(min(h["valid_loss"] for h in result.history))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": -1}, "epochs must be an integer >= 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"learning_rate": -0.1}, "learning_rate must be > 0, got -0.1"),
        ({"optimizer": "adagrad"}, "optimizer must be one of"),
        ({"elbo": "magic"}, "elbo must be one of"),
        ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
    ],
)
def test_bad_training_options_name_the_option(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


def test_bad_data_and_resume_errors(tmp_path):
    model, guide = build_pair()
    with pytest.raises(DataError, match="NaN"):
        train(model, guide, torch.tensor([[float("nan")] * 4]), config=TrainConfig(progress=False))
    with pytest.raises(DataError, match="empty"):
        train(model, guide, torch.zeros(0, 4), config=TrainConfig(progress=False))
    with pytest.raises(DataError, match="disagree"):
        train(model, guide, (torch.zeros(5, 4), torch.zeros(4)), config=TrainConfig(progress=False))
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(model, guide, torch.zeros(5, 4), config=TrainConfig(progress=False), run_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="CUDA is not available|not a valid torch device"):
        if torch.cuda.is_available():
            raise ConfigError("CUDA is not available")  # the check below only makes sense on a CPU-only machine
        train(model, guide, torch.zeros(5, 4), config=TrainConfig(device="cuda", progress=False))
    with pytest.raises(ConfigError, match="needs validation data"):
        train(model, guide, torch.zeros(5, 4), config=TrainConfig(early_stopping_patience=2, progress=False))


def test_resume_with_changed_options_is_refused(tmp_path):
    data = linear_gaussian_data(50)
    model, guide = build_pair()
    train(model, guide, data, config=TrainConfig(epochs=1, **FAST), run_dir=tmp_path)
    with pytest.raises(CheckpointError, match="learning_rate"):
        train(model, guide, data, config=TrainConfig(epochs=2, **{**FAST, "learning_rate": 0.5}), run_dir=tmp_path, resume=True)


def test_buffers_travel_in_checkpoints(tmp_path):
    data = linear_gaussian_data(50)
    model, guide = build_pair()
    train(model, guide, data, config=TrainConfig(epochs=2, **FAST), run_dir=tmp_path)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["model"]["calls"].item() == model.calls.item() > 0
    assert math.isfinite(state["history"][-1]["train_loss"])


def test_jit_option_falls_back_to_eager_with_identical_results():
    import warnings

    data = linear_gaussian_data(100)
    losses = []
    for jit in (False, True):
        model, guide = build_pair(seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the JIT path may warn that it fell back
            result = train(model, guide, data, config=TrainConfig(epochs=2, jit=jit, **FAST))
        losses.append([h["train_loss"] for h in result.history])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


class _NormalLocation(PyroModule):
    """x_n ~ Normal(loc, 1) with a learned loc (no latent site): the loss is -log p(x) per item, exactly."""

    def __init__(self):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, num_data=None):
        with pyro.plate("data", num_data or x.shape[0], subsample_size=x.shape[0]):
            pyro.sample("x", dist.Normal(self.loc, 1.0), obs=x)


def test_early_stopping_without_a_run_directory_returns_to_the_best_held_out_weights():
    """Training items at 3, held-out items at 0: each Adam step moves loc from 0 towards 3, so the held-out loss
    0.5 loc² + 0.5 log 2π rises every epoch. With patience 2 the fit stops after epoch 3 and, keeping no run
    directory, returns to the weights of epoch 1, the best held-out epoch (held in memory)."""
    model = _NormalLocation()
    locations = []

    def record(metrics):
        locations.append(float(model.loc.detach()))

    result = train(model, lambda x, num_data=None: None, torch.full((20,), 3.0), valid_data=torch.zeros(10),
                   config=TrainConfig(epochs=50, early_stopping_patience=2, batch_size=20, learning_rate=0.1,
                                      progress=False),
                   callbacks=(record,))
    valid = [h["valid_loss"] for h in result.history]
    assert result.stopped_early and result.epochs_run == 3
    assert valid[0] < valid[1] < valid[2]
    assert valid[0] == pytest.approx(0.5 * locations[0] ** 2 + 0.5 * math.log(2 * math.pi), rel=1e-6)
    assert 0 < locations[0] < locations[2]
    assert float(model.loc.detach()) == locations[0] and result.best_valid_loss == valid[0]


def test_early_stopping_returns_to_the_best_held_out_weights_when_the_epochs_run_out_first():
    """The same rising held-out loss with patience 5 and only 3 epochs: the fit runs out of epochs before the
    patience does, and still ends at epoch 1's weights (the best held-out epoch); without early stopping it keeps
    the last epoch's."""

    def fit(patience):
        model, locations = _NormalLocation(), []
        result = train(model, lambda x, num_data=None: None, torch.full((20,), 3.0), valid_data=torch.zeros(10),
                       config=TrainConfig(epochs=3, early_stopping_patience=patience, batch_size=20, learning_rate=0.1,
                                          progress=False),
                       callbacks=(lambda metrics: locations.append(float(model.loc.detach())),))
        assert not result.stopped_early and result.epochs_run == 3 and locations[0] < locations[2]
        return float(model.loc.detach()), locations

    final, locations = fit(5)
    assert final == locations[0]
    final, locations = fit(None)
    assert final == locations[2]
