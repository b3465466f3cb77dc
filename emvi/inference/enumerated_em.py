"""EM for any Pyro model whose per-item latents are all discrete: an exact E-step by enumerating them jointly and a
monotone gradient M-step (generalised EM).

Tracing the model with its discrete sites enumerated in parallel puts each site's values on a dimension of its own,
left of the data plate, so the broadcast sum of the log-densities of the sites in the data plate is the joint of
every configuration c = (z, s, ...) of an item's discrete sites (chains z -> s -> x included)::

    log p(x_n, c | θ)                                     (*enum_shape, N), flattened to (C, N), C = Π_site K_site
    w_nc = p(c | x_n, θ_old)                              E-step: normalised over c, detached
    L(θ) = Σ_n log Σ_c p(x_n, c | θ) + log p(θ)           the objective (log p(θ): the globals' prior factors)
    Q(θ) = Σ_n Σ_c w_nc log p(x_n, c | θ) + log p(θ)      the M-step's target

The M-step takes L-BFGS steps on Q / N (strong Wolfe line search), then backtracks along the step until
Q(θ_new) >= Q(θ_old) (else θ_old stays), so L never decreases: L(θ_new) >= Q(θ_new) + H(w) >= Q(θ_old) + H(w)
= L(θ_old), H(w) the entropy of the weights.

A model opts in through EM's protocol hook ``em_by_enumeration() -> True``: :func:`em_protocol` then wraps it in
:class:`EnumeratedEM`, the object :func:`emvi.inference.em.fit_em` steps. Its start (``initialise``) is data-based:
each observed site whose density depends on exactly one discrete site s gets K_s k-means++ (or random) centres of
its values, the items' nearest-centre assignments (softened 90/10) as weights of s, and the maximiser of its own
term Σ_n Σ_k r_nk log p(x_n | s = k, θ) from them.
"""

from __future__ import annotations

import math

import pyro.poutine as poutine
import torch
from pyro.infer import config_enumerate
from pyro.poutine.util import site_is_subsample

from ..errors import ConfigError
from .initialization import hard_assignments, initial_centres
from .sites import is_enumerable

GRADIENT_STEPS = 20
"""L-BFGS iterations per M-step (its line search may evaluate Q a few times per iteration)."""
BACKTRACKS = 30
"""Halvings of a step that lowered Q before the M-step keeps the old parameters."""
SOFTENING = 0.1
"""Share of uniform weight mixed into the start's hard assignments, so no probability or rate starts at 0."""


def em_protocol(model):
    """The object EM steps for ``model``: :class:`EnumeratedEM` when its ``em_by_enumeration()`` hook says so, else
    the model itself (its own ``e_step``/``m_step``)."""
    hook = getattr(model, "em_by_enumeration", None)
    return EnumeratedEM(model) if callable(hook) and hook() else model


class _Joint:
    """One enumerated trace of the model, read as ``joint`` ``(*enum_shape, N)`` (log p(x_n, c | θ) per
    configuration), ``log_prior`` (0-dim: the factors outside the data plate), ``dims`` (enumerated site -> its
    dimension, counted from the left of ``joint``) and ``terms`` (observed site -> (log-density, value))."""

    def __init__(self, model, data: tuple, plate: str):
        enumerated = poutine.enum(config_enumerate(model, default="parallel"), first_available_dim=-2)
        trace = poutine.trace(enumerated).get_trace(*data)
        trace.compute_log_prob()
        in_plate, self.log_prior, self.terms, self.dims = [], 0.0, {}, {}
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if not any(frame.name == plate for frame in site["cond_indep_stack"]):
                if not site["is_observed"]:
                    raise ConfigError(f"site {name!r} is a global sample site; EM by enumeration fits point values "
                                      "(a prior as a factor), not a guide over globals: fit it by svi")
                self.log_prior = self.log_prior + site["log_prob_sum"]
                continue
            if not site["is_observed"]:
                if not is_enumerable(site):
                    raise ConfigError(f"site {name!r} is a continuous per-item latent; EM by enumeration sums out "
                                      "discrete latents only: fit it by svi")
                self.dims[name] = site["infer"]["_enumerate_dim"]
            elif not site["infer"].get("_do_not_score"):
                self.terms[name] = (site["log_prob"], site["value"])
            in_plate.append(site["log_prob"])
        if not in_plate:
            raise ConfigError(f"the model has no sample site inside a plate named {plate!r}")
        rank = 1 + max((-d - 1 for d in self.dims.values()), default=0)  # enumeration dims, then the plate
        self.num_items = max(t.shape[-1] for t in in_plate)
        total = sum(_left_pad(t, rank) for t in in_plate)
        self.joint = total.expand(*total.shape[:-1], self.num_items)
        self.dims = {name: rank + d for name, d in self.dims.items()}  # from the left of joint

    def flat(self) -> torch.Tensor:
        """``(C, N)``: the configurations on one axis."""
        return self.joint.reshape(-1, self.num_items)


def _left_pad(t: torch.Tensor, rank: int) -> torch.Tensor:
    return t.reshape((1,) * (rank - t.dim()) + tuple(t.shape))


