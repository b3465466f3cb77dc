"""emvi's VAE against a hand-written PyTorch loop with the Keras-style loss, side by side in one run.

All train the same architecture (784-400-20 MLP encoder and decoder, ReLU) from the same initial weights on the same
mini-batches (same order, same static binarisation) with Adam, for the same number of epochs:

* torch: ``loss = mean_batch[ BCE(x, f(t)) summed over pixels + KL(q(t|x) || N(0, I)) ]`` with t = μ + σ ε and
  torch's default Adam, as a hand-written loop usually is;
* torch_fused: the same loop with ``Adam(fused=True)``, the optimizer emvi's runner uses;
* emvi:  ``emvi.inference.train`` with the default Trace_ELBO on the Pyro model/guide pair (``--elbo meanfield``:
  TraceMeanField_ELBO, the analytic KL, i.e. exactly the torch loop's objective).

Reported: training throughput (images per second per epoch; epochs of the loops alternate so machine load hits all
alike) and the median per-epoch ratios emvi/torch (``throughput_ratio``: what switching from the hand-written loop to
emvi gains or costs) and emvi/torch_fused (``throughput_ratio_same_optimizer``: emvi's own overhead, from Pyro's
sample statements and the model/guide structure); then on held-out images the ELBO and the importance-sampled
log-likelihood (K samples from q) of emvi's and torch's networks, both evaluated by the same estimator
(:func:`emvi.inference.likelihood.estimate_log_likelihood`). With several ``--seeds`` the test numbers are averaged
and the paired differences emvi - torch get standard errors. The last line is one JSON object.

    python benchmarks/vae.py                 # MNIST from $EMVI_DATA (default ../shared/data), 10 epochs
    python benchmarks/vae.py --quick         # digits, a few epochs, under a minute
    python benchmarks/vae.py --seeds 0 1 2   # the test comparison over three seeds
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import emvi
from emvi import train
from emvi.data import load_dataset
from emvi.inference import TrainConfig, seed_everything
from emvi.inference.likelihood import estimate_log_likelihood
from emvi.models import VAEConfig, build_vae_pair

TORCH_LOOPS = {"torch": {}, "torch_fused": {"fused": True}}
"""The hand-written loop as people write it (torch's default Adam, a Python loop over parameters on CPU) and the same
loop with the fused Adam that emvi's runner uses: the first ratio is what a user gains or loses by switching to emvi,
the second isolates emvi's own overhead."""


def keras_loss(encoder: nn.Module, decoder: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """mean_batch[ BCE(x, f(t)) summed over pixels + KL(q(t|x) || N(0, I)) ] at t = μ + σ ε, as the Keras example."""
    loc, raw_scale = encoder(batch).chunk(2, dim=-1)
    scale = nn.functional.softplus(raw_scale) + 1e-5
    t = loc + scale * torch.randn_like(loc)
    reconstruction = nn.functional.binary_cross_entropy_with_logits(decoder(t), batch, reduction="none").sum(-1)
    kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1.0 - 2.0 * scale.log()).sum(-1)
    return (reconstruction + kl).mean()


def torch_epoch(encoder: nn.Module, decoder: nn.Module, optimizer, x: torch.Tensor, order: torch.Tensor,
                batch_size: int) -> float:
    """One epoch of the Keras-style loop; returns images per second."""
    start = time.perf_counter()
    for begin in range(0, x.shape[0], batch_size):
        loss = keras_loss(encoder, decoder, x.index_select(0, order[begin : begin + batch_size]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return x.shape[0] / (time.perf_counter() - start)


def train_one_seed(args, train_data, test_data, seed: int) -> dict:
    """Train emvi and the two torch loops from the same weights on the same batches; evaluate emvi and torch."""
    x = train_data.x
    seed_everything(seed)
    config = VAEConfig()
    model, guide = build_vae_pair(config, x.shape[1], train_data.image_shape)
    loops = {name: (copy.deepcopy(guide.encoder), copy.deepcopy(model.decoder)) for name in TORCH_LOOPS}
    optimizers = {name: torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=args.learning_rate,
                                         **TORCH_LOOPS[name])
                  for name, (encoder, decoder) in loops.items()}
    # The runner's shuffling: epoch e uses randperm under the seed (seed * 1_000_003 + e); reuse it for the torch loops.
    orders = [torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed * 1_000_003 + e))
              for e in range(args.epochs)]

    # Epochs alternate between the loops so that a change in machine load hits all alike; emvi continues from its
    # checkpoint (exact resume), whose writing is outside the timed loop. Each loop keeps its own noise stream.
    noise = {name: torch.Generator().manual_seed(seed) for name in loops}
    speeds = {name: [] for name in (*loops, "emvi")}
    with tempfile.TemporaryDirectory() as run_dir:
        for epoch in range(args.epochs):
            emvi_rng = torch.get_rng_state()
            for name, (encoder, decoder) in loops.items():
                torch.set_rng_state(noise[name].get_state())
                speeds[name].append(torch_epoch(encoder, decoder, optimizers[name], x, orders[epoch], args.batch_size))
                noise[name].set_state(torch.get_rng_state())
            torch.set_rng_state(emvi_rng)
            result = train(model, guide, train_data, run_dir=run_dir, resume=epoch > 0, config=TrainConfig(
                epochs=epoch + 1, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=seed,
                elbo=args.elbo, progress=False))
            speeds["emvi"].append(result.history[-1]["items_per_second"])
            print(f"seed {seed}, epoch {epoch + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in speeds.items())
                  + " images/s", flush=True)

    # Evaluate both networks with one estimator: the torch-trained nets go into an emvi model/guide pair.
    torch_model, torch_guide = build_vae_pair(config, x.shape[1], train_data.image_shape)
    torch_model.decoder.load_state_dict(loops["torch"][1].state_dict())
    torch_guide.encoder.load_state_dict(loops["torch"][0].state_dict())
    x_test = test_data.x[: args.num_test]
    outcome = {"seed": seed, "images_per_second": {k: statistics.median(v) for k, v in speeds.items()},
               "throughput_ratio": statistics.median(e / t for e, t in zip(speeds["emvi"], speeds["torch"], strict=True)),
               "throughput_ratio_same_optimizer": statistics.median(
                   e / t for e, t in zip(speeds["emvi"], speeds["torch_fused"], strict=True))}
    for name, (m, g) in {"emvi": (model, guide), "torch": (torch_model, torch_guide)}.items():
        seed_everything(seed + 1)
        start = time.perf_counter()
        estimate = estimate_log_likelihood(m, g, x_test, num_samples=args.num_samples, prior=False).summary()
        outcome[f"test_elbo_{name}"], outcome[f"is_loglik_{name}"] = estimate["elbo_nats"], estimate["is_loglik_nats"]
        print(f"seed {seed}, {name}: test ELBO {estimate['elbo_nats']:.2f}, IS log-likelihood (K={args.num_samples}) "
              f"{estimate['is_loglik_nats']:.2f} nats/image ({time.perf_counter() - start:.1f} s)", flush=True)
    return outcome


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="digits, 3 epochs, K=100 on 200 test images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--num-samples", type=int, default=1000, help="importance samples K")
    parser.add_argument("--num-test", type=int, default=1000, help="held-out images evaluated")
    parser.add_argument("--data-root", default=os.environ.get("EMVI_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds (initial weights, batch order, noise); test numbers are averaged over them")
    parser.add_argument("--elbo", default="trace", choices=("trace", "meanfield"),
                        help="emvi's estimator: trace (the default, Monte-Carlo KL) or meanfield (analytic KL)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.num_samples, args.num_test = 3, 100, 200
    torch.set_num_threads(args.threads)

    dataset_name = "digits" if args.quick else "mnist"
    train_data = load_dataset(dataset_name, root=args.data_root, binarize="static")
    test_data = load_dataset(dataset_name, root=args.data_root, split="test", binarize="static")
    print(f"data: {dataset_name}, {len(train_data)} training images of {train_data.x.shape[1]} pixels; {args.epochs} "
          f"epochs, batch {args.batch_size}; emvi ELBO {args.elbo}; torch {torch.__version__}, emvi {emvi.__version__}, "
          f"{args.threads} threads", flush=True)
    outcomes = [train_one_seed(args, train_data, test_data, seed) for seed in args.seeds]

    summary = {
        "dataset": dataset_name,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "elbo_emvi": args.elbo,
        "seeds": args.seeds,
        **{f"images_per_second_{name}": statistics.median(o["images_per_second"][name] for o in outcomes)
           for name in ("torch", "torch_fused", "emvi")},
        "throughput_ratio": statistics.median(o["throughput_ratio"] for o in outcomes),
        "throughput_ratio_same_optimizer": statistics.median(o["throughput_ratio_same_optimizer"] for o in outcomes),
    }
    for key in ("test_elbo_emvi", "test_elbo_torch", "is_loglik_emvi", "is_loglik_torch"):
        summary[key] = statistics.fmean(o[key] for o in outcomes)
    if len(outcomes) > 1:
        # Paired by seed (same initial weights and batches): the mean difference and its standard error.
        for quantity in ("test_elbo", "is_loglik"):
            differences = [o[f"{quantity}_emvi"] - o[f"{quantity}_torch"] for o in outcomes]
            summary[f"{quantity}_difference"] = statistics.fmean(differences)
            summary[f"{quantity}_difference_se"] = statistics.stdev(differences) / len(differences) ** 0.5
        summary["per_seed"] = [{k: o[k] for k in ("seed", "test_elbo_emvi", "test_elbo_torch", "is_loglik_emvi",
                                                   "is_loglik_torch")} for o in outcomes]
    summary.update(num_samples=args.num_samples, num_test=min(args.num_test, len(test_data)))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
