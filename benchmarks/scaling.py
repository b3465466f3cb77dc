"""Time and peak memory against problem size, emvi beside its reference, in one run: mixture EM vs scikit-learn,
Baum-Welch on one long sequence vs hmmlearn, VAE training throughput vs a hand-written torch loop.

* mixture: diagonal Gaussian mixture, D=10, K=8, N = 1e4 ... 1e7 draws of ``benchmarks/mixture.py``'s synthetic
  mixture; 20 EM iterations (``tol=0``, so both run exactly 20 and evaluate the bound once more) from one
  initialisation: k-means++ means on the first 20,000 rows and one M-step on their nearest-centre assignments, handed
  to scikit-learn as ``weights_init``/``means_init``/``precisions_init`` and to :class:`emvi.models.mixture.MixtureModel`
  fit by :func:`emvi.inference.fit_em` (float64 both).
* hmm: :class:`emvi.estimators.HMM` (public API, Gaussian emissions, K=5, D=4) fit on one ``(T, D)`` sequence for a
  fixed number of Baum-Welch iterations vs hmmlearn's ``GaussianHMM`` (diag) from the same parameters (the
  estimator's own seeded k-means++ initialisation, recomputed here and handed to hmmlearn with ``init_params=""``);
  T = 1e3 ... 1e6. A size is skipped (and the JSON says so) when the previous size's slower fit, scaled linearly in
  T, would exceed ``--hmm-cap`` seconds (60; 15 with ``--quick``), so the section stays short whatever HMM code is
  installed. emvi's time includes its
  estimator's initialisation (one k-means++ pass).
* vae: training throughput (median images per second over epochs after the first; as many epochs as make about 300
  steps, 60 with ``--quick``) of ``emvi.inference.train`` (default Trace_ELBO) vs the hand-written loop of
  ``benchmarks/vae.py`` (``keras_loss``, torch's default Adam), same architecture, for batch sizes 32 ... 1024, on
  MNIST (``--quick``: the 8x8 digits, batch sizes 32 and 1024). The size axis is the batch size; "seconds" is one
  epoch.

Method. Every fit runs in a fresh Python process (``subprocess``) that loads its data from a ``.npy`` file written
by this script, warms up with a 2-iteration fit on its first 256 rows (so one-time library initialisation, ~10 MiB
of lazy imports and thread pools for emvi, is counted for neither side; the VAE children have no warm-up), collects
garbage, reads its resident set size (``VmRSS``) and resets the kernel's high-water mark (``/proc/self/clear_refs``),
fits, and reports ``VmHWM - VmRSS``: the peak memory the fit itself added on top of the loaded data and the imported
libraries (where ``clear_refs`` is not writable the high-water mark since start is used). Time is wall-clock of the fit (the fastest of ``--repeats`` runs in that process for N <= 1e5). Ratios are
emvi / reference for time and for peak memory (below 1: emvi is faster / smaller). torch uses ``--threads``
threads; scikit-learn and hmmlearn use numpy's BLAS with its default threads.

    python benchmarks/scaling.py            # full sizes (several minutes; N=1e7 needs ~4 GB)
    python benchmarks/scaling.py --quick    # N <= 1e5, T <= 1e4, two batch sizes on digits: a minute on a quiet machine

Writes ``scaling.png`` (``--plot``) with time and peak memory against size on log-log axes. The last line is one JSON
object: per section and size, ``time_ratio`` and ``memory_ratio`` (emvi / reference) with the raw numbers.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIXTURE_D, MIXTURE_K, MIXTURE_ITERATIONS = 10, 8, 20
HMM_K, HMM_D = 5, 4
WARM_UP_ROWS = 256


# -- memory probes (Linux /proc) ----------------------------------------------------------------------------------

def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def start_memory_window() -> int:
    """Collect garbage, reset the peak-RSS high-water mark where the kernel allows it; returns the RSS (KiB)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass
    return _status_kib("VmRSS")


def peak_since(baseline_kib: int) -> float:
    """MiB the high-water mark rose above ``baseline_kib``."""
    return max(_status_kib("VmHWM") - baseline_kib, 0) / 1024


# -- the children: one fit each --------------------------------------------------------------------------------------

