"""NUTS for any Pyro model whose discrete sites are enumerated (collapsed): draws of the continuous sites.

Pyro's NUTS sums enumerated sites (``infer={"enumerate": "parallel"}``) out of the potential energy, so a mixture's
assignments never enter the chain; ``max_plate_nesting`` tells it where the enumeration dimensions may start.

A model may also hand over its log joint as one torch function ``log_density({site: constrained value}) -> ()``
(the Bayesian view's ``"log_density"``): NUTS then runs on U(u) = -log p(x, T(u)) - Σ log|det ∂T(u)/∂u| over the
unconstrained globals u, Pyro's own potential with the same bijections T, without tracing the model at each step.

The sampler is emvi's own NUTS (:mod:`emvi.inference.nuts`, one flat unconstrained vector, the default) or Pyro's
(``sampler="pyro"``); both run on the same potential.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch

from ..validation import check_choice, check_positive_int, check_seed
from .methods.names import MCMC

SMALL_DATA = 1_000_000
"""Data with fewer elements than this is sampled with one intra-op thread (see :func:`fit_mcmc`)."""


SAMPLERS = ("emvi", "pyro")
"""NUTS implementations :func:`fit_mcmc` runs: emvi's own (:mod:`emvi.inference.nuts`) or Pyro's."""

MIN_DRAWS = 4
"""Fewest draws per chain the diagnostics (split R-hat) accept."""


@dataclass(frozen=True)
class MCMCConfig:
    """What controls a NUTS fit: draws kept and discarded per chain, and chains."""

    num_samples: int = 500
    """Draws kept per chain."""
    warmup_steps: int = 300
    """Adaptation steps per chain, discarded."""
    num_chains: int = 2
    """Chains (emvi's sampler runs them one after another, Pyro's in parallel processes); two or more give R-hat."""
    seed: int = 0
    device: str = "cpu"
    """cpu, cuda, cuda:N or auto."""
    progress: bool = True
    """Show the sampler's progress bar (only on a terminal)."""

    def __post_init__(self):
        # The split R-hat of the diagnostics halves each chain and needs at least 2 draws per half.
        check_positive_int(self.num_samples, "num_samples", minimum=MIN_DRAWS)
        check_positive_int(self.warmup_steps, "warmup_steps", minimum=0)
        check_positive_int(self.num_chains, "num_chains")
        check_seed(self.seed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MCMCResult:
    """Draws ``samples[site]`` of shape ``(num_chains, num_samples, *site_shape)``, sampler diagnostics per site
    (``diagnostics[site]["n_eff"]``, ``["r_hat"]``), the number of divergent transitions and the wall-clock time.
    A value: derive a changed copy with ``dataclasses.replace`` (e.g. relabelled draws)."""

    samples: dict[str, torch.Tensor]
    diagnostics: dict = field(default_factory=dict)
    num_divergent: int = 0
    seconds: float = 0.0
    extra_fields: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-draw sampler statistics ``(num_chains, num_samples)``; Pyro's MCMC exposes "diverging"."""
    seed: int = 0
    method: str = MCMC

    def checkpoint_entries(self) -> dict[str, torch.Tensor]:
        """What a run directory's checkpoint keeps of the fit: the draws and the divergence flags (read back by
        :func:`load_mcmc_draws`)."""
        return {"mcmc_samples": self.samples, "mcmc_diverging": self.extra_fields.get("diverging", torch.zeros(0))}

    def summary(self) -> dict:
        """What a NUTS fit reports instead of convergence: divergences, the worst R-hat and the smallest effective
        sample size over all parameters (R-hat is NaN with a single chain). NUTS has no convergence flag: these say
        how far to trust the draws."""
        r_hat, ess = [], []
        for stats in self.diagnostics.values():
            if isinstance(stats, dict) and "r_hat" in stats:
                r_hat.append(float(torch.as_tensor(stats["r_hat"]).max()))
                ess.append(float(torch.as_tensor(stats["n_eff"]).min()))
        finite = [v for v in r_hat if math.isfinite(v)]
        return {"num_divergent": self.num_divergent, "num_chains": int(next(iter(self.samples.values())).shape[0]),
                "max_r_hat": max(finite) if finite else float("nan"), "min_ess": min(ess) if ess else float("nan")}


START_SHRINK = 0.01
"""A point-fit start moves this fraction of the way to the prior mean (:func:`interior_start`)."""


def interior_start(params: dict[str, torch.Tensor], transforms: dict, priors: dict,
                   shrink: float = START_SHRINK) -> dict[str, torch.Tensor]:
    """Unconstrained ``params`` moved to ``(1 - shrink) θ + shrink E_prior[θ]`` per site (θ = T⁻¹(u)): inside the
    support, which is convex and holds the prior mean. EM's point may sit on the boundary (an HMM's π = (1, 2e-29) is
    about -66 in stick-breaking coordinates), where NUTS's warm-up spends most of its steps walking in; a site whose
    prior has no finite mean keeps its value."""
    moved = dict(params)
    for name, transform in transforms.items():
        try:
            mean = priors[name].mean
        except (KeyError, NotImplementedError):
            continue
        if torch.isfinite(mean).all():
            value = transform.inv(params[name])
            moved[name] = transform((1 - shrink) * value + shrink * mean.to(value).expand_as(value))
    return moved


def density_potential(log_density, transforms: dict):
    """U(u) = -(log_density(v) + Σ_site log|det ∂v/∂u|) with v = T⁻¹(u), ``transforms`` Pyro's constrained ->
    unconstrained bijections: the formula of Pyro's traced potential, with the model's log joint as one function."""

    def potential(params: dict[str, torch.Tensor]) -> torch.Tensor:
        values = {name: transforms[name].inv(u) for name, u in params.items()}
        log_joint = log_density(values)
        for name, transform in transforms.items():
            log_joint = log_joint - transform.log_abs_det_jacobian(values[name], params[name]).sum()
        return -log_joint

    return potential


def model_start(model, data, kwargs, *, init_values, max_plate_nesting):
    """``(params, potential_fn, transforms)`` of Pyro's ``initialize_model``: the unconstrained start (``init_values``
    moved inside the support by :func:`interior_start`, else the prior median), the traced potential U(params) and
    the constrained -> unconstrained bijections. The model is traced once here."""
    from pyro.infer.autoguide.initialization import init_to_median, init_to_value
    from pyro.infer.mcmc.util import initialize_model

    init = init_to_value(values=init_values) if init_values else init_to_median
    params, potential_fn, transforms, trace = initialize_model(model, data, kwargs, max_plate_nesting=max_plate_nesting,
                                                               init_strategy=init)
    if init_values:
        priors = {name: trace.nodes[name]["fn"] for name in transforms}
        params = interior_start(params, transforms, priors)
    return {name: value.detach() for name, value in params.items()}, potential_fn, transforms


def nuts_kernel(model, data, kwargs, *, init_values, max_plate_nesting, target_accept_prob, log_density=None):
    """``(kernel, initial_params or None)``: Pyro's NUTS on the traced ``model``, or with ``log_density`` on
    :func:`density_potential` with the model's bijections, started as :func:`model_start` says."""
    from pyro.infer import NUTS
    from pyro.infer.autoguide.initialization import init_to_median, init_to_value

    init = init_to_value(values=init_values) if init_values else init_to_median
    if log_density is None and not init_values:
        return NUTS(model, max_plate_nesting=max_plate_nesting, init_strategy=init,
                    target_accept_prob=target_accept_prob, jit_compile=False), None
    params, _, transforms = model_start(model, data, kwargs, init_values=init_values,
                                        max_plate_nesting=max_plate_nesting)
    if log_density is None:
        kernel = NUTS(model, max_plate_nesting=max_plate_nesting, init_strategy=init,
                      target_accept_prob=target_accept_prob, jit_compile=False)
    else:
        kernel = NUTS(potential_fn=density_potential(log_density, transforms), target_accept_prob=target_accept_prob)
        kernel.transforms = transforms  # MCMC reads them to return constrained draws
    return kernel, params


def fast_bijection(bijection, shape: torch.Size):
    """``u -> (v, Σ log|det ∂v/∂u|)`` for the bijection unconstrained -> constrained of a site of unconstrained
    ``shape``, written out for the common ones (identity, exp, affine with number coefficients, sigmoid,
    stick-breaking, and compositions of these) with their constants precomputed; None for any other. It is
    :func:`bijection_with_grad` on tensors with its backward left unused: autograd differentiates the value."""
    written = bijection_with_grad(bijection, shape)
    if written is None:
        return None

    def forward(u):
        value, log_det, _ = written(u)
        return value, log_det
    return forward


def _stick_breaking_backward(grad, value, z, ops):
    """∂(f(v) + log|J|)/∂u of the stick-breaking bijection of :func:`bijection_with_grad` (torch's: z = σ(u - offset),
    v = (z, 1) ∘ (1, cumprod(1 - z)), log|J| = Σ (-x + log σ(x) + log v_{:-1})) from g = ∂f/∂v ``(..., K)``, v and z
    ``(..., K-1)``: with S_j = Σ_{i>j} g_i v_i, ∂/∂u_j = v_j (1 - z_j) g_j - z_j S_j + 1 - (K - j) z_j (j from 0)."""
    tail = ops.reverse_cumsum(grad * value, -1)[..., 1:]  # S_j, j < K-1
    steps = ops.arange(value.shape[-1], 1, -1, like=value)  # K - j
    return value[..., :-1] * (1 - z) * grad[..., :-1] - z * tail + 1 - steps * z


def bijection_with_grad(bijection, shape: torch.Size, ops=None):
    """``u -> (v, Σ log|det ∂v/∂u|, backward)`` for the common bijections (see :func:`fast_bijection`), where
    ``backward(∂f/∂v) = ∂(f(v) + Σ log|det|)/∂u``, written out (no autograd) on the arrays of ``ops`` (numpy or
    torch, :data:`~emvi.models.prior_density.NUMPY_OPS`; torch by default); None for any other bijection."""
    from torch.distributions import transforms as T

    from ..models.prior_density import TORCH_OPS

    ops = ops or TORCH_OPS
    if isinstance(bijection, T.IndependentTransform):
        return bijection_with_grad(bijection.base_transform, shape, ops)
    if isinstance(bijection, T.ComposeTransform):
        parts = [bijection_with_grad(part, shape, ops) for part in bijection.parts]
        if any(part is None for part in parts) or any(isinstance(p, T.StickBreakingTransform)
                                                      for p in bijection.parts[:-1]):
            return None

        def composed(u):
            total, backwards = 0.0, []
            for part in parts:
                u, log_det, backward = part(u)
                total, backwards = total + log_det, [*backwards, backward]

            def backward(grad):
                for step in reversed(backwards):  # chain rule, last bijection first
                    grad = step(grad)
                return grad
            return u, total, backward
        return composed
    if isinstance(bijection, T.ExpTransform):
        def exp(u):
            value = ops.exp(u)
            return value, u.sum(), lambda grad: grad * value + 1
        return exp
    if isinstance(bijection, T.SigmoidTransform):
        def sigmoid(u):
            value = ops.sigmoid(u)
            log_det = (ops.log_sigmoid(u) + ops.log_sigmoid(-u)).sum()
            return value, log_det, lambda grad: grad * value * (1 - value) + 1 - 2 * value
        return sigmoid
    if isinstance(bijection, T.AffineTransform) and all(isinstance(c, (int, float)) for c in (bijection.loc,
                                                                                               bijection.scale)):
        loc, scale = bijection.loc, bijection.scale
        log_det = math.log(abs(scale)) * math.prod(shape)
        if loc == 0 and scale == 1:
            return lambda u: (u, 0.0, lambda grad: grad)
        return lambda u: (loc + scale * u, log_det, lambda grad: scale * grad)
    if isinstance(bijection, T.StickBreakingTransform) and len(shape) >= 1:
        size = shape[-1]
        log_offset = ops.convert(torch.log(size + 1 - torch.arange(1, size + 1, dtype=torch.float64)))
        offsets = {}  # torch: the offsets on each dtype and device met, converted once

        def stick(u):
            if ops is TORCH_OPS:
                key = (u.dtype, u.device)
                offset = offsets[key] if key in offsets else offsets.setdefault(key, log_offset.to(u))
            else:
                offset = log_offset
            shifted = u - offset
            z = ops.sigmoid(shifted)
            remaining = ops.pad(ops.cumprod(1 - z, -1), 1, 0, 1.0)
            value = ops.pad(z, 0, 1, 1.0) * remaining
            log_det = (ops.log_sigmoid(shifted) - shifted + ops.log(value[..., :-1])).sum()
            return value, log_det, lambda grad: _stick_breaking_backward(grad, value, z, ops)
        return stick
    return None


class _ValueWithGrad(torch.autograd.Function):
    """U(q) as one autograd node whose backward returns the gradient computed with the value (a written-out one)."""

    @staticmethod
    def forward(ctx, q, value_and_grad):
        value, grad = value_and_grad(q.detach().cpu().numpy())
        ctx.save_for_backward(torch.as_tensor(grad, dtype=q.dtype, device=q.device))
        return torch.as_tensor(value, dtype=q.dtype, device=q.device)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None


def flat_potential_with_grad(log_density_and_grad, transforms: dict, shapes: dict[str, torch.Size]):
    """:func:`flat_potential` of ``log_density_and_grad`` (``values -> (log p(x, θ), {site: ∂/∂θ_site})``, no
    autograd, on numpy arrays or on tensors as its ``ops`` attribute says, tensors on its ``device``), its gradient
    chained through the bijections by :func:`bijection_with_grad`: ∂U/∂u = -(J(u)ᵀ ∂log p/∂θ + ∂ log|det J|/∂u) per
    site. None when a site's bijection has no written-out gradient. The returned function of q ``(D,)`` carries
    ``value_and_grad(q numpy) -> (U float, ∇U numpy)``, which :class:`~emvi.inference.nuts.Potential` calls directly,
    and is differentiable by autograd (one node, :class:`_ValueWithGrad`)."""
    from ..models.prior_density import NUMPY_OPS

    ops = log_density_and_grad.ops
    bijections = {name: bijection_with_grad(transforms[name].inv, shape, ops) for name, shape in shapes.items()}
    if any(bijection is None for bijection in bijections.values()):
        return None
    ends = list(itertools.accumulate(math.prod(shape) for shape in shapes.values()))
    starts = [0, *ends[:-1]]

    def value_and_grad(q):
        if ops is NUMPY_OPS:
            with np.errstate(all="ignore"):  # far out in the tails exp overflows: U = inf, as in torch
                return flat_value_and_grad(q)
        return flat_value_and_grad(torch.as_tensor(q, dtype=log_density_and_grad.dtype,
                                                   device=log_density_and_grad.device))

    def flat_value_and_grad(q):
        values, backwards, log_det = {}, {}, 0.0
        for (name, shape), start, end in zip(shapes.items(), starts, ends, strict=True):
            values[name], site_log_det, backwards[name] = bijections[name](q[start:end].reshape(shape))
            log_det = log_det + site_log_det
        log_joint, grads = log_density_and_grad(values)
        grad = ops.concatenate([backwards[name](grads[name]).reshape(-1) for name in shapes], 0)
        if ops is not NUMPY_OPS:
            grad = grad.cpu().numpy()
        return -float(log_joint + log_det), -grad

    def potential(q: torch.Tensor) -> torch.Tensor:
        return _ValueWithGrad.apply(q, value_and_grad)

    potential.value_and_grad = value_and_grad  # what emvi's NUTS calls, skipping autograd altogether
    return potential


def flat_potential(log_density, transforms: dict, shapes: dict[str, torch.Size], potential_fn=None):
    """:func:`density_potential` of one flat vector q ``(D,)``: the sites' unconstrained values laid end to end in
    the order of ``shapes`` (site -> unconstrained shape), what :func:`~emvi.inference.nuts.sample_nuts` samples.
    Common bijections run as :func:`fast_bijection` (fewer tensor operations per call), the others as Pyro's.
    Without ``log_density``, ``potential_fn`` ({site: unconstrained value} -> U, Pyro's traced potential) of q."""
    sizes = [math.prod(shape) for shape in shapes.values()]
    if log_density is None:
        def traced(q: torch.Tensor) -> torch.Tensor:
            return potential_fn({name: part.view(shape) for (name, shape), part
                                 in zip(shapes.items(), q.split(sizes), strict=True)})
        return traced
    bijections = {}
    for name, shape in shapes.items():
        fast = fast_bijection(transforms[name].inv, shape)
        if fast is None:
            def fast(u, transform=transforms[name]):
                value = transform.inv(u)
                return value, transform.inv.log_abs_det_jacobian(u, value).sum()
        bijections[name] = fast

    def flat(q: torch.Tensor) -> torch.Tensor:
        values, log_det = {}, 0.0
        for (name, shape), part in zip(shapes.items(), q.split(sizes), strict=True):
            values[name], site_log_det = bijections[name](part.view(shape))
            log_det = log_det + site_log_det
        return -(log_density(values) + log_det)

    return flat


def _emvi_nuts(potential, transforms: dict, initial: dict, *, num_samples: int, warmup_steps: int, num_chains: int,
               seed: int, target_accept_prob: float) -> tuple[dict, dict, dict]:
    """:func:`~emvi.inference.nuts.sample_nuts` on the flat ``potential`` from ``initial`` {site: unconstrained},
    chain c seeded ``seed + c``, one after another: ``(samples {site: (chain, draw, ...)} constrained, per-draw
    statistics {name: (chain, draw)}, Pyro-style diagnostics {"divergences", "acceptance rate"} per chain)``."""
    from .nuts import sample_nuts

    shapes = {name: value.shape for name, value in initial.items()}
    start = torch.cat([value.reshape(-1) for value in initial.values()])
    chains, statistics = [], []
    for chain in range(num_chains):
        draws, stats = sample_nuts(potential, start, num_samples=num_samples, warmup_steps=warmup_steps,
                                   seed=seed + chain, target_accept_prob=target_accept_prob)
        chains.append(draws)
        statistics.append(stats)
    flat = torch.stack(chains)  # (chain, draw, D)
    sizes = [math.prod(shape) for shape in shapes.values()]
    samples = {}
    for (name, shape), part in zip(shapes.items(), flat.split(sizes, -1), strict=True):
        unconstrained = part.reshape(num_chains, num_samples, *shape)
        samples[name] = transforms[name].inv(unconstrained).to(initial[name].dtype)
    per_draw = {name: torch.stack([stats[name] for stats in statistics]) for name in statistics[0]}
    chain_stats = {"divergences": {f"chain {c}": per_draw["diverging"][c].nonzero().view(-1).tolist()
                                   for c in range(num_chains)},
                   "acceptance rate": {f"chain {c}": float(per_draw["accept_prob"][c].mean())
                                       for c in range(num_chains)}}
    return samples, per_draw, chain_stats


def fit_mcmc(model, *data, num_samples: int = 500, warmup_steps: int = 300, num_chains: int = 1, seed: int = 0,
             init_values: dict[str, torch.Tensor] | None = None, max_plate_nesting: int = 1,
             target_accept_prob: float = 0.8, progress: bool = False, log_density=None, sampler: str = "emvi",
             log_density_and_grad=None, **kwargs) -> MCMCResult:
    """Run NUTS on ``model(*data, **kwargs)``, starting every chain from ``init_values`` (else the prior median); with
    ``log_density`` (the model's log joint at constrained site values, see the module docstring) on that function.

    ``sampler="emvi"``: the chains run one after another in this process on emvi's own NUTS
    (:mod:`emvi.inference.nuts`, chain c seeded ``seed + c``) over one flat vector, on ``log_density``'s potential
    or else on Pyro's traced one; ``"pyro"``: Pyro's NUTS, chains in parallel processes. Both target the same
    density and return the same result: draws, diagnostics, divergences (emvi's adds per-draw ``accept_prob``,
    ``step_size``, ``tree_depth``, ``num_steps`` to ``extra_fields``). ``log_density_and_grad`` (``log_density``
    with its gradient written out, see :func:`flat_potential_with_grad`) replaces autograd in emvi's sampler where
    every bijection has a written-out gradient too.
    """
    from pyro.infer import MCMC
    from pyro.infer.mcmc.util import diagnostics as chain_diagnostics

    check_positive_int(num_samples, "num_samples")
    check_positive_int(warmup_steps, "warmup_steps", minimum=0)
    check_positive_int(num_chains, "num_chains")
    check_choice(sampler, "sampler", SAMPLERS)
    pyro.set_rng_seed(seed)
    start = time.perf_counter()  # the one tracing of the model counts too
    threads = torch.get_num_threads()
    small = sum(t.numel() for t in data if isinstance(t, torch.Tensor)) < SMALL_DATA
    try:
        # NUTS on small data is thousands of tiny tensor operations; with several intra-op threads each one pays
        # thread hand-off (docs/experiments/mcmc.md), so run them on one.
        if small:
            torch.set_num_threads(1)
        if sampler == "emvi":
            with pyro.validation_enabled(False):
                initial, potential_fn, transforms = model_start(model, data, kwargs, init_values=init_values,
                                                                max_plate_nesting=max_plate_nesting)
                shapes = {name: value.shape for name, value in initial.items()}
                potential = None
                if log_density_and_grad is not None:
                    potential = flat_potential_with_grad(log_density_and_grad, transforms, shapes)
                if potential is None:
                    potential = flat_potential(log_density, transforms, shapes, potential_fn)
                samples, extra, per_chain = _emvi_nuts(
                    potential, transforms, initial, num_samples=num_samples, warmup_steps=warmup_steps,
                    num_chains=num_chains, seed=seed, target_accept_prob=target_accept_prob)
            diagnostics = chain_diagnostics(samples) | per_chain
            seconds = time.perf_counter() - start
            return MCMCResult(samples, diagnostics, int(extra["diverging"].sum()), seconds, extra, seed=seed)
        with pyro.validation_enabled(False):
            kernel, initial = nuts_kernel(model, data, kwargs, init_values=init_values, log_density=log_density,
                                          max_plate_nesting=max_plate_nesting, target_accept_prob=target_accept_prob)
        if initial is not None and num_chains > 1:
            initial = {name: value.expand(num_chains, *value.shape) for name, value in initial.items()}
        with warnings.catch_warnings():
            # With fewer free cores than chains Pyro draws them one after another; same draws, nothing to act on.
            warnings.filterwarnings("ignore", message="num_chains=.* is more than available_cpu", category=UserWarning)
            mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, num_chains=num_chains,
                        initial_params=initial, transforms=getattr(kernel, "transforms", None),
                        disable_progbar=not (progress and sys.stderr.isatty()))  # bars only on a terminal
        with pyro.validation_enabled(False):
            mcmc.run(*data, **kwargs)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    samples = {name: value.detach() for name, value in mcmc.get_samples(group_by_chain=True).items()}
    diagnostics = mcmc.diagnostics()
    divergences = diagnostics.get("divergences", {})  # {"chain i": [indices of divergent draws]}
    num_divergent = sum(len(v) for v in divergences.values())
    diverging = torch.zeros(num_chains, num_samples, dtype=torch.bool)
    for chain, indices in enumerate(divergences.values()):
        diverging[chain, list(indices)] = True
    extra = {"diverging": diverging}
    return MCMCResult(samples, diagnostics, num_divergent, seconds, extra, seed=seed)


