"""The time of the t-SNE start's two steps (:func:`emvi.inference.starts.embedded_clusters`) on MNIST-like codes.

Codes: PCA to ``--dims`` dimensions (the principal axes of the first 5,000 images) of the first N MNIST images
from $EMVI_DATA (the training images, then the test images where N exceeds them), N in ``--sizes``. Per N:

* ``tsne``: :func:`~emvi.inference.starts.tsne_map` at its defaults with one thread and with two (run twice,
  ``deterministic``: the two maps are equal to the bit), and with one thread on openTSNE's own approximate
  neighbours and unit grid (``annoy_unit_grid``), wall and CPU seconds of each (CPU: the process's, all threads);
* ``gmm``: the full-covariance GMM on the one-thread map as ``embedded_clusters`` configures it (``n_init``
  k-means++ starts, at most 1000 EM iterations, ``tol=1e-6``), without screening (``all``: every start run to the
  end; the default), with ``--screen-iter`` (``screened``: every start for that many iterations, then only the
  best goes on) and with ``tol=1e-4`` (``loose``):
  wall and CPU seconds, the EM iterations of each start (``iterations``: the screened ones, then the continued
  one), the final log-likelihood per point of the map (what picks the start) and the Hungarian accuracy against
  the digits' labels (a report, never a choice); and the default GMM on the ``annoy_unit_grid`` map.

The last line is one JSON object: ``settings`` and ``results`` by N. ``--quick``: N = 2,000 only.

    python benchmarks/record.py tsne_start                     # N = 5,000, 20,000
    python benchmarks/record.py tsne_start --quick
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from emvi.analysis.clustering import cluster_accuracy
from emvi.data import load_dataset
from emvi.inference import starts

NUM_CLUSTERS = 10


def mnist_codes(num_points: int, dims: int, root: str) -> tuple[np.ndarray, np.ndarray]:
    """``(codes (N, dims), labels (N,))``: the first ``num_points`` images (training, then test) projected on the
    top ``dims`` principal axes of the first 5,000."""
    parts = [load_dataset("mnist", root=root, split=split) for split in ("train", "test")]
    images = torch.cat([part.array("x").reshape(part.array("x").shape[0], -1) for part in parts])[:num_points]
    labels = torch.cat([part.array("y") for part in parts])[:num_points]
    if images.shape[0] < num_points:
        raise SystemExit(f"tsne_start.py: only {images.shape[0]} MNIST images in {root}, asked for {num_points}")
    pixels = images.double().numpy()
    centred = pixels - pixels[:5000].mean(0)
    axes = np.linalg.svd(centred[:5000], full_matrices=False)[2][:dims]  # (dims, D)
    return centred @ axes.T, labels.numpy()


def timed(function):
    """``(value, wall seconds, CPU seconds of the process)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def time_tsne(codes: np.ndarray, perplexity: float, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """One-thread and two-thread maps at the defaults (the latter twice), and the one-thread map with openTSNE's
    own neighbour search and grid (``annoy``, unit intervals: the settings before the defaults changed). Returns
    the timings, the default one-thread map and the openTSNE-settings map."""
    threads = torch.get_num_threads()
    one, one_wall, one_cpu = timed(lambda: starts.tsne_map(codes, perplexity=perplexity, seed=seed, threads=1))
    first, first_wall, first_cpu = timed(lambda: starts.tsne_map(codes, perplexity=perplexity, seed=seed, threads=2))
    second, second_wall, second_cpu = timed(lambda: starts.tsne_map(codes, perplexity=perplexity, seed=seed, threads=2))
    fine, fine_wall, fine_cpu = timed(lambda: starts.tsne_map(codes, perplexity=perplexity, seed=seed, threads=1,
                                                              neighbours="annoy", interval_width=1.0))
    return {"threads": threads, "one_thread_wall": one_wall, "one_thread_cpu": one_cpu,
            "threads_wall": [first_wall, second_wall], "threads_cpu": [first_cpu, second_cpu],
            "deterministic": bool(np.array_equal(first, second)),
            "same_as_one_thread": bool(np.array_equal(one, first)),
            "annoy_unit_grid_wall": fine_wall, "annoy_unit_grid_cpu": fine_cpu}, one, fine


def time_gmm(embedding: np.ndarray, labels: np.ndarray, *, restarts: int, screen_iter: int | None, tol: float,
             seed: int) -> dict:
    """The GMM as ``embedded_clusters`` fits it, with every EM run's iterations recorded."""
    runs = []
    fit_em = starts.fit_em

    def recording(*args, **kwargs):
        result = fit_em(*args, **kwargs)
        runs.append(result.n_iter)
        return result

    starts.fit_em = recording
    try:
        gmm, wall, cpu = timed(lambda: starts.gaussian_mixture(
            embedding, NUM_CLUSTERS, full=True, n_init=restarts, max_iter=1000, tol=tol, floor=1e-6, seed=seed,
            screen_iter=screen_iter))
    finally:
        starts.fit_em = fit_em
    x = starts._mixture_data(embedding, gmm.config)
    with torch.no_grad():
        clusters = gmm.responsibilities(x).argmax(-1).numpy()
        loglik = float(gmm.log_likelihood(x).mean())
    return {"wall": wall, "cpu": cpu, "iterations": runs, "loglik_per_point": loglik,
            "accuracy": cluster_accuracy(clusters, labels)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--dims", type=int, default=10, help="PCA dimensions of the codes")
    parser.add_argument("--restarts", type=int, default=10, help="k-means++ starts of the GMM on the map")
    parser.add_argument("--screen-iter", type=int, default=50,
                        help="EM iterations of each start before only the best goes on")
    parser.add_argument("--perplexity", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=os.environ.get("EMVI_DATA", str(Path(__file__).resolve().parents[2]
                                                                                / "shared" / "data")))
    parser.add_argument("--quick", action="store_true", help="N = 2,000 only")
    args = parser.parse_args(argv)
    sizes = [2000] if args.quick else args.sizes
    results = {}
    for size in sizes:
        codes, labels = mnist_codes(size, args.dims, args.data_root)
        tsne, embedding, fine_embedding = time_tsne(codes, args.perplexity, args.seed)
        starts.gaussian_mixture(embedding, NUM_CLUSTERS, full=True, n_init=1, max_iter=2, seed=args.seed)  # warm-up
        gmm = {name: time_gmm(embedding, labels, restarts=args.restarts, screen_iter=screen_iter, tol=tol,
                              seed=args.seed)
               for name, screen_iter, tol in (("all", None, 1e-6), ("screened", args.screen_iter, 1e-6),
                                              ("loose", None, 1e-4))}
        gmm["annoy_unit_grid"] = time_gmm(fine_embedding, labels, restarts=args.restarts, screen_iter=None, tol=1e-6,
                                          seed=args.seed)
        results[str(size)] = {"tsne": tsne, "gmm": gmm,
                              "load_average_after": os.getloadavg()[0]}
        print(json.dumps({str(size): results[str(size)]}), flush=True)
    out = {"settings": {"sizes": sizes, "dims": args.dims, "restarts": args.restarts, "screen_iter": args.screen_iter,
                        "perplexity": args.perplexity, "seed": args.seed}, "results": results}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
