"""``emvi analyze A B --compare-out``: point fits are compared on the same held-out items, all of them by default,
per item and in total, with the standard error of the difference; runs holding out different items are refused."""

import numpy as np
import pandas as pd
import pytest
import torch

from emvi.cli import main
from emvi.runs import load_run

pytestmark = pytest.mark.slow  # several CLI fits and exports


@pytest.fixture(scope="module")
def clusters(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-4, 1, size=(200, 1)), rng.normal(3, 0.5, size=(200, 1))])
    np.save(folder / "x.npy", x[rng.permutation(400)])
    spec = folder / "declared.toml"
    spec.write_text(f"""
[model]
name = "declared"
title = "two_gaussians"
[model.sites.z]
role = "latent"
family = "categorical"
categories = 2
[model.sites.x]
role = "observed"
family = "normal"
loc = {{ table = "z" }}
scale = {{ table = "z" }}
[inference]
method = "em"
n_init = 2
[data]
dataset = "{folder / 'x.npy'}"
valid_fraction = 0.5
[outputs]
run_dir = "{folder / 'declared'}"
plots = false
""")
    fits = {"one": ["-k", "1"], "two": ["-k", "2"]}
    for name, options in fits.items():
        assert main(["fit", "mixture", str(folder / "x.npy"), *options, "--family", "gaussian-diag",
                     "--valid-fraction", "0.5", "--run-dir", str(folder / name), "--no-plots"]) == 0
    assert main(["fit", str(spec)]) == 0
    return folder


def exact_held_out(run):
    entry, model, guide, valid, resolved = load_run(run, split="valid")
    with torch.no_grad():
        tensors = [t.to(torch.float64) for t in valid.tensors]
        return model.log_likelihood(*tensors).numpy()


def test_point_fits_are_ranked_on_all_the_same_held_out_items_with_a_standard_error(clusters, capsys):
    out = clusters / "table"
    assert main(["analyze", str(clusters / "one"), str(clusters / "declared"), str(clusters / "two"),
                 "--compare-out", str(out)]) == 0
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert set(table["num_items"]) == {200}  # every held-out item (the declared export alone caps at 100)
    one, two = exact_held_out(clusters / "one"), exact_held_out(clusters / "two")
    assert table.loc["one", "held_out_log_likelihood"] == pytest.approx(one.sum(), rel=1e-6)
    assert table.loc["two", "held_out_log_likelihood"] == pytest.approx(two.sum(), rel=1e-6)
    assert table.index[-1] == "one"  # one Gaussian for two clusters is the worst, by its held-out items
    best = table.index[0]
    assert table.loc[best, "difference"] == 0.0
    difference = (exact_held_out(clusters / best) - one) if best != "declared" else None
    if difference is not None:
        assert table.loc["one", "difference_se"] == pytest.approx(np.sqrt(200 * difference.var()), rel=1e-6)
    assert table.loc["one", "num_parameters"] == 2 and table.loc["two", "num_parameters"] == 5  # as BIC counts


def test_limit_compares_the_first_items_only(clusters):
    out = clusters / "limited"
    assert main(["analyze", str(clusters / "one"), str(clusters / "two"), "--limit", "30",
                 "--compare-out", str(out)]) == 0
    table = pd.read_csv(out / "comparison.csv", index_col=0)
    assert set(table["num_items"]) == {30}
    assert table.loc["one", "held_out_log_likelihood"] == pytest.approx(exact_held_out(clusters / "one")[:30].sum(),
                                                                        rel=1e-6)


def test_runs_holding_out_different_items_are_refused_in_one_line(clusters, capsys):
    other = clusters / "other"
    assert main(["fit", "mixture", str(clusters / "x.npy"), "-k", "2", "--valid-fraction", "0.25",
                 "--run-dir", str(other), "--no-plots"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(clusters / "one"), str(other), "--compare-out", str(clusters / "refused")]) == 2
    err = capsys.readouterr().err.strip()
    assert "hold out different items" in err and "\n" not in err
