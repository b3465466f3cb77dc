"""EM for declared models whose per-item latents are all discrete (emvi.inference.enumerated_em): a chain of two
latents reaches the optimum of a hand-written numpy EM from the same start; a model without a closed-form M-step
(a latent feeding a linear map) climbs monotonically to at least SVI's optimum; restarts keep the best."""

import json

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

from emvi.catalog.declared import build
from emvi.cli import main
from emvi.data import ArrayDataset, DataInfo
from emvi.declaration import covariate, declare, latent, linear, observed, table
from emvi.declaration.capabilities import em_ready, enumerated_em_ready
from emvi.inference.em import EMConfig, fit_em_from_starts
from emvi.inference.enumerated_em import EnumeratedEM, em_protocol
from emvi.inference.methods.svi import warn_if_a_component_emptied
from emvi.runs import load_run

CHAIN = {"z": {"role": "latent", "family": "categorical", "categories": 2},
         "v": {"role": "observed", "family": "normal", "loc": {"table": "z"}, "scale": {"table": "z"}},
         "s": {"role": "latent", "family": "categorical", "categories": 3, "logits": {"table": "z"}},
         "x": {"role": "observed", "family": "normal", "loc": {"table": "s"}, "scale": {"table": "s"}}}
"""z ~ Cat(π), v | z ~ N(m_z, τ_z), s | z ~ Cat(A_z), x | s ~ N(μ_s, σ_s): two discrete latents in a chain."""


def chain_data(path, n=600, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 2, n)
    transition = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    s = np.array([rng.choice(3, p=transition[k]) for k in z])
    y, x = rng.normal(np.array([-2.0, 2.0])[z], 1.0), rng.normal(np.array([-4.0, 0.0, 4.0])[s], 0.7)
    np.savez(path, v=y[:, None], x=x[:, None])
    return y, x


def chain_start(model):
    """(π, m, τ, A, μ, σ) of the declared chain model, as numpy arrays."""
    def learned_(key):
        return model.learned[key].detach().double().numpy()

    def softmax(logits):
        return np.exp(logits - logsumexp(logits, -1, keepdims=True))

    return (softmax(learned_("z__logits")), learned_("v__loc")[:, 0], np.exp(learned_("v__scale")[:, 0]),
            softmax(learned_("s__logits")), learned_("x__loc")[:, 0], np.exp(learned_("x__scale")[:, 0]))


def numpy_chain_em(y, x, params, iterations):
    """Textbook EM on the joint (z, s) of each item: E-step the posterior over the 6 pairs, M-step weighted counts,
    means and variances. Returns the final log-likelihood Σ_n log Σ_{z,s} p(y_n, x_n, z, s)."""
    pi, m, tau, a, mu, sigma = params
    for _ in range(iterations):
        joint = (np.log(pi)[None, :, None] + norm.logpdf(y[:, None, None], m[None, :, None], tau[None, :, None])
                 + np.log(a)[None] + norm.logpdf(x[:, None, None], mu[None, None, :], sigma[None, None, :]))
        w = np.exp(joint - logsumexp(joint, (1, 2), keepdims=True))  # (N, Z, S)
        wz, ws = w.sum(2), w.sum(1)
        pi = wz.mean(0)
        m = (wz * y[:, None]).sum(0) / wz.sum(0)
        tau = np.sqrt((wz * (y[:, None] - m) ** 2).sum(0) / wz.sum(0))
        a = w.sum(0) / w.sum((0, 2))[:, None]
        mu = (ws * x[:, None]).sum(0) / ws.sum(0)
        sigma = np.sqrt((ws * (x[:, None] - mu) ** 2).sum(0) / ws.sum(0))
    joint = (np.log(pi)[None, :, None] + norm.logpdf(y[:, None, None], m[None, :, None], tau[None, :, None])
             + np.log(a)[None] + norm.logpdf(x[:, None, None], mu[None, None, :], sigma[None, None, :]))
    return float(logsumexp(joint, (1, 2)).sum())


