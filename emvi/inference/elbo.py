"""Build Pyro ELBO objects by name.

| name        | objective                                                           |
| ----------- | ------------------------------------------------------------------- |
| "trace"     | ``Trace_ELBO``: E_q[log p(x, z) - log q(z)], score-function terms for non-reparameterisable sites |
| "meanfield" | ``TraceMeanField_ELBO``: the same with analytic KL(q || p) where known (the seed's Keras loss)   |
| "renyi"     | ``RenyiELBO(alpha)``; alpha=0 with K particles is the importance weighted bound (IWAE)          |
| "enum"      | ``TraceEnum_ELBO``: discrete sites marked for enumeration are summed out exactly                |

``jit=True`` picks the JIT-compiled variants; they are fragile on recent torch, so the runner falls back to eager
mode when compilation fails.
"""

from __future__ import annotations

import math

import pyro.infer as infer
import torch
from pyro.infer.util import is_identically_zero, torch_sum
from pyro.util import warn_if_nan

from .._validation import check_choice, check_positive_int
from ..errors import ConfigError

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
    check_choice(name, "elbo", ELBO_NAMES)
    num_particles = check_positive_int(num_particles, "num_particles")
    kwargs = {"num_particles": num_particles, "vectorize_particles": vectorize_particles}
    if max_plate_nesting is not None:
        kwargs["max_plate_nesting"] = max_plate_nesting
    if name == "trace":
        cls = infer.JitTrace_ELBO if jit else infer.Trace_ELBO
    elif name == "meanfield":
        cls = infer.JitTraceMeanField_ELBO if jit else infer.TraceMeanField_ELBO
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
                        raise ConfigError(
                            f"elbo 'renyi' needs a reparameterised guide, but guide site {name!r} is not; "
                            "use elbo 'trace' for this guide"
                        )
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
