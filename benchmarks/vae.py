"""emvi's VAE against a hand-written PyTorch loop with the Keras-style loss, side by side in one run.

Both train the same architecture (784-400-20 MLP encoder and decoder, ReLU) from the same initial weights on the same
mini-batches (same order, same static binarisation) with Adam, for the same number of epochs:

* torch: ``loss = mean_batch[ BCE(x, f(t)) summed over pixels + KL(q(t|x) || N(0, I)) ]`` with t = μ + σ ε;
* emvi:  ``emvi.inference.train`` with the default Trace_ELBO on the Pyro model/guide pair (``--elbo meanfield``:
  TraceMeanField_ELBO, the analytic KL, i.e. exactly the torch loop's objective).

Reported: training throughput (images per second per epoch; epochs of the two loops alternate so machine load hits
both alike) and the median per-epoch ratio emvi/torch; then on held-out
images the ELBO and the importance-sampled log-likelihood (K samples from q), both networks evaluated by the same
estimator (:func:`emvi.inference.likelihood.estimate_log_likelihood`). The last line is one JSON object.

    python benchmarks/vae.py                 # MNIST from $EMVI_DATA (default ../shared/data), 10 epochs
    python benchmarks/vae.py --quick         # digits, a few epochs, under a minute
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
from emvi.data import load_dataset
from emvi.inference import TrainConfig, seed_everything, train
from emvi.inference.likelihood import estimate_log_likelihood
from emvi.models import VAEConfig, build_vae_pair


def torch_epoch(encoder: nn.Module, decoder: nn.Module, optimizer, x: torch.Tensor, order: torch.Tensor,
                batch_size: int) -> float:
    """One epoch of the Keras-style loop; returns images per second."""
    start = time.perf_counter()
    for begin in range(0, x.shape[0], batch_size):
        batch = x.index_select(0, order[begin : begin + batch_size])
        loc, raw_scale = encoder(batch).chunk(2, dim=-1)
        scale = nn.functional.softplus(raw_scale) + 1e-5
        t = loc + scale * torch.randn_like(loc)
        logits = decoder(t)
        reconstruction = nn.functional.binary_cross_entropy_with_logits(logits, batch, reduction="none").sum(-1)
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1.0 - 2.0 * scale.log()).sum(-1)
        loss = (reconstruction + kl).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return x.shape[0] / (time.perf_counter() - start)


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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--elbo", default="trace", choices=("trace", "meanfield"),
                        help="emvi's estimator: trace (the default, Monte-Carlo KL) or meanfield (analytic KL)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.num_samples, args.num_test = 3, 100, 200
    torch.set_num_threads(args.threads)

    dataset_name = "digits" if args.quick else "mnist"
    train_data = load_dataset(dataset_name, root=args.data_root, binarize="static")
    test_data = load_dataset(dataset_name, root=args.data_root, split="test", binarize="static")
    x = train_data.x
    print(f"data: {dataset_name}, {x.shape[0]} training images of {x.shape[1]} pixels; {args.epochs} epochs, "
          f"batch {args.batch_size}; emvi ELBO {args.elbo}; torch {torch.__version__}, emvi {emvi.__version__}, {args.threads} threads", flush=True)

    seed_everything(args.seed)
    config = VAEConfig()
    model, guide = build_vae_pair(config, x.shape[1], train_data.image_shape)
    torch_encoder, torch_decoder = copy.deepcopy(guide.encoder), copy.deepcopy(model.decoder)
    # The runner's shuffling: epoch e uses randperm under the seed (seed * 1_000_003 + e); reuse it for the torch loop.
    orders = [torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(args.seed * 1_000_003 + e))
              for e in range(args.epochs)]

    # Epochs alternate between the two loops so that a change in machine load hits both alike; emvi continues
    # from its checkpoint (exact resume), whose writing is outside the timed loop.
    optimizer = torch.optim.Adam(list(torch_encoder.parameters()) + list(torch_decoder.parameters()), lr=args.learning_rate)
    torch_rng = torch.Generator().manual_seed(args.seed)
    torch_speeds, emvi_speeds = [], []
    with tempfile.TemporaryDirectory() as run_dir:
        for epoch in range(args.epochs):
            emvi_rng = torch.get_rng_state()
            torch.set_rng_state(torch_rng.get_state())
            torch_speeds.append(torch_epoch(torch_encoder, torch_decoder, optimizer, x, orders[epoch], args.batch_size))
            torch_rng.set_state(torch.get_rng_state())
            torch.set_rng_state(emvi_rng)
            result = train(model, guide, train_data, run_dir=run_dir, resume=epoch > 0, config=TrainConfig(
                epochs=epoch + 1, batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                elbo=args.elbo, progress=False))
            emvi_speeds.append(result.history[-1]["items_per_second"])
            print(f"epoch {epoch + 1}: torch {torch_speeds[-1]:.0f}, emvi {emvi_speeds[-1]:.0f} images/s", flush=True)
    ratios = [e / t for e, t in zip(emvi_speeds, torch_speeds, strict=True)]

    # Evaluate both networks with one estimator: the torch-trained nets go into an emvi model/guide pair.
    torch_model, torch_guide = build_vae_pair(config, x.shape[1], train_data.image_shape)
    torch_model.decoder.load_state_dict(torch_decoder.state_dict())
    torch_guide.encoder.load_state_dict(torch_encoder.state_dict())
    x_test = test_data.x[: args.num_test]
    estimates = {}
    for name, (m, g) in {"emvi": (model, guide), "torch": (torch_model, torch_guide)}.items():
        seed_everything(args.seed + 1)
        start = time.perf_counter()
        estimates[name] = estimate_log_likelihood(m, g, x_test, num_samples=args.num_samples, prior=False).summary()
        print(f"{name}: test ELBO {estimates[name]['elbo_nats']:.2f}, IS log-likelihood (K={args.num_samples}) "
              f"{estimates[name]['is_loglik_nats']:.2f} nats/image ({time.perf_counter() - start:.1f} s)", flush=True)

    summary = {
        "dataset": dataset_name,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "elbo_emvi": args.elbo,
        "images_per_second_torch": statistics.median(torch_speeds),
        "images_per_second_emvi": statistics.median(emvi_speeds),
        "throughput_ratio": statistics.median(ratios),
        "test_elbo_emvi": estimates["emvi"]["elbo_nats"],
        "test_elbo_torch": estimates["torch"]["elbo_nats"],
        "is_loglik_emvi": estimates["emvi"]["is_loglik_nats"],
        "is_loglik_torch": estimates["torch"]["is_loglik_nats"],
        "num_samples": args.num_samples,
        "num_test": int(x_test.shape[0]),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
