"""The method table (:mod:`emvi.inference.methods`): a fourth method is one module and one row, fitted through
``emvi.runs.run_fit`` with no other file edited; every method's ``summary.json`` has the :class:`FitResult` schema."""

import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from emvi.inference.methods import FitResult, Method, get_method, method_names, register_method, unregister_method
from emvi.models.mixture import MixtureConfig
from emvi.registry import get_model
from emvi.rundir import RunDirectory
from emvi.runs import load_run, run_fit

SCHEMA = {f.name for f in dataclasses.fields(FitResult)} - {"history", "metrics"}


# -- a throwaway fourth method: MAP by L-BFGS on the enumerated log joint ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class MAPConfig:
    max_iter: int = 200
    seed: int = 0
    device: str = "cpu"
    progress: bool = False


def map_ready(model, guide):
    return None if callable(getattr(model, "log_likelihood", None)) else "no exact log-likelihood to climb"


def map_fit(model, guide, train_data, config, *, valid_data=None, run=None, resume=False) -> FitResult:
    from emvi.inference.direct import climb

    x = train_data.tensors[0].double()
    model.to(torch.float64)
    started = time.perf_counter()
    before, after = climb(lambda: model.log_likelihood(x).sum() + model.log_prior(), list(model.parameters()),
                          max_iter=config.max_iter)
    result = FitResult("map", config.seed, after >= before, config.max_iter,
                       ({"epoch": 0, "train_loss": -before / len(x)}, {"epoch": 1, "train_loss": -after / len(x)}),
                       {"log_joint_per_item": after / len(x)}, time.perf_counter() - started)
    if run is not None:
        run.save_checkpoint({"model": model.state_dict()})
    return result


def map_load(model, guide, run, device):
    model.to(device=device, dtype=torch.float64)
    model.load_state_dict(run.load_checkpoint(map_location=device)["model"])


@pytest.fixture
def map_method():
    register_method(Method("map", MAPConfig, map_fit, map_load, ready=map_ready))
    yield get_method("map")
    unregister_method("map")


def _counts(tmp_path, n=80):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.poisson([2.0, 8.0], (n // 2, 2)), rng.poisson([9.0, 1.0], (n - n // 2, 2))]).astype(float)
    path = tmp_path / "x.csv"
    np.savetxt(path, x, delimiter=",")
    return path


def test_a_fourth_method_is_one_module_and_one_row(tmp_path, map_method):
    assert method_names()[:3] == ("svi", "em", "mcmc") and "map" in method_names()
    entry = get_model("mixture")
    run = run_fit(entry, MixtureConfig(num_components=2, family="poisson"), MAPConfig(),
                  {"dataset": str(_counts(tmp_path))}, method="map", run_dir=tmp_path / "run", plots=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "map" and summary["converged"] and summary["log_joint_per_item"] < 0
    assert SCHEMA <= set(summary) and summary["num_train_items"] == 80
    assert len(RunDirectory(run).read_metrics()) == 2
    _, model, _, dataset, resolved = load_run(run)
    assert resolved["method"] == "map" and resolved["method_config"]["max_iter"] == 200
    with torch.no_grad():
        value = float(model.log_likelihood(dataset.x.double()).mean() + model.log_prior() / len(dataset))
    assert value == pytest.approx(summary["log_joint_per_item"], rel=1e-9)


def test_a_model_without_the_protocol_is_refused_in_one_line(tmp_path, map_method):
    from emvi.errors import ConfigError
    from emvi.models.ppca import PPCAConfig

    with pytest.raises(ConfigError, match="cannot be fit by 'mcmc'.*Bayesian view"):
        run_fit(get_model("ppca"), PPCAConfig(latent_dim=1), get_method("mcmc").config_class(progress=False),
                {"dataset": str(_counts(tmp_path))}, method="mcmc", run_dir=tmp_path / "run", plots=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method, options", [("svi", {"epochs": 2, "batch_size": 40, "progress": False}),
                                             ("em", {"max_iter": 50, "progress": False}),
                                             ("mcmc", {"num_samples": 8, "warmup_steps": 8, "num_chains": 1,
                                                       "progress": False})])
def test_summary_json_has_the_fit_result_schema_for_every_method(tmp_path, method, options):
    config = get_method(method).config_class(seed=3, **options)
    run = run_fit(get_model("mixture"), MixtureConfig(num_components=2, family="poisson"), config,
                  {"dataset": str(_counts(tmp_path))}, method=method, run_dir=tmp_path / method, plots=False)
    summary = json.loads((run / "summary.json").read_text())
    assert SCHEMA <= set(summary), SCHEMA - set(summary)
    assert summary["method"] == method and summary["seed"] == 3 and summary["seconds"] > 0
    assert summary["converged"] is (None if method != "em" else True)
    assert summary["n_iter"] == {"svi": 2, "em": summary["n_iter"], "mcmc": 8}[method] and summary["n_iter"] > 0


def test_method_names_are_spelled_only_in_the_table_and_the_spec_parser():
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "emvi"
    for name in ('"em"', '"mcmc"'):
        files = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if name in p.read_text())
        assert set(files) <= {"inference/methods/names.py", "spec.py", "cli.py"} and len(files) <= 3, (name, files)
