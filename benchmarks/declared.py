"""Declared models against the built-in or hand-written models they replace: time per SVI epoch and per EM iteration.

Each case builds one model twice, from its declaration (``emvi.declare`` / a spec file of ``examples/declared``) and
as a built-in model or a hand-written Pyro model/guide, copies the declared model's parameters into the other, and
first checks that both do the same work: the same loss (and gradient norm) on the same batch at the same parameters
and seed (SVI), or the same objective history over the same EM iterations (EM). Then it times them alternately
(A B A B ..., so machine load hits both alike) on the same data, batch size, optimiser, ELBO and seed:

* ``gaussian_mixture_em``: ``examples/declared/gaussian_mixture_em.toml`` (on its data, ``clusters.npz``) against
  :class:`emvi.models.mixture.MixtureModel` (gaussian-diag), :func:`emvi.inference.em.fit_em` with a fixed number of
  iterations (``tol=0``); ``gaussian_mixture_em_large``: the same on 50,000 items drawn from the fitted mixture;
* ``gmvae_svi``: emvi's ``gmvae`` (a declaration: :mod:`emvi.models.deep_mixture`; z summed out in the model, full
  covariance prior) against a hand-written Pyro GMVAE with the same network sizes, ``TraceEnum_ELBO``;
* ``poisson_vae_svi``: ``examples/declared/poisson_vae.toml`` (digit pixel counts) against a hand-written Pyro
  Poisson VAE, ``Trace_ELBO``;
* ``poisson_regression_mixture_svi``: ``examples/declared/poisson_regression_mixture.yaml`` against a hand-written
  mixture of Poisson regressions, z enumerated in the model, ``TraceEnum_ELBO``.

Both sides of an SVI case run :class:`emvi.inference.svi_loop.SVI` (its ``run_epoch``: shuffled mini-batches, fused
Adam, the ELBO object given) so only the model and guide differ. One JSON line per case with the median seconds,
``svi_ratio`` or ``em_ratio`` = declared / hand-written, and ``equal_work``; the last line is a summary.

Both EM sides run a fused E-step on sufficient statistics, one matrix product per chunk of rows (the declared
model's: :mod:`emvi.models.declared_em`; MixtureModel's: ``expected_statistics``), not a trace of the model.

    python benchmarks/declared.py            # 7 pairs per case
    python benchmarks/declared.py --quick    # 3 pairs, fewer iterations: under a minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import yaml
from torch import nn

from emvi.catalog.declared import DeclaredConfig, build_declared
from emvi.catalog.deep_mixture import build_gmvae
from emvi.data import load_dataset
from emvi.declaration import Declaration
from emvi.inference.elbo import make_elbo
from emvi.inference.em import EMConfig, em_start, fit_em
from emvi.inference.svi_loop import SVI
from emvi.inference.train_config import TrainConfig
from emvi.models.deep_mixture import GMVAEConfig
from emvi.models.mixture import MixtureConfig, MixtureModel
from emvi.nn import mlp

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "declared"
MAX_LOG = 30.0  # the declared model's clamp of a log-scale network output before exp


def declaration_of(file: str) -> Declaration:
    path = EXAMPLES / file
    text = path.read_text()
    spec = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    return Declaration.from_dict(spec["model"]["title"], {"sites": spec["model"]["sites"]})


def example_arrays(file: str) -> dict[str, torch.Tensor]:
    with np.load(EXAMPLES / "data" / file) as arrays:
        return {name: torch.as_tensor(arrays[name], dtype=torch.float32) for name in arrays.files}


def batch_plate(x: torch.Tensor, num_data: int | None):
    """The data plate of a hand-written model fed mini-batches: log-densities scaled by N / batch."""
    return pyro.plate("data", num_data or x.shape[0], subsample=torch.arange(x.shape[0], device=x.device))


def gaussian_encoder(sizes) -> nn.Module:
    return mlp(sizes)


def diagonal_gaussian(raw: torch.Tensor) -> dist.Distribution:
    loc, raw_scale = raw.chunk(2, -1)
    return dist.Normal(loc, nn.functional.softplus(raw_scale) + 1e-5).to_event(1)


# -- hand-written models ----------------------------------------------------------------------------------------------


class HandGMVAE(nn.Module):
    """z_n ~ Categorical(1/K) (enumerated), t_n | z_n ~ MVN(μ_z, L_z L_zᵀ), x_n | t_n ~ Bernoulli(f(t_n));
    guide q(t_n | x_n) diagonal Normal. ``model`` and ``guide`` are the Pyro pair."""

    def __init__(self, num_components: int, latent_dim: int, num_features: int, hidden: tuple[int, ...]):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(num_components, latent_dim))
        self.raw_tril = nn.Parameter(torch.zeros(num_components, latent_dim, latent_dim))
        self.decoder = mlp([latent_dim, *hidden, num_features])
        self.encoder = gaussian_encoder([num_features, *hidden, 2 * latent_dim])

    def model(self, x, num_data=None):
        k = self.loc.shape[0]
        tril = self.raw_tril.tril(-1) + self.raw_tril.diagonal(dim1=-2, dim2=-1).clamp(max=MAX_LOG).exp().diag_embed()
        with batch_plate(x, num_data):
            z = pyro.sample("z", dist.Categorical(logits=x.new_zeros(k)), infer={"enumerate": "parallel"})
            t = pyro.sample("t", dist.MultivariateNormal(self.loc[z], scale_tril=tril[z]))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(t)).to_event(1), obs=x)

    def guide(self, x, num_data=None):
        with batch_plate(x, num_data):
            pyro.sample("t", diagonal_gaussian(self.encoder(x)))

    @torch.no_grad()
    def copy_from(self, model, guide):
        k, q = self.loc.shape
        self.loc.copy_(model.learned["t__loc"])
        self.raw_tril.copy_(model.learned["t__scale_tril"].reshape(k, q, q))
        self.decoder.load_state_dict(model.networks["x__logits"].net.state_dict())
        self.encoder.load_state_dict(guide.encoders["t"].net.state_dict())


class HandPoissonVAE(nn.Module):
    """t_n ~ N(0, I), x_n | t_n ~ Poisson(exp f(t_n)) per pixel; guide q(t_n | x_n) diagonal Normal."""

    def __init__(self, latent_dim: int, num_features: int, hidden: tuple[int, ...], guide_hidden: tuple[int, ...]):
        super().__init__()
        self.latent_dim = latent_dim
        self.decoder = mlp([latent_dim, *hidden, num_features])
        self.encoder = gaussian_encoder([num_features, *guide_hidden, 2 * latent_dim])

    def model(self, x, num_data=None):
        zeros = x.new_zeros(self.latent_dim)
        with batch_plate(x, num_data):
            t = pyro.sample("t", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("x", dist.Poisson(self.decoder(t).clamp(max=MAX_LOG).exp()).to_event(1), obs=x)

    def guide(self, x, num_data=None):
        with batch_plate(x, num_data):
            pyro.sample("t", diagonal_gaussian(self.encoder(x)))

    @torch.no_grad()
    def copy_from(self, model, guide):
        self.decoder.load_state_dict(model.networks["x__rate"].net.state_dict())
        self.encoder.load_state_dict(guide.encoders["t"].net.state_dict())


class HandPoissonRegressionMixture(nn.Module):
    """z_n ~ Categorical(softmax(a)) (enumerated), x_n | z_n, c_n ~ Poisson(exp(β_z · c_n + α_z)); no guide sites."""

    def __init__(self, num_components: int, num_covariates: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_components))
        self.weight = nn.Parameter(torch.zeros(num_components, num_covariates))
        self.bias = nn.Parameter(torch.zeros(num_components, 1))

    def model(self, x, c, num_data=None):
        with batch_plate(x, num_data):
            z = pyro.sample("z", dist.Categorical(logits=self.logits), infer={"enumerate": "parallel"})
            log_rate = (c * self.weight[z]).sum(-1, keepdim=True) + self.bias[z]
            pyro.sample("x", dist.Poisson(log_rate.clamp(max=MAX_LOG).exp()).to_event(1), obs=x)

    def guide(self, x, c, num_data=None):
        pass

    @torch.no_grad()
    def copy_from(self, model, guide):
        self.logits.copy_(model.learned["z__logits"])
        self.weight.copy_(model.learned["x__rate"])
        self.bias.copy_(model.learned["x__rate__bias"])


class Half(nn.Module):
    """``owner.model`` or ``owner.guide`` as a module, so that the SVI loop collects the owner's parameters."""

    def __init__(self, owner: nn.Module, method: str):
        super().__init__()
        self.owner, self.method = owner, method

    def forward(self, *data, num_data=None):
        return getattr(self.owner, self.method)(*data, num_data=num_data)


