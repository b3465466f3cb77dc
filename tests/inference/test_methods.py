"""Each fitting method has its own options (svi: TrainConfig, em: EMConfig, mcmc: MCMCConfig) in the CLI, spec files
and Python; EM runs to convergence by default; every fit uses all the data unless asked; restarts keep the best."""

import json

import numpy as np
import pytest
import torch

from emvi.cli import main
from emvi.errors import ConfigError
from emvi.estimators import HMM
from emvi.inference.em import EMConfig, fit_em, fit_em_with_restarts
from emvi.inference.initialization import hard_assignments, initial_centres
from emvi.inference.restarts import best_of_restarts
from emvi.models.mixture import MixtureConfig, MixtureModel
from emvi.rundir import RunDirectory
from emvi.spec import parse_spec


def _count_series(length=107, seed=0):
    """A 3-regime Poisson count series of ``length`` steps, one column, like a yearly count record."""
    rng = np.random.default_rng(seed)
    rates, state, out = np.array([2.0, 9.0, 25.0]), 0, []
    for _ in range(length):
        if rng.random() < 0.15:
            state = int(rng.integers(3))
        out.append(rng.poisson(rates[state]))
    return np.array(out, dtype=float)[:, None]


def _two_blob_counts(n=120, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.poisson([2.0, 8.0], (n // 2, 2)), rng.poisson([9.0, 1.0], (n - n // 2, 2))]).astype(float)


def test_em_from_the_cli_runs_to_convergence_on_every_item(tmp_path, capsys):
    np.savetxt(tmp_path / "counts.csv", _count_series(), delimiter=",")
    run = tmp_path / "hmm"
    assert main(["fit", "hmm", str(tmp_path / "counts.csv"), "--emission", "poisson", "-k", "3", "--run-dir", str(run),
                 "--no-plots"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["converged"]  # the old CLI stopped after epochs=10 iterations, unconverged
    tight = HMM(3, "poisson", max_iter=5000, tol=1e-12, seed=0).fit(_count_series())
    assert summary["log_likelihood"] == pytest.approx(tight.log_likelihood_, abs=0.01)
    assert summary["num_held_out_items"] == 0
    metrics = RunDirectory(run).read_metrics()
    assert len(metrics) == summary["n_iter"] + 1  # one line per E-step, the last one after the final M-step
    assert "did not converge" not in capsys.readouterr().out


def test_a_fit_holds_items_out_only_when_asked_and_says_how_many(tmp_path):
    np.savetxt(tmp_path / "x.csv", _two_blob_counts(), delimiter=",")
    for fraction, held_out in ((None, 0), ("0.25", 30)):
        run = tmp_path / f"run-{fraction}"
        extra = [] if fraction is None else ["--valid-fraction", fraction]
        assert main(["fit", "mixture", str(tmp_path / "x.csv"), "--family", "poisson", "-k", "2", "--method", "em",
                     "--run-dir", str(run), "--no-plots", *extra]) == 0
        summary = json.loads((run / "summary.json").read_text())
        assert summary["num_held_out_items"] == held_out and summary["num_train_items"] == 120 - held_out
        assert ("valid_log_likelihood_per_item" in summary) == bool(held_out)


def test_an_unconverged_fit_says_so_in_one_line_naming_the_options(tmp_path, capsys):
    np.savetxt(tmp_path / "x.csv", _two_blob_counts(), delimiter=",")
    assert main(["fit", "mixture", str(tmp_path / "x.csv"), "--family", "poisson", "-k", "2", "--method", "em",
                 "--max-iter", "1", "--tol", "0", "--run-dir", str(tmp_path / "r"), "--no-plots"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "did not converge" in line]
    assert len(notes) == 1 and "max_iter=1" in notes[0] and "--max-iter" in notes[0] and "--tol" in notes[0]


@pytest.mark.parametrize("args, message", [
    (["--method", "em", "--epochs", "5"], "--epochs is an option of --method svi"),
    (["--method", "svi", "--max-iter", "5"], "--max-iter is an option of --method em"),
    (["--method", "em", "--num-chains", "2"], "--num-chains is an option of --method mcmc"),
    (["--method", "em", "--n-init", "0"], "n_init must be"),
])
def test_each_method_refuses_another_methods_options_in_one_line(tmp_path, capsys, args, message):
    np.savetxt(tmp_path / "x.csv", _two_blob_counts(), delimiter=",")
    assert main(["fit", "mixture", str(tmp_path / "x.csv"), "--family", "poisson", "-k", "2", *args,
                 "--run-dir", str(tmp_path / "r"), "--no-plots"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emvi: error:") and message in lines[0]
    assert not (tmp_path / "r").exists()  # nothing is written before the options are valid


def test_spec_inference_table_holds_the_methods_own_fields():
    base = {"model": {"name": "mixture", "family": "poisson", "num_components": 2}}
    spec = parse_spec(base | {"inference": {"method": "em", "max_iter": 7, "tol": 1e-5, "n_init": 3}})
    assert spec.method_config == EMConfig(max_iter=7, tol=1e-5, n_init=3)
    assert spec.to_dict()["inference"]["max_iter"] == 7
    with pytest.raises(ConfigError, match=r"unknown key 'inference.epochs'.*max_iter"):
        parse_spec(base | {"inference": {"method": "em", "epochs": 7}})
    mcmc = parse_spec(base | {"inference": {"method": "mcmc", "num_samples": 10, "num_chains": 3}})
    assert mcmc.method_config.num_chains == 3 and mcmc.method_config.num_samples == 10


def test_best_of_restarts_keeps_the_highest_objective_and_draws_from_one_generator():
    draws = []

    def fit_once(generator):
        value = float(torch.rand((), generator=generator))
        draws.append(value)
        return {"objective": value}

    best = best_of_restarts(fit_once, 5, seed=3, objective=lambda o: o["objective"])
    generator = torch.Generator().manual_seed(3)
    assert draws == [float(torch.rand((), generator=generator)) for _ in range(5)]
    assert best["objective"] == max(draws)


def test_em_restarts_end_at_the_best_single_start():
    x = torch.as_tensor(np.concatenate([_two_blob_counts(seed=1), _two_blob_counts(seed=2) * 2]), dtype=torch.float64)
    config = MixtureConfig(num_components=4, family="poisson")

    def single_start(generator):
        model = MixtureModel(config, 2, dtype=torch.float64)
        model.m_step(hard_assignments(x, initial_centres(x, 4, "random", generator)), x)
        return fit_em(model, x, max_iter=200, tol=1e-8, warn=False).log_likelihood

    generator = torch.Generator().manual_seed(0)
    singles = [single_start(generator) for _ in range(4)]
    model = MixtureModel(config, 2, dtype=torch.float64)
    result = fit_em_with_restarts(model, x, EMConfig(max_iter=200, tol=1e-8, n_init=4, init="random"))
    assert result.log_likelihood == pytest.approx(max(singles), rel=1e-12)
    with torch.no_grad():  # the model holds the winning start's parameters
        assert float(model.log_likelihood(x).sum()) == pytest.approx(max(singles), rel=1e-9)


def test_evaluate_never_passes_training_rows_off_as_a_test_set(tmp_path, capsys):
    np.savetxt(tmp_path / "x.csv", _two_blob_counts(), delimiter=",")
    run = tmp_path / "r"
    assert main(["fit", "mixture", str(tmp_path / "x.csv"), "--family", "poisson", "-k", "2", "--method", "em",
                 "--valid-fraction", "0.25", "--run-dir", str(run), "--no-plots"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0  # auto: a file has no test split, so the 30 held-out items
    assert "evaluating: valid split (30 items)" in capsys.readouterr().out
    summary = json.loads((run / "summary.json").read_text())
    valid = json.loads((run / "evaluation_valid.json").read_text())
    assert valid["log_likelihood_per_item"] == pytest.approx(summary["valid_log_likelihood_per_item"], rel=1e-9)
    assert main(["evaluate", str(run), "--split", "test"]) == 2
    assert "has no test split" in capsys.readouterr().err
