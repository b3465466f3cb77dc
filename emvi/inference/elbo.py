"""Build Pyro ELBO objects by name.

| name        | objective                                                           |
| ----------- | ------------------------------------------------------------------- |
| "trace"     | ``Trace_ELBO``: E_q[log p(x, z) - log q(z)], score-function terms for non-reparameterisable sites (emvi's :class:`LeanTrace_ELBO`, the same estimator with less overhead) |
| "meanfield" | ``TraceMeanField_ELBO``: the same with analytic KL(q || p) where known (the seed's Keras loss; emvi's :class:`LeanTraceMeanField_ELBO`) |
| "renyi"     | ``RenyiELBO(alpha)``; alpha=0 with K particles is the importance weighted bound (IWAE)          |
| "enum"      | ``TraceEnum_ELBO``: discrete sites marked for enumeration are summed out exactly                |

``jit=True`` picks the JIT-compiled variants; they are fragile on recent torch, so the runner falls back to eager
mode when compilation fails.
"""

from __future__ import annotations

import math

import pyro.infer as infer
import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer.util import is_identically_zero, torch_sum
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.util import warn_if_nan
from torch.distributions import kl_divergence

from ..errors import ConfigError
from ..validation import check_choice, check_positive_int

ELBO_NAMES = ("trace", "meanfield", "renyi", "enum")


def make_elbo(
    name: str = "trace",
    *,
    num_particles: int = 1,
    max_plate_nesting: int | None = None,
    renyi_alpha: float = 0.0,
    vectorize_particles: bool = False,
    jit: bool = False,
) -> infer.ELBO:
    """A Pyro ELBO by name: ``"trace"`` (``Trace_ELBO``'s estimator, :class:`~emvi.inference.elbo.LeanTrace_ELBO`),
    ``"meanfield"`` (``TraceMeanField_ELBO``'s: closed-form KL where one exists), ``"enum"`` (``TraceEnum_ELBO``:
    discrete sites summed out exactly, over ``max_plate_nesting`` plates) or ``"renyi"``
    (:class:`~emvi.inference.elbo.DifferentiableRenyiELBO` with ``alpha = renyi_alpha``; 0 is the IWAE bound over
    ``num_particles`` samples). ``jit`` picks Pyro's compiled variant of the first three."""
    check_choice(name, "elbo", ELBO_NAMES)
    num_particles = check_positive_int(num_particles, "num_particles")
    kwargs = {"num_particles": num_particles, "vectorize_particles": vectorize_particles}
    if max_plate_nesting is not None:
        kwargs["max_plate_nesting"] = max_plate_nesting
    if name == "trace":
        cls = infer.JitTrace_ELBO if jit else LeanTrace_ELBO
    elif name == "meanfield":
        cls = infer.JitTraceMeanField_ELBO if jit else LeanTraceMeanField_ELBO
    elif name == "enum":
        cls = infer.JitTraceEnum_ELBO if jit else infer.TraceEnum_ELBO
    else:
        cls = DifferentiableRenyiELBO
        kwargs["alpha"] = renyi_alpha
    return cls(**kwargs)


class DifferentiableRenyiELBO(infer.RenyiELBO):
    """``RenyiELBO`` with a ``differentiable_loss``, so one torch optimizer can drive it like the other ELBOs.

    Per data item, with log weights ``l_k = log p(x, z_k) - log q(z_k | x)`` for ``K`` particles ``z_k ~ q``,

        L_alpha(x) = 1 / (1 - alpha) * log (1/K) sum_k exp((1 - alpha) l_k),

    and for reparameterised guides the gradient of this value is the importance-weighted gradient that Pyro's
    surrogate uses, so returning ``-sum_x L_alpha(x)`` itself is exact. ``alpha=0`` is the IWAE bound.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        log_weight_particles = []
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            sum_dims = infer.util.get_dependent_plate_dims(model_trace.nodes.values())
            log_weight = 0.0
            for site in model_trace.nodes.values():
                if site["type"] == "sample":
                    log_weight = log_weight + torch_sum(site["log_prob"], sum_dims)
            for name, site in guide_trace.nodes.items():
                if site["type"] == "sample":
                    if not is_identically_zero(site["score_parts"].score_function):
                        fix = ("use elbo 'auto' (or 'enum'), which sums it out exactly: Pyro's RenyiELBO does not "
                               "enumerate" if site["infer"].get("enumerate") else
                               "use elbo 'trace' (score-function gradients) for this guide")
                        raise ConfigError(f"elbo 'renyi' needs a reparameterised guide, but guide site {name!r} is "
                                          f"not; {fix}")
                    log_weight = log_weight - torch_sum(site["log_prob"], sum_dims)
            log_weight_particles.append(torch.as_tensor(log_weight))
        if self.vectorize_particles and self.num_particles > 1:
            log_weights = log_weight_particles[0]
        else:
            log_weights = torch.stack(torch.broadcast_tensors(*log_weight_particles))
        scaled = (1.0 - self.alpha) * log_weights
        log_mean_weight = torch.logsumexp(scaled, dim=0) - math.log(self.num_particles)
        loss = -log_mean_weight.sum() / (1.0 - self.alpha)
        warn_if_nan(loss, "loss")
        return loss


class _SampleSites(Messenger):
    """Records each sample site's message after the plates have set its scale; replays ``values`` into latent sites.

    A lighter stand-in for ``poutine.trace`` + ``poutine.replay``: no trace graph, no message copies.
    """

    def __init__(self, values: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.values = values
        self.sites: dict[str, dict] = {}

    def _process_message(self, msg):
        if self.values is not None and msg["type"] == "sample" and not msg["is_observed"] and msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]
            msg["done"] = True

    def _postprocess_message(self, msg):
        if msg["type"] == "sample" and not isinstance(msg["fn"], _Subsample):
            self.sites[msg["name"]] = msg


class _LeanELBO:
    """The lean single-particle path shared by :class:`LeanTrace_ELBO` and :class:`LeanTraceMeanField_ELBO`.

    It applies when every guide site is reparameterisable and nothing is enumerated: then the estimator's surrogate is
    the ELBO estimate itself, computed straight from the sample messages of one guide run and one model run with the
    guide's values. Anything else (score-function sites, enumeration, auxiliary guide sites, several particles,
    validation on) goes to the Pyro class unchanged. Profiling the VAE showed Pyro's trace graph, replay and
    ``compute_log_prob`` passes as the bulk of its overhead over a hand-written loss.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = self._lean_loss(model, guide, args, kwargs)
        return super().differentiable_loss(model, guide, *args, **kwargs) if loss is None else loss

    def loss(self, model, guide, *args, **kwargs):
        with torch.no_grad():
            loss = self._lean_loss(model, guide, args, kwargs)
        return super().loss(model, guide, *args, **kwargs) if loss is None else float(loss)

    def _lean_loss(self, model, guide, args, kwargs):
        if self.num_particles != 1 or infer.util.is_validation_enabled():
            return None
        guide_sites = _SampleSites()
        with guide_sites:
            guide(*args, **kwargs)
        values = {}
        for name, msg in guide_sites.sites.items():
            if msg["is_observed"] or msg["infer"].get("enumerate") or msg["infer"].get("is_auxiliary") \
                    or not getattr(msg["fn"], "has_rsample", False):
                return None
            values[name] = msg["value"]
        model_sites = _SampleSites(values)
        with model_sites:
            model(*args, **kwargs)
        for msg in model_sites.sites.values():
            if msg["infer"].get("enumerate"):
                return None
        terms = self._loss_terms(guide_sites.sites, model_sites.sites)
        return None if terms is None else _scaled_sum(terms)

    def _loss_terms(self, guide_sites: dict, model_sites: dict) -> list[tuple] | None:
        """``(sign, per-item tensor, scale, mask)`` terms whose scaled sum is the loss (None: use Pyro's path)."""
        raise NotImplementedError