# -- equal work ---------------------------------------------------------------------------------------------------------


def loss_and_gradient(elbo, model, guide, modules, batch, num_data: int, seed: int) -> tuple[float, float]:
    """The ELBO loss on ``batch`` with the guide's draws seeded by ``seed``, and the norm of its gradient over every
    parameter of ``modules`` (invariant to how the two sides shape or split their parameters)."""
    parameters = [p for module in modules for p in module.parameters()]
    pyro.set_rng_seed(seed)
    loss = elbo.differentiable_loss(model, guide, *batch, num_data=num_data)
    gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in gradients if g is not None))
    return float(loss.detach()), norm


def check_equal_svi(elbo, declared: tuple, hand: HandGMVAE, batch, num_data: int, seed: int) -> dict:
    """Assert the declared pair and the hand-written one give the same loss and gradient norm (relative 1e-4: float32
    sums in another order) on the same batch at the same parameters and seed; return both."""
    model, guide = declared
    ours = loss_and_gradient(elbo, model, guide, (model, guide), batch, num_data, seed)
    theirs = loss_and_gradient(elbo, hand.model, hand.guide, (hand,), batch, num_data, seed)
    for what, a, b in zip(("loss", "gradient norm"), ours, theirs, strict=True):
        assert math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6), f"unequal work: {what} {a} (declared) vs {b} (hand)"
    return {"loss_declared": ours[0], "loss_hand": theirs[0], "grad_norm_declared": ours[1], "grad_norm_hand": theirs[1]}


