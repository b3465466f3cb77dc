"""emvi's mixture (EM and SVI on one Pyro model) against scikit-learn's GaussianMixture, side by side in one run.

All methods start from the same point: k-means++ means (``emvi.inference.initialization.kmeans_plusplus``, seeded),
with weights and (diagonal or full) covariances from one M-step on the nearest-centre assignments; scikit-learn
receives them as ``weights_init``/``means_init``/``precisions_init`` (so its own k-means never runs) and the same
``reg_covar`` floor, and runs with the same number of BLAS/OpenMP threads as torch (``threadpoolctl``).

* sklearn: ``GaussianMixture(covariance_type=..., tol=1e-3)``; its wall-clock fit time is the reference.
* em: :func:`emvi.inference.fit_em` on :class:`emvi.models.mixture.MixtureModel` (the chunked E-step fused with the
  M-step's statistics, closed-form M-step), float64 parameters and sums, ``tol=1e-4``; ``--product-dtype float32``
  runs the E-step's products in float32 (the model's ``product_dtype``). The final log-likelihood is evaluated in float64.
* svi: :func:`emvi.inference.natural_gradient.natural_gradient_svi`: gradients of TraceEnum_ELBO (full batch, the exact
  marginal, float64) turned into natural-gradient steps of size 1 on the mean parameters, which retrace EM.
* svi-adam (for reference): ``emvi.inference.train`` with TraceEnum_ELBO, full batch, float64, Adam lr 0.3.

Reported per case: final log-likelihoods (nats per item) and the time each method needs to reach scikit-learn's final
log-likelihood (EM repeats scikit-learn's iterations from the same start, so ``em_reach_iterations`` equals
``sklearn_iterations`` and the ratio is the cost per iteration), as a ratio to scikit-learn's fit time; scikit-learn
and EM alternate ``--repeats`` times (who goes first alternates too) and the medians count. Cases: synthetic
N=100,000, D=10, K=8 (overlapping components), diagonal; MNIST train images projected on 50 principal components,
K=10, diagonal (MNIST from $EMVI_DATA, default ../shared/data; skipped with a note when absent); the synthetic data
with full covariances (``synthetic-full``; EM only, natural-gradient SVI is written for the diagonal family). The
last line is one JSON object whose top-level ``em_time_ratio``/``svi_time_ratio``/``em_loglik``/``sklearn_loglik``
are the synthetic case's, with ``em_time_ratio_worst`` over the cases and ``em_loglik_not_below_sklearn``.

    python benchmarks/mixture.py            # full sizes
    python benchmarks/mixture.py --quick    # N=20,000 synthetic and 4,000 MNIST images
    python benchmarks/mixture.py --em-only  # EM and scikit-learn only
    python benchmarks/mixture.py --chunks   # the chunked E-step's cost against its chunk size and dtype
    python benchmarks/mixture.py --covariance-types  # the drop-ins against scikit-learn, per covariance type

``--covariance-types`` (also run, small, by ``--quick``, as the summary's ``covariance_types``): for full, tied, diag
and spherical, :class:`emvi.estimators.GaussianMixture` against scikit-learn's from one given start (k-means++ means,
the nearest-centre assignments' weights and covariances in the type's layout, as ``weights_init``/``means_init``/
``precisions_init``) and the same ``tol``/``max_iter``/``reg_covar``, the two fits alternating ``--repeats`` (>= 3)
times; one JSON line per type: ``em_time_ratio`` (emvi / scikit-learn median wall time), both ``lower_bound_`` and
``n_iter_``.

``--chunks`` times :meth:`MixtureModel.expected_statistics` (the E-step fused with the M-step's reduction: one EM
iteration's data pass) on MNIST-PCA50 (all training images; the synthetic case when MNIST is absent), K=10, for
chunks of 250 ... 8,000 rows, the default (``CHUNK_ELEMENTS`` per chunk) and one chunk of all rows, in float64 and
float32, at ``--threads`` threads; the median of ``--repeats`` (at least 5) passes after one untimed pass.

Where EM's time goes (torch.profiler and process CPU time, one thread, on a shared 2-core machine). MNIST-PCA50,
diag: the chunk's two products (E: [x, x², 1] @ [η; log π - A], M: r.T @ [x, x², 1]) are over half of a pass; they
are bound by memory traffic (a cache-resident chunk multiplies about twice as fast as a streamed one), so T(x) is
built per chunk in a cached buffer rather than read from a precomputed (N, 2 D + 1) table, and with float32 products
the data are cast once per fit (``em_constants``: half the bytes per pass, no cast per chunk); exp over the
(K, rows) joint, the copy of x into the [x, x², 1] buffer and the square most of the rest; exp slowed down many times where it underflowed (well-separated components, float32), hence the
floor on the log-joint. Full covariance: before, per chunk, the centred data (K, rows, D), a batched triangular solve
per row and a second batched product over the centred data for the scatter; now one product gives the whitened
residuals (K, D, rows) and one batched product of them the scatter (L_k (Σ r y yᵀ) L_kᵀ), about twice as fast.
scikit-learn with two OpenBLAS threads slows down many times when the cores are loaded (its fit time varies the most),
so ``--threads 1`` is the comparison to trust on a shared machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

import emvi  # noqa: F401  (module-local Pyro params before the models are built)
from emvi.estimators import GaussianMixture as EmviGaussianMixture
from emvi.inference import TrainConfig, fit_em, train
from emvi.inference.initialization import initialise_mixture
from emvi.inference.natural_gradient import natural_gradient_svi
from emvi.models.mixture import CHUNK_ELEMENTS, MixtureConfig, MixtureGuide, MixtureModel
from emvi.models.mixture_covariances import COVARIANCE_TYPES as COVARIANCE_FAMILIES
from emvi.models.mixture_covariances import SCATTER_FAMILIES, covariance_name, precision_cholesky

REACH_TOL = 0.0


def synthetic(n: int, d: int = 10, k: int = 8, seed: int = 0) -> np.ndarray:
    """Draws from a diagonal mixture whose components overlap (means ~ N(0, 1.5²), sd in [0.5, 2])."""
    rng = np.random.default_rng(seed)
    means, sds = rng.normal(0, 1.5, (k, d)), rng.uniform(0.5, 2.0, (k, d))
    z = rng.choice(k, n, p=rng.dirichlet(np.full(k, 5.0)))
    return means[z] + sds[z] * rng.normal(size=(n, d))


def mnist_pca(limit: int | None, dims: int = 50) -> np.ndarray | None:
    root = Path(os.environ.get("EMVI_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (root / "MNIST" / "raw").is_dir():
        return None
    import torchvision

    images = torchvision.datasets.MNIST(str(root), train=True, download=False).data
    x = images[:limit].reshape(-1, 784).double() / 255.0
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:dims].T).numpy()


def first_reach(seconds: list[float], logliks: list[float], target: float) -> float:
    return next((s for s, ll in zip(seconds, logliks, strict=True) if ll >= target), math.inf)


def sklearn_precisions(model: MixtureModel) -> np.ndarray:
    """scikit-learn's ``precisions_init`` of ``model``'s covariances: 1/σ² (diag) or U Uᵀ = Σ⁻¹ (full)."""
    family = model.config.family
    upper = precision_cholesky(family, getattr(model, covariance_name(family)).detach())
    return (upper @ upper.mT if family in SCATTER_FAMILIES else upper**2).numpy()


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.inf


def run_case(name: str, x: np.ndarray, k: int, *, svi_epochs: int, repeats: int = 3, seed: int = 0,
             em_only: bool = False, covariance_type: str = "diag", threads: int = 2,
             product_dtype: torch.dtype | None = None) -> dict:
    n, d = x.shape
    xt = torch.as_tensor(x, dtype=torch.float64)
    family = COVARIANCE_FAMILIES[covariance_type]
    start = MixtureModel(MixtureConfig(num_components=k, family=family, floor=1e-6), d, dtype=torch.float64)
    initialise_mixture(start, xt, "kmeans++", torch.Generator().manual_seed(seed))
    weights, means = start.weights.detach().numpy(), start.means.detach().numpy()

    sk = GaussianMixture(k, covariance_type=covariance_type, reg_covar=1e-6, tol=1e-3, max_iter=1000,
                         weights_init=weights, means_init=means, precisions_init=sklearn_precisions(start),
                         init_params="random_from_data", random_state=seed)
    # The cores are shared: scikit-learn and EM alternate (who goes first alternates too) `repeats` times and the
    # medians count; scikit-learn's BLAS and OpenMP get the same number of threads as torch.
    sklearn_times, em_times, em_reaches = [], [], []
    for repeat in range(repeats):
        for library in ("sklearn", "em") if repeat % 2 == 0 else ("em", "sklearn"):
            if library == "sklearn":
                with threadpool_limits(limits=threads):
                    began = time.perf_counter()
                    sk.fit(x)
                    sklearn_times.append(time.perf_counter() - began)
                sklearn_loglik = float(sk.score(x))
                continue
            em_model = copy.deepcopy(start)
            em_model.product_dtype = product_dtype
            began = time.perf_counter()
            em = fit_em(em_model, xt, max_iter=1000, tol=1e-4, warn=False)
            em_times.append(time.perf_counter() - began)
            with torch.no_grad():
                em_loglik = float(em_model.log_likelihood(xt).mean())
            em_history = [ll / n for ll in em.log_likelihood_history]
        em_reaches.append(first_reach(em.seconds_history, em_history, sklearn_loglik - REACH_TOL))
    target = sklearn_loglik - REACH_TOL
    sklearn_seconds, em_seconds, em_reach = median(sklearn_times), median(em_times), median(em_reaches)
    # EM's iterations (M-steps) to reach scikit-learn's final log-likelihood: the same count from the same start.
    em_reach_iterations = next((i for i, ll in enumerate(em_history) if ll >= target), None)

    em_row = {"case": name, "covariance_type": covariance_type, "n": n, "d": d, "k": k, "repeats": repeats,
              "threads": threads, "em_product_dtype": str(product_dtype or torch.float64).removeprefix("torch."),
              "sklearn_seconds": sklearn_seconds, "sklearn_iterations": int(sk.n_iter_),
              "sklearn_loglik": sklearn_loglik, "em_seconds": em_seconds, "em_iterations": em.n_iter,
              "em_loglik": em_loglik, "em_reach_seconds": em_reach, "em_reach_iterations": em_reach_iterations,
              "em_time_ratio": em_reach / sklearn_seconds}
    if em_only or covariance_type != "diag":  # natural-gradient SVI is written for the diagonal family
        row = em_row
        print(f"[{name}] N={n} D={d} K={k}")
        print(f"  sklearn  {sklearn_seconds:7.2f} s  {sk.n_iter_:4d} it  loglik {sklearn_loglik:.6f}")
        print(f"  em       {em_seconds:7.2f} s  {em.n_iter:4d} it  loglik {em_loglik:.6f}  reaches sklearn in "
              f"{em_reach:.2f} s  ratio {row['em_time_ratio']:.3f}")
        return row

    ng_model = copy.deepcopy(start)
    # Natural steps retrace EM, so twice scikit-learn's iteration count (plus slack) is ample.
    ng = natural_gradient_svi(ng_model, xt, epochs=2 * int(sk.n_iter_) + 10)
    with torch.no_grad():
        ng_loglik = float(ng_model.log_likelihood(xt).mean())
    # record["log_likelihood"] is the objective before the epoch's step, reached at the previous record's time.
    ng_times = [0.0] + [h["seconds"] for h in ng[:-1]]
    ng_reach = first_reach(ng_times, [h["log_likelihood"] for h in ng], target)
    ng_seconds = ng[-1]["seconds"]

    svi_model = copy.deepcopy(start)
    seconds, logliks = [], []
    config = TrainConfig(epochs=svi_epochs, batch_size=n, learning_rate=0.3, elbo="enum", max_plate_nesting=1,
                         seed=seed, progress=False)
    began = time.perf_counter()
    # train_loss of an epoch is the loss at the parameters before its (single, full-batch) step, which were
    # reached when the previous epoch ended.
    train(svi_model, MixtureGuide(), xt, config=config,
          callbacks=(lambda m: (logliks.append(-m["train_loss"]), seconds.append(time.perf_counter() - began)),))
    seconds = [0.0] + seconds[:-1]
    svi_seconds = time.perf_counter() - began
    with torch.no_grad():
        svi_loglik = float(svi_model.log_likelihood(xt).mean())
    svi_reach = first_reach(seconds, logliks, target)

    row = em_row | {
        "svi_seconds": ng_seconds, "svi_steps": len(ng), "svi_loglik": ng_loglik, "svi_reach_seconds": ng_reach,
        "svi_adam_seconds": svi_seconds, "svi_adam_epochs": len(logliks), "svi_adam_loglik": svi_loglik,
        "svi_adam_reach_seconds": svi_reach,
        "svi_time_ratio": ng_reach / sklearn_seconds,
        "svi_adam_time_ratio": svi_reach / sklearn_seconds,
    }
    print(f"[{name}] N={n} D={d} K={k}")
    print(f"  sklearn  {sklearn_seconds:7.2f} s  {sk.n_iter_:4d} it  loglik {sklearn_loglik:.6f}")
    print(f"  em       {em_seconds:7.2f} s  {em.n_iter:4d} it  loglik {em_loglik:.6f}  reaches sklearn in "
          f"{em_reach:.2f} s  ratio {row['em_time_ratio']:.3f}")
    print(f"  svi      {ng_seconds:7.2f} s  {len(ng):4d} st  loglik {ng_loglik:.6f}  reaches sklearn in "
          f"{ng_reach:.2f} s  ratio {row['svi_time_ratio']:.3f}   (natural-gradient steps)")
    print(f"  svi-adam {svi_seconds:7.2f} s  {len(logliks):4d} ep  loglik {svi_loglik:.6f}  reaches sklearn in "
          f"{svi_reach:.2f} s  ratio {row['svi_adam_time_ratio']:.3f}   (runner, Adam lr 0.3)")
    return row


def chunk_case(repeats: int, seed: int = 0) -> dict:
    """``--chunks``: seconds per data pass of the chunked E-step against the chunk size and the dtype."""
    x, name = mnist_pca(None), "mnist-pca50"
    if x is None:
        x, name = synthetic(20_000), "synthetic"
    n, d = x.shape
    summary = {"case": name, "n": n, "d": d, "k": 10, "chunk_elements": CHUNK_ELEMENTS, "rows": {}}
    for dtype in (torch.float64, torch.float32):
        xt = torch.as_tensor(x, dtype=dtype)
        model = MixtureModel(MixtureConfig(num_components=10, floor=1e-6), d, dtype=dtype)
        initialise_mixture(model, xt, "kmeans++", torch.Generator().manual_seed(seed))
        for rows in (250, 500, 1000, 2000, 4000, 8000, None, n):
            with torch.no_grad():
                model.expected_statistics(xt, chunk_size=rows)
                times = []
                for _ in range(max(repeats, 5)):
                    began = time.perf_counter()
                    model.expected_statistics(xt, chunk_size=rows)
                    times.append(time.perf_counter() - began)
            key = "default" if rows is None else "all" if rows == n else str(rows)
            summary["rows"].setdefault(key, {})[str(dtype).removeprefix("torch.")] = float(np.median(times))
            print(f"  {name} {dtype} chunk {key:>7s}: {np.median(times) * 1e3:7.2f} ms per pass", flush=True)
    return summary


COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def given_start(x: np.ndarray, k: int, covariance_type: str, reg_covar: float, seed: int = 0):
    """``(weights (K,), means (K, D), precisions)`` in scikit-learn's ``precisions_init`` layout for the type: k-means++
    means, then one M-step on the nearest-centre assignments (covariances + ``reg_covar``, inverted)."""
    xt = torch.as_tensor(x, dtype=torch.float64)
    means = MixtureModel(MixtureConfig(num_components=k, floor=1e-6), x.shape[1], dtype=torch.float64)
    initialise_mixture(means, xt, "kmeans++", torch.Generator().manual_seed(seed))
    centres = means.means.detach().numpy()
    labels = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    counts = np.bincount(labels, minlength=k).astype(float)
    means = np.stack([x[labels == j].mean(0) if counts[j] else centres[j] for j in range(k)])
    d = x.shape[1]
    # (K, D, D) scatter per component; an empty component keeps the data's covariance.
    covariances = np.stack([np.cov(x[labels == j].T, bias=True) if counts[j] > 1 else np.cov(x.T, bias=True)
                            for j in range(k)])
    if covariance_type == "tied":
        covariance = np.einsum("k,kij->ij", counts, covariances) / counts.sum() + reg_covar * np.eye(d)
        precisions = np.linalg.inv(covariance)
    elif covariance_type == "full":
        precisions = np.linalg.inv(covariances + reg_covar * np.eye(d))
    else:
        variances = np.diagonal(covariances, axis1=1, axis2=2) + reg_covar
        precisions = 1 / (variances if covariance_type == "diag" else variances.mean(1))
    return counts / counts.sum(), means, precisions


def covariance_case(x: np.ndarray, k: int, covariance_type: str, repeats: int, tol: float = 1e-3,
                    max_iter: int = 1000, reg_covar: float = 1e-6, seed: int = 0) -> dict:
    """emvi's GaussianMixture drop-in against scikit-learn's from the same given start, alternating runs."""
    weights, means, precisions = given_start(x, k, covariance_type, reg_covar, seed)
    settings = dict(covariance_type=covariance_type, tol=tol, max_iter=max_iter, reg_covar=reg_covar,
                    weights_init=weights, means_init=means, precisions_init=precisions, random_state=seed)
    times = {"sklearn": [], "emvi": []}
    fitted = {}
    for _ in range(max(repeats, 3)):
        for library, estimator in (("sklearn", GaussianMixture), ("emvi", EmviGaussianMixture)):
            model = estimator(k, **settings)
            began = time.perf_counter()
            model.fit(x)
            times[library].append(time.perf_counter() - began)
            fitted[library] = model
    sk, ours = fitted["sklearn"], fitted["emvi"]
    sklearn_seconds, emvi_seconds = float(np.median(times["sklearn"])), float(np.median(times["emvi"]))
    return {"covariance_type": covariance_type, "n": x.shape[0], "d": x.shape[1], "k": k, "pairs": max(repeats, 3),
            "sklearn_seconds": sklearn_seconds, "emvi_seconds": emvi_seconds,
            "em_time_ratio": emvi_seconds / sklearn_seconds, "sklearn_lower_bound": float(sk.lower_bound_),
            "emvi_lower_bound": float(ours.lower_bound_), "sklearn_n_iter": int(sk.n_iter_),
            "emvi_n_iter": int(ours.n_iter_)}


def covariance_types(n: int, repeats: int) -> dict:
    """``--covariance-types``: one JSON line per type on the synthetic data (D=10, K=8); returns them by type."""
    x, rows = synthetic(n), {}
    for covariance_type in COVARIANCE_TYPES:
        rows[covariance_type] = row = covariance_case(x, 8, covariance_type, repeats)
        print(json.dumps(row), flush=True)
    return rows


def finite_or_none(value):
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (scikit-learn uses numpy's BLAS)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of sklearn and em per case; medians")
    parser.add_argument("--product-dtype", choices=("float64", "float32"), default="float64",
                        help="dtype of EM's E-step products (the statistics add up in float64 either way)")
    parser.add_argument("--em-only", action="store_true", help="EM against scikit-learn only (no SVI runs)")
    parser.add_argument("--chunks", action="store_true", help="the E-step's time against chunk size and dtype only")
    parser.add_argument("--covariance-types", action="store_true",
                        help="the GaussianMixture drop-in against scikit-learn per covariance type only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.chunks:
        summary = chunk_case(args.repeats) | {"threads": args.threads}
        print(json.dumps(summary))
        return 0
    if args.covariance_types:
        n = 10_000 if args.quick else 50_000
        print(json.dumps({"quick": args.quick, "covariance_types": covariance_types(n, args.repeats)}))
        return 0
    n_synth, mnist_limit, svi_epochs = (20_000, 4_000, 100) if args.quick else (100_000, None, 300)
    options = dict(svi_epochs=svi_epochs, repeats=args.repeats, em_only=args.em_only, threads=args.threads,
                   product_dtype=getattr(torch, args.product_dtype))
    rows = [run_case("synthetic", synthetic(n_synth), 8, **options)]
    images = mnist_pca(mnist_limit)
    if images is None:
        print("[mnist-pca50] skipped: no MNIST under $EMVI_DATA or ../shared/data")
    else:
        rows.append(run_case("mnist-pca50", images, 10, **options))
    rows.append(run_case("synthetic-full", synthetic(n_synth), 8, covariance_type="full", **options))
    synth = rows[0]
    summary = {key: synth[key] for key in ("em_time_ratio", "svi_time_ratio", "em_loglik", "sklearn_loglik",
                                           "svi_loglik", "svi_adam_time_ratio") if key in synth}
    summary.update(quick=args.quick, em_time_ratio_worst=max(row["em_time_ratio"] for row in rows),
                   em_loglik_not_below_sklearn=all(row["em_loglik"] >= row["sklearn_loglik"] for row in rows),
                   cases=rows)
    if args.quick:
        summary["covariance_types"] = covariance_types(10_000, args.repeats)
    # "never reached" is infinite time; JSON has no infinity, so it is written as null.
    print(json.dumps(finite_or_none(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