def child_mixture(job: dict) -> dict:
    x = np.load(job["data"])
    init = np.load(job["init"])
    repeats = job["repeats"]
    if job["method"] == "sklearn":
        from sklearn.mixture import GaussianMixture

        def fit(data, iterations):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tol=0 never converges: ConvergenceWarning by design
                return GaussianMixture(MIXTURE_K, covariance_type="diag", reg_covar=1e-6, tol=0.0, max_iter=iterations,
                                       weights_init=init["weights"], means_init=init["means"],
                                       precisions_init=1 / init["variances"]).fit(data)

        fit(x[:WARM_UP_ROWS], 2)
        baseline = start_memory_window()
        best = math.inf
        for _ in range(repeats):
            began = time.perf_counter()
            model = fit(x, MIXTURE_ITERATIONS)
            best = min(best, time.perf_counter() - began)
        peak = peak_since(baseline)
        return {"seconds": best, "peak_mib": peak, "loglik": float(model.score(x))}
    import torch

    import emvi  # noqa: F401
    from emvi.inference import fit_em
    from emvi.models.mixture import MixtureConfig, MixtureModel

    torch.set_num_threads(job["threads"])
    xt = torch.as_tensor(x)  # shares the array's memory

    def fit(data, iterations):
        model = MixtureModel(MixtureConfig(num_components=MIXTURE_K, floor=1e-6), MIXTURE_D, dtype=torch.float64)
        for name in ("weights", "means", "variances"):
            model.set_parameter(name, torch.as_tensor(init[name]))
        return fit_em(model, data, max_iter=iterations, tol=0.0, warn=False)

    fit(xt[:WARM_UP_ROWS], 2)
    baseline = start_memory_window()
    best = math.inf
    for _ in range(repeats):
        began = time.perf_counter()
        result = fit(xt, MIXTURE_ITERATIONS)
        best = min(best, time.perf_counter() - began)
    return {"seconds": best, "peak_mib": peak_since(baseline), "loglik": result.lower_bound}


def child_hmm(job: dict) -> dict:
    x = np.load(job["data"])
    init = np.load(job["init"])
    if job["method"] == "hmmlearn":
        from hmmlearn import hmm as hmmlearn

        def fit(data, iterations):
            model = hmmlearn.GaussianHMM(HMM_K, covariance_type="diag", init_params="", n_iter=iterations, tol=0.0,
                                         min_covar=1e-6, covars_prior=0.0, means_prior=0.0, means_weight=0.0)
            model.startprob_, model.transmat_ = init["initial_probs"], init["transition"]
            model.means_, model.covars_ = init["means"], init["variances"]
            return model.fit(data)
    else:
        import torch

        import emvi  # noqa: F401
        from emvi.estimators import HMM

        torch.set_num_threads(job["threads"])

        def fit(data, iterations):
            return HMM(HMM_K, "gaussian", max_iter=iterations, tol=0.0, seed=job["seed"]).fit(data)

    fit(x[:WARM_UP_ROWS], 2)
    baseline = start_memory_window()
    began = time.perf_counter()
    fit(x, job["iterations"])
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "peak_mib": peak_since(baseline)}


def child_vae(job: dict) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from vae import TORCH_LOOPS, torch_epoch

    import emvi  # noqa: F401
    from emvi.data import load_dataset
    from emvi.inference import TrainConfig, seed_everything, train
    from emvi.models import VAEConfig, build_vae_pair

    torch.set_num_threads(job["threads"])
    data = load_dataset(job["dataset"], root=job["root"], binarize="static")
    seed_everything(0)
    model, guide = build_vae_pair(VAEConfig(), data.x.shape[1], data.image_shape)
    # Enough epochs for about `steps` optimizer steps (small data sets at large batches have few steps per epoch);
    # the first epoch is a warm-up and the median of the others counts.
    batch = job["batch_size"]
    epochs = max(2, 1 + math.ceil(job["steps"] / math.ceil(data.x.shape[0] / batch)))
    baseline = start_memory_window()
    if job["method"] == "torch":
        encoder, decoder = guide.encoder, model.decoder
        optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3, **TORCH_LOOPS["torch"])
        speeds = [torch_epoch(encoder, decoder, optimizer, data.x,
                              torch.randperm(data.x.shape[0], generator=torch.Generator().manual_seed(e)), batch)
                  for e in range(epochs)]
    else:
        result = train(model, guide, data, config=TrainConfig(epochs=epochs, batch_size=batch, learning_rate=1e-3,
                                                              seed=0, progress=False))
        speeds = [h["items_per_second"] for h in result.history]
    speed = statistics.median(speeds[1:])
    return {"images_per_second": speed, "seconds": data.x.shape[0] / speed, "epochs": epochs,
            "peak_mib": peak_since(baseline)}


CHILDREN = {"mixture": child_mixture, "hmm": child_hmm, "vae": child_vae}


