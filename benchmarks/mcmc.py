"""emvi's NUTS against NumPyro's on the same models, priors and data: effective samples per second.

Cases (one chain each, the same warm-up and draws for both tools):

* ``mixture``: 1-D Gaussian mixture, K=3, N=1000; π ~ Dirichlet(1), μ_k ~ N(m, 2 sd), σ²_k ~ InvGamma(2, v)
  (m, v the data's mean and variance), the assignment summed out (emvi: enumerated; NumPyro: logsumexp).
* ``hmm``: 2-state Poisson HMM on one sequence of T=500 (T=5000 too without ``--quick``); π, A_k ~ Dirichlet(1),
  rates ~ Gamma(1 + m, 1); states summed by the forward algorithm (NumPyro: ``lax.scan``).
* ``declared``: a declared model with globals only, x_n ~ N(μ, σ), μ ~ N(0, 3), σ ~ Gamma(2, 1), D=2, N=1000.

emvi runs its method's recipe (EM or MAP start, then NUTS on the Bayesian view); NumPyro starts from its default
(uniform in [-2, 2] unconstrained) and runs twice on the same ``MCMC`` object: the first run compiles, the second
reuses the compiled sampler. Runs alternate (emvi, NumPyro, emvi, ...) ``--repeats`` times. Draws are put in one
labelling (components and states sorted by their means or rates) before ArviZ computes the bulk ESS.

One JSON line per case, then one summary line of all cases (:func:`summary`, what ``record.py`` keeps): per tool the minimum bulk ESS over all scalar parameters, ESS/s with and without
compilation (emvi has none: both are the NUTS wall time, setup included; its point fit is ``point_fit_s``),
divergences, and posterior means ± Monte Carlo SE; ``ess_per_s_ratio`` = emvi / NumPyro with NumPyro's compilation
counted, ``ess_per_s_ratio_compiled`` without it (medians over the repeats). NumPyro and JAX are the ``bench`` extra
(``pip install -e .[bench]``), imported only here, lazily.

    nice -n 10 python benchmarks/mcmc.py            # 500 warm-up + 1000 draws, T=500 and T=5000, 2 repeats
    python benchmarks/mcmc.py --quick               # a few seconds per case: the test's settings
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch


def simulate(case: str, length: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    if case == "mixture":
        z = rng.choice(3, size=1000, p=[0.3, 0.4, 0.3])
        return {"x": (np.array([-4.0, 0.0, 4.0])[z] + rng.normal(size=1000))[:, None]}
    if case == "hmm":
        transition, rates = np.array([[0.95, 0.05], [0.1, 0.9]]), np.array([2.0, 8.0])
        states = [0]
        for _ in range(length - 1):
            states.append(rng.choice(2, p=transition[states[-1]]))
        return {"x": rng.poisson(rates[np.array(states)])[:, None].astype(float)}
    return {"x": np.array([1.0, -2.0]) + np.array([1.0, 2.0]) * rng.normal(size=(1000, 2))}


# -- emvi ---------------------------------------------------------------------------------------------------------


def emvi_run(case: str, data: dict, warmup: int, draws: int, seed: int) -> dict:
    """NUTS by emvi's recipe; returns ``{"samples": {name: (draws, ...)}, "seconds", "point_fit_s", "divergent"}``."""
    from emvi.inference.mcmc import MCMCConfig

    config = MCMCConfig(num_samples=draws, warmup_steps=warmup, num_chains=1, seed=seed, progress=False)
    x = torch.as_tensor(data["x"], dtype=torch.float64)
    started = time.perf_counter()
    if case == "mixture":
        from emvi.estimators import Mixture

        est = Mixture(3, "gaussian-diag", method="mcmc", num_samples=draws, warmup_steps=warmup, num_chains=1,
                      seed=seed).fit(x)
        result = est.mcmc_
    elif case == "hmm":
        from emvi.estimators import HMM

        est = HMM(2, "poisson", method="mcmc", num_samples=draws, warmup_steps=warmup, num_chains=1, seed=seed)
        result = est.fit(x).mcmc_
    else:
        from emvi.catalog.declared import build
        from emvi.data import DataInfo
        from emvi.declaration import declare, observed, param
        from emvi.inference.mcmc import fit_posterior, map_start

        decl = declare("normal_globals", param("mu", "normal", shape=(2,), loc=0.0, scale=3.0),
                       param("sigma", "gamma", shape=(2,), concentration=2.0, rate=1.0),
                       observed("x", "normal", loc="mu", scale="sigma"))
        model, _ = build(decl, DataInfo(x.shape[0], (2,), arrays={"x": [2]}))
        map_start(model, (x,), seed=seed)
        model.to(torch.float64)
        result = fit_posterior(model, x, config=config)
    total = time.perf_counter() - started
    samples = {name: value[0].numpy() for name, value in result.samples.items()}
    return {"samples": samples, "seconds": result.seconds, "point_fit_s": total - result.seconds,
            "divergent": int(result.num_divergent)}


