"""Defects a new user met with declared models, each with the case that showed it."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from emvi.catalog.declared import build
from emvi.cli import main
from emvi.data import DataInfo
from emvi.declaration import declare, latent, linear, observed, table
from emvi.runs import load_run


def test_local_distribution_takes_its_documented_arguments():
    decl = declare("m", latent("z", "categorical", categories=2),
                   observed("x", "normal", dim=2, loc=table("z"), scale=1.0))
    model, _ = build(decl, DataInfo(5, (2,), arrays={"x": [2]}))
    site = next(s for s in decl.sites if s.name == "x")
    z = torch.tensor([0, 1, 1])
    distribution = model.local_distribution(site, {"z": z})
    loc = model.learned["x__loc"].detach()[z]
    expected = torch.distributions.Normal(loc, 1.0).log_prob(torch.zeros(3, 2)).sum(-1)
    torch.testing.assert_close(distribution.log_prob(torch.zeros(3, 2)).detach(), expected)


@pytest.mark.slow
def test_a_method_the_model_cannot_use_is_refused_before_the_run_directory_exists(tmp_path):
    out = subprocess.run([sys.executable, "-m", "emvi.cli", "fit", "vae", "--dataset", "digits", "--method", "em",
                          "--run-dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert not (tmp_path / "run").exists()


def test_load_run_returns_the_held_out_split_it_is_asked_for(tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).poisson(3.0, size=(50, 2)).astype(float))
    run = tmp_path / "run"
    assert main(["fit", "mixture", str(data), "--family", "poisson", "-k", "2", "--valid-fraction", "0.2",
                 "--run-dir", str(run), "--no-plots", "--progress", "false"]) == 0
    entry, model, guide, valid, resolved = load_run(run, split="valid")
    _, _, _, train, _ = load_run(run, split="train")
    assert entry.name == "mixture" and resolved["model"] == "mixture"
    assert len(valid) == 10 and len(train) == 50


def test_the_held_out_elbo_averages_draws_and_stays_below_the_exact_log_likelihood():
    from emvi.catalog.declared import EVALUATION_PARTICLES, evaluate_declared

    decl = declare("conjugate", latent("t", "normal", dim=1, loc=0.0, scale=1.0),
                   observed("x", "normal", dim=1, loc="t", scale=1.0))
    x = torch.randn(400, 1, generator=torch.Generator().manual_seed(0)) * 2**0.5
    model, guide = build(decl, DataInfo(400, (1,), arrays={"x": [1]}))
    exact = float(torch.distributions.Normal(0.0, 2**0.5).log_prob(x).mean())
    metrics = evaluate_declared(model, guide, (x,), num_samples=200)
    assert EVALUATION_PARTICLES >= 10
    assert metrics["elbo_nats_per_item"] < metrics["is_loglik_nats"] <= exact + 0.05


SITES_JSON = ('{"z": {"role": "latent", "family": "categorical", "categories": 2}, "x": {"role": "observed", '
              '"family": "normal", "loc": {"table": "z"}, "scale": {"table": "z"}}}')
SITES_TOML = ('z = {role = "latent", family = "categorical", categories = 2}\n'
              'x = {role = "observed", family = "normal", loc = {table = "z"}, scale = {table = "z"}}')
SITES_YAML = "{z: {role: latent, family: categorical, categories: 2}, x: {role: observed, family: normal, " \
             "loc: {table: z}, scale: {table: z}}}"


@pytest.mark.parametrize("form", ["json", "toml", "yaml", "file"])
def test_sites_are_accepted_from_the_cli_as_json_toml_yaml_or_a_file(tmp_path, form):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", np.concatenate([rng.normal(-3, 1, (60, 1)), rng.normal(3, 1, (60, 1))]))
    sites = {"json": SITES_JSON, "toml": SITES_TOML, "yaml": SITES_YAML, "file": str(tmp_path / "sites.toml")}[form]
    (tmp_path / "sites.toml").write_text("[sites]\n" + SITES_TOML)
    run = tmp_path / "run"
    assert main(["fit", "declared", str(tmp_path / "x.npy"), "--sites", sites, "--method", "em", "--run-dir",
                 str(run), "--no-plots", "--progress", "false"]) == 0
    entry, model, guide, data, resolved = load_run(run)
    assert set(resolved["model_config"]["sites"]) == {"z", "x"}


def test_sites_in_no_known_format_are_refused_in_one_line(capsys):
    assert main(["fit", "declared", "--dataset", "digits", "--sites", "nonsense ["]) == 2
    err = capsys.readouterr().err.strip()
    assert "JSON, TOML or YAML" in err and "\n" not in err


@pytest.mark.parametrize("family, values, needs", [
    ("poisson", [1.0, 2.0, -3.0, 4.0], "non-negative whole numbers"),
    ("poisson", [1.0, 2.5, 3.0, 4.0], "non-negative whole numbers"),
    ("bernoulli", [0.0, 1.0, 2.0, 1.0], r"values in \[0, 1\]"),
    ("gamma", [1.0, 0.0, 2.0, 3.0], "positive values"),
])
def test_observed_data_outside_the_familys_support_is_refused_before_anything_is_written(tmp_path, capsys, family,
                                                                                       values, needs):
    np.save(tmp_path / "x.npy", np.asarray(values)[:, None])
    rate = {"poisson": '"rate": {"table": "z"}', "bernoulli": '"logits": {"table": "z"}',
            "gamma": '"concentration": {"table": "z"}, "rate": 1.0'}[family]
    sites = ('{"z": {"role": "latent", "family": "categorical", "categories": 2}, '
             f'"x": {{"role": "observed", "family": "{family}", {rate}}}}}')
    assert main(["fit", "declared", str(tmp_path / "x.npy"), "--sites", sites, "--method", "em",
                 "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"observed site 'x' ({family}) needs" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def _guide_enumerated_mixture():
    """z is a parent of the continuous t, so the guide enumerates it: q(z | x) q(t | x, z)."""
    decl = declare("mixture_prior", latent("z", "categorical", categories=3),
                   latent("t", "normal", dim=2, loc=table("z"), scale=1.0),
                   observed("x", "normal", dim=3, loc=linear("t"), scale=1.0))
    x = torch.randn(30, 3, generator=torch.Generator().manual_seed(0))
    return (*build(decl, DataInfo(30, (3,), arrays={"x": [3]})), x)


def test_renyi_on_a_guide_enumerated_site_names_auto_as_the_fix_and_auto_fits():
    """Pyro's RenyiELBO has no enumeration: elbo='renyi' on a guide that enumerates z is refused before training,
    naming 'auto' (which fits it), not 'trace'; the ELBO object itself names the same fix."""
    import emvi
    from emvi.errors import ConfigError
    from emvi.inference.elbo import make_elbo

    model, guide, x = _guide_enumerated_mixture()
    config = emvi.TrainConfig(epochs=1, batch_size=10, elbo="renyi", num_particles=2, progress=False)
    with pytest.raises(ConfigError, match=r"cannot sum out the guide's site\(s\) z .*use elbo 'auto' \(or 'enum'\)"):
        emvi.train(model, guide, x, config=config)
    with pytest.raises(ConfigError, match=r"guide site 'z' is not; use elbo 'auto' \(or 'enum'\)"), \
            pytest.warns(UserWarning, match="use TraceEnum_ELBO"):  # Pyro's own check of the flat trace
        make_elbo("renyi", num_particles=2, max_plate_nesting=1).differentiable_loss(model, guide, x, num_data=30)
    result = emvi.train(model, guide, x, config=emvi.TrainConfig(epochs=1, batch_size=10, progress=False))
    assert np.isfinite(result.history[-1]["train_loss"])


def test_a_bernoulli_latent_with_learned_logits_gives_the_exact_enumerated_likelihood():
    """z ~ Bernoulli(σ(a)) with a learned scalar a (the default logits of a scalar site, once a reshape to shape ()
    that failed), x | z ~ N(μ_z, 1): TraceEnum_ELBO's loss is -Σ_n log Σ_z p(z) p(x_n | z), value and gradient."""
    import pyro
    from torch.nn.functional import logsigmoid

    decl = declare("switch", latent("z", "bernoulli"), observed("x", "normal", dim=2, loc=table("z"), scale=1.0))
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(1))
    model, guide = build(decl, DataInfo(20, (2,), arrays={"x": [2]}))
    with torch.no_grad():
        model.learned["z__logits"].fill_(0.4)
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    loss = elbo.differentiable_loss(model, guide, x)
    (grad,) = torch.autograd.grad(loss, model.learned["z__logits"])
    a = model.learned["z__logits"].detach().clone().requires_grad_()
    means = model.learned["x__loc"].detach()
    log_px_given_z = torch.distributions.Normal(means[:, None], 1.0).log_prob(x).sum(-1)  # (2, N)
    log_pz = torch.stack([logsigmoid(-a), logsigmoid(a)]).reshape(2, 1)
    expected = -torch.logsumexp(log_pz + log_px_given_z, 0).sum()
    (expected_grad,) = torch.autograd.grad(expected, a)
    torch.testing.assert_close(loss.detach(), expected.detach())
    torch.testing.assert_close(grad, expected_grad)
