"""emvi's Baum-Welch against hmmlearn's, side by side in one run from the same initial parameters.

Data: sequences sampled from a known Gaussian HMM (diagonal covariances). Both fit the same model with the same
starting point (emvi's k-means++ initialisation, handed to hmmlearn with ``init_params=""``), the same number of EM
iterations and no priors (hmmlearn's covariance and mean priors set to zero, the same variance floor). Reported: wall
time of each fit, its ratio emvi/hmmlearn, and the final log-likelihoods (they should agree: same optimum). The
last line is one JSON object.

    python benchmarks/hmm.py            # 200 sequences x 500 steps, K=5, D=4, 50 iterations
    python benchmarks/hmm.py --quick    # under a minute
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from hmmlearn import hmm as hmmlearn

import emvi
from emvi.estimators.hmm import initialise_hmm
from emvi.inference.em import fit_em
from emvi.models.hmm import HMMConfig, HMMModel


def simulate(num_sequences, length, num_states, num_features, seed):
    rng = np.random.default_rng(seed)
    truth = hmmlearn.GaussianHMM(num_states, covariance_type="diag", init_params="")
    truth.startprob_ = rng.dirichlet(np.ones(num_states))
    truth.transmat_ = rng.dirichlet(np.ones(num_states), size=num_states) + 4 * np.eye(num_states)
    truth.transmat_ /= truth.transmat_.sum(1, keepdims=True)
    truth.means_ = rng.normal(size=(num_states, num_features)) * 3
    truth.covars_ = rng.uniform(0.5, 2.0, size=(num_states, num_features))
    return np.stack([truth.sample(length, random_state=seed + i)[0] for i in range(num_sequences)])


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
    args = parser.parse_args(argv)
    if args.quick:
        args.sequences, args.length, args.iterations = 40, 200, 20
    torch.set_num_threads(args.threads)
    x = simulate(args.sequences, args.length, args.states, args.features, args.seed)
    print(f"data: {args.sequences} sequences x {args.length} steps, D={args.features}, K={args.states}; "
          f"{args.iterations} EM iterations; emvi {emvi.__version__}, {args.threads} threads", flush=True)

    xt = torch.as_tensor(x)
    lengths = torch.full((len(x),), args.length)
    model = HMMModel(HMMConfig(args.states, "gaussian"), args.features, dtype=torch.float64)
    initialise_hmm(model, xt, lengths, torch.Generator().manual_seed(args.seed))
    init = {name: getattr(model, name).detach().numpy().copy() for name in model.parameter_names()}

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
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
