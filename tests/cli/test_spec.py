"""Spec files and the CLI's fit/evaluate path, on a toy linear-Gaussian model registered the way user code would."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from toy_models import AmortisedGaussianGuide, LinearGaussianModel, linear_gaussian_data

from emvi import register_model
from emvi.cli import main
from emvi.errors import ConfigError
from emvi.rundir import load_checkpoint
from emvi.spec import apply_overrides, load_spec, parse_spec, read_spec_file


@dataclass(frozen=True)
class ToyConfig:
    latent_dim: int = 2
    """Size of z."""


@register_model("toy-linear-gaussian", config=ToyConfig, description="z ~ N(0, I), x ~ N(Wz + b, s^2 I)")
def build_toy(config: ToyConfig, data_info):
    dim = data_info.event_shape[0]
    return LinearGaussianModel(dim, config.latent_dim), AmortisedGaussianGuide(dim, config.latent_dim)


SPEC = """
[model]
name = "toy-linear-gaussian"
latent_dim = 2

[inference]
epochs = 3
batch_size = 40
learning_rate = 0.02
progress = false

[data]
dataset = "toy.npy"
valid_fraction = 0.2

[outputs]
out = "runs"
plots = true
"""


@pytest.fixture
def spec_file(tmp_path):
    np.save(tmp_path / "toy.npy", linear_gaussian_data(200).numpy())
    path = tmp_path / "toy.toml"
    path.write_text(SPEC)
    return path


def test_spec_round_trips_through_its_resolved_form(spec_file):
    spec = load_spec(spec_file)
    assert spec.model == "toy-linear-gaussian" and spec.model_config.latent_dim == 2
    assert spec.method_config.epochs == 3 and spec.method == "svi"
    assert spec.data.dataset.endswith("toy.npy")
    again = parse_spec(spec.to_dict())
    assert again == spec


def test_yaml_spec_equals_toml_spec(spec_file, tmp_path):
    import yaml

    raw = read_spec_file(spec_file)
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(raw))
    assert load_spec(tmp_path / "toy.yaml") == load_spec(spec_file)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.latent_dims=3", r"unknown key 'model.latent_dims'; allowed keys: latent_dim"),
        ("inference.epochs=three", r"inference.epochs must be of type int, got 'three'"),
        ("inference.optimizer=adagrad", r"optimizer must be one of 'adam', 'adamw', 'sgd', 'rmsprop'"),
        ("inference.method=gibbs", r"inference.method must be one of svi, em, mcmc, got 'gibbs'"),
        ("data.valid_fraction=1.5", r"data.valid_fraction must lie in \[0, 1\)"),
        ("data.binarize=sometimes", r"data.binarize must be one of"),
        ("outputs.colour=1", r"unknown key 'outputs.colour'"),
        ("model.name=nope", r"unknown model 'nope'; registered models:"),
        ("training.epochs=1", r"unknown table 'training'"),
        ("epochs=1", r"must look like table.key=value"),
    ],
)
def test_each_spec_error_names_the_field_and_allowed_values(spec_file, override, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(spec_file, [override])


def test_malformed_files_and_tables(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nname = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_spec(bad)
    bad.write_text("[model]\nlatent_dim = 2\n")
    with pytest.raises(ConfigError, match="missing model.name"):
        load_spec(bad)
    bad.write_text('[model]\nname = "toy-linear-gaussian"\n[extras]\nx = 1\n')
    with pytest.raises(ConfigError, match="unknown spec table"):
        load_spec(bad)
    yml = tmp_path / "bad.yaml"
    yml.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec(yml)
    yml.write_text("!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):  # safe_load refuses arbitrary objects
        load_spec(yml)


def test_overrides_parse_toml_values():
    raw = apply_overrides({"inference": {"epochs": 3}}, ["inference.epochs=5", "data.dataset=digits", "inference.lr_schedule=none"])
    assert raw["inference"]["epochs"] == 5 and raw["data"]["dataset"] == "digits"


def test_fit_spec_writes_a_self_describing_run_directory(spec_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", str(spec_file), "--set", "outputs.run_dir=run1"]) == 0
    run = tmp_path / "run1"
    for name in ("config.json", "spec.toml", "checkpoint.pt", "best.pt", "metrics.jsonl", "summary.json", "loss_curve.png"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["spec"]["inference"]["epochs"] == 3
    assert json.loads(load_checkpoint(run / "checkpoint.pt")["config"])["spec"] == config["spec"]
    # the saved spec reproduces the run's configuration
    assert load_spec(run / "spec.toml").to_dict() == config["spec"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3

    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "train"]) == 0
    out = capsys.readouterr().out
    elbo = float(out.split("elbo_nats_per_item:")[1].split()[0])
    data = torch.as_tensor(np.load(tmp_path / "toy.npy"))
    assert np.isfinite(elbo) and elbo < 0
    # evaluation needs only the run directory: remove config.json and it reads the checkpoint's copy
    (run / "config.json").unlink()
    assert main(["evaluate", str(run), "--split", "train"]) == 0
    assert data.shape == (200, 4)


def test_fit_from_options_and_resume(spec_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["fit", "toy-linear-gaussian", "toy.npy", "--run-dir", "r", "--batch-size", "40", "--progress", "false", "--no-plots"]
    assert main(common + ["--epochs", "2"]) == 0
    assert main(common + ["--epochs", "4", "--resume"]) == 0
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    assert main(common + ["--epochs", "4"]) == 2  # refuses to overwrite a non-empty run directory


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "toy-linear-gaussian", "toy.npy", "--epochs", "-3"], "epochs must be an integer >= 0"),
        (["fit", "toy-linear-gaussian", "toy.npy", "--latent-dim", "two"], "latent_dim must be of type int"),
        (["fit", "toy-linear-gaussian", "missing.csv"], "does not exist"),
        (["fit", "toy-linear-gaussian", "toy.npy", "--dataset", "digits"], "either a data file or --dataset"),
        (["fit", "missing.toml"], "spec file 'missing.toml' does not exist"),
        (["evaluate", "nowhere"], "not an emvi run directory"),
    ],
)
def test_cli_errors_are_one_line(spec_file, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("emvi: error:") and message in err[0]


def test_analyze_refuses_a_user_model_without_an_export(spec_file, tmp_path, capsys):
    run_dir = tmp_path / "toy-run"
    assert main(["fit", str(spec_file), "--set", f"outputs.run_dir={run_dir.as_posix()}", "--set",
                 "outputs.plots=false"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no ArviZ export" in err