def saved_draws(run_dir) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
    """:func:`load_mcmc_draws`, or ``(None, None)`` when ``run_dir`` is None or its checkpoint holds no draws (a point
    fit): exports decide by whether draws exist, not by a method's name."""
    from ..rundir import RunDirectory

    if run_dir is None or not RunDirectory(run_dir).has_checkpoint():
        return None, None
    state = RunDirectory(run_dir).load_checkpoint()
    if "mcmc_samples" not in state:
        return None, None
    return load_mcmc_draws(run_dir)


def load_mcmc_draws(run_dir) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The draws ``{site: (chain, draw, ...)}`` and the divergence flags ``(chain, draw)`` (or None) that an
    ``--method mcmc`` fit saved in ``run_dir/checkpoint.pt``."""
    from ..errors import CheckpointError
    from ..rundir import RunDirectory

    run = RunDirectory(run_dir) if run_dir is not None else None
    if run is None or not run.has_checkpoint():
        raise CheckpointError(f"no MCMC draws: no checkpoint in {run_dir}; fit with --method mcmc or pass samples=")
    state = run.load_checkpoint()
    if "mcmc_samples" not in state:
        raise CheckpointError(f"{run_dir} holds no MCMC draws (the run was not fit by mcmc); use method='em' or 'svi'")
    diverging = state.get("mcmc_diverging")
    return state["mcmc_samples"], (diverging if diverging is not None and diverging.numel() else None)


MAP_STARTS = 4
"""Starting points of a MAP start (:func:`map_start`): the model as built, then parameters redrawn from 0.1 N(0, 1)."""


def fit_map(model, tensors, *, max_iter: int = 500) -> float:
    """Maximise log p(x, θ) (discrete locals summed out, priors of globals included) by L-BFGS over the model's
    parameters, in float64; returns the final value per item."""
    from pyro.infer import TraceEnum_ELBO

    from .direct import climb

    dtype = next(model.parameters()).dtype
    model.to(torch.float64)
    data = tuple(t.to(torch.float64) if t.is_floating_point() else t for t in tensors)
    elbo = TraceEnum_ELBO(max_plate_nesting=1, strict_enumeration_warning=False)  # a model may have no latent

    def no_guide(*args, **kwargs):  # every latent is enumerated in the model; globals are point values
        pass

    def log_joint():
        return -elbo.differentiable_loss(model, no_guide, *data)

    # A line search may probe parameters where a value leaves its support (a rate exp(u) underflowing to 0): that
    # probe's objective is not finite and the search backs off, rather than a validation error ending the fit.
    with pyro.validation_enabled(False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)  # such a probe's loss
        _, value = climb(log_joint, list(model.parameters()), max_iter=max_iter, tolerance_grad=1e-7,
                         tolerance_change=1e-12)
    model.to(dtype)
    return value / data[0].shape[0]


def map_start(model, tensors, *, seed: int) -> dict:
    """The MAP as NUTS's start: :func:`fit_map`, best of :data:`MAP_STARTS` starts (a mixture's likelihood has poor
    local maxima, and a chain started in one stays there); fixes what has no prior (empirical Bayes)."""
    import copy
    import itertools

    from .restarts import best_of_restarts

    starts = itertools.count()

    def map_once(generator: torch.Generator):
        if next(starts):  # the first start is the model as built; the others redraw every parameter
            with torch.no_grad():
                for value in model.parameters():
                    value.copy_(0.1 * torch.randn(value.shape, generator=generator, dtype=torch.float64))
        return fit_map(model, tensors), copy.deepcopy(model.state_dict())

    best_value, best_state = best_of_restarts(map_once, MAP_STARTS, seed=seed, objective=lambda o: o[0])
    model.load_state_dict(best_state)
    return {"start_log_joint_per_item": best_value, "map_starts": MAP_STARTS}


def fit_posterior(model, *data, config: MCMCConfig, view: dict | None = None) -> MCMCResult:
    """NUTS on the Bayesian view of a point-fitted ``model`` (its parameters are the chains' start), then relabelled
    and summarised: the one recipe of every model with a ``bayesian_view(*data)`` hook (or given ``view``), a dict
    with ``model`` (the callable whose globals are sample sites), ``init_values`` (site -> start), optionally
    ``kwargs`` (for the callable), ``relabel`` (``(key, reference, component_axes)`` of :func:`~emvi.inference.relabel.relabel_components`),
    ``posterior_mean`` (``f(samples)``, default: the model's ``load_posterior_mean`` hook, if any), which then sets
    the model's parameters to the posterior mean; ``log_density`` and ``log_density_and_grad`` (see :func:`fit_mcmc`). The start is moved inside the
    support (:func:`interior_start`)."""
    view = model.bayesian_view(*data) if view is None else view
    result = fit_mcmc(view["model"], *data, num_samples=config.num_samples, warmup_steps=config.warmup_steps,
                      num_chains=config.num_chains, seed=config.seed, init_values=view["init_values"],
                      max_plate_nesting=1, progress=config.progress, log_density=view.get("log_density"),
                      log_density_and_grad=view.get("log_density_and_grad"), **view.get("kwargs", {}))
    if view.get("relabel") is not None:
        from .relabel import relabel_components

        key, reference, axes = view["relabel"]
        samples, _ = relabel_components(result.samples, key=key, reference=reference, component_axes=axes)
        result = dataclasses.replace(result, samples=samples)
    hook = view.get("posterior_mean") or getattr(model, "load_posterior_mean", None)
    if callable(hook):
        hook(result.samples)
    return result
