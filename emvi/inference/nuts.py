"""A compact multinomial NUTS on one flat unconstrained vector: the sampler of a model's ``log_density``.

Target exp(-U(q)), q ``(D,)`` float64; U and ∇U come from one call (:func:`value_and_grad`). A transition draws
p ~ N(0, M) with M = diag(1 / v) (v the inverse metric), H(q, p) = U(q) + ½ pᵀ diag(v) p, and doubles a leapfrog
trajectory forwards or backwards (Hoffman & Gelman 2014, with Betancourt 2017's multinomial sampling as in Stan and
NumPyro): a new sub-tree is taken with probability min(1, w_new / w_old) (biased progressive sampling at the top,
uniform progressive inside), w = Σ exp(H₀ - H); building stops at a U-turn, ρ·p♯₋ ≤ 0 or ρ·p♯₊ ≤ 0 with ρ the
summed momenta and p♯ = v ∘ p, checked on every sub-tree and across the seams of merged ones, or at a divergence
(H - H₀ > 1000), or at ``max_tree_depth``.

Warm-up follows Stan: dual averaging of log ε towards a mean acceptance of ``target_accept_prob`` (γ = 0.05,
t₀ = 10, κ = 0.75, μ = log 10ε), and a diagonal inverse metric v estimated in doubling windows (buffers 75 / 25 /
50 steps, or the fractions 0.15 / 0.75 / 0.1 of a short warm-up), each estimate shrunk towards 10⁻³ and followed by a fresh ε search
and a restarted dual averaging. Before the first window v is the start's Laplace marginal variances diag((∇²U)⁻¹),
at most 1 (Stan: 1), the scales of a start near a mode (:func:`curvature_inverse_metric`). Arithmetic that leaves
float64 (a far start, a huge step) is a rejected point of energy +∞, never a warning; a non-finite start is refused.

:func:`sample_nuts` runs one chain and returns the kept draws ``(num_samples, D)`` with per-draw statistics.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, NonFiniteLossError

MAX_DELTA_H = 1000.0
"""A leapfrog step whose energy exceeds the start's by more than this is a divergence (Stan's and NumPyro's)."""

FLAT_STEP_RATIO = 1e6
"""The step-size search gives up doubling once one leapfrog step moves q by this many times (1 + max|q|) with its
acceptance still above 0.8: the potential is flat there, an improper posterior (Stan stops at ε > 10⁷)."""

MIN_INVERSE_METRIC = math.sqrt(np.finfo(np.float64).tiny)
"""Floor of the curvature metric v: momenta p ~ N(0, 1/v) square without overflow in ½ v p²."""

MAX_LOG_STEP_SIZE = math.log(np.finfo(np.float64).max)
"""Dual averaging's log ε stays below this: exp() of it is finite (NumPyro clips ε to float range the same way)."""

QUIET_OVERFLOW = {"over": "ignore", "invalid": "ignore", "divide": "ignore"}
"""numpy error state of the sampler's entry points: an overflow to ±∞ or NaN is the rejection signal (energy +∞,
acceptance 0), not a warning."""


class Potential:
    """U on the ``device`` of a torch function ``potential(q (D,)) -> ()``, called with and returning numpy: the
    sampler's bookkeeping (a few dot products per step on a short vector) runs in numpy, where each operation costs
    about a microsecond instead of a torch dispatch; one transfer per step either way, for the energy's value."""

    def __init__(self, potential, device, dtype=torch.float64):
        self.potential, self.device, self.dtype = potential, torch.device(device), dtype

    def __call__(self, q: np.ndarray) -> tuple[float, np.ndarray]:
        """:meth:`evaluate`, where a non-finite U or ∇U stands for U = +∞ (zero gradient): a rejected point."""
        value, grad = self.evaluate(q)
        if not math.isfinite(value) or not np.isfinite(grad).all():
            return math.inf, np.zeros_like(grad)
        return value, grad

    def evaluate(self, q: np.ndarray) -> tuple[float, np.ndarray]:
        """``(U(q), ∇U(q))`` as computed, in one forward and one backward pass, or by the potential's own
        ``value_and_grad`` (numpy ``(D,)`` -> ``(float, (D,))``, a written-out gradient) where it has one."""
        written = getattr(self.potential, "value_and_grad", None)  # numpy in, (float, numpy) out
        if written is not None:
            value, grad = written(q)
        else:
            with torch.enable_grad():
                position = torch.as_tensor(q, dtype=self.dtype, device=self.device).requires_grad_(True)
                value = self.potential(position)
                (grad,) = torch.autograd.grad(value, position)
            value, grad = float(value.detach()), grad.detach().cpu().numpy()
        return value, grad