class EnumeratedEM:
    """EM's protocol (:mod:`emvi.inference.em`) for a Pyro model ``model(*data)`` whose sites in the data plate
    ``plate`` are observed or discrete, its parameters the model's ``parameters()`` (see the module docstring).

    Args:
        model: an ``nn.Module`` Pyro model; discrete latents are enumerated in parallel whether marked or not.
        gradient_steps: L-BFGS iterations per M-step.
    """

    def __init__(self, model, *, gradient_steps: int = GRADIENT_STEPS, plate: str = "data"):
        self.model = model
        self.gradient_steps = int(gradient_steps)
        self.plate = plate

    def joint(self, *data) -> _Joint:
        return _Joint(self.model, data, self.plate)

    @torch.no_grad()
    def log_likelihood(self, *data) -> torch.Tensor:
        """``(N,)`` exact log p(x_n | θ), every discrete site summed out."""
        return torch.logsumexp(self.joint(*data).flat(), 0)

    @torch.no_grad()
    def e_step(self, *data) -> tuple[torch.Tensor, float]:
        """Posterior weights ``(C, N)`` of every configuration and L(θ) = Σ_n log p(x_n | θ) + log p(θ)."""
        joint = self.joint(*data)
        flat = joint.flat()
        log_norm = torch.logsumexp(flat, 0)
        return (flat - log_norm).exp(), float(log_norm.sum() + joint.log_prior)

    def expected_log_joint(self, weights: torch.Tensor, *data) -> torch.Tensor:
        """Q(θ) = Σ_n Σ_c w_nc log p(x_n, c | θ) + log p(θ) at the model's current parameters (differentiable)."""
        joint = self.joint(*data)
        flat = joint.flat()
        # A configuration of weight 0 may have log-density -inf: it adds 0, not nan.
        return torch.where(weights > 0, flat, 0.0).mul(weights).sum() + joint.log_prior

    def m_step(self, weights: torch.Tensor, *data) -> None:
        """Raise Q(θ) from the current parameters (never lower it): L-BFGS steps, then backtracking."""
        num_items = weights.shape[-1]
        ascend(self._parameters(), lambda: self.expected_log_joint(weights, *data) / num_items,
               self.gradient_steps)

    def _parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @torch.no_grad()
    def site_weights(self, *data) -> dict[str, torch.Tensor]:
        """``{site: (K,)}``: the share of the items' posterior weight on each value of each enumerated site."""
        joint = self.joint(*data)
        weights = (joint.joint - torch.logsumexp(joint.flat(), 0)).exp()  # (*enum_shape, N)
        out = {}
        for name, dim in joint.dims.items():
            others = [d for d in range(weights.dim() - 1) if d != dim]
            marginal = weights.sum(others) if others else weights
            out[name] = marginal.mean(-1)
        return out

    def initialise(self, *data, generator: torch.Generator, init: str = "kmeans++") -> None:
        """The data-based start (module docstring): for each observed site fed by exactly one discrete site s, its
        term's maximiser from the softened nearest-centre assignments of its values to K_s centres."""
        with torch.no_grad():
            joint = self.joint(*data)
            fed = []
            for name, (log_prob, value) in joint.terms.items():
                padded = _left_pad(log_prob, joint.joint.dim())
                varying = [d for d in range(padded.dim() - 1) if padded.shape[d] > 1]
                parent = [s for s, d in joint.dims.items() if varying == [d]]
                if not parent:
                    continue
                k = padded.shape[varying[0]]
                x = value.reshape(joint.num_items, -1).to(padded.dtype)
                if torch.unique(x, dim=0).shape[0] < k:
                    continue  # fewer distinct values than centres: the model's own start stays
                resp = hard_assignments(x, initial_centres(x, k, init, generator))
                fed.append((name, varying[0], (1 - SOFTENING) * resp + SOFTENING / k))
        if not fed:
            return

        def start_objective():
            joint = self.joint(*data)
            total = 0.0
            for name, dim, resp in fed:
                log_prob = _left_pad(joint.terms[name][0], joint.joint.dim()).movedim(dim, 0)
                total = total + (resp.T * log_prob.reshape(resp.shape[1], -1)).sum()
            return total / joint.num_items

        ascend(self._parameters(), start_objective, self.gradient_steps)


def ascend(parameters: list[torch.Tensor], objective, steps: int) -> None:
    """Raise ``objective()`` (a 0-dim tensor of ``parameters``) by at most ``steps`` L-BFGS iterations; a step that
    lowers it (or makes it non-finite) is halved up to :data:`BACKTRACKS` times, then undone."""
    if not parameters or steps <= 0:
        return
    with torch.no_grad():
        before = [p.detach().clone() for p in parameters]
        start = float(objective())
    optimiser = torch.optim.LBFGS(parameters, lr=1.0, max_iter=steps, history_size=20, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = -objective()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    with torch.no_grad():
        after = [p.detach().clone() for p in parameters]
        fraction = 1.0
        for _ in range(BACKTRACKS):
            value = float(objective())
            if math.isfinite(value) and value >= start:
                break
            fraction /= 2
            for p, old, new in zip(parameters, before, after, strict=True):
                p.copy_(old + fraction * (new - old))
        else:
            for p, old in zip(parameters, before, strict=True):
                p.copy_(old)
    for p in parameters:
        p.grad = None


__all__ = ["EnumeratedEM", "ascend", "em_protocol"]
