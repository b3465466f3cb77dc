"""emvi's Baum-Welch against hmmlearn's, side by side in one run from the same initial parameters.

Data: sequences sampled from a known Gaussian HMM (diagonal covariances). Both fit the same model with the same
starting point (emvi's k-means++ initialisation, handed to hmmlearn with ``init_params=""``), the same number of EM
iterations and no priors (hmmlearn's covariance and mean priors set to zero, the same variance floor). Reported: wall
time of each fit, its ratio emvi/hmmlearn, and the final log-likelihoods (they should agree: same optimum). The
last line is one JSON object.

    python benchmarks/hmm.py            # 200 sequences x 500 steps, K=5, D=4, 50 iterations
    python benchmarks/hmm.py --quick    # under a minute
    python benchmarks/hmm.py --long     # one sequence of 10^5 and one of 10^6 steps, K=5, D=4, 10 iterations
                                        # (--long --quick: 10^5 only)

``--long`` times one long Gaussian sequence instead. Each fit runs in a fresh subprocess (the same data and initial
parameters from a temporary .npz, intra-op threads and BLAS threads both set to ``--threads``), which reports its wall
time, its CPU time (user + system, steadier than wall time when other processes share the cores), the final
log-likelihood, and memory as peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``): ``peak_rss`` is the
whole process's peak, ``fit_rss`` that peak minus the peak reached before the fit started (after the imports and
the data were loaded), i.e. what the fit itself added. After the fit each child also decodes the sequence with its
fitted parameters (Viterbi; ``decode_time_ratio``, and whether both libraries found the same path). Ratios are emvi / hmmlearn; ``loglik_rel_diff`` is
|emvi - hmmlearn| / |hmmlearn|. The last line is one JSON object with one entry per length.

``--recursions`` times the recursions of ``emvi.models.hmm_recursions`` themselves on random emission densities
(K=``--states``), the cases behind its CPU choices (docs/experiments/hmm.md): the step-by-step forward-backward on
``--sequences`` x ``--length`` steps (seconds per step) and the blocked one on one sequence of 10^5 steps, each on one
intra-op thread and on two; then, for one sequence of T = 10^4 and 10^5 steps (and 10^6 without ``--quick``), the
step-by-step, blocked and scan recursions at ``--threads`` threads (the first two at one thread, as the model runs
them when their steps are small). Median of ``--repeats`` runs; the last line is one JSON object.

    python benchmarks/hmm.py --recursions --quick

``--covariance-types`` (also run by ``--quick``, as the summary's ``covariance_types``): for diag, full, tied and
spherical, :class:`emvi.estimators.GaussianHMM` against hmmlearn's ``GaussianHMM`` from the same given parameters
(the k-means++ start's variances in the type's layout; ``--quick`` on its first 10 sequences, ``init_params=""``, the same ``n_iter``, ``tol=0``, no priors),
the two fits alternating ``--pairs`` (>= 3) times; one JSON line per type: ``time_ratio`` (emvi / hmmlearn median
wall time) and both final log-likelihoods.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from hmmlearn import hmm as hmmlearn

import emvi
from emvi.estimators import GaussianHMM as EmviGaussianHMM
from emvi.inference.em import fit_em
from emvi.inference.initialization import initialise_hmm
from emvi.models.hmm import HMMConfig, HMMModel
from emvi.models.hmm_recursions import (
    blocked_forward_backward,
    scan_forward_backward,
    sequential_forward_backward,
)


def simulate(num_sequences, length, num_states, num_features, seed):
    rng = np.random.default_rng(seed)
    truth = hmmlearn.GaussianHMM(num_states, covariance_type="diag", init_params="")
    truth.startprob_ = rng.dirichlet(np.ones(num_states))
    truth.transmat_ = rng.dirichlet(np.ones(num_states), size=num_states) + 4 * np.eye(num_states)
    truth.transmat_ /= truth.transmat_.sum(1, keepdims=True)
    truth.means_ = rng.normal(size=(num_states, num_features)) * 3
    truth.covars_ = rng.uniform(0.5, 2.0, size=(num_states, num_features))
    return np.stack([truth.sample(length, random_state=seed + i)[0] for i in range(num_sequences)])


def simulate_long(length, num_states, num_features, seed):
    """One sequence of ``length`` steps from the same kind of HMM as :func:`simulate` (states drawn in a NumPy loop:
    hmmlearn's sampler is slow for 10^6 steps)."""
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.ones(num_states))
    transition = rng.dirichlet(np.ones(num_states), size=num_states) + 4 * np.eye(num_states)
    transition /= transition.sum(1, keepdims=True)
    means = rng.normal(size=(num_states, num_features)) * 3
    variances = rng.uniform(0.5, 2.0, size=(num_states, num_features))
    cumulative, uniforms = transition.cumsum(1), rng.uniform(size=length)
    states = np.empty(length, dtype=np.int64)
    states[0] = rng.choice(num_states, p=start)
    for t in range(1, length):
        states[t] = min(np.searchsorted(cumulative[states[t - 1]], uniforms[t]), num_states - 1)
    return means[states] + np.sqrt(variances[states]) * rng.normal(size=(length, num_features))