# -- NumPyro (imported lazily: the bench extra) ---------------------------------------------------------------------


def numpyro_models(threads: int):
    os.environ.setdefault("XLA_FLAGS", f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                                       f"intra_op_parallelism_threads={threads}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd
    from jax import lax
    from jax.scipy.special import logsumexp

    numpyro.enable_x64()  # emvi samples in float64

    def mixture(x, m, v):
        weights = numpyro.sample("weights", nd.Dirichlet(jnp.ones(3)))
        means = numpyro.sample("means", nd.Normal(m, 2 * jnp.sqrt(v)).expand([3, 1]).to_event(2))
        variances = numpyro.sample("variances", nd.InverseGamma(2.0, v).expand([3, 1]).to_event(2))
        log_f = nd.Normal(means, jnp.sqrt(variances)).log_prob(x[:, None, :]).sum(-1)  # (N, K)
        numpyro.factor("x", logsumexp(jnp.log(weights) + log_f, -1).sum())

    def hmm(x, m, v):
        initial = numpyro.sample("initial_probs", nd.Dirichlet(jnp.ones(2)))
        transition = numpyro.sample("transition", nd.Dirichlet(jnp.ones((2, 2))).to_event(1))
        rates = numpyro.sample("rates", nd.Gamma(1 + m, 1.0).expand([2, 1]).to_event(2))
        log_b = nd.Poisson(rates).log_prob(x[:, None, :]).sum(-1)  # (T, K)
        log_a = jnp.log(transition)

        def step(log_alpha, log_b_t):
            return logsumexp(log_alpha[:, None] + log_a, 0) + log_b_t, None

        log_alpha, _ = lax.scan(step, jnp.log(initial) + log_b[0], log_b[1:])
        numpyro.factor("x", logsumexp(log_alpha))

    def declared(x, m, v):
        mu = numpyro.sample("mu", nd.Normal(0.0, 3.0).expand([2]).to_event(1))
        sigma = numpyro.sample("sigma", nd.Gamma(2.0, 1.0).expand([2]).to_event(1))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("x", nd.Normal(mu, sigma).to_event(1), obs=x)

    return {"mixture": mixture, "hmm": hmm, "declared": declared}


def numpyro_run(model, data: dict, warmup: int, draws: int, seed: int) -> dict:
    """Two runs on one ``MCMC``: the first compiles (``seconds``), the second does not (``seconds_compiled``)."""
    import jax
    from numpyro.infer import MCMC, NUTS

    x = data["x"]
    # jit_model_args: the compiled sampler is cached by the arguments' shapes, so the second run reuses it.
    mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws, num_chains=1, progress_bar=False,
                jit_model_args=True)
    times, outputs = [], []
    for key in (seed, seed + 1):
        started = time.perf_counter()
        mcmc.run(jax.random.PRNGKey(key), x, x.mean(0), x.var(0), extra_fields=("diverging",))
        samples = jax.block_until_ready(mcmc.get_samples())
        times.append(time.perf_counter() - started)
        outputs.append(({k: np.asarray(v) for k, v in samples.items()},
                        int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())))
    return {"samples": outputs[0][0], "seconds": times[0], "divergent": outputs[0][1],
            "seconds_compiled": times[1], "samples_compiled": outputs[1][0]}


# -- summaries ------------------------------------------------------------------------------------------------------


def one_labelling(case: str, samples: dict) -> dict:
    """Components (states) of every draw sorted by their means (rates): label switching is not mixing."""
    samples = {k: np.asarray(v, dtype=float) for k, v in samples.items()}
    if case == "declared":
        return samples
    key = "means" if case == "mixture" else "rates"
    order = np.argsort(samples[key][:, :, 0], axis=1)  # (draws, K)
    out = {}
    for name, value in samples.items():
        picked = np.take_along_axis(value, order.reshape(order.shape + (1,) * (value.ndim - 2)), 1)
        if name == "transition":
            picked = np.take_along_axis(picked, order[:, None, :], 2)
        out[name] = picked
    return out


def summarise(case: str, samples: dict) -> tuple[float, dict]:
    """Minimum bulk ESS over the scalar parameters, and ``{name[i]: [mean, mcse]}``."""
    import arviz as az

    samples = one_labelling(case, samples)
    idata = az.from_dict(posterior={k: v[None] for k, v in samples.items()})
    ess = az.ess(idata, method="bulk")
    mcse = az.mcse(idata, method="mean")
    min_ess = float(min(np.min(ess[k].values) for k in samples))
    means = {}
    for name, value in samples.items():
        flat, errors = value.reshape(value.shape[0], -1), np.asarray(mcse[name].values).reshape(-1)
        for i in range(flat.shape[1]):
            means[f"{name}[{i}]"] = [round(float(flat[:, i].mean()), 4), round(float(errors[i]), 4)]
    return min_ess, means