# -- timing -------------------------------------------------------------------------------------------------------------


MIN_SAMPLE_SECONDS = 0.1
"""A timed sample repeats a short run until it lasts about this long, so a scheduler's time slice on the shared
machine is a small part of it."""


def alternate(declared, hand, pairs: int) -> tuple[tuple[list[float], list[float]], tuple[list[float], list[float]]]:
    """Wall and CPU seconds (this process, every thread) per run of ``declared()`` and ``hand()``, timed alternately
    after one warm-up run of each: ``((wall declared, wall hand), (cpu declared, cpu hand))``, one entry per pair.
    Each sample is ``repeats`` runs (the same number on both sides) lasting about :data:`MIN_SAMPLE_SECONDS`. On a
    loaded machine the CPU seconds leave out the time the process waited for a core."""
    declared()
    began = time.perf_counter()
    hand()
    repeats = max(1, math.ceil(MIN_SAMPLE_SECONDS / max(time.perf_counter() - began, 1e-6)))
    wall, cpu = ([], []), ([], [])
    for _ in range(pairs):
        for side, run in enumerate((declared, hand)):
            began, began_cpu = time.perf_counter(), time.process_time()
            for _ in range(repeats):
                run()
            wall[side].append((time.perf_counter() - began) / repeats)
            cpu[side].append((time.process_time() - began_cpu) / repeats)
    return wall, cpu


def svi_epoch_runner(model, guide, data: tuple, elbo, config: TrainConfig):
    """A function running one more SVI epoch of ``model``/``guide`` (emvi's loop: shuffled batches, Adam)."""
    loop = SVI(model, guide, config, loss=elbo).init(data)

    def run_epoch():
        loop.run_epoch()
        loop.epoch += 1  # the next epoch's shuffle, as SVI.run would

    return run_epoch