class LeanTrace_ELBO(_LeanELBO, infer.Trace_ELBO):
    """``Trace_ELBO`` whose common case skips Pyro's trace bookkeeping; the estimator and its value are the same:

        loss = Σ_guide sites scale · log q(value) - Σ_model sites scale · log p(value).
    """

    def _loss_terms(self, guide_sites, model_sites):
        # Guide first so that the sum starts with a plus sign.
        return [(1.0, *_scored(msg)) for msg in guide_sites.values()] + [(-1.0, *_scored(msg))
                                                                           for msg in model_sites.values()]


class LeanTraceMeanField_ELBO(_LeanELBO, infer.TraceMeanField_ELBO):
    """``TraceMeanField_ELBO`` on the lean path: a latent whose KL(q || p) has a closed form contributes
    ``scale · KL(q || p)`` (the guide site's scale and mask, as in Pyro), any other latent ``scale · (log q - log p)``
    at the guide's draw, and observations ``-scale · log p(x)``. The same value and gradient as Pyro's estimator.
    """

    def _loss_terms(self, guide_sites, model_sites):
        if any(name not in model_sites for name in guide_sites):
            return None  # Pyro's estimator decides what a guide-only site means
        terms = []
        for name, model_msg in model_sites.items():
            guide_msg = guide_sites.get(name)
            if guide_msg is not None:
                try:
                    kl = kl_divergence(guide_msg["fn"], model_msg["fn"])
                except NotImplementedError:
                    terms.append((1.0, *_scored(guide_msg)))
                else:
                    terms.append((1.0, kl, guide_msg["scale"], guide_msg["mask"]))
                    continue
            terms.append((-1.0, *_scored(model_msg)))
        return terms


def _scored(msg) -> tuple:
    """``(log p(value), scale, mask)`` of one sample message."""
    return msg["fn"].log_prob(msg["value"]), msg["scale"], msg["mask"]


def _scaled_sum(terms) -> torch.Tensor:
    """Σ sign · scale · mask · tensor over ``(sign, per-item tensor, scale, mask)`` terms.

    Per-item tensors of the same shape under the same numeric plate scale (a VAE's three sites) are added before one
    sum and one multiplication: fewer autograd nodes per step than a sum and a product per site.
    """
    by_scale: dict[tuple, torch.Tensor] = {}
    total = None
    for sign, value, scale, mask in terms:
        if mask is None and isinstance(scale, (int, float)):
            key = (scale, value.shape)
            by_scale[key] = _signed_add(by_scale.get(key), value, sign)
        else:
            total = _signed_add(total, scale_and_mask(value, scale, mask).sum(), sign)
    for (scale, _), partial in by_scale.items():
        total = _signed_add(total, partial.sum() if scale == 1.0 else partial.sum() * scale, 1.0)
    # No NaN check here: the runner reads every loss with ``.item()`` and stops on a non-finite one.
    return total


def _signed_add(total: torch.Tensor | None, value: torch.Tensor, sign: float) -> torch.Tensor:
    """``total ± value``, starting from ``±value`` when there is no total yet (at most one autograd node)."""
    if total is None:
        return value if sign > 0 else -value
    return total + value if sign > 0 else total - value
