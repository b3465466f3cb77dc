"""SVI's ``n_init`` restarts: restart r is the fit seeded by ``seed + r`` (start and SVI alike), each scored by the
same full-data ELBO; the run keeps the best and reloads to its parameters exactly; ``n_init=1`` is the plain fit, and
``--resume`` continues the winner as the plain fit of its seed would have."""

import json

import numpy as np
import pytest
import torch

from emvi.cli import main
from emvi.errors import ConfigError
from emvi.inference.methods import svi
from emvi.inference.restarts import run_restarts
from emvi.inference.runner import TrainConfig, train, training_objective
from emvi.runs import load_run

SITES = ('{"z": {"role": "latent", "family": "categorical", "categories": 2}, "x": {"role": "observed", '
         '"family": "normal", "loc": {"table": "z"}, "scale": {"table": "z"}}}')


@pytest.fixture(scope="module")
def three_clusters(tmp_path_factory):
    """Three separated clusters of unequal sizes for two components: k-means++ starts split them {A}{B,C} or {A,B}{C},
    two optima of different likelihood (a bad start exists)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-6, 1, (300, 1)), rng.normal(0, 1, (150, 1)), rng.normal(6, 1, (150, 1))])
    path = tmp_path_factory.mktemp("data") / "x.npy"
    np.save(path, rng.permutation(x))
    return path


def fit(data, run, *options):
    assert main(["fit", "declared", str(data), "--sites", SITES, "--no-plots", "--progress", "false", "--method",
                 "svi", "--epochs", "30", "--batch-size", "600", "--learning-rate", "0.05", "--run-dir", str(run),
                 *options]) == 0
    return json.loads((run / "summary.json").read_text())


def parameters(run) -> dict[str, torch.Tensor]:
    _, model, guide, _, _ = load_run(run)
    return {f"{owner}.{name}": value for owner, module in (("model", model), ("guide", guide))
            for name, value in module.state_dict().items()}


def objective(run, seed: int = 0) -> float:
    _, model, guide, data, _ = load_run(run)
    return training_objective(model, guide, data, TrainConfig(seed=seed, batch_size=600))


@pytest.mark.slow
def test_the_best_of_five_restarts_is_kept_and_each_restart_is_the_plain_fit_of_its_seed(three_clusters, tmp_path):
    summary = fit(three_clusters, tmp_path / "best", "--n-init", "5", "--seed", "3")
    objectives = summary["restart_objectives"]
    assert summary["n_init"] == 5 and len(objectives) == 5
    assert summary["chosen_restart"] == int(np.argmax(objectives))
    singles = [tmp_path / f"seed{3 + r}" for r in range(5)]
    for restart, run in enumerate(singles):  # restart r is the plain fit seeded by 3 + r, scored alike
        fit(three_clusters, run, "--seed", str(3 + restart))
        assert objective(run, seed=3) == pytest.approx(objectives[restart], rel=1e-12, abs=1e-12)
    assert max(objectives) - min(objectives) > 0.05  # some start ended in the worse optimum
    assert objective(tmp_path / "best", seed=3) == pytest.approx(max(objectives), rel=1e-12, abs=1e-12)
    winner, kept = parameters(singles[summary["chosen_restart"]]), parameters(tmp_path / "best")
    assert winner.keys() == kept.keys()
    assert all(torch.equal(winner[name], kept[name]) for name in winner)
    losses = [[json.loads(line)["train_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
              for run in (tmp_path / "best", singles[summary["chosen_restart"]])]
    assert losses[0] == losses[1] and len(losses[0]) == 30  # the winner's metrics alone


def test_one_restart_is_the_plain_fit(three_clusters, tmp_path):
    plain = fit(three_clusters, tmp_path / "plain", "--seed", "1")
    once = fit(three_clusters, tmp_path / "once", "--seed", "1", "--n-init", "1")
    assert "restart_objectives" not in once and once["final_train_loss"] == plain["final_train_loss"]
    before, after = parameters(tmp_path / "plain"), parameters(tmp_path / "once")
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_cli_n_init_writes_one_run_and_resume_continues_the_winner(three_clusters, tmp_path):
    run = tmp_path / "three"
    summary = fit(three_clusters, run, "--n-init", "3", "--epochs", "10", "--seed", "3")
    assert summary["n_init"] == 3 and len(summary["restart_objectives"]) == 3
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == []  # one run, no per-restart folders
    config = json.loads((run / "config.json").read_text())
    assert config["method_config"]["n_init"] == 3 and config["method_config"]["seed"] == 3  # the options asked for
    chosen = summary["chosen_restart"]
    assert chosen > 0  # (seed 3 of this data) the winner's own seed, 3 + chosen, must carry over to the resumption
    resumed = fit(three_clusters, run, "--n-init", "3", "--epochs", "20", "--seed", "3", "--resume")
    assert resumed["chosen_restart"] == chosen and resumed["epochs_run"] == 20
    straight = tmp_path / "straight"  # the winner's seed fitted for 20 epochs in one go
    fit(three_clusters, straight, "--seed", str(3 + chosen), "--epochs", "20")
    expected, continued = parameters(straight), parameters(run)
    assert all(torch.equal(expected[name], continued[name]) for name in expected)


def test_restarts_keep_the_first_highest_finite_objective():
    values = [float("nan"), 1.0, 3.0, 3.0, float("inf")]
    kept = run_restarts(lambda r: r, len(values), objective=lambda r: values[r])
    assert (kept.best, kept.chosen) == (2, 2) and kept.objectives[1:4] == (1.0, 3.0, 3.0)


def test_restarts_without_a_way_to_rebuild_the_model_are_refused():
    model = torch.nn.Linear(1, 1)
    with pytest.raises(ConfigError, match="train fits once, got n_init=2"):
        train(model, model, torch.zeros(4, 1), config=TrainConfig(n_init=2))
    with pytest.raises(ConfigError, match="n_init > 1 needs rebuild="):
        svi.fit(model, model, torch.zeros(4, 1), TrainConfig(n_init=2))
    with pytest.raises(ConfigError, match="n_init"):
        TrainConfig(n_init=0)
