"""emvi's factor analysis and probabilistic PCA against scikit-learn's on the 8x8 digits (61 non-constant pixels).

Factor analysis: emvi's ``FactorAnalysis`` (profile-likelihood ascent, default ``tol``) against scikit-learn's
``FactorAnalysis`` (defaults: randomized SVD, ``tol=1e-2`` on the total log-likelihood) and a tight scikit-learn run
(LAPACK SVD, ``tol=1e-4``), for each latent size q. PPCA: emvi's ``PPCA`` (EM) against scikit-learn's ``PCA`` score
(the closed-form maximum). Reported per case: log-likelihood per item, iterations, wall seconds (best of
``--repeats``) and the time ratio emvi / scikit-learn. The last line is one JSON object.

    python benchmarks/ppca.py            # q = 5, 10, 20, 3 repeats, tight scikit-learn run included
    python benchmarks/ppca.py --quick    # q = 5, 20, one repeat, no tight run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis

import emvi  # noqa: F401
from emvi.estimators.ppca import PPCA, FactorAnalysis


def best_time(fit, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fit()
        best = min(best, time.perf_counter() - start)
    return result, best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latent-dims", default="5,10,20")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.latent_dims, args.repeats = "5,20", 1
    torch.set_num_threads(args.threads)
    x = load_digits().data.astype(np.float64)
    x = x[:, x.std(0) > 0]
    results = {"data": f"digits {x.shape[0]}x{x.shape[1]}"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for q in (int(v) for v in args.latent_dims.split(",")):
            ours, ours_s = best_time(lambda q=q: FactorAnalysis(q).fit(x), args.repeats)
            theirs, theirs_s = best_time(lambda q=q: SklearnFactorAnalysis(q, random_state=0).fit(x), args.repeats)
            case = {"emvi_log_likelihood": ours.score(x), "emvi_n_iter": ours.n_iter_, "emvi_seconds": ours_s,
                    "sklearn_log_likelihood": theirs.score(x), "sklearn_n_iter": theirs.n_iter_,
                    "sklearn_seconds": theirs_s, "time_ratio": ours_s / theirs_s}
            if not args.quick:
                tight, tight_s = best_time(lambda q=q: SklearnFactorAnalysis(q, tol=1e-4, max_iter=5000,
                                                                         svd_method="lapack").fit(x), 1)
                case.update({"sklearn_tight_log_likelihood": tight.score(x), "sklearn_tight_n_iter": tight.n_iter_,
                             "sklearn_tight_seconds": tight_s})
            results[f"fa_q{q}"] = case
            print(f"FA q={q}: {case}", file=sys.stderr)
            ours, ours_s = best_time(lambda q=q: PPCA(q).fit(x), args.repeats)
            theirs, theirs_s = best_time(lambda q=q: PCA(q).fit(x), args.repeats)
            case = {"emvi_log_likelihood": ours.score(x), "emvi_n_iter": ours.n_iter_, "emvi_seconds": ours_s,
                    "sklearn_log_likelihood": theirs.score(x), "sklearn_seconds": theirs_s,
                    "time_ratio": ours_s / theirs_s}
            results[f"ppca_q{q}"] = case
            print(f"PPCA q={q}: {case}", file=sys.stderr)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