@dataclass
class Point:
    """A phase-space point: position q, momentum p, potential U(q) and its gradient."""

    q: np.ndarray
    p: np.ndarray
    potential: float
    grad: np.ndarray


class Hamiltonian:
    """Leapfrog integration and energy under the diagonal inverse metric ``inverse_mass`` ``(D,)``."""

    def __init__(self, potential, inverse_mass: np.ndarray):
        self.potential = potential
        self.inverse_mass = inverse_mass

    def energy(self, point: Point) -> float:
        """H = U(q) + ½ Σ v_i p_i²; +∞ where that is not finite (an overflowed momentum: a rejected point)."""
        energy = point.potential + 0.5 * float(self.inverse_mass @ (point.p * point.p))
        return energy if math.isfinite(energy) else math.inf

    def velocity(self, p: np.ndarray) -> np.ndarray:
        """p♯ = ∂H/∂p = v ∘ p."""
        return self.inverse_mass * p

    def leapfrog(self, point: Point, step_size: float) -> Point:
        """One leapfrog step of signed size ``step_size`` (negative: backwards in time); a position that overflows
        is not evaluated: U = +∞ there."""
        p = point.p - (0.5 * step_size) * point.grad
        q = point.q + step_size * (self.inverse_mass * p)
        if not np.isfinite(q).all():
            return Point(q, p, math.inf, np.zeros_like(q))
        value, grad = self.potential(q)
        return Point(q, p - (0.5 * step_size) * grad, value, grad)


def _no_u_turn(velocity_minus: np.ndarray, velocity_plus: np.ndarray, rho: np.ndarray) -> bool:
    """The generalised criterion: the trajectory keeps going while ρ·p♯ > 0 at both ends."""
    return velocity_plus @ rho > 0 and velocity_minus @ rho > 0


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


@dataclass
class SubTree:
    """A built sub-tree: its outer and inner end points (in the direction of travel), their momenta and velocities,
    the summed momenta ρ, the log of Σ exp(H₀ - H) over its points, its proposal, and whether it is valid."""

    inner: Point
    outer: Point
    velocity_inner: np.ndarray
    velocity_outer: np.ndarray
    rho: np.ndarray
    log_weight: float
    proposal: Point
    valid: bool


class NUTSTransition:
    """One NUTS transition from a point: the multinomial sample of a doubled trajectory and its statistics."""

    def __init__(self, hamiltonian: Hamiltonian, step_size: float, max_tree_depth: int, uniform: random.Random):
        self.hamiltonian, self.step_size, self.max_tree_depth = hamiltonian, step_size, max_tree_depth
        self.uniform = uniform
        self.num_steps, self.sum_accept, self.diverging = 0, 0.0, False

    def build(self, start: Point, depth: int, direction: int, energy0: float) -> SubTree:
        """2^depth leapfrog steps from ``start`` (the current end) in ``direction``: a :class:`SubTree`."""
        if depth == 0:
            point = self.hamiltonian.leapfrog(start, direction * self.step_size)
            self.num_steps += 1
            energy = self.hamiltonian.energy(point)  # +∞ where not finite: weight 0, a divergence
            log_weight = energy0 - energy
            if -log_weight > MAX_DELTA_H:
                self.diverging = True
            self.sum_accept += 1.0 if log_weight > 0 else math.exp(log_weight)
            velocity = self.hamiltonian.velocity(point.p)
            return SubTree(point, point, velocity, velocity, point.p, log_weight, point, not self.diverging)
        first = self.build(start, depth - 1, direction, energy0)
        if not first.valid:
            return first
        second = self.build(first.outer, depth - 1, direction, energy0)
        if not second.valid:
            return second
        log_weight = _log_add(first.log_weight, second.log_weight)
        # Uniform progressive sampling inside a sub-tree: the second half's proposal with its share of the weight.
        take_second = self.uniform.random() < math.exp(second.log_weight - log_weight)
        rho = first.rho + second.rho
        valid = (_no_u_turn(first.velocity_inner, second.velocity_outer, rho)
                 and _no_u_turn(first.velocity_inner, second.velocity_inner, first.rho + second.inner.p)
                 and _no_u_turn(first.velocity_outer, second.velocity_outer, second.rho + first.outer.p))
        return SubTree(first.inner, second.outer, first.velocity_inner, second.velocity_outer, rho, log_weight,
                       second.proposal if take_second else first.proposal, valid)

    def run(self, point: Point, momentum: np.ndarray) -> Point:
        """The next state of the chain from ``point`` with the fresh ``momentum``."""
        start = Point(point.q, momentum, point.potential, point.grad)
        energy0 = self.hamiltonian.energy(start)
        velocity = self.hamiltonian.velocity(momentum)
        # The trajectory as two ends: index 0 backwards in time, 1 forwards; each with its point and velocity.
        ends, velocities = [start, start], [velocity, velocity]
        rho, log_weight, sample, depth = momentum, 0.0, start, 0
        while depth < self.max_tree_depth:
            forward = self.uniform.random() > 0.5
            side = 1 if forward else 0
            tree = self.build(ends[side], depth, 1 if forward else -1, energy0)
            if not tree.valid:
                break
            depth += 1
            # Biased progressive sampling across the doubling: favour the new sub-tree.
            if tree.log_weight > log_weight or self.uniform.random() < math.exp(tree.log_weight - log_weight):
                sample = tree.proposal
            log_weight = _log_add(log_weight, tree.log_weight)
            old_rho, old_end, old_velocity = rho, ends[side], velocities[side]
            rho = rho + tree.rho
            ends[side], velocities[side] = tree.outer, tree.velocity_outer
            # The whole trajectory, then the two seams: old tree + the new one's first point, new tree + the old
            # tree's near end (Stan's extra checks; the criterion is symmetric in its two velocities).
            if not (_no_u_turn(velocities[0], velocities[1], rho)
                    and _no_u_turn(velocities[1 - side], tree.velocity_inner, old_rho + tree.inner.p)
                    and _no_u_turn(old_velocity, tree.velocity_outer, tree.rho + old_end.p)):
                break
        self.depth = depth
        return sample

    @property
    def accept_prob(self) -> float:
        return self.sum_accept / max(self.num_steps, 1)


