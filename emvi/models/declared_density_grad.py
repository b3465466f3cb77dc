"""The declared log joint of :mod:`emvi.models.declared_density` with its gradient written out (no autograd), for a
model of globals only: what NUTS's potential calls on one flat vector (see
:func:`~emvi.inference.mcmc.flat_potential_with_grad`).

Covered (else :func:`declared_log_density_and_grad` returns None and autograd differentiates the log density): no
per-item latent and no covariate; each global with a prior has constant or point-valued prior parameters and a family
with a written-out prior gradient (:func:`~emvi.models.prior_density.summed_log_density_and_grad`); each observed
site is normal or poisson, every parameter a constant, a point value or a global (a reference without index),
broadcast over the site's per-item shape ``(*event)``. Its likelihood then reads per-feature statistics ``(*event)``
of the data ``(N, *event)``, taken once::

    normal:  Σ_n log N(x_n | m, s) = Σ_d [-N log s_d - N/2 log 2π - (V_d + N (c_d - m_d)²) / (2 s_d²)],
             c = x̄, V = Σ_n (x_n - c)²  (centred: no difference of two large moments);
             ∂/∂m = N (c - m) / s²,  ∂/∂s = -N / s + (V + N (c - m)²) / s³
    poisson: Σ_n log Poisson(x_n | r) = Σ_d (S_d log r_d - N r_d) - Σ_n Σ_d log x_nd!,  S = Σ_n x_n;
             ∂/∂r = S / r - N

so one call costs O(Σ_site |event|) operations, whatever N. A global read by several parameters gets each one's
gradient, summed over the dims it was broadcast along.
"""

from __future__ import annotations

import math

import torch

from .declared_density import point_values
from .prior_density import NUMPY_OPS, TORCH_OPS, PriorDensity

LIKELIHOOD_FAMILIES = ("normal", "poisson")
"""Observed families whose summed likelihood and gradient are written out here."""
POINT_KINDS = ("constant", "learned")
"""Parameter expressions that are point values during NUTS (besides a reference to a global without a prior)."""
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def uncovered_gradient_reason(model) -> str | None:
    """Why :func:`declared_log_density_and_grad` does not cover ``model`` (a DeclaredModel), or None when it does."""
    random = set(model.prior_globals())
    for site in model.declaration.sites:
        if site.role in ("latent", "covariate"):
            return f"site {site.name!r} is a per-item {site.role}"
        if site.role == "param" and site.name in random and any(p in random for p in site.parents):
            return f"the prior of {site.name!r} reads another sampled global"
        if site.role == "observed":
            if site.family not in LIKELIHOOD_FAMILIES or site.mask is not None:
                return f"observed site {site.name!r} ({site.family}) has no written-out likelihood gradient"
            for p, e in site.params:
                if not (e.kind in POINT_KINDS or e.kind == "ref" and e.index is None):
                    return f"parameter {site.name}.{p} is a {e.kind} expression"
    return None


class DeclaredLogJointAndGrad:
    """``values -> (log p(x, θ), {site: ∂ log p(x, θ) / ∂θ_site})`` at the constrained globals with a prior of a
    covered DeclaredModel (see the module docstring) on its data arrays; the value is
    :func:`~emvi.models.declared_density.declared_log_density`'s. On the CPU it runs on float64 numpy arrays (``ops``
    :data:`~emvi.models.prior_density.NUMPY_OPS`), elsewhere on tensors of the data's device."""

    def __init__(self, model, data: tuple, ops=None):
        arrays = model.bind(data)
        first = data[0]
        self.device, self.dtype = first.device, model.parameter_dtype(data)
        self.ops = ops or (NUMPY_OPS if first.device.type == "cpu" else TORCH_OPS)
        convert = self.ops.convert
        dtype = torch.float64 if self.ops is NUMPY_OPS else self.dtype  # the numpy path is float64 throughout
        random = set(model.prior_globals())
        fixed = point_values(model, data)
        with torch.no_grad():
            self.prior = PriorDensity({name: model.global_prior(model.declaration.by_name[name], fixed)
                                       for name in random})
        self.shapes = {name: tuple(model.global_value(name).shape) for name in random}
        self.sites = []  # (family, {param: global name or point array}, statistics)
        self.constant = 0.0
        for site in model.order:
            if site.role != "observed":
                continue
            x = arrays[site.name].to(dtype).detach()
            count, event = x.shape[0], tuple(x.shape[1:])
            params = {}
            for p, e in site.params:
                if e.kind == "ref" and e.inputs[0] in random:
                    params[p] = e.inputs[0]
                else:
                    with torch.no_grad():
                        params[p] = convert(model._evaluate(site, p, e, fixed).to(dtype).expand(event))
            if site.family == "normal":
                centre = x.mean(0)
                stats = {"count": count, "centre": convert(centre), "spread": convert(((x - centre) ** 2).sum(0))}
                self.constant -= count * math.prod(event) * HALF_LOG_2PI
            else:
                stats = {"count": count, "total": convert(x.sum(0))}
                self.constant -= float(torch.lgamma(x + 1).sum())
            self.sites.append((site.family, params, stats))

    def __call__(self, values: dict) -> tuple:
        ops = self.ops
        prior = self.prior.value_and_grad(values)
        if prior is None:  # declared_log_density_and_grad builds this only where every prior has one
            raise NotImplementedError("a prior of this declared model has no written-out gradient")
        total, prior_grads = prior
        grads = dict(prior_grads)
        total = total + self.constant
        for family, params, stats in self.sites:
            value = {p: values[v] if isinstance(v, str) else v for p, v in params.items()}
            n = stats["count"]
            if family == "normal":
                loc, scale = value["loc"], value["scale"]
                shift = stats["centre"] - loc
                squares = stats["spread"] + n * shift * shift
                precision = 1 / (scale * scale)
                total = total + (-n * ops.log(scale) - 0.5 * squares * precision).sum()
                site_grads = {"loc": n * shift * precision, "scale": (squares * precision - n) / scale}
            else:
                rate = value["rate"]
                total = total + (stats["total"] * ops.log(rate) - n * rate).sum()
                site_grads = {"rate": stats["total"] / rate - n}
            for p, name in params.items():
                if isinstance(name, str):
                    grads[name] = grads[name] + _sum_to(site_grads[p], self.shapes[name])
        return total, grads


def _sum_to(grad, shape: tuple[int, ...]):
    """``grad`` summed over the dims a value of ``shape`` was broadcast along (numpy arrays or tensors)."""
    lead = grad.ndim - len(shape)
    if lead:
        grad = grad.sum(tuple(range(lead)))
    dims = tuple(d for d, size in enumerate(shape) if size == 1 and grad.shape[d] != 1)
    if dims:
        grad = grad.sum(dims, keepdims=True) if not isinstance(grad, torch.Tensor) else grad.sum(dims, keepdim=True)
    return grad


def declared_log_density_and_grad(model, data: tuple, ops=None) -> DeclaredLogJointAndGrad | None:
    """:class:`DeclaredLogJointAndGrad` of ``model`` on ``data``, or None where it is not covered
    (:func:`uncovered_gradient_reason`, or a prior without a written-out gradient)."""
    if uncovered_gradient_reason(model) is not None:
        return None
    written = DeclaredLogJointAndGrad(model, data, ops)
    return written if None not in written.prior.gradients.values() else None