def fit(tmp_path, name, sites, data, *extra):
    run = tmp_path / name
    assert main(["fit", "declared", str(data), "--sites", json.dumps(sites), "--no-plots", "--progress", "false",
                 "--run-dir", str(run), *extra]) == 0
    return run, json.loads((run / "summary.json").read_text())


def test_a_chain_of_two_discrete_latents_reaches_the_numpy_em_optimum_from_the_same_start(tmp_path):
    y, x = chain_data(tmp_path / "chain.npz")
    common = ("--method", "em", "--seed", "3")
    start_run, _ = fit(tmp_path, "start", CHAIN, tmp_path / "chain.npz", *common, "--max-iter", "0")
    _, model, *_ = load_run(start_run)
    assert em_ready(model.declaration) is not None and model.em_ready() is None and model.em_by_enumeration()
    expected = numpy_chain_em(y, x, chain_start(model), iterations=500)

    run, summary = fit(tmp_path, "em", CHAIN, tmp_path / "chain.npz", *common, "--max-iter", "500", "--tol", "1e-10")
    assert summary["converged"]
    assert summary["log_likelihood"] == pytest.approx(expected, rel=1e-6)
    history = [row["log_likelihood"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
               if "log_likelihood" in row]
    assert len(history) == summary["n_iter"] + 1 > 5
    assert all(b >= a - 1e-10 * abs(a) for a, b in zip(history, history[1:], strict=False))


def test_the_enumerated_e_step_is_the_explicit_sum_over_both_latents():
    y, x = chain_data_tensors()
    model, _ = build_chain()
    weights, objective = EnumeratedEM(model).e_step(y, x)
    assert weights.shape == (6, y.shape[0])
    assert torch.allclose(weights.sum(0), torch.ones(y.shape[0], dtype=torch.float64))
    expected = numpy_chain_em(y[:, 0].numpy(), x[:, 0].numpy(), chain_start(model), iterations=0)
    assert objective == pytest.approx(expected, rel=1e-12)


def chain_data_tensors(n=200):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(n, 1, generator=g, dtype=torch.float64) * 2,
            torch.randn(n, 1, generator=g, dtype=torch.float64) * 3)


def build_chain():
    from emvi.declaration import Declaration

    decl = Declaration.from_dict("chain", {"sites": CHAIN})
    model, guide = build(decl, DataInfo(200, (1,), arrays={"v": [1], "x": [1]}))
    return model.double(), guide


REGRESSIONS = declare("regression_mixture",
                      covariate("c"),
                      latent("z", "categorical", categories=2),
                      observed("x", "normal", loc=linear("c", by="z"), scale=table("z")))
"""x | z, c ~ N(β_z c + α_z, σ_z): a mixture of linear regressions, whose M-step has no closed form here."""


def regression_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    c, z = rng.uniform(-2, 2, (n, 1)), rng.integers(0, 2, n)
    x = np.where(z == 0, 1 + 2 * c[:, 0], -1 - 1.5 * c[:, 0])[:, None] + rng.normal(0, 0.3, (n, 1))
    return x, c