def _long_fit(library: str, data_path: str, iterations: int, threads: int) -> None:
    """Child process of ``--long``: fit one library to the sequence in ``data_path``, then decode it (Viterbi, path
    saved beside the data), print one JSON line. Peak memory is the fit's: the decode comes after it is read."""
    torch.set_num_threads(threads)
    path_prefix = data_path.removesuffix(".npz")
    data = np.load(data_path)
    x, init = data["x"], {name: data[name] for name in ("initial_probs", "transition", "means", "variances")}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), time.process_time()
    if library == "hmmlearn":
        model = hmmlearn.GaussianHMM(len(init["means"]), covariance_type="diag", init_params="", n_iter=iterations,
                                     tol=0.0, min_covar=1e-6, covars_prior=0.0, means_prior=0.0, means_weight=0.0)
        model.startprob_, model.transmat_ = init["initial_probs"], init["transition"]
        model.means_, model.covars_ = init["means"], init["variances"]
        model.fit(x)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        loglik = model.score(x)
        decode = time.perf_counter()
        decode_log_prob, path = model.decode(x, algorithm="viterbi")
    else:
        model = HMMModel(HMMConfig(len(init["means"]), "gaussian"), x.shape[1], dtype=torch.float64)
        for name, value in init.items():
            model.set_parameter(name, torch.as_tensor(value))
        xt, lengths = torch.as_tensor(x)[None], torch.tensor([len(x)])
        result = fit_em(model, xt, lengths, max_iter=iterations, tol=0.0, warn=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        loglik = result.log_likelihood
        decode = time.perf_counter()
        with torch.no_grad():
            path, decode_log_prob = model.viterbi(xt, lengths)
        path, decode_log_prob = path[0].numpy(), float(decode_log_prob)
    decode = time.perf_counter() - decode
    np.save(path_file := f"{path_prefix}-{library}.npy", path)
    print(json.dumps({"seconds": wall, "cpu_seconds": cpu, "loglik": loglik, "peak_rss_mb": peak / 1024,
                      "fit_rss_mb": (peak - before) / 1024, "decode_seconds": decode,
                      "decode_log_prob": decode_log_prob, "path_file": path_file}))


def long_sequences(args) -> dict:
    lengths = [10**5] if args.quick else [10**5, 10**6]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    summary = {"iterations": args.long_iterations, "states": args.states, "features": args.features,
               "threads": args.threads}
    for length in lengths:
        x = simulate_long(length, args.states, args.features, args.seed)
        model = HMMModel(HMMConfig(args.states, "gaussian"), args.features, dtype=torch.float64)
        xt = torch.as_tensor(x)[None]
        initialise_hmm(model, xt, torch.tensor([length]), torch.Generator().manual_seed(args.seed))
        init = {name: getattr(model, name).detach().numpy().copy() for name in model.parameter_names()}
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "data.npz")
            np.savez(path, x=x, **init)
            runs = {}
            for library in ("hmmlearn", "emvi"):
                out = subprocess.run([sys.executable, __file__, "--long-child", library, path,
                                      "--iterations", str(args.long_iterations), "--threads", str(args.threads)],
                                     env=env, check=True, capture_output=True, text=True)
                runs[library] = json.loads(out.stdout.strip().splitlines()[-1])
                r = runs[library]
                print(f"T={length:.0e} {library:8s}: {r['seconds']:.2f} s wall, {r['cpu_seconds']:.2f} s CPU, peak RSS "
                      f"{r['peak_rss_mb']:.0f} MB (fit {r['fit_rss_mb']:.0f} MB), log-likelihood {r['loglik']:.4f}",
                      flush=True)
            ours, ref = runs["emvi"], runs["hmmlearn"]
            same_path = bool((np.load(ours["path_file"]) == np.load(ref["path_file"])).all())
        print(f"T={length:.0e} Viterbi: emvi {ours['decode_seconds']:.2f} s, hmmlearn {ref['decode_seconds']:.2f} s, "
              f"same path: {same_path}", flush=True)
        summary[f"T={length}"] = {
            "decode_time_ratio": ours["decode_seconds"] / ref["decode_seconds"], "decode_same_path": same_path,
            "decode_log_prob_rel_diff": abs(ours["decode_log_prob"] - ref["decode_log_prob"]) / abs(ref["decode_log_prob"]),
            "time_ratio": ours["seconds"] / ref["seconds"], "cpu_time_ratio": ours["cpu_seconds"] / ref["cpu_seconds"],
            "peak_rss_ratio": ours["peak_rss_mb"] / ref["peak_rss_mb"],
            "fit_rss_ratio": ours["fit_rss_mb"] / max(ref["fit_rss_mb"], 1e-9),
            "loglik_rel_diff": abs(ours["loglik"] - ref["loglik"]) / abs(ref["loglik"]), "emvi": ours, "hmmlearn": ref}
    print(json.dumps(summary))
    return summary


