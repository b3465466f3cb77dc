"""emvi.train as a Pyro user calls it: ELBO and optimiser objects, plain models, and runs the CLI evaluates."""

import json
import math
import os
import subprocess
import sys

import pyro
import pyro.optim
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceEnum_ELBO
from toy_models import (
    TESTS_DIR,
    build_pair,
    conjugate_guide,
    conjugate_log_marginal,
    conjugate_model,
    linear_gaussian_data,
    poisson_mixture,
)

import emvi
from emvi import TrainConfig
from emvi.errors import ConfigError
from emvi.inference.svi_loop import SVI, _loss, fit_scope

FAST = {"batch_size": 50, "learning_rate": 0.01, "progress": False}


def _first_loss_and_gradient(config, loss=None):
    """The loss and the gradient of the first batch, as the loop computes them, from the same seed."""
    model, guide = build_pair(seed=0)
    data = linear_gaussian_data(100)
    with fit_scope(config, model, guide):
        loop = SVI(model, guide, config, loss=loss).init(data)
        pyro.set_rng_seed(7)
        value = _loss(loop.elbo, loop.loss_model, loop.guide, (data[:50],), 100, 1.0)
        grads = torch.autograd.grad(value, loop.params)
    return value.item(), grads


@pytest.mark.parametrize("name, loss, extra", [
    ("trace", Trace_ELBO(), {}),
    ("renyi", RenyiELBO(alpha=0.0, num_particles=3), {"num_particles": 3}),
    ("enum", TraceEnum_ELBO(max_plate_nesting=1), {"max_plate_nesting": 1}),
])
def test_an_elbo_instance_gives_the_loss_and_gradient_of_its_name(name, loss, extra):
    by_name = _first_loss_and_gradient(TrainConfig(elbo=name, **extra, **FAST))
    by_object = _first_loss_and_gradient(TrainConfig(**FAST), loss=loss)
    assert by_object[0] == pytest.approx(by_name[0], rel=1e-6)
    for a, b in zip(by_object[1], by_name[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_an_elbo_instance_trains_as_its_name_does():
    """Same estimator, same random stream: the same fit. (Pyro's Trace_ELBO gives the value and gradient of emvi's
    lean "trace" for one draw, above, but draws its plate's subsample where the lean one does not.)"""
    data = linear_gaussian_data(100)
    histories = []
    for loss, extra in (("renyi", {"num_particles": 2}), (RenyiELBO(alpha=0.0, num_particles=2), {})):
        model, guide = build_pair(seed=0)
        result = emvi.train(model, guide, data, loss=loss, config=TrainConfig(epochs=3, **extra, **FAST))
        histories.append([h["train_loss"] for h in result.history])
    assert histories[1] == histories[0]


@pytest.mark.parametrize("optim", [pyro.optim.Adam({"lr": 0.01}), torch.optim.Adam, "adam"])
def test_pyro_and_torch_optimisers_drive_the_fit(optim):
    data = linear_gaussian_data(100)
    model, guide = build_pair(seed=0)
    result = emvi.train(model, guide, data, optim=optim, config=TrainConfig(epochs=3, **FAST))
    reference = emvi.train(*build_pair(seed=0), data, config=TrainConfig(epochs=3, **FAST))
    # the same Adam step (torch's fused kernel or its loop: equal up to rounding)
    assert [h["train_loss"] for h in result.history] == pytest.approx(
        [h["train_loss"] for h in reference.history], rel=1e-4)


def test_a_pyro_optimiser_with_per_parameter_arguments_is_refused():
    with pytest.raises(ConfigError, match="per-parameter arguments"):
        emvi.train(*build_pair(), linear_gaussian_data(20), optim=pyro.optim.Adam(lambda module, name: {"lr": 0.1}),
                   config=TrainConfig(epochs=1, progress=False))


def test_a_model_without_num_data_trains():
    torch.manual_seed(0)
    x = torch.randn(64, 2) * 1.1
    result = emvi.train(conjugate_model, conjugate_guide, x, loss=Trace_ELBO(), optim=pyro.optim.Adam({"lr": 0.01}),
                        config=TrainConfig(epochs=20, batch_size=64, progress=False))
    assert math.isfinite(result.history[-1]["train_loss"])
    assert set(result.param_store_state) == {"a", "s"}
    exact = -conjugate_log_marginal(x).mean().item()
    assert result.history[-1]["train_loss"] == pytest.approx(exact, abs=0.3)  # ELBO close to log p(x)


def test_guide_none_gives_an_automatic_guide():
    x = torch.randn(30, 2)
    result = emvi.train(conjugate_model, None, x, config=TrainConfig(epochs=2, batch_size=30, progress=False))
    assert type(result.guide).__name__ == "AutoNormal" and math.isfinite(result.history[-1]["train_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("before", [False, True])
def test_import_emvi_leaves_pyro_settings_alone(before):
    code = (f"import pyro; pyro.settings.set(module_local_params={before}); import emvi; "
            "print(pyro.settings.get('module_local_params'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(before)


def test_emvis_own_pyro_modules_keep_local_parameters_under_the_users_setting():
    from emvi.models.mixture import MixtureConfig, MixtureGuide, MixtureModel

    pyro.clear_param_store()
    with pyro.settings.context(module_local_params=False):
        model = MixtureModel(MixtureConfig(num_components=2), 1)
        loss = emvi.make_elbo("enum", max_plate_nesting=1).loss(model, MixtureGuide(), torch.zeros(5, 1))
    assert math.isfinite(loss) and not list(pyro.get_param_store().keys())  # nothing in the global store


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(TESTS_DIR.parent)])}
    return subprocess.run([sys.executable, "-m", "emvi.cli", *args], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_a_run_of_emvi_train_is_evaluated_and_analysed_from_the_cli(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(200, 2) * (1 + 0.5**2) ** 0.5
    run = tmp_path / "run"
    emvi.train(conjugate_model, conjugate_guide, x[:150], loss=Trace_ELBO(), optim=pyro.optim.Adam({"lr": 1e-3}),
               valid_data=x[150:], config=TrainConfig(epochs=2, batch_size=150, progress=False), run_dir=run)
    config = json.loads((run / "config.json").read_text())
    assert config["python"]["model"] == "toy_models:conjugate_model"
    assert config["optim"].startswith("pyro.optim")
    out = _cli("evaluate", str(run), "--num-samples", "500")  # the held-out items by default
    assert out.returncode == 0, out.stderr
    metrics = json.loads((run / "evaluation_valid.json").read_text())
    assert metrics["num_items"] == 50
    exact = conjugate_log_marginal(x[150:]).mean().item()
    assert metrics["is_log_likelihood_nats_per_item"] == pytest.approx(exact, abs=0.01)
    assert metrics["elbo_nats_per_item"] <= metrics["is_log_likelihood_nats_per_item"] + 1e-6
    out = _cli("analyze", str(run), "--num-samples", "20")
    assert out.returncode == 0, out.stderr
    assert (run / "inference_data.nc").is_file() and "netcdf" in out.stdout


def test_a_run_of_a_main_function_is_refused_in_one_line(tmp_path):
    def local_model(x):
        return conjugate_model(x)

    run = tmp_path / "run"
    emvi.train(local_model, conjugate_guide, torch.randn(10, 2), run_dir=run,
               config=TrainConfig(epochs=1, batch_size=10, progress=False))
    out = _cli("evaluate", str(run))
    assert out.returncode == 2 and "cannot rebuild" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_run_of_modules_built_without_arguments_is_evaluated_from_the_cli(tmp_path):
    model, guide = build_pair(seed=0)
    x = linear_gaussian_data(100)
    run = tmp_path / "run"
    emvi.train(model, guide, x, config=TrainConfig(epochs=5, **FAST), run_dir=run)
    assert json.loads((run / "config.json").read_text())["python"]["model"] == "toy_models:LinearGaussianModel()"
    out = _cli("evaluate", str(run), "--num-samples", "300")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((run / "evaluation_train.json").read_text())
    from emvi.inference.likelihood import estimate_log_likelihood

    with torch.no_grad():
        exact = model.log_marginal(x).mean().item()
    here = estimate_log_likelihood(model, guide, x, num_samples=300, prior=False).importance.mean().item()
    # the trained weights came back, exactly (as the CLI rebuilds the run)
    from emvi.runs import load_run

    _, loaded_model, loaded_guide, _, _ = load_run(run)
    for ours, theirs in ((model, loaded_model), (guide, loaded_guide)):
        for (name, value), (_, loaded) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
            torch.testing.assert_close(loaded.detach(), value.detach(), msg=name)
    # and the CLI's estimate agrees with this process's up to the importance weights' Monte Carlo noise (a diagonal
    # guide of a correlated posterior has heavy-tailed weights: 0.02 typical, 0.14 seen once), below the exact log p(x)
    assert metrics["is_log_likelihood_nats_per_item"] == pytest.approx(here, abs=0.3)
    assert metrics["is_log_likelihood_nats_per_item"] < exact + 0.02


def test_a_module_that_needs_arguments_saves_no_data_and_is_refused(tmp_path):
    class Needs(torch.nn.Module):  # noqa: B903 - a module with a required argument
        def __init__(self, size):
            super().__init__()
            self.size = size

    from emvi.training import python_record

    assert python_record(Needs(2), None, "normal")["model"].startswith("!the model is a ")


@pytest.mark.slow
def test_a_map_run_of_a_plain_mixture_is_evaluated_and_analysed_as_a_point_fit(tmp_path):
    torch.manual_seed(0)
    x = torch.poisson(torch.cat([torch.full((60,), 2.0), torch.full((40,), 12.0)]))
    run = tmp_path / "run"
    result = emvi.train(poisson_mixture, None, x, auto_guide="delta", run_dir=run,
                        config=TrainConfig(epochs=50, batch_size=100, learning_rate=0.05, progress=False))
    out = _cli("evaluate", str(run))
    assert out.returncode == 0, out.stderr
    metrics = json.loads((run / "evaluation_train.json").read_text())
    with torch.no_grad():
        point = result.guide.median(x)
        mixture = torch.distributions.Poisson(point["rates"]).log_prob(x[:, None]) + point["weights"].log()
        exact = torch.logsumexp(mixture, -1).mean().item()  # log p(x_n | weights, rates), z summed out
    assert metrics["log_likelihood_nats_per_item"] == pytest.approx(exact, rel=1e-5)
    out = _cli("analyze", str(run))
    assert out.returncode == 0, out.stderr
    assert "rates[1]" in (run / "posterior_summary.csv").read_text()


def test_emvis_pyro_modules_train_beside_the_users_in_either_mode():
    from pyro.nn import PyroModule, PyroParam

    from emvi.models.mixture import MixtureConfig, MixtureModel
    from emvi.nn import uses_local_params

    class Shift(PyroModule):  # the user's: built under the user's setting
        def __init__(self):
            super().__init__()
            self.shift = PyroParam(torch.zeros(2))

    with pyro.settings.context(module_local_params=False):
        users = Shift()
    mixture = MixtureModel(MixtureConfig(num_components=2), 2)  # emvi's keeps its own mode and does not count
    assert uses_local_params(mixture, users) is False and uses_local_params(mixture) is None


def test_the_svi_loop_names_no_run_directory():
    from pathlib import Path

    import emvi.inference as inference

    folder = Path(inference.__file__).parent
    for name in ("svi_loop.py", "runner.py", "train_config.py"):
        assert "rundir" not in (folder / name).read_text().replace("emvi.rundir.RunDirectory", "")
