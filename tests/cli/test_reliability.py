"""Regression tests of issue 17: every bad input ends in one line ``emvi: error: ...`` (exit 2) or succeeds, and a
failed command changes no existing run directory. Each test is one reported repro, on tiny data."""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
import pytest
import torch

from emvi.cli import main
from emvi.errors import ConfigError, EmviError
from emvi.estimators import HMM, Mixture
from emvi.inference.runner import TrainConfig
from emvi.rundir import RunDirectory

TINY_VAE = ["--dataset", "digits", "--limit", "20", "--epochs", "1", "--hidden-dims", "8", "--latent-dim", "2",
            "--no-plots", "--progress", "false"]


def run_cli(capsys, *argv) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def assert_one_line_error(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emvi: error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def snapshot(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savetxt("gauss.csv", rng.normal(size=(20, 3)), delimiter=",")
    np.savetxt("unit.csv", rng.uniform(size=(20, 4)), delimiter=",")
    np.savetxt("counts.csv", rng.integers(0, 5, size=(20, 3)), delimiter=",")
    np.savez("seq_bad.npz", x=rng.normal(size=(4, 6, 2)), lengths=np.array([6, 50, 0, -3]))
    return tmp_path


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae") / "run"
    assert main(["fit", "vae", *TINY_VAE, "--run-dir", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def em_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("em")
    np.savetxt(base / "counts.csv", np.random.default_rng(1).integers(0, 5, size=(20, 3)), delimiter=",")
    folder = base / "run"
    assert main(["fit", "mixture", str(base / "counts.csv"), "--family", "poisson", "-k", "2", "--method", "em",
                 "--run-dir", str(folder), "--no-plots", "--progress", "false"]) == 0
    return folder


# 1. resumes of em fits and of other models' runs --------------------------------------------------------------------

def test_em_resume_with_other_k_names_the_field_and_changes_nothing(files, capsys, em_run):
    before = snapshot(em_run)
    rc, err = run_cli(capsys, "fit", "mixture", em_run.parent / "counts.csv", "--family", "poisson", "-k", "5",
                      "--method", "em", "--run-dir", em_run, "--resume", "--no-plots")
    assert_one_line_error(rc, err, "model_config.num_components")
    assert snapshot(em_run) == before


def test_resume_of_another_models_run_is_refused(files, capsys, em_run):
    before = snapshot(em_run)
    rc, err = run_cli(capsys, "fit", "vae", *TINY_VAE, "--run-dir", em_run, "--resume")
    assert_one_line_error(rc, err, "model is 'mixture'")
    assert snapshot(em_run) == before


def test_em_fit_is_not_resumable(files, capsys, em_run):
    before = snapshot(em_run)
    rc, err = run_cli(capsys, "fit", "mixture", em_run.parent / "counts.csv", "--family", "poisson", "-k", "2",
                      "--method", "em", "--run-dir", em_run, "--resume", "--no-plots")
    assert_one_line_error(rc, err, "only svi fits resume")
    assert snapshot(em_run) == before
    assert (em_run / "metrics.jsonl").is_file()  # 9. EM run dirs have their metrics


# 2. the VAE's Bernoulli likelihood: data in [0, 1], and fit, evaluate and analyze agree ------------------------------

def test_default_vae_run_evaluates_and_analyzes(files, capsys, vae_run):
    rc, err = run_cli(capsys, "evaluate", vae_run, "--num-samples", "2")
    assert rc == 0, err
    rc, err = run_cli(capsys, "analyze", vae_run, "--num-samples", "2")
    assert rc == 0, err


def test_vae_refuses_data_outside_the_unit_interval(files, capsys):
    rc, err = run_cli(capsys, "fit", "vae", "gauss.csv", "--epochs", "1", "--run-dir", "r", "--no-plots")
    assert_one_line_error(rc, err, "[0, 1]")
    assert not (files / "r").exists()


def test_vae_refuses_three_dimensional_data(files, capsys):
    np.save("cube.npy", np.random.default_rng(0).uniform(size=(5, 4, 3)))
    rc, err = run_cli(capsys, "fit", "vae", "cube.npy", "--epochs", "1", "--run-dir", "r", "--no-plots")
    assert_one_line_error(rc, err, "flat observations")
    assert not (files / "r").exists()


# 3 and 5. option checks ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("clip_grad_norm", -1.0), ("clip_grad_norm", 0.0), ("weight_decay", -1.0),
                                          ("seed", -1), ("learning_rate", math.nan), ("momentum", -0.5),
                                          ("lr_decay", 0.0)])
def test_train_config_refuses_bad_values(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("options", [dict(epochs=-1), dict(epochs=0), dict(batch_size=-4), dict(learning_rate=-1.0),
                                     dict(learning_rate=math.nan)])
def test_svi_mixture_refuses_bad_options(options):
    with pytest.raises(EmviError):  # checked at fit, scikit-learn's convention
        Mixture(2, method="svi", **options).fit(np.random.default_rng(0).normal(size=(20, 2)))


@pytest.mark.parametrize("size", [(2, 0), (-1, 5)])
def test_hmm_sample_refuses_bad_sizes(size):
    x = np.random.default_rng(0).normal(size=(30, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 3-iteration Baum-Welch does not converge; not what is tested
        model = HMM(2, max_iter=3).fit(x)
    with pytest.raises(EmviError):
        model.sample(*size)


# 4. one data check per model, whatever the method --------------------------------------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["hmm", "seq_bad.npz", "--method", "svi"], "lengths"),
    (["hmm", "gauss.csv", "--method", "svi"], "needs sequences"),
    (["mixture", "counts.csv", "--family", "categorical", "--num-categories", "2", "--method", "svi"], "categorical"),
    (["mixture", "unit.csv", "--family", "bernoulli", "--method", "svi"], "binary"),
    (["mixture", "counts.csv", "-k", "50", "--method", "svi"], "num_components=50"),
    (["mixture", "counts.csv", "-k", "50", "--method", "em"], "num_components=50"),
])
def test_data_checks_apply_whatever_the_method(files, capsys, argv, needle):
    rc, err = run_cli(capsys, "fit", *argv, "--epochs" if "svi" in argv else "--max-iter", "1", "--run-dir", "r",
                      "--no-plots")
    assert_one_line_error(rc, err, needle)
    assert not (files / "r").exists()


# 6 and 7. failed resumes and half-written run directories -------------------------------------------------------------

def test_failed_resume_leaves_the_run_unchanged(files, capsys, vae_run):
    before = snapshot(vae_run)
    rc, err = run_cli(capsys, "fit", "vae", *TINY_VAE, "--epochs", "2", "--learning-rate", "0.5", "--run-dir", vae_run,
                      "--resume")
    assert_one_line_error(rc, err, "learning_rate")
    assert snapshot(vae_run) == before


def test_resume_into_a_new_folder_creates_nothing(files, capsys):
    rc, err = run_cli(capsys, "fit", "vae", *TINY_VAE, "--run-dir", "new", "--resume")
    assert_one_line_error(rc, err, "not a run directory")
    assert not (files / "new").exists()


def test_run_killed_before_its_first_checkpoint_can_be_reused(files, capsys):
    folder = files / "half"
    folder.mkdir()
    (folder / "spec.toml").write_text("[model]\nname = 'vae'\n")
    (folder / "config.json").write_text("{}\n")
    (folder / ".checkpoint.pt.abc123.tmp").write_bytes(b"torn")
    rc, err = run_cli(capsys, "fit", "vae", *TINY_VAE, "--run-dir", folder)
    assert rc == 0, err
    assert RunDirectory(folder).has_checkpoint()
    assert not list(folder.glob(".*.tmp"))


def test_folder_with_foreign_files_is_not_reused(files, capsys):
    folder = files / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    rc, err = run_cli(capsys, "fit", "vae", *TINY_VAE, "--run-dir", folder)
    assert_one_line_error(rc, err, "not empty")
    assert snapshot(folder) == {"notes.txt": hashlib.sha256(b"keep me").hexdigest()}


def test_data_check_failure_writes_nothing(files, capsys):
    rc, err = run_cli(capsys, "fit", "mixture", "unit.csv", "--family", "bernoulli", "--run-dir", "r", "--no-plots")
    assert_one_line_error(rc, err)
    assert not (files / "r").exists()


# 8. one line instead of a traceback ------------------------------------------------------------------------------------

def test_bad_files_and_options_end_in_one_line(files, capsys, vae_run):
    np.save("empty.npy", np.zeros((0, 3)))
    (files / "corrupt.npz").write_bytes(b"PK\x03\x04garbage")
    (files / "latin1.toml").write_bytes(b'[model]\nname = "vae"\n# caf\xe9\n')
    (files / "AFILE").write_text("x")
    cases = [
        ["fit", "vae", "empty.npy", "--run-dir", "r"],
        ["fit", "vae", "corrupt.npz", "--run-dir", "r"],
        ["fit", "latin1.toml"],
        ["fit", "vae", *TINY_VAE, "--seed", "-1", "--run-dir", "r"],
        ["fit", "vae", *TINY_VAE, "--weight-decay", "-1", "--run-dir", "r"],
        ["fit", "vae", *TINY_VAE, "--run-dir", "AFILE"],
        ["fit", "vae", *TINY_VAE, "--out", "AFILE"],
        ["fit", "vae", *TINY_VAE, "--latent-dim", "1000000000", "--run-dir", "r"],
        ["fit", "vae", *TINY_VAE, "--hidden-dims", "1000000000", "--run-dir", "r"],
        ["sample", vae_run, "--num-samples", "-3"],
        ["sample", vae_run, "--output", files / "missing" / "s.npy"],
    ]
    for argv in cases:
        rc, err = run_cli(capsys, *argv)
        assert_one_line_error(rc, err)
    assert not (files / "r").exists() and not (files / "missing").exists()


def test_checkpoint_with_nan_weights_is_refused(files, capsys, vae_run, tmp_path):
    copy = tmp_path / "nan_run"
    copy.mkdir()
    for path in vae_run.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    state = torch.load(copy / "checkpoint.pt", weights_only=True)
    state["model"] = {k: v * math.nan if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, copy / "checkpoint.pt")
    before = snapshot(copy)
    for command in (["evaluate", copy, "--num-samples", "2"], ["sample", copy]):
        rc, err = run_cli(capsys, *command)
        assert_one_line_error(rc, err, "NaN")
    assert snapshot(copy) == before


# 9. -------------------------------------------------------------------------------------------------------------------

def test_sample_output_is_written_where_reported(files, capsys, vae_run):
    rc, err = run_cli(capsys, "sample", vae_run, "--output", files / "draws")
    assert_one_line_error(rc, err, ".npy")
    assert not list(files.glob("draws*"))
    rc = main(["sample", str(vae_run), "--num-samples", "3", "--output", str(files / "draws.npy")])
    out = capsys.readouterr().out
    assert rc == 0 and f"written to {files / 'draws.npy'}" in out
    assert np.load(files / "draws.npy").shape[0] == 3


def test_evaluate_a_run_written_by_train_says_what_it_is(files, capsys):
    import emvi
    from emvi.data import load_dataset
    from emvi.models.vae import VAEConfig
    from emvi.registry import get_model

    data = load_dataset("digits", limit=20)
    model, guide = get_model("vae").build(VAEConfig(latent_dim=2, hidden_dims=(8,)), data.info())
    emvi.train(model, guide, data, config=TrainConfig(epochs=1, progress=False), run_dir=files / "api")
    rc, err = run_cli(capsys, "evaluate", files / "api")
    assert_one_line_error(rc, err, "cannot rebuild", "built with arguments", "emvi fit")


def test_npz_without_x_is_refused(files, capsys):
    np.savez("no_x.npz", a=np.zeros((5, 2)))
    rc, err = run_cli(capsys, "fit", "mixture", "no_x.npz", "--run-dir", "r", "--no-plots")
    assert_one_line_error(rc, err, "no array 'x'")


def test_spec_string_for_an_int_is_refused(files, capsys):
    (files / "s.toml").write_text('[model]\nname = "vae"\n[inference]\nepochs = "1"\n')
    rc, err = run_cli(capsys, "fit", "s.toml")
    assert_one_line_error(rc, err, "inference.epochs must be of type int")


def test_yaml_spec_reads_exponent_floats(files, capsys):
    from emvi.spec import load_spec

    (files / "s.yaml").write_text("model:\n  name: vae\ninference:\n  learning_rate: 1e-3\n")
    assert load_spec(files / "s.yaml").method_config.learning_rate == pytest.approx(1e-3)


def test_directory_named_like_a_file_is_reported_as_a_directory(files, capsys):
    (files / "dir.csv").mkdir()
    rc, err = run_cli(capsys, "fit", "vae", "dir.csv", "--run-dir", "r")
    assert_one_line_error(rc, err, "is a directory")


def test_em_for_a_gaussian_composed_latent_is_refused_before_writing(files, capsys):
    """Found by the fuzzer: the refusal came from the E-step, after spec.toml and config.json were written."""
    rc, err = run_cli(capsys, "fit", "composed", "unit.csv", "--method", "em", "--run-dir", "r", "--no-plots")
    assert_one_line_error(rc, err, "discrete latent")
    assert not (files / "r").exists()