def _random_chain(n: int, steps: int, k: int, seed: int):
    """A random start ``(K,)``, transition ``(K, K)``, emission log-densities ``(N, T, K)`` and validity ``(N, T)``."""
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    transition = torch.rand(k, k, generator=g, dtype=torch.float64) + 0.1
    log_b = torch.randn(n, steps, k, generator=g, dtype=torch.float64) * 3
    return start / start.sum(), transition / transition.sum(1, keepdim=True), log_b, torch.ones(n, steps, dtype=bool)


def _median_seconds(run, threads: int, repeats: int) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            run()
            times.append(time.perf_counter() - began)
    finally:
        torch.set_num_threads(previous)
    return float(np.median(times))


def recursions(args) -> dict:
    """``--recursions``: the thread and recursion-choice cases (see the module docstring)."""
    k, repeats = args.states, args.repeats
    chain = _random_chain(args.sequences, args.length, k, args.seed)
    long_chain = _random_chain(1, 10**5, k, args.seed)
    summary = {"states": k, "repeats": repeats, "threads": args.threads,
               "step": {"sequences": args.sequences, "length": args.length},
               "blocked": {"length": 10**5}, "choice": {}}
    with torch.no_grad():
        for threads in (1, 2):
            seconds = _median_seconds(lambda: sequential_forward_backward(*chain), threads, repeats)
            summary["step"][f"seconds_per_step_{threads}_threads"] = seconds / args.length
            summary["blocked"][f"seconds_{threads}_threads"] = _median_seconds(
                lambda: blocked_forward_backward(*long_chain), threads, repeats)
            print(f"{threads} thread(s): step {seconds / args.length * 1e6:.1f} us, blocked E-step (T=1e5) "
                  f"{summary['blocked'][f'seconds_{threads}_threads']:.2f} s", flush=True)
        for length in [10**4, 10**5] + ([] if args.quick else [10**6]):
            one = long_chain if length == 10**5 else _random_chain(1, length, k, args.seed)
            row = {"sequential_seconds": _median_seconds(lambda one=one: sequential_forward_backward(*one), 1, repeats),
                   "blocked_seconds": _median_seconds(lambda one=one: blocked_forward_backward(*one), 1, repeats),
                   "scan_seconds": _median_seconds(lambda one=one: scan_forward_backward(*one), args.threads, repeats)}
            summary["choice"][f"T={length}"] = row
            print(f"T={length:.0e}: " + ", ".join(f"{key} {value:.2f}" for key, value in row.items()), flush=True)
    print(json.dumps(summary))
    return summary


COVARIANCE_TYPES = ("diag", "full", "tied", "spherical")


def given_covars(variances: np.ndarray, covariance_type: str) -> np.ndarray:
    """The start's per-state variances ``(K, D)`` in hmmlearn's ``covars_`` layout for the type."""
    if covariance_type == "diag":
        return variances
    if covariance_type == "spherical":
        return variances.mean(1)
    if covariance_type == "full":
        return np.stack([np.diag(row) for row in variances])
    return np.diag(variances.mean(0))