def run_child(job: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {job['section']}/{job['method']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the parent: data, initialisations, sizes --------------------------------------------------------------------

def pair(section: str, size: int, emvi: dict, reference: dict, reference_name: str) -> dict:
    row = {"size": size, "time_ratio": emvi["seconds"] / reference["seconds"],
           "memory_ratio": emvi["peak_mib"] / max(reference["peak_mib"], 1e-9),
           "emvi_seconds": emvi["seconds"], f"{reference_name}_seconds": reference["seconds"],
           "emvi_peak_mib": emvi["peak_mib"], f"{reference_name}_peak_mib": reference["peak_mib"]}
    row.update({f"emvi_{k}": v for k, v in emvi.items() if k not in ("seconds", "peak_mib")})
    row.update({f"{reference_name}_{k}": v for k, v in reference.items() if k not in ("seconds", "peak_mib")})
    print(f"  [{section}] {size:>9,d}: emvi {emvi['seconds']:8.3f} s {emvi['peak_mib']:9.1f} MiB | {reference_name} "
          f"{reference['seconds']:8.3f} s {reference['peak_mib']:9.1f} MiB | time x{row['time_ratio']:.3f} "
          f"memory x{row['memory_ratio']:.3f}", flush=True)
    return row


def mixture_section(sizes, args, workdir: Path) -> list[dict]:
    import torch

    sys.path.insert(0, str(HERE))
    from mixture import synthetic

    from emvi.inference.initialization import hard_assignments, kmeans_plusplus
    from emvi.models.mixture import MixtureConfig, MixtureModel

    rows = []
    for n in sizes:
        data = workdir / f"mixture_{n}.npy"
        x = synthetic(n, MIXTURE_D, MIXTURE_K, seed=args.seed)
        np.save(data, x)
        head = torch.as_tensor(x[:20_000])
        del x
        model = MixtureModel(MixtureConfig(num_components=MIXTURE_K, floor=1e-6), MIXTURE_D, dtype=torch.float64)
        centres = kmeans_plusplus(head, MIXTURE_K, torch.Generator().manual_seed(args.seed))
        model.m_step(hard_assignments(head, centres), head)
        model.set_parameter("means", centres)
        init = workdir / f"mixture_{n}_init.npz"
        np.savez(init, **{name: getattr(model, name).detach().numpy() for name in ("weights", "means", "variances")})
        job = {"section": "mixture", "data": str(data), "init": str(init), "threads": args.threads,
               "repeats": args.repeats if n <= 100_000 else 1}
        reference = run_child({**job, "method": "sklearn"})
        ours = run_child({**job, "method": "emvi"})
        rows.append(pair("mixture", n, ours, reference, "sklearn"))
        data.unlink()
    return rows


def simulate_hmm(length: int, seed: int) -> np.ndarray:
    """One ``(T, D)`` sequence of a Gaussian HMM with sticky transitions (``benchmarks/hmm.py``'s parameters)."""
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.ones(HMM_K))
    transition = rng.dirichlet(np.ones(HMM_K), size=HMM_K) + 4 * np.eye(HMM_K)
    transition /= transition.sum(1, keepdims=True)
    means, variances = rng.normal(size=(HMM_K, HMM_D)) * 3, rng.uniform(0.5, 2.0, size=(HMM_K, HMM_D))
    cumulative, draws = transition.cumsum(1).tolist(), rng.random(length).tolist()
    states = [int(np.searchsorted(np.cumsum(start), draws[0]))]
    for u in draws[1:]:
        row, state = cumulative[states[-1]], 0
        while state < HMM_K - 1 and u > row[state]:
            state += 1
        states.append(state)
    states = np.asarray(states)
    return means[states] + np.sqrt(variances[states]) * rng.normal(size=(length, HMM_D))


def hmm_section(sizes, args, workdir: Path) -> list[dict]:
    import torch

    from emvi.inference.initialization import initialise_hmm
    from emvi.models.hmm import HMMConfig, HMMModel

    rows, slowest, previous = [], 0.0, None
    for length in sizes:
        predicted = slowest * length / previous if previous else 0.0
        if predicted > args.hmm_cap:
            rows.append({"size": length, "skipped": f"the previous size took {slowest:.1f} s, so this one would take "
                                                    f"about {predicted:.0f} s (linear in T) > --hmm-cap {args.hmm_cap:g} s"})
            print(f"  [hmm] {length:>9,d}: skipped ({rows[-1]['skipped']})", flush=True)
            continue
        x = simulate_hmm(length, args.seed)
        data = workdir / f"hmm_{length}.npy"
        np.save(data, x)
        # The estimator's own initialisation (seeded k-means++), recomputed for hmmlearn.
        model = HMMModel(HMMConfig(HMM_K, "gaussian"), HMM_D, dtype=torch.float64)
        initialise_hmm(model, torch.as_tensor(x)[None], torch.tensor([length]), torch.Generator().manual_seed(args.seed))
        init = workdir / f"hmm_{length}_init.npz"
        np.savez(init, **{name: getattr(model, name).detach().numpy() for name in model.parameter_names()})
        job = {"section": "hmm", "data": str(data), "init": str(init), "threads": args.threads,
               "iterations": args.hmm_iterations, "seed": args.seed}
        reference = run_child({**job, "method": "hmmlearn"})
        ours = run_child({**job, "method": "emvi"})
        rows.append(pair("hmm", length, ours, reference, "hmmlearn"))
        slowest, previous = max(ours["seconds"], reference["seconds"]), length
        data.unlink()
    return rows


def vae_section(batch_sizes, args) -> list[dict]:
    rows = []
    dataset = "digits" if args.quick else "mnist"
    for batch in batch_sizes:
        job = {"section": "vae", "dataset": dataset, "root": args.data_root, "batch_size": batch,
               "threads": args.threads, "steps": 60 if args.quick else 300}
        reference = run_child({**job, "method": "torch"})
        ours = run_child({**job, "method": "emvi"})
        rows.append(pair("vae", batch, ours, reference, "torch"))
    return rows


def plot(sections: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    references = {"mixture": "sklearn", "hmm": "hmmlearn", "vae": "torch"}
    labels = {"mixture": "N items", "hmm": "T steps", "vae": "batch size (time: one epoch)"}
    fig, axes = plt.subplots(len(sections), 2, figsize=(10, 3.2 * len(sections)), squeeze=False)
    for row, (name, rows) in enumerate(sections.items()):
        done = [r for r in rows if "skipped" not in r]
        for col, (key, unit) in enumerate((("seconds", "seconds"), ("peak_mib", "peak MiB above data"))):
            ax = axes[row][col]
            for who in ("emvi", references[name]):
                values = [(r["size"], r[f"{who}_{key}"]) for r in done if r[f"{who}_{key}"] > 0]
                if values:
                    ax.plot(*zip(*values, strict=True), marker="o", label=who)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(labels[name])
            ax.set_ylabel(unit)
            ax.set_title(f"{name}: {unit}")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N <= 1e5, T <= 1e4, two batch sizes on digits")
    parser.add_argument("--sections", nargs="+", default=["mixture", "hmm", "vae"], choices=["mixture", "hmm", "vae"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=2, help="mixture fits per process for N <= 1e5 (fastest counts)")
    parser.add_argument("--hmm-iterations", type=int, default=10)
    parser.add_argument("--hmm-cap", type=float, default=60.0, help="skip larger T once a size took longer (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="scaling.png", help="PNG path ('' for none)")
    parser.add_argument("--data-root", default=os.environ.get("EMVI_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--mixture-sizes", type=float, nargs="+", help="override the N list (e.g. 1e4 1e5 1e6)")
    parser.add_argument("--hmm-sizes", type=float, nargs="+", help="override the T list")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="override the VAE batch sizes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(CHILDREN[job["section"]](job)))
        return {}
    if args.quick:
        mixture_sizes, hmm_sizes, batch_sizes = [10_000, 100_000], [1_000, 10_000], [32, 1024]
        args.hmm_cap, args.repeats = min(args.hmm_cap, 15.0), 1
    else:
        mixture_sizes, hmm_sizes = [10_000, 100_000, 1_000_000, 10_000_000], [1_000, 10_000, 100_000, 1_000_000]
        batch_sizes = [32, 64, 128, 256, 512, 1024]
    mixture_sizes = [int(n) for n in args.mixture_sizes] if args.mixture_sizes else mixture_sizes
    hmm_sizes = [int(n) for n in args.hmm_sizes] if args.hmm_sizes else hmm_sizes
    batch_sizes = args.batch_sizes or batch_sizes
    began = time.perf_counter()
    sections = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "mixture" in args.sections:
            print(f"mixture EM: D={MIXTURE_D}, K={MIXTURE_K}, {MIXTURE_ITERATIONS} iterations, vs scikit-learn",
                  flush=True)
            sections["mixture"] = mixture_section(mixture_sizes, args, Path(tmp))
        if "hmm" in args.sections:
            print(f"HMM Baum-Welch: one sequence, K={HMM_K}, D={HMM_D}, {args.hmm_iterations} iterations, vs hmmlearn",
                  flush=True)
            sections["hmm"] = hmm_section(hmm_sizes, args, Path(tmp))
        if "vae" in args.sections:
            print("VAE: images/s of the second epoch vs the hand-written torch loop", flush=True)
            sections["vae"] = vae_section(batch_sizes, args)
    if args.plot:
        plot(sections, Path(args.plot))
    summary = {"quick": args.quick, "threads": args.threads, "seconds": time.perf_counter() - began,
               "memory": "peak RSS above the RSS after loading the data, per fit in a fresh process", **sections}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
