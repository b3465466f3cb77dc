"""emvi's factor analysis and probabilistic PCA against scikit-learn's on the 8x8 digits (61 non-constant pixels).

Factor analysis: emvi's ``FactorAnalysis`` (profile-likelihood ascent, default ``tol``) against scikit-learn's
``FactorAnalysis`` (defaults: randomized SVD, ``tol=1e-2`` on the total log-likelihood) and a tight scikit-learn run
(LAPACK SVD, ``tol=1e-4``), for each latent size q. PPCA: emvi's ``PPCA`` (EM) against scikit-learn's ``PCA`` score
(the closed-form maximum). Reported per case: log-likelihood per item, iterations, wall seconds (best of
``--repeats``) and the time ratio emvi / scikit-learn. The last line is one JSON object.

    python benchmarks/ppca.py            # q = 5, 10, 20, 3 repeats, tight scikit-learn run included
    python benchmarks/ppca.py --quick    # q = 5, 20, one repeat, no tight run
    python benchmarks/ppca.py --fa-starts  # factor analysis' optimum against the start of Ψ

``--fa-starts`` fits emvi's factor analysis (:func:`emvi.inference.factor_analysis.fit_factor_analysis`, float64,
``tol=1e-6``, up to 2,000 iterations) to the digits (q = 20), wine (q = 5) and breast cancer (q = 3) data from three
starts of the uniquenesses Ψ: ``smc`` (ψ_d = 1 / (S⁻¹)_dd, the default), the data variances, and 1 (scikit-learn's
start), and reports the log-likelihood per item reached and the iterations taken from each.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis

import emvi  # noqa: F401
from emvi.estimators.ppca import PPCA, FactorAnalysis
from emvi.inference.factor_analysis import fit_factor_analysis
from emvi.models.ppca import FactorAnalysisConfig, LinearGaussianModel


def best_time(fit, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fit()
        best = min(best, time.perf_counter() - start)
    return result, best


def fa_starts() -> dict:
    """``--fa-starts``: the optimum factor analysis reaches from each start of Ψ (see the module docstring)."""
    results = {}
    for name, load, q in (("digits", load_digits, 20), ("wine", load_wine, 5), ("breast_cancer", load_breast_cancer, 3)):
        x = load().data.astype(np.float64)
        x = torch.as_tensor(x[:, x.std(0) > 0])
        case = {"n": x.shape[0], "d": x.shape[1], "q": q}
        for start in ("smc", "variances", "ones"):
            torch.manual_seed(0)
            model = LinearGaussianModel(FactorAnalysisConfig(latent_dim=q), x.shape[1], dtype=torch.float64)
            with torch.no_grad():
                model.log_noise.copy_(x.var(0).log() if start == "variances" else torch.zeros(x.shape[1]))
            result = fit_factor_analysis(model, x, max_iter=2000, tol=1e-6, init="smc" if start == "smc" else "model",
                                         warn=False)
            with torch.no_grad():
                case[start] = {"log_likelihood": float(model.log_likelihood(x).mean()), "n_iter": result.n_iter}
        results[name] = case
        print(f"FA starts {name}: {case}", file=sys.stderr)
    print(json.dumps(results))
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--latent-dims", default="5,10,20")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fa-starts", action="store_true", help="factor analysis from three starts of Ψ only")
    args = parser.parse_args(argv)
    if args.fa_starts:
        torch.set_num_threads(args.threads)
        return fa_starts()
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
