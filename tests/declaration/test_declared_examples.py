"""The example declarations of examples/declared/: each spec file states the same model as its Python declaration,
trains at tiny settings through `emvi fit SPEC` and is analysed by `emvi analyze`; user modules are found through
`[model] module` and `--import`; spec errors name the field and the file."""

import json
import sys
from pathlib import Path

import pytest

from emvi.catalog.declared import DeclaredConfig, declaration_of
from emvi.cli import main
from emvi.errors import ConfigError
from emvi.spec import load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "declared"
SPECS = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".toml", ".yaml"))
sys.path.insert(0, str(EXAMPLES))
import models  # noqa: E402

PYTHON = {d.name: d for d in models.EXAMPLES}
TINY = ["inference.progress=false", "outputs.plots=false", "data.limit=120"]


def _tiny(spec):
    return TINY + (["inference.epochs=1", "inference.batch_size=60"] if spec.method == "svi" else
                   ["inference.max_iter=5", "inference.n_init=1"])


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_spec_declaration_is_the_python_declaration(path):
    spec = load_spec(path)
    declared = declaration_of(spec.model_config, None, spec.model)
    if declared.name in PYTHON:
        python = PYTHON[declared.name]
        assert declared.sites == python.sites and declared.description == python.description


def test_each_python_declaration_takes_at_most_15_lines():
    import ast

    tree = ast.parse((EXAMPLES / "models.py").read_text())
    lengths = {node.targets[0].id: node.end_lineno - node.lineno + 1 for node in tree.body
               if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
               and getattr(node.value.func, "id", None) == "declare"}
    assert set(lengths) == set(PYTHON) and max(lengths.values()) <= 15, lengths


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_example_trains_through_emvi_fit_and_is_analysed(path, tmp_path, capsys):
    spec = load_spec(path)
    run_dir = tmp_path / "run"
    args = ["fit", str(path), "--set", f"outputs.run_dir={str(run_dir)!r}"]
    for override in _tiny(spec):
        args += ["--set", override]
    assert main(args) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_train_items"] > 0
    assert main(["analyze", str(run_dir), "--num-samples", "3"]) == 0
    assert (run_dir / "inference_data.nc").is_file() and (run_dir / "posterior_summary.csv").is_file()
    assert main(["evaluate", str(run_dir), "--num-samples", "3", "--limit", "20"]) == 0
    evaluation = next(run_dir.glob("evaluation_*.json"))
    assert "is_loglik_nats" in json.loads(evaluation.read_text())


def test_a_python_declaration_is_found_by_import_and_by_the_spec_module_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(EXAMPLES)
    run_dir = tmp_path / "imported"
    assert main(["--import", "models", "fit", "hierarchical_mixture", "data/clusters.npz", "--epochs", "1",
                 "--progress", "false", "--no-plots", "--run-dir", str(run_dir)]) == 0
    assert json.loads((run_dir / "config.json").read_text())["spec"]["model"]["module"] == "models"
    spec = tmp_path / "by_module.toml"
    spec.write_text(f'[model]\nname = "poisson_regression_mixture"\nmodule = "models"\n[inference]\nepochs = 1\n'
                    f'progress = false\n[data]\ndataset = "{EXAMPLES / "data" / "regression_counts.npz"}"\n'
                    f'[outputs]\nplots = false\nrun_dir = "{tmp_path / "by_module"}"\n')
    assert main(["fit", str(spec)]) == 0
    assert main(["analyze", str(tmp_path / "by_module"), "--num-samples", "2"]) == 0
    capsys.readouterr()


def test_em_on_a_declared_mixture_through_the_cli(tmp_path, capsys):
    run_dir = tmp_path / "em"
    assert main(["fit", str(EXAMPLES / "gaussian_mixture_em.toml"), "--set", f"outputs.run_dir={str(run_dir)!r}",
                 "--set", "outputs.plots=false", "--set", "inference.max_iter=20"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == "em" and summary["log_likelihood_per_item"] > -5


@pytest.mark.parametrize("site, message", [
    ({"role": "latent", "family": "poisson", "rate": 2.0}, "model.sites.k: model 'declared', site 'k': an enumerated site"),
    ({"role": "latent", "family": "normal", "dim": 2, "loc": "nowhere"}, "unknown parent 'nowhere'"),
    ({"role": "latent", "famly": "normal"}, "model.sites.k: unknown key(s) ['famly']"),
])
def test_spec_errors_name_the_field_and_the_file(site, message, tmp_path, capsys):
    import tomli_w

    raw = {"model": {"name": "declared", "sites": {"k": site, "x": {"role": "observed", "family": "poisson",
                                                                    "rate": {"linear": ["k"]}}}}}
    path = tmp_path / "bad_spec.toml"
    path.write_text(tomli_w.dumps(raw))
    with pytest.raises(ConfigError) as caught:
        declaration_of(load_spec(path).model_config, None, "declared")
    assert "bad_spec.toml" in str(caught.value) and message in str(caught.value)
    assert main(["fit", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad_spec.toml" in err and message in err


def test_declared_entry_without_sites_is_refused():
    with pytest.raises(ConfigError, match="needs its sites"):
        declaration_of(DeclaredConfig(), None, "declared")