def svi_case(name: str, declared: tuple, hand, data: tuple, elbo_name: str, args, *, batch_size: int,
             learning_rate: float) -> dict:
    hand.copy_from(*declared)
    declared = tuple(module.to(args.device) for module in declared)
    hand, data = hand.to(args.device), tuple(t.to(args.device) for t in data)
    num_data = data[0].shape[0]
    elbo = make_elbo(elbo_name, max_plate_nesting=1)
    batch = tuple(t[:batch_size] for t in data)
    equal = check_equal_svi(elbo, declared, hand, batch, num_data, args.seed)
    config = TrainConfig(batch_size=batch_size, learning_rate=learning_rate, seed=args.seed, progress=False,
                         epochs=10**6, device=args.device)
    run_declared = svi_epoch_runner(*declared, data, make_elbo(elbo_name, max_plate_nesting=1), config)
    run_hand = svi_epoch_runner(Half(hand, "model"), Half(hand, "guide"), data, make_elbo(elbo_name, max_plate_nesting=1), config)
    times = alternate(run_declared, run_hand, args.pairs)
    return result(name, "svi", times, equal, items=num_data, batch_size=batch_size, elbo=elbo_name)


def result(name: str, kind: str, times, equal: dict, **facts) -> dict:
    """One case's line: median wall seconds of each side and their ratio (``svi_ratio`` / ``em_ratio``), the same
    for CPU seconds (``*_cpu_*``), every run's seconds, the equal-work numbers and the case's facts."""
    (wall_declared, wall_hand), (cpu_declared, cpu_hand) = times
    declared, hand = statistics.median(wall_declared), statistics.median(wall_hand)
    declared_cpu, hand_cpu = statistics.median(cpu_declared), statistics.median(cpu_hand)
    return {"case": name, "kind": kind, "declared_s": declared, "hand_s": hand, f"{kind}_ratio": declared / hand,
            "declared_cpu_s": declared_cpu, "hand_cpu_s": hand_cpu, f"{kind}_cpu_ratio": declared_cpu / hand_cpu,
            "pairs": len(wall_declared), "declared_all_s": wall_declared, "hand_all_s": wall_hand,
            "equal_work": True, **equal, **facts}


# -- the cases ----------------------------------------------------------------------------------------------------------


class _Info:
    """What a builder knows of its data: the per-item shape of each array."""

    def __init__(self, data: dict[str, torch.Tensor]):
        self.arrays = {name: tuple(t.shape[1:]) for name, t in data.items()}
        self.event_shape = self.arrays.get("x")
        self.image_shape = None


def gmvae_case(args) -> dict:
    x = load_dataset("digits", binarize="static").tensors[0].float()[: args.svi_items]
    config = GMVAEConfig()
    torch.manual_seed(args.seed)
    declared = build_gmvae(config, _Info({"x": x}))
    hand = HandGMVAE(config.num_components, config.latent_dim, x.shape[1], config.hidden_dims)
    return svi_case("gmvae_svi", declared, hand, (x,), "enum", args, batch_size=128, learning_rate=1e-3)


def poisson_vae_case(args) -> dict:
    x = load_dataset("digits", raw_counts=True).tensors[0].float()[: args.svi_items]
    declaration = declaration_of("poisson_vae.toml")
    torch.manual_seed(args.seed)
    declared = build_declared(declaration, DeclaredConfig(), _Info({"x": x}))
    hand = HandPoissonVAE(2, x.shape[1], (64,), DeclaredConfig().guide_hidden_dims)
    return svi_case("poisson_vae_svi", declared, hand, (x,), "trace", args, batch_size=64, learning_rate=3e-3)


def poisson_regression_mixture_case(args) -> dict:
    arrays = example_arrays("regression_counts.npz")
    declaration = declaration_of("poisson_regression_mixture.yaml")
    data = tuple(arrays[name] for name in declaration.data_names)
    torch.manual_seed(args.seed)
    declared = build_declared(declaration, DeclaredConfig(), _Info(arrays))
    hand = HandPoissonRegressionMixture(3, arrays["c"].shape[1])
    return svi_case("poisson_regression_mixture_svi", declared, hand, data, "enum", args, batch_size=600,
                    learning_rate=0.05)