class DualAveraging:
    """Nesterov dual averaging of log ε towards a mean acceptance ``target`` (Hoffman & Gelman 2014, §3.2.1)."""

    def __init__(self, step_size: float, target: float, gamma: float = 0.05, t0: float = 10.0, kappa: float = 0.75):
        self.target, self.gamma, self.t0, self.kappa = target, gamma, t0, kappa
        self.restart(step_size)

    def restart(self, step_size: float):
        self.mu, self.count, self.error_sum, self.log_step_avg = math.log(10 * step_size), 0, 0.0, 0.0

    def update(self, accept_prob: float) -> float:
        """Record one transition's mean acceptance; returns the next ε = exp(x_t)."""
        self.count += 1
        eta = 1.0 / (self.count + self.t0)
        self.error_sum = (1 - eta) * self.error_sum + eta * (self.target - min(1.0, accept_prob))
        log_step = min(self.mu - self.error_sum * math.sqrt(self.count) / self.gamma, MAX_LOG_STEP_SIZE)
        weight = self.count ** -self.kappa
        self.log_step_avg = (1 - weight) * self.log_step_avg + weight * log_step
        return math.exp(log_step)

    @property
    def final_step_size(self) -> float:
        """exp(x̄): the averaged iterate, used after warm-up."""
        return math.exp(self.log_step_avg)


def adaptation_windows(warmup_steps: int) -> tuple[int, list[int]]:
    """``(first, ends)``: the warm-up iteration (0-based) where metric estimation starts and those at which its
    windows end: Stan's doubling windows after an initial buffer of 75 and before a terminal one of 50 (base window
    25; 15% / 75% / 10% of the warm-up when these do not fit); none under 20 warm-up steps."""
    if warmup_steps < 20:
        return warmup_steps, []
    start, end, window = 75, 50, 25
    if start + window + end > warmup_steps:
        start, end = int(0.15 * warmup_steps), int(0.1 * warmup_steps)
        window = warmup_steps - start - end
    last = warmup_steps - end - 1
    ends, boundary = [], start + window - 1
    while True:
        ends.append(boundary)
        if boundary >= last:
            return start, ends
        window *= 2
        boundary = boundary + window
        if boundary + 2 * window >= warmup_steps - end:
            boundary = last