def run_case(case: str, length: int, args, models) -> dict:
    data = simulate(case, length or 0, args.seed)
    rows = {"emvi": [], "numpyro": []}
    for repeat in range(args.repeats):
        seed = args.seed + repeat
        run = emvi_run(case, data, args.warmup, args.draws, seed)
        ess, means = summarise(case, run["samples"])
        rows["emvi"].append({"min_ess": ess, "ess_per_s": ess / run["seconds"], "ess_per_s_compiled": ess / run["seconds"],
                             "seconds": run["seconds"], "point_fit_s": run["point_fit_s"],
                             "divergent": run["divergent"], "posterior_mean_mcse": means})
        run = numpyro_run(models[case], data, args.warmup, args.draws, seed)
        ess, means = summarise(case, run["samples"])
        ess_compiled, _ = summarise(case, run["samples_compiled"])
        rows["numpyro"].append({"min_ess": ess, "ess_per_s": ess / run["seconds"],
                                "ess_per_s_compiled": ess_compiled / run["seconds_compiled"],
                                "seconds": run["seconds"], "seconds_compiled": run["seconds_compiled"],
                                "divergent": run["divergent"], "posterior_mean_mcse": means})

    def median(tool, key):
        return statistics.median(row[key] for row in rows[tool])

    result = {"case": case, "length": length, "warmup": args.warmup, "draws": args.draws,
              "repeats": args.repeats, "threads": args.threads,
              "ess_per_s_ratio": median("emvi", "ess_per_s") / median("numpyro", "ess_per_s"),
              "ess_per_s_ratio_compiled": median("emvi", "ess_per_s_compiled") / median("numpyro", "ess_per_s_compiled")}
    for tool in rows:
        last = rows[tool][-1]
        result[tool] = {"min_ess": [round(r["min_ess"], 1) for r in rows[tool]],
                        "ess_per_s": [round(r["ess_per_s"], 2) for r in rows[tool]],
                        "ess_per_s_compiled": [round(r["ess_per_s_compiled"], 2) for r in rows[tool]],
                        "seconds": [round(r["seconds"], 2) for r in rows[tool]],
                        "divergent": [r["divergent"] for r in rows[tool]],
                        "posterior_mean_mcse": last["posterior_mean_mcse"]}
        if tool == "emvi":
            result[tool]["point_fit_s"] = [round(r["point_fit_s"], 2) for r in rows[tool]]
        else:
            result[tool]["seconds_compiled"] = [round(r["seconds_compiled"], 2) for r in rows[tool]]
    return result


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 warm-up + 100 draws, T=500 only, one repeat")
    parser.add_argument("--cases", default="mixture,hmm,declared")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--draws", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--lengths", default=None, help="HMM sequence lengths (default 500,5000; --quick: 500)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of torch and XLA")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.warmup = args.warmup or (100 if args.quick else 500)
    args.draws = args.draws or (100 if args.quick else 1000)
    args.repeats = args.repeats or (1 if args.quick else 2)
    torch.set_num_threads(args.threads)
    models = numpyro_models(args.threads)
    results = []
    for case in args.cases.split(","):
        lengths = [int(v) for v in (args.lengths or ("500" if args.quick else "500,5000")).split(",")]
        for length in (lengths if case == "hmm" else [None]):
            results.append(run_case(case, length, args, models))
            print(json.dumps(results[-1]), flush=True)
    print(json.dumps(summary(results)), flush=True)  # the last JSON line: what benchmarks/record.py keeps
    return results


def summary(results: list[dict]) -> dict:
    """One object for all cases: per case the two ratios, the medians of emvi's and NumPyro's NUTS seconds (with
    and without compilation), emvi's minimum ESS, and the largest gap between the two tools' posterior means in
    combined Monte Carlo standard errors; the 1-minute load average at the end (the cores may be shared)."""
    cases = {}
    for result in results:
        emvi, numpyro = result["emvi"], result["numpyro"]
        gaps = [abs(mean - numpyro["posterior_mean_mcse"][name][0])
                / max(math.hypot(error, numpyro["posterior_mean_mcse"][name][1]), 1e-12)
                for name, (mean, error) in emvi["posterior_mean_mcse"].items()]
        key = result["case"] + (f" T={result['length']}" if result["length"] else "")
        cases[key] = {"ess_per_s_ratio": round(result["ess_per_s_ratio"], 3),
                      "ess_per_s_ratio_compiled": round(result["ess_per_s_ratio_compiled"], 3),
                      "emvi_seconds": statistics.median(emvi["seconds"]),
                      "numpyro_seconds": statistics.median(numpyro["seconds"]),
                      "numpyro_seconds_compiled": statistics.median(numpyro["seconds_compiled"]),
                      "emvi_min_ess": statistics.median(emvi["min_ess"]),
                      "numpyro_min_ess": statistics.median(numpyro["min_ess"]),
                      "max_mean_gap_in_mcse": round(max(gaps), 2)}
    return {"cases": cases, "load_average_end": round(os.getloadavg()[0], 2)}


if __name__ == "__main__":
    sys.exit(main() and 0)