def em_case(name: str, x: torch.Tensor, args, iterations: int) -> dict:
    """The declared Gaussian mixture's EM against MixtureModel's, both from the same k-means++ start."""
    declared = build_declared(declaration_of("gaussian_mixture_em.toml"), DeclaredConfig(), _Info({"x": x}))[0]
    em_start(declared, (x,), EMConfig(), torch.Generator().manual_seed(args.seed))
    builtin = MixtureModel(MixtureConfig(num_components=3, family="gaussian-diag"), x.shape[1]).to(args.device)
    declared, x = declared.to(args.device), x.to(args.device)
    start = {name: value.clone() for name, value in declared.state_dict().items()}

    def restart():
        declared.load_state_dict(start)
        with torch.no_grad():
            builtin.set_parameter("weights", torch.softmax(start["learned.z__logits"], 0))
            builtin.set_parameter("means", start["learned.x__loc"])
            builtin.set_parameter("variances", (2 * start["learned.x__scale"]).exp())

    def run_declared():
        restart()
        return fit_em(declared, x, max_iter=iterations, tol=0.0, warn=False)

    def run_builtin():
        restart()
        return fit_em(builtin, x, max_iter=iterations, tol=0.0, warn=False)

    ours, theirs = run_declared().log_likelihood_history, run_builtin().log_likelihood_history
    gap = max(abs(a - b) / x.shape[0] for a, b in zip(ours, theirs, strict=True))
    assert len(ours) == iterations + 1 and gap < 1e-4, f"unequal work: EM histories differ by {gap} nats per item"
    equal = {"objective_declared": ours[-1], "objective_builtin": theirs[-1], "max_gap_nats_per_item": gap}
    times = alternate(run_declared, run_builtin, args.pairs)
    # per iteration (an E-step and an M-step)
    times = tuple(tuple([t / iterations for t in side] for side in clock) for clock in times)
    return result(name, "em", times, equal, items=x.shape[0], iterations=iterations)


def em_cases(args) -> list[dict]:
    x = example_arrays("clusters.npz")["x"]
    out = [em_case("gaussian_mixture_em", x, args, args.em_iterations)]
    if args.large_items:
        generator = torch.Generator().manual_seed(args.seed)
        rows = torch.randint(0, x.shape[0], (args.large_items,), generator=generator)
        large = x[rows] + 0.1 * torch.randn(args.large_items, x.shape[1], generator=generator)
        out.append(em_case("gaussian_mixture_em_large", large, args, max(5, args.em_iterations // 4)))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 pairs, fewer EM iterations, no large EM case")
    parser.add_argument("--pairs", type=int, default=7, help="timed A B pairs per case (at least 3)")
    parser.add_argument("--em-iterations", type=int, default=100)
    parser.add_argument("--large-items", type=int, default=50_000, help="items of the large EM case (0: none)")
    parser.add_argument("--svi-items", type=int, default=None, help="first items of the digits (default: all)")
    parser.add_argument("--device", default="cpu", help="torch device of the models and data (cpu, cuda, ...)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared machine a second thread waits on loaded cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.em_iterations, args.large_items, args.svi_items = 3, 30, 0, 512
    if args.pairs < 3:
        parser.error("--pairs must be at least 3")
    torch.set_num_threads(args.threads)
    with pyro.validation_enabled(False):  # as emvi's runner trains (TrainConfig.validate=False)
        results = [*em_cases(args), gmvae_case(args), poisson_vae_case(args), poisson_regression_mixture_case(args)]
    for line in results:
        print(json.dumps(line))
    svi = {r["case"]: r["svi_ratio"] for r in results if r["kind"] == "svi"}
    em = {r["case"]: r["em_ratio"] for r in results if r["kind"] == "em"}
    cpu = {r["case"]: r[f"{r['kind']}_cpu_ratio"] for r in results}
    summary = {"cases": len(results), "pairs": args.pairs, "threads": args.threads, "svi_ratio": svi, "em_ratio": em,
               "cpu_ratio": cpu,
               "max_svi_ratio": max(svi.values()), "max_em_ratio": max(em.values()),
               "svi_goal_met": max(svi.values()) <= 1.1, "em_goal_met": max(em.values()) <= 1.2,
               "equal_work": all(r["equal_work"] for r in results),
               "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