class WelfordVariance:
    """Running per-coordinate mean and variance of positions ``(D,)``."""

    def __init__(self, size: int):
        self.count, self.mean, self.m2 = 0, np.zeros(size), np.zeros(size)

    def add(self, q: np.ndarray):
        self.count += 1
        delta = q - self.mean
        self.mean = self.mean + delta / self.count
        self.m2 = self.m2 + delta * (q - self.mean)

    def regularised(self) -> np.ndarray:
        """Stan's shrunk estimate (n / (n + 5)) s² + 10⁻³ · 5 / (n + 5)."""
        n = self.count
        return (n / (n + 5.0)) * self.m2 / max(n - 1, 1) + 1e-3 * (5.0 / (n + 5.0))


@np.errstate(**QUIET_OVERFLOW)
def find_step_size(hamiltonian: Hamiltonian, point: Point, step_size: float, rng: np.random.Generator) -> float:
    """Stan's heuristic: double or halve ε until one leapfrog step's acceptance exp(H₀ - H) crosses 0.8 (a step to a
    non-finite energy: acceptance 0). Bounded: halving ends at the latest where the step no longer moves q
    (acceptance 1); doubling at the first overflow, or with a one-line :class:`ConfigError` (Stan's "posterior is
    improper") once a step of typical size ε · max √v exceeds ``FLAT_STEP_RATIO`` (1 + max|q|) still accepted."""
    if point.q.size == 0:
        return step_size  # nothing to move: any ε is exact
    log_target = math.log(0.8)
    flat_move = FLAT_STEP_RATIO * (1.0 + float(np.abs(point.q).max()))
    metric_scale = math.sqrt(float(hamiltonian.inverse_mass.max()))
    direction = 0
    while True:
        start = Point(point.q, draw_momentum(hamiltonian, rng), point.potential, point.grad)
        delta = hamiltonian.energy(start) - hamiltonian.energy(hamiltonian.leapfrog(start, step_size))
        accepted = delta > log_target  # False for NaN (∞ - ∞)
        if direction == 0:
            direction = 1 if accepted else -1
        elif (direction == 1) != accepted:
            return step_size
        step_size = step_size * 2.0 if direction == 1 else step_size * 0.5
        if direction == 1 and step_size * metric_scale > flat_move:
            raise ConfigError(f"the potential is flat around {short_position(point.q)} (a leapfrog step of "
                              f"{step_size * metric_scale:.3g} is still accepted): an improper posterior; give every "
                              "latent a proper prior, or start the chain nearer the posterior (e.g. at the MAP)")
        if step_size == 0.0:
            raise ConfigError(f"no leapfrog step from {short_position(point.q)}, however small, keeps its "
                              "acceptance above 0.8: the potential is not continuous there; check the model's log density")


def short_position(q: np.ndarray) -> str:
    """q for a one-line message: its largest entry in size and the dimension."""
    index = int(np.argmax(np.abs(q))) if q.size else 0
    return f"q (D={q.size}, max |q_{index}| = {abs(q[index]) if q.size else 0.0:.3g})"


@np.errstate(**QUIET_OVERFLOW)
def curvature_inverse_metric(potential, q: np.ndarray, relative_step: float = 1e-4) -> np.ndarray:
    """The warm-up's first inverse metric v ``(D,)`` from the Hessian H = ∇²U at the start ``q`` (central differences
    of ∇U, 2D gradients): the Laplace marginal variances diag(H⁻¹) where H is positive definite (a start near a
    mode, as the first window would estimate them), else 1 / H_ii where that is positive and finite, else 1; at
    most 1 (Stan's unit metric), as a start in a flat tail would overstate a scale. The unit metric would force ε
    down to the smallest posterior scale, with trajectories of hundreds of steps until the first window's estimate.
    A row whose shifted U is not finite (a start next to the support's edge) is unknown (NaN, so unit). At least
    ``MIN_INVERSE_METRIC``."""
    hessian = np.empty((q.size, q.size))
    for i in range(q.size):
        step = relative_step * max(1.0, abs(q[i]))
        shifted = q.copy()
        shifted[i] = q[i] + step
        value_above, above = potential(shifted)
        shifted[i] = q[i] - step
        value_below, below = potential(shifted)
        finite = math.isfinite(value_above) and math.isfinite(value_below)
        hessian[i] = (above - below) / (2 * step) if finite else np.nan
    hessian = 0.5 * (hessian + hessian.T)
    if np.isfinite(hessian).all():
        try:
            factor = np.linalg.cholesky(hessian)
            inverse_factor = np.linalg.solve(factor, np.eye(q.size))  # L⁻¹: diag(H⁻¹) = column sums of (L⁻¹)²
            return np.clip((inverse_factor * inverse_factor).sum(0), MIN_INVERSE_METRIC, 1.0)
        except np.linalg.LinAlgError:
            pass
    diagonal = np.diagonal(hessian)
    usable = np.isfinite(diagonal) & (diagonal > 0)
    inverse = np.where(usable, 1.0 / np.maximum(np.where(usable, diagonal, 1.0), 1.0), 1.0)
    return np.maximum(inverse, MIN_INVERSE_METRIC)


