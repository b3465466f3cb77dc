"""Where a VAE training step's time goes: emvi's step against hand-written PyTorch, phase by phase, in one run.

Three implementations train copies of the same 784-400-20 MLP VAE on the same mini-batches, one step each in turn
(so machine load hits all alike), and each step is split into forward (the loss), backward and optimizer phases:

* ``torch``: the Keras-style loss, BCE summed over pixels + the closed-form KL, mean over the batch;
* ``replica``: emvi's estimator written by hand without Pyro, ``(N/B) Σ_batch [log q(t) - log p(t) - log p(x | t)]``
  at t = μ + σ ε (the Monte-Carlo KL of Trace_ELBO), so its forward has the same tensor operations as emvi's;
* ``emvi``: ``make_elbo("trace").differentiable_loss(model, guide, x, num_data=N)`` on the Pyro model/guide pair.

All three use the fused Adam of emvi's runner; the optimizer row also times torch's default Adam. The difference
emvi - replica is the cost of running the step through Pyro's sample statements and plates rather than the cost of
the mathematics; replica - torch is the cost of the estimator. Medians over the timed steps, in milliseconds; the
last line is one JSON object.

Measured here (2 CPU threads): Pyro's bookkeeping costs several times more inside a real step than a warm
micro-loop suggests. Constructing a ``pyro.plate`` took about 0.1 ms right after the encoder's matrix product and
about 0.01 ms in a tight loop: the large tensor operations push the interpreter's working set out of the CPU caches.

    python benchmarks/vae_step.py            # 400 timed steps of batch 128
    python benchmarks/vae_step.py --quick    # 60 steps
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import pyro
import torch
from torch import nn
from vae import keras_loss  # benchmarks/vae.py: the hand-written loop's loss

from emvi.distributions import HALF_LOG_2PI
from emvi.inference.elbo import make_elbo
from emvi.models import VAEConfig, build_vae_pair


def torch_loss(encoder, decoder, x, num_data):
    return keras_loss(encoder, decoder, x)


def replica_loss(encoder, decoder, x, num_data):
    loc, raw_scale = encoder(x).chunk(2, dim=-1)
    scale = nn.functional.softplus(raw_scale) + 1e-5
    noise = torch.randn_like(loc)
    t = loc + scale * noise
    latent_dim = loc.shape[-1]
    log_q = -0.5 * noise.pow(2).sum(-1) - scale.log().sum(-1) - latent_dim * HALF_LOG_2PI
    log_prior = -0.5 * t.pow(2).sum(-1) - latent_dim * HALF_LOG_2PI
    log_likelihood = -nn.functional.binary_cross_entropy_with_logits(decoder(t), x, reduction="none").sum(-1)
    return (log_q - log_prior - log_likelihood).sum() * (num_data / x.shape[0])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 timed steps")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 60
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)  # as in emvi's runner (TrainConfig.validate=False)
    torch.manual_seed(args.seed)

    num_data, num_features = 15_604, 784  # the MNIST training set here; the pixels are synthetic, timing needs no data
    data = torch.bernoulli(torch.full((4096, num_features), 0.13))
    model, guide = build_vae_pair(VAEConfig(), num_features)
    elbo = make_elbo("trace")

    def emvi_loss(_encoder, _decoder, x, num_data):
        return elbo.differentiable_loss(model, guide, x, num_data=num_data)

    implementations = {"torch": torch_loss, "replica": replica_loss, "emvi": emvi_loss}
    networks = {"torch": (copy.deepcopy(guide.encoder), copy.deepcopy(model.decoder)),
                "replica": (copy.deepcopy(guide.encoder), copy.deepcopy(model.decoder)),
                "emvi": (guide.encoder, model.decoder)}
    optimizers = {name: torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3, fused=True)
                  for name, (encoder, decoder) in networks.items()}
    # torch's default Adam, timed on shadow copies of the torch network's parameters that share its gradients
    torch_parameters = [*networks["torch"][0].parameters(), *networks["torch"][1].parameters()]
    shadows = [p.detach().clone().requires_grad_() for p in torch_parameters]
    default_adam = torch.optim.Adam(shadows, lr=1e-3)
    timings = {name: {"forward": [], "backward": [], "optimizer": []} for name in implementations}
    timings["torch"]["optimizer_default_adam"] = []

    warm_up = 20
    for step in range(warm_up + args.steps):
        start = (step * args.batch_size) % (data.shape[0] - args.batch_size)
        x = data[start : start + args.batch_size]
        for name, loss_fn in implementations.items():
            encoder, decoder = networks[name]
            optimizer = optimizers[name]
            durations = []
            begin = time.perf_counter()
            loss = loss_fn(encoder, decoder, x, num_data)
            durations.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            durations.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            optimizer.step()
            durations.append(time.perf_counter() - begin)
            if name == "torch":
                for shadow, parameter in zip(shadows, torch_parameters, strict=True):
                    shadow.grad = parameter.grad
                begin = time.perf_counter()
                default_adam.step()
                durations.append(time.perf_counter() - begin)
            if step >= warm_up:
                for phase, seconds in zip(timings[name], durations, strict=True):
                    timings[name][phase].append(1e3 * seconds)

    milliseconds = {name: {phase: statistics.median(values) for phase, values in phases.items()}
                    for name, phases in timings.items()}
    for name in implementations:
        milliseconds[name]["step"] = sum(milliseconds[name][p] for p in ("forward", "backward", "optimizer"))
    print(f"{'ms per step':24s}" + "".join(f"{name:>10s}" for name in implementations) + f"{'emvi/torch':>12s}")
    for phase in ("forward", "backward", "optimizer", "step"):
        row = [milliseconds[name][phase] for name in implementations]
        print(f"{phase:24s}" + "".join(f"{value:10.3f}" for value in row) + f"{row[2] / row[0]:12.3f}")
    print(f"{'optimizer, default Adam':24s}{milliseconds['torch']['optimizer_default_adam']:10.3f}")
    summary = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "milliseconds": milliseconds,
        "pyro_overhead_ms": milliseconds["emvi"]["step"] - milliseconds["replica"]["step"],
        "estimator_overhead_ms": milliseconds["replica"]["step"] - milliseconds["torch"]["step"],
        "step_time_ratio_emvi_torch": milliseconds["emvi"]["step"] / milliseconds["torch"]["step"],
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
