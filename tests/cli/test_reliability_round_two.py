"""Regression tests of issue 33, item 6: each remaining class of bad input is answered in one line (CLI: exit 2,
``emvi: error: ...``; API: an ``emvi.errors`` exception naming the problem and the fix), and a refused command
changes nothing in the run it names. Each test is one reported repro, on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_reliability import assert_one_line_error, run_cli, snapshot
from toy_models import build_pair, linear_gaussian_data

from emvi import NonFiniteLossError, TrainConfig, train
from emvi.declaration import declare, latent, observed, param, table
from emvi.errors import CheckpointError, ConfigError, DataError, EmviError
from emvi.estimators import PPCA, Mixture

QUIET = ["--no-plots", "--progress", "false"]


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savetxt("gauss.csv", rng.normal(size=(30, 3)), delimiter=",")
    np.savetxt("unit.csv", rng.uniform(size=(30, 4)), delimiter=",")
    np.savetxt("counts.csv", rng.integers(0, 5, size=(30, 3)), delimiter=",")
    np.save("x.npy", np.concatenate([rng.normal(-3, 1, (30, 1)), rng.normal(3, 1, (30, 1))]))
    return tmp_path


@pytest.fixture(scope="module")
def svi_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("svi")
    np.savetxt(base / "unit.csv", np.random.default_rng(2).uniform(size=(30, 4)), delimiter=",")
    folder = base / "run"
    argv = ["fit", "vae", str(base / "unit.csv"), "--epochs", "1", "--hidden-dims", "4", "--latent-dim", "2",
            "--batch-size", "10", *QUIET]
    from emvi.cli import main

    assert main([*argv, "--run-dir", str(folder)]) == 0
    return folder, argv


# -- a checkpoint whose training state has another layout: refused before anything is rewritten -------------------------

@pytest.mark.parametrize("key, value", [
    ("optimizer", {"weights": [1.0]}),
    ("optimizer", {"state": {}, "param_groups": ["lr"]}),
    ("rng", "not a generator state"),
    ("rng", {"torch": torch.zeros(3)}),
    ("epoch", "3"),
    ("history", 5),
    ("scheduler", [0.5]),
    ("best_valid", "inf"),
])
def test_resume_of_a_checkpoint_with_another_training_state_layout_is_one_line(files, capsys, svi_run, tmp_path,
                                                                                 key, value):
    import shutil

    folder, argv = svi_run
    run = shutil.copytree(folder, tmp_path / "copy")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state[key] = value
    torch.save(state, run / "checkpoint.pt")
    before = snapshot(run)
    rc, err = run_cli(capsys, *argv[:3], "--epochs", "2", *argv[5:], "--run-dir", run, "--resume")
    assert_one_line_error(rc, err, "another layout", "refit")
    assert snapshot(run) == before  # spec.toml and config.json included


def test_api_resume_with_another_layout_raises_checkpoint_error(tmp_path):
    data = linear_gaussian_data(40)
    config = TrainConfig(epochs=1, batch_size=20, progress=False)
    model, guide = build_pair(seed=0)
    train(model, guide, data, config=config, run_dir=tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    state["epoch"] = -1
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="another layout"):
        train(model, guide, data, config=TrainConfig(epochs=2, batch_size=20, progress=False),
              run_dir=tmp_path / "run", resume=True)


# -- a read-only run directory ----------------------------------------------------------------------------------------

def test_read_only_run_is_refused_before_any_work(files, capsys, svi_run, monkeypatch, tmp_path):
    import os
    import shutil

    run = shutil.copytree(svi_run[0], tmp_path / "copy")
    before = snapshot(run)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if os.fspath(path) == str(run)
                        else real_access(path, mode, **kw))  # root ignores permission bits: pretend they count
    for command in ("evaluate", "sample", "analyze"):
        rc, err = run_cli(capsys, command, run, "--num-samples", "2")
        assert_one_line_error(rc, err, "read-only", "writable")
    assert snapshot(run) == before


def test_a_write_refused_by_the_file_system_is_one_line(files, capsys, svi_run, monkeypatch):
    import emvi.rundir

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(emvi.rundir.tempfile, "mkstemp", refuse)
    before = snapshot(svi_run[0])
    rc, err = run_cli(capsys, "evaluate", svi_run[0], "--num-samples", "2")
    assert_one_line_error(rc, err, "read-only", "writable")
    assert snapshot(svi_run[0]) == before


# -- options: special floats, huge sizes, options a model cannot use --------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["mixture", "counts.csv", "--family", "poisson", "--prior-strength", "inf"], "prior_strength"),
    (["mixture", "counts.csv", "--family", "categorical", "--prior-strength", "inf"], "prior_strength"),
    (["mixture", "counts.csv", "--family", "bernoulli", "--prior-strength", "inf", "--binarize", "static"],
     "prior_strength"),
    (["mixture", "gauss.csv", "--floor", "inf"], "floor"),
    (["vae", "unit.csv", "--latent-dim", str(2**63)], "latent_dim"),
    (["vae", "unit.csv", "--hidden-dims", str(2**64)], "hidden_dims"),
    (["ppca", "gauss.csv", "--hidden-dims", "-1", "--method", "svi"], "hidden_dims"),
    (["fa", "gauss.csv", "--latent-dim", str(2**63)], "latent_dim"),
    (["mixture", "gauss.csv", "--method", "svi", "--elbo", "meanfield"], "meanfield"),
    (["mixture", "gauss.csv", "--method", "svi", "--max-plate-nesting", "0"], "max_plate_nesting"),
    (["vae", "unit.csv", "--max-plate-nesting", "0"], "max_plate_nesting"),
    *[(["composed", "counts.csv", "--method", "em", "--weight-concentration", v], "weight_concentration")
      for v in ("nan", "-1", "0", "inf")],
    (["vae", "unit.csv", "--import", "..x"], "module name"),
])
def test_bad_options_are_one_line(files, capsys, argv, needle):
    rc, err = run_cli(capsys, "fit", *argv, "-k" if argv[0] in ("mixture",) else "--epochs", "2", "--epochs", "1",
                      "--run-dir", "r", *QUIET)
    assert_one_line_error(rc, err, needle)


@pytest.mark.parametrize("source, needle", [("raise ValueError('nope')", "raised ValueError"),
                                            ("def f(:\n", "raised SyntaxError"),
                                            ("import sys\nsys.exit(4)", "sys.exit(4)")])
def test_failing_user_modules_are_one_line_from_the_cli(files, capsys, source, needle):
    name = f"user_module_{abs(hash(source))}"
    (files / f"{name}.py").write_text(source)
    rc, err = run_cli(capsys, "fit", "vae", "unit.csv", "--import", name, "--run-dir", "r", *QUIET)
    assert_one_line_error(rc, err, needle)
    assert not (files / "r").exists()


def test_kl_warm_up_leaves_enumerated_sites_alone(files, capsys, tmp_path):
    """A mixture's only latent is the enumerated z (weights and means are parameters): KL warm-up has nothing to
    scale, so the fit equals the fit without it, step for step (it used to crash TraceEnum_ELBO's scale check)."""
    import json

    losses = []
    for extra in ([], ["--kl-warmup-epochs", "1e300"]):
        run = tmp_path / f"run{len(losses)}"
        rc, err = run_cli(capsys, "fit", "mixture", "gauss.csv", "-k", "2", "--method", "svi", "--epochs", "3",
                          "--batch-size", "10", *extra, "--run-dir", run, *QUIET)
        assert rc == 0, err
        losses.append([json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


# -- evaluate/analyze sample counts and the non-finite-loss message ----------------------------------------------------

@pytest.mark.parametrize("command", ["evaluate", "analyze"])
def test_unbounded_num_samples_is_refused_with_its_bound(files, capsys, svi_run, command):
    before = snapshot(svi_run[0])
    rc, err = run_cli(capsys, command, svi_run[0], "--num-samples", str(10**20))
    assert_one_line_error(rc, err, "--num-samples", "100000")
    rc, err = run_cli(capsys, command, svi_run[0], "--num-samples", "1e20")
    assert_one_line_error(rc, err, "--num-samples")
    assert snapshot(svi_run[0]) == before


def test_non_finite_loss_before_the_first_checkpoint_says_none_was_written(tmp_path):
    data = linear_gaussian_data(40)
    model, guide = build_pair(seed=0)
    config = TrainConfig(epochs=2, batch_size=10, learning_rate=1e30, optimizer="sgd", progress=False)
    with pytest.raises(NonFiniteLossError) as caught:
        train(model, guide, data, config=config, run_dir=tmp_path / "run")
    assert "no checkpoint was written" in str(caught.value) and "last good checkpoint" not in str(caught.value)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# -- declared models ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, needle", [
    (lambda: declare("m", latent("z", "categorical", categories=2**63 - 1),
                     observed("x", "normal", dim=1, loc=table("z"), scale=1.0)), "categories must be an integer"),
    (lambda: declare("m", latent("t", "normal", dim=-3), observed("x", "normal", dim=1, loc="t", scale=1.0)),
     "dim must be an integer"),
    (lambda: declare("m", param("w", "normal", shape="3", loc=0.0, scale=1.0),
                     observed("x", "normal", dim=1, loc=0.0, scale=1.0)), "shape must be an integer"),
    (lambda: declare("m", latent("a.b", "categorical", categories=2),
                     observed("x", "normal", dim=1, loc=table("a.b"), scale=1.0)), "not identifiers"),
    (lambda: declare("m", latent("", "categorical", categories=2), observed("x", "normal", dim=1, scale=1.0)),
     "not identifiers"),
    (lambda: declare("m", "x ~ normal"), "takes sites made by"),
])
def test_malformed_declarations_raise_one_line(make, needle):
    with pytest.raises(ConfigError, match=needle) as caught:
        make()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("loc, needle", [
    ('{"mlp": ["t"], "hidden": "big"}', "mlp hidden"),
    ('{"mlp": ["t"], "hidden": [0]}', "mlp hidden"),
    ('{"mlp": ["t"], "hidden": [2.5]}', "mlp hidden"),
    ('{"module": "torch.nn:Bilinear", "inputs": ["t"]}', "f(in_features, out_features)"),
])
def test_malformed_declared_networks_are_one_line_from_the_cli(files, capsys, loc, needle):
    sites = ('{"t": {"role": "latent", "family": "normal", "dim": 1}, "x": {"role": "observed", "family": "normal", '
             f'"loc": {loc}, "scale": 1.0}}}}')
    rc, err = run_cli(capsys, "fit", "declared", "x.npy", "--sites", sites, "--epochs", "1", "--run-dir", "r", *QUIET)
    assert_one_line_error(rc, err, needle)


def test_declared_shape_given_as_a_string_is_one_line(files, capsys):
    sites = ('{"w": {"role": "param", "family": "normal", "shape": "3", "loc": 0.0, "scale": 1.0}, '
             '"x": {"role": "observed", "family": "normal", "loc": 0.0, "scale": 1.0}}')
    rc, err = run_cli(capsys, "fit", "declared", "x.npy", "--sites", sites, "--epochs", "1", "--run-dir", "r", *QUIET)
    assert_one_line_error(rc, err, "shape must be a list")


# -- the estimators' API -----------------------------------------------------------------------------------------------

def test_negative_stride_arrays_fit_as_their_copies():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (60, 2)), rng.normal(3, 1, (60, 2))])
    view = np.concatenate([x, 2 * x], 1)[::2, ::-1]
    assert any(s < 0 for s in view.strides)
    fitted, copied = Mixture(2, seed=0).fit(view), Mixture(2, seed=0).fit(view.copy())
    np.testing.assert_array_equal(fitted.means_, copied.means_)
    assert PPCA(1).fit(view).score(view) == PPCA(1).fit(view.copy()).score(view.copy())


@pytest.mark.parametrize("make, error, needle", [
    (lambda x: Mixture(2, means_init=np.full((2, 2), np.nan)).fit(x), DataError, "means_init"),
    (lambda x: Mixture(2, seed=0).fit(x * 1e200), DataError, "rescale"),
    (lambda x: Mixture(2, seed=2**63).fit(x), ConfigError, "seed"),
    (lambda x: Mixture(2, method="svi", learning_rate=float("inf")).fit(x), ConfigError, "learning_rate"),
])
def test_bad_estimator_arguments_raise_one_line(make, error, needle):
    x = np.random.default_rng(1).normal(size=(40, 2))
    with pytest.raises(error, match=needle) as caught:
        make(x)
    assert isinstance(caught.value, EmviError) and "\n" not in str(caught.value)


def test_an_option_given_a_bare_double_dash_is_one_line(files, capsys, svi_run):
    """``--compare-out=--``: argparse drops the '--' and leaves a list where one path belongs (found by the fuzzer)."""
    before = snapshot(svi_run[0])
    rc, err = run_cli(capsys, "analyze", svi_run[0], "--num-samples", "2", "--compare-out=--")
    assert_one_line_error(rc, err, "--compare-out=--")
    assert snapshot(svi_run[0]) == before