def covariance_types(x: np.ndarray, init: dict, args) -> dict:
    """``--covariance-types``: emvi's GaussianHMM drop-in against hmmlearn's per type, alternating runs."""
    flat, lengths = x.reshape(-1, x.shape[-1]), [x.shape[1]] * len(x)
    settings = dict(init_params="", n_iter=args.iterations, tol=0.0, min_covar=1e-6, covars_prior=0.0,
                    means_prior=0.0, means_weight=0.0)
    rows = {}
    for covariance_type in COVARIANCE_TYPES:
        times, fitted = {"hmmlearn": [], "emvi": []}, {}
        for _ in range(max(args.pairs, 3)):
            for library, estimator in (("hmmlearn", hmmlearn.GaussianHMM), ("emvi", EmviGaussianHMM)):
                model = estimator(args.states, covariance_type=covariance_type, **settings)
                model.startprob_, model.transmat_ = init["initial_probs"], init["transition"]
                model.means_, model.covars_ = init["means"], given_covars(init["variances"], covariance_type)
                began = time.perf_counter()
                model.fit(flat, lengths)
                times[library].append(time.perf_counter() - began)
                fitted[library] = model
        hmmlearn_seconds, emvi_seconds = float(np.median(times["hmmlearn"])), float(np.median(times["emvi"]))
        rows[covariance_type] = row = {
            "covariance_type": covariance_type, "pairs": max(args.pairs, 3), "hmmlearn_seconds": hmmlearn_seconds,
            "emvi_seconds": emvi_seconds, "time_ratio": emvi_seconds / hmmlearn_seconds,
            "hmmlearn_loglik": float(fitted["hmmlearn"].score(flat, lengths)),
            "emvi_loglik": float(fitted["emvi"].score(flat, lengths)), "iterations": args.iterations}
        print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sequences", type=int, default=200)
    parser.add_argument("--length", type=int, default=500)
    parser.add_argument("--states", type=int, default=5)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--long", action="store_true", help="one long sequence, T=1e5 and 1e6 (see the docstring)")
    parser.add_argument("--long-iterations", type=int, default=10)
    parser.add_argument("--recursions", action="store_true", help="time the recursions (see the docstring)")
    parser.add_argument("--repeats", type=int, default=5, help="--recursions: runs per case, the median counts")
    parser.add_argument("--covariance-types", action="store_true",
                        help="the GaussianHMM drop-in against hmmlearn per covariance type only")
    parser.add_argument("--pairs", type=int, default=3, help="--covariance-types: alternating runs per library")
    parser.add_argument("--long-child", nargs=2, metavar=("LIBRARY", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.long_child:
        return _long_fit(*args.long_child, args.iterations, args.threads)
    if args.long:
        return long_sequences(args)
    if args.quick:
        args.sequences, args.length, args.iterations = 40, 200, 20
        args.repeats = min(args.repeats, 3)
    if args.recursions:
        return recursions(args)
    torch.set_num_threads(args.threads)
    x = simulate(args.sequences, args.length, args.states, args.features, args.seed)
    print(f"data: {args.sequences} sequences x {args.length} steps, D={args.features}, K={args.states}; "
          f"{args.iterations} EM iterations; emvi {emvi.__version__}, {args.threads} threads", flush=True)

    xt = torch.as_tensor(x)
    lengths = torch.full((len(x),), args.length)
    model = HMMModel(HMMConfig(args.states, "gaussian"), args.features, dtype=torch.float64)
    initialise_hmm(model, xt, lengths, torch.Generator().manual_seed(args.seed))
    init = {name: getattr(model, name).detach().numpy().copy() for name in model.parameter_names()}
    if args.covariance_types:
        rows = covariance_types(x, init, args)
        print(json.dumps({"quick": args.quick, "covariance_types": rows}))
        return rows

    reference = hmmlearn.GaussianHMM(args.states, covariance_type="diag", init_params="", n_iter=args.iterations,
                                     tol=0.0, min_covar=1e-6, covars_prior=0.0, means_prior=0.0, means_weight=0.0)
    reference.startprob_, reference.transmat_ = init["initial_probs"], init["transition"]
    reference.means_, reference.covars_ = init["means"], init["variances"]
    flat, flat_lengths = x.reshape(-1, args.features), [args.length] * len(x)
    start = time.perf_counter()
    reference.fit(flat, flat_lengths)
    hmmlearn_seconds = time.perf_counter() - start
    hmmlearn_loglik = reference.score(flat, flat_lengths)
    print(f"hmmlearn: {hmmlearn_seconds:.2f} s, log-likelihood {hmmlearn_loglik:.4f}", flush=True)

    start = time.perf_counter()
    result = fit_em(model, xt, lengths, max_iter=args.iterations, tol=0.0, warn=False)
    emvi_seconds = time.perf_counter() - start
    print(f"emvi:     {emvi_seconds:.2f} s, log-likelihood {result.log_likelihood:.4f}", flush=True)

    summary = {"time_ratio": emvi_seconds / hmmlearn_seconds, "emvi_seconds": emvi_seconds,
               "hmmlearn_seconds": hmmlearn_seconds, "emvi_loglik": result.log_likelihood,
               "hmmlearn_loglik": hmmlearn_loglik, "iterations": args.iterations, "sequences": args.sequences,
               "length": args.length, "states": args.states, "features": args.features, "threads": args.threads}
    if args.quick:  # 10 of the sequences: hmmlearn's full and tied M-steps take ~0.8 s per iteration on 40
        summary["covariance_types"] = covariance_types(x[:10], init, args)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