@pytest.mark.slow
def test_a_latent_feeding_a_linear_map_climbs_monotonically_to_at_least_the_svi_optimum(tmp_path):
    assert em_ready(REGRESSIONS) is not None and enumerated_em_ready(REGRESSIONS) is None
    x, c = regression_data()
    np.savez(tmp_path / "data.npz", x=x, c=c)
    sites = json.dumps(REGRESSIONS.to_dict()["sites"])
    common = ["fit", "declared", str(tmp_path / "data.npz"), "--sites", sites, "--no-plots", "--progress", "false"]
    assert main([*common, "--method", "em", "--tol", "1e-9", "--run-dir", str(tmp_path / "em")]) == 0
    assert main([*common, "--method", "svi", "--epochs", "300", "--batch-size", "300", "--learning-rate", "0.05",
                 "--run-dir", str(tmp_path / "svi")]) == 0
    em = json.loads((tmp_path / "em" / "summary.json").read_text())
    history = [json.loads(line)["log_likelihood"] for line in (tmp_path / "em" / "metrics.jsonl").read_text().splitlines()]
    assert em["converged"] and len(history) > 3
    assert all(b >= a - 1e-10 * abs(a) for a, b in zip(history, history[1:], strict=False))
    fitted = {}
    for name in ("em", "svi"):  # the exact log p(x) of each fitted model (stored in float32), summed in float64
        _, model, _, data, _ = load_run(tmp_path / name)
        model.double()
        inputs = tuple(t.double() for t in data.tensors)
        fitted[name] = float(em_protocol(model).log_likelihood(*inputs).mean())
    assert fitted["em"] == pytest.approx(em["log_likelihood_per_item"], rel=1e-6)
    # Both reach the same optimum here (SVI from EM's data start): EM stops once an iteration gains < tol = 1e-9
    # nats per item, so it may end that close below it (measured: 1.1e-11 below SVI's point).
    assert fitted["em"] >= fitted["svi"] - 1e-9, fitted


def test_restarts_keep_the_best_final_objective():
    x, c = (torch.tensor(a) for a in regression_data(seed=1))
    model, _ = build(REGRESSIONS, DataInfo(300, (1,), arrays={"x": [1], "c": [1]}))
    model.double()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    one, _ = fit_em_from_starts(model, (x, c), EMConfig(max_iter=200, tol=1e-8, seed=5))
    model.load_state_dict(initial)
    three, _ = fit_em_from_starts(model, (x, c), EMConfig(max_iter=200, tol=1e-8, seed=5, n_init=3))
    assert three.log_likelihood >= one.log_likelihood  # the first of the three starts is the single fit's
    history = three.log_likelihood_history
    assert all(b >= a - 1e-10 * abs(a) for a, b in zip(history, history[1:], strict=False))
    assert float(em_protocol(model).log_likelihood(x, c).sum()) == pytest.approx(three.log_likelihood, rel=1e-12)


def test_a_value_of_a_latent_left_with_almost_no_weight_is_reported():
    model, _ = build_chain()
    y, x = chain_data_tensors()
    data = ArrayDataset(x=x, arrays={"v": y}).with_inputs(("v", "x"))
    with torch.no_grad():
        model.learned["s__logits"].copy_(torch.tensor([[0.0, 0.0, -20.0], [0.0, 0.0, -20.0]]))
    with pytest.warns(UserWarning, match=r"after EM, component\(s\) of site 's' 2: .* hold less than 1/\(10 K\)"):
        warn_if_a_component_emptied(model, data, method="EM")
    with torch.no_grad():
        model.learned["s__logits"].zero_()
        model.learned["z__logits"].zero_()
    warn_if_a_component_emptied(model, data, method="EM")  # every value holds items: silent


def test_em_by_enumeration_is_refused_in_one_line_naming_the_site():
    from emvi.declaration import param

    continuous = declare("c", latent("t", "normal", dim=2), observed("x", "normal", loc=linear("t"), scale=1.0))
    assert enumerated_em_ready(continuous) == "EM sums out discrete latents exactly, but latent site 't' is continuous (normal)"
    meanfield = declare("m", param("mu", "normal", shape=(2, 1), loc=0.0, scale=1.0, guide="meanfield"),
                        latent("z", "categorical", categories=2), observed("x", "normal", loc="mu[z]", scale=1.0))
    assert "site 'mu'" in enumerated_em_ready(meanfield) and "mean-field" in enumerated_em_ready(meanfield)
    plain = declare("p", covariate("c"), observed("x", "normal", loc=linear("c"), scale=1.0))
    assert "no discrete latent" not in (enumerated_em_ready(plain) or "") and "has none" in enumerated_em_ready(plain)