def draw_momentum(hamiltonian: Hamiltonian, rng: np.random.Generator) -> np.ndarray:
    """p ~ N(0, diag(1 / v))."""
    return rng.standard_normal(hamiltonian.inverse_mass.shape[0]) / np.sqrt(hamiltonian.inverse_mass)


@np.errstate(**QUIET_OVERFLOW)
def sample_nuts(potential, initial: torch.Tensor, *, num_samples: int, warmup_steps: int, seed: int,
                target_accept_prob: float = 0.8, max_tree_depth: int = 10) -> tuple[torch.Tensor, dict]:
    """One chain of NUTS on exp(-``potential``) (a torch function of a ``(D,)`` vector of ``initial``'s device and
    dtype) from ``initial``: the kept draws ``(num_samples, D)`` (on that device and dtype; the sampler's own
    arithmetic is float64) and per-draw statistics
    ``{"diverging", "accept_prob", "step_size", "tree_depth", "num_steps"}`` ``(num_samples,)`` (on the CPU). Warm-up
    adapts ε and the diagonal inverse metric (module docstring); its draws are discarded. Seeded by ``seed`` alone."""
    rng, uniform = np.random.default_rng(seed), random.Random(seed)
    target = Potential(potential, initial.device, initial.dtype)
    q = initial.detach().to(torch.float64).cpu().numpy().reshape(-1)
    value, grad = target.evaluate(q)
    if not math.isfinite(value) or not np.isfinite(grad).all():
        bad = (f"the potential is {value}" if not math.isfinite(value) else
               f"the potential's gradient has {int((~np.isfinite(grad)).sum())} non-finite of {grad.size} entries")
        raise NonFiniteLossError(f"{bad} at the chain's start {short_position(q)}; start the chain inside the support,"
                                 " where the log density and its gradient are finite (init_values, e.g. the MAP)")
    point = Point(q, np.zeros_like(q), value, grad)
    # The start's curvature as the first metric, where its 2D gradients cost less than one per warm-up iteration.
    metric = curvature_inverse_metric(target, q) if 0 < 2 * q.size <= warmup_steps else np.ones_like(q)
    hamiltonian = Hamiltonian(target, metric)
    step_size = find_step_size(hamiltonian, point, 1.0, rng) if warmup_steps else 1.0
    averaging = DualAveraging(step_size, target_accept_prob)
    window_start, window_ends = adaptation_windows(warmup_steps)
    last_end, window_ends, variance = max(window_ends, default=-1), set(window_ends), WelfordVariance(q.size)
    draws = np.empty((num_samples, q.size))
    columns = ("diverging", "accept_prob", "step_size", "tree_depth", "num_steps")
    stats = np.zeros((num_samples, len(columns)))
    for iteration in range(warmup_steps + num_samples):
        transition = NUTSTransition(hamiltonian, step_size, max_tree_depth, uniform)
        point = transition.run(point, draw_momentum(hamiltonian, rng))
        if iteration < warmup_steps:
            step_size = averaging.update(transition.accept_prob)
            if window_start <= iteration <= last_end:
                variance.add(point.q)
            if iteration in window_ends:
                hamiltonian.inverse_mass = variance.regularised()
                variance = WelfordVariance(q.size)
                step_size = find_step_size(hamiltonian, point, step_size, rng)
                averaging.restart(step_size)
            if iteration == warmup_steps - 1:
                step_size = averaging.final_step_size
            continue
        row = iteration - warmup_steps
        draws[row] = point.q
        stats[row] = (transition.diverging, transition.accept_prob, step_size, transition.depth, transition.num_steps)
    dtypes = (torch.bool, torch.float64, torch.float64, torch.long, torch.long)
    per_draw = {name: torch.from_numpy(stats[:, i]).to(dtype) for i, (name, dtype) in enumerate(zip(columns, dtypes, strict=True))}
    return torch.from_numpy(draws).to(device=initial.device, dtype=initial.dtype), per_draw
