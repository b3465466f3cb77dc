"""Every fitted quantity of a declared model (:class:`~emvi.models.declared.DeclaredModel`) and its derived guide,
by the names and dims of the ArviZ export; the values are constrained (natural scale).

==============================  ==============================================  ======================================
module parameter                exported as                                     value, dims
==============================  ==============================================  ======================================
``globals_.g`` (MAP)            ``g``                                           the support's bijection of u_g
``learned.s__p`` (table)        ``s_p``                                         ``(K, *param)``: dims ``z``, site dims
``learned.s__p`` (learned)      ``s_p``                                         ``param``-shaped
``linear(i, ...)`` of ``s.p``   ``s_p_weight_i``, ``s_p_bias``                  ``p = Σ_i W_i · i + b``; W_i ``(*p, *i)``
``linear(..., by="z")``         the same, with a leading ``z`` dim              one map per value of z
mlp/conv/module of ``s.p``      ``s_p.<parameter name in the network>``         as stored; dims ``<name>_dim_<j>``
guide ``loc.g``/``raw_scale.g``  ``g_q_loc``, ``g_q_scale`` (meanfield globals)  q(u_g) = Normal(loc, scale)
==============================  ==============================================  ======================================

A positive parameter's table or learned tensor is ``exp`` of the stored log scale (clamped as the model clamps it), a
learned ``scale_tril`` its lower-triangular factor; a linear map's weights are those of the expression, so on the log
scale for a positive parameter. Dims are named after sites: a discrete site's values ``z`` (table rows, ``[z]``-indexed
globals' rows, one-hot inputs and categorical logits of a scalar site), a latent's vector ``t_dim``, an observed site
or covariate's features ``x_feature``, a categorical vector's categories ``x_value``, the second axis of a scale_tril
``x_feature_col``. Network weights (mlp, conv, module, the guide's encoders) are exported when the network has at most
:data:`NETWORK_EXPORT_LIMIT` parameters, otherwise only listed by name and shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import transform_to

from ..declaration import FAMILIES, feature_width, param_shape
from ..guides.declared import MIN_SCALE

NETWORK_EXPORT_LIMIT = 1000
"""Largest network (total parameter count) whose weights are exported value by value; larger ones are listed."""
MAX_LOG = 30.0
"""Learned log-scale parameters are clamped here before ``exp`` (as the composed model's Poisson rate is)."""


@dataclass(frozen=True)
class FittedParameter:
    """One exported quantity: its constrained ``value``, ArviZ ``dims`` (one per axis) and the module parameters
    (state-dict names) it is computed from; ``network``: a weight of an mlp/conv/module network or a guide encoder."""

    value: torch.Tensor
    dims: tuple[str, ...]
    sources: tuple[str, ...]
    network: bool = False
    exported: bool = True
    """False for a network over :data:`NETWORK_EXPORT_LIMIT` parameters: listed by name, not exported."""


def site_dims(site, shapes: dict) -> tuple[str, ...]:
    """Dims of a local site's per-item value: ``t_dim`` for a vector latent, ``x_feature`` for a vector observed site
    or covariate, none for a scalar."""
    if not shapes.get(site.name):
        return ()
    return (f"{site.name}_dim",) if site.role == "latent" else (f"{site.name}_feature",)


def param_dims(site, param: str, shapes: dict) -> tuple[str, ...]:
    """Dims of a family parameter of a local site (:func:`emvi.declaration.param_shape`)."""
    dims = site_dims(site, shapes)
    if site.family == "categorical":
        return dims + ((f"{site.name}_value",) if dims else (site.name,))
    if site.family == "mvnormal" and param == "scale_tril":
        return dims + (f"{dims[-1]}_col",)
    return dims


def input_dims(site, shapes: dict) -> tuple[str, ...]:
    """Dims of a site as a linear map's input: its values ``z`` one-hot for a scalar discrete site, else its own."""
    return (site.name,) if site.values_given(shapes) else site_dims(site, shapes)


def natural_value(value: torch.Tensor, family, p: str) -> torch.Tensor:
    """The stored value of parameter ``p`` of ``family`` on its natural scale: the one map the model reads its
    tables, learned tensors and expressions through, and the export reports."""
    constraint = family.constraint(p)
    if constraint == "positive":
        return value.clamp(max=MAX_LOG).exp()
    if constraint == "lower_cholesky":
        return value.tril(-1) + value.diagonal(dim1=-2, dim2=-1).clamp(max=MAX_LOG).exp().diag_embed()
    if constraint != "real":  # a Pyro family's other constraints: their bijection (sigmoid for a probability)
        return transform_to(family.constraints[p])(value)
    return value


def fitted_parameters(model) -> dict[str, FittedParameter]:
    """Every fitted quantity of a :class:`~emvi.models.declared.DeclaredModel` (see the module docstring); a
    mean-field global is the guide's (:func:`guide_parameters`), its model tensor is unused."""
    decl, shapes = model.declaration, model.shapes
    sites = decl.by_name
    indexed = {e.inputs[0]: e.index for s in decl.sites for _, e in s.params if e.kind == "ref" and e.index}
    out: dict[str, FittedParameter] = {}
    for site in decl.sites:
        if site.role == "param":
            if site.guide == "meanfield":
                continue
            value = model.global_value(site.name).detach()
            dims = [f"{site.name}_dim_{i}" for i in range(value.dim())]
            index = indexed.get(site.name)
            if index is not None and value.dim() and value.shape[0] == sites[index].num_values:
                dims[0] = index
            out[site.name] = FittedParameter(value, tuple(dims), (f"globals_.{site.name}",))
            continue
        for p, e in site.params:
            key, name = f"{site.name}__{p}", f"{site.name}_{p}"
            shape, dims = param_shape(site, p, shapes), param_dims(site, p, shapes)
            if e.kind in ("table", "learned"):
                raw = model.learned[key].detach()
                value = natural_value(raw.reshape(raw.shape[:-1] + tuple(shape)), FAMILIES[site.family], p)
                rows = tuple(e.indices) if e.kind == "table" else ()
                out[name] = FittedParameter(value, rows + dims, (f"learned.{key}",))
            elif e.kind == "linear":
                out.update(_linear(model, site, p, e, shape, dims))
            elif e.learned:
                out.update(_network(name, model.networks[key], f"networks.{key}"))
    return out


def _linear(model, site, p, e, shape, dims) -> dict[str, FittedParameter]:
    """``p = Σ_i W_i · features(i) + b``: W_i ``(*rows, *shape(p), *input(i))`` per input, b ``(*rows, *shape(p))``;
    ``rows`` is ``(K,)`` for ``by="z"``."""
    key, name = f"{site.name}__{p}", f"{site.name}_{p}"
    sites, shapes = model.declaration.by_name, model.shapes
    widths = [feature_width(sites[i], shapes) for i in e.inputs]
    out_width = math.prod(shape)
    if e.index is not None:  # learned[key] (K, in * out) read as (K, in, out); bias (K, out)
        raw = model.learned[key].detach()
        weight = raw.reshape(raw.shape[0], sum(widths), out_width).transpose(-1, -2)
        bias, rows, sources = model.learned[key + "__bias"].detach(), (e.index,), (f"learned.{key}",
                                                                                   f"learned.{key}__bias")
    else:  # nn.Linear: weight (out, in), bias (out,)
        layer = model.networks[key]
        weight, bias, rows = layer.weight.detach(), layer.bias.detach(), ()
        sources = (f"networks.{key}.weight", f"networks.{key}.bias")
    lead = weight.shape[:-2]
    out = {}
    for i, width, piece in zip(e.inputs, widths, weight.split(widths, -1), strict=True):
        value = piece.reshape(lead + tuple(shape) + ((width,) if input_dims(sites[i], shapes) else ()))
        out[f"{name}_weight_{i}"] = FittedParameter(value, rows + dims + input_dims(sites[i], shapes), sources[:1])
    out[f"{name}_bias"] = FittedParameter(bias.reshape(lead + tuple(shape)), rows + dims, sources[1:])
    return out


def _network(prefix: str, network: nn.Module, source: str) -> dict[str, FittedParameter]:
    """Each parameter of a network as ``<prefix>.<its name>``; exported when the network is small."""
    named = list(network.named_parameters())
    small = sum(w.numel() for _, w in named) <= NETWORK_EXPORT_LIMIT
    out = {}
    for pname, weight in named:
        name = f"{prefix}.{pname}"
        dims = tuple(f"{name}_dim_{j}" for j in range(weight.dim()))
        out[name] = FittedParameter(weight.detach(), dims, (f"{source}.{pname}",), network=True, exported=small)
    return out


def guide_parameters(guide) -> dict[str, FittedParameter]:
    """The derived guide's fitted quantities: a mean-field global g's q(u_g) = Normal(``g_q_loc``, ``g_q_scale``) in
    the unconstrained space, and each encoder's weights as ``guide.<site>.<parameter name>`` (networks)."""
    out = {}
    for name, loc in guide.loc.items():
        scale = nn.functional.softplus(guide.raw_scale[name].detach()) + MIN_SCALE
        dims = tuple(f"{name}_q_dim_{j}" for j in range(loc.dim()))
        out[f"{name}_q_loc"] = FittedParameter(loc.detach(), dims, (f"loc.{name}",))
        out[f"{name}_q_scale"] = FittedParameter(scale, dims, (f"raw_scale.{name}",))
    for site, encoder in guide.encoders.items():
        out.update(_network(f"guide.{site}", encoder, f"encoders.{site}"))
    return out


def parameter_coords(parameters: dict[str, FittedParameter]) -> dict[str, list[int]]:
    """Coordinates 0..n-1 of every dim the parameters use."""
    coords = {}
    for p in parameters.values():
        coords.update({dim: list(range(n)) for dim, n in zip(p.dims, p.value.shape, strict=True)})
    return coords
