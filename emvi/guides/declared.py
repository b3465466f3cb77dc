"""The guide derived from a :class:`emvi.declaration.Declaration`, with nothing written by the user.

* Globals: nothing for a MAP global (a module parameter of the model); for ``guide="meanfield"`` a Normal with learned
  location and scale in the unconstrained space, pushed through the support's bijection.
* A discrete latent that is a parent of a continuous latent: q(z_n | data_n) = Categorical(g_z(data_n)), enumerated in
  parallel (exact expectation over z), and a point mass on the given value where a mask says it is observed.
  Other discrete latents are enumerated in the model and have no guide site.
* A continuous latent t: q(t_n | data_n, discrete parents) = Normal(g_μ, diag g_σ²) (LogNormal for a positive
  support), reparameterised, from an MLP on the concatenated observations and covariates (categorical codes one-hot)
  and the one-hot values of t's discrete parents: q(t | x, z).

``data_n`` is every fully observed site and covariate of item n. Any part is replaceable: ``parts={"t": net}``
uses the user's ``nn.Module`` ``(..., in_features) -> (..., 2 q)`` (or ``(..., K)`` logits for a discrete site)
instead of the derived MLP; the input is the same concatenation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import biject_to, constraints, transforms

from ..declaration import FAMILIES, Declaration, Site, site_shapes
from ..distributions import DiagonalNormal
from ..errors import ConfigError
from ..nn import FlatMLP, as_features, concat_features
from ..plates import data_plate

MIN_SCALE = 1e-5
IMPOSSIBLE = -1e30
SUPPORTS = {"real": constraints.real, "positive": constraints.positive, "simplex": constraints.simplex,
            "unit": constraints.unit_interval}


class DeclaredGuide(nn.Module):
    """See the module docstring. ``hidden_dims``: hidden sizes of the derived encoders."""

    def __init__(self, declaration: Declaration, arrays: dict[str, tuple[int, ...]], *,
                 hidden_dims: Sequence[int] = (64,), parts: Mapping[str, nn.Module] | None = None):
        super().__init__()
        self.declaration = declaration
        self.shapes = site_shapes(declaration, arrays)
        self.order = declaration.order()
        sites = declaration.by_name
        parts = dict(parts or {})
        unknown = sorted(set(parts) - set(sites))
        if unknown:
            raise ConfigError(f"guide parts for unknown site(s) {unknown}; sites: {', '.join(sites)}")
        self.inputs = tuple(s.name for s in declaration.sites
                            if (s.role == "observed" and s.mask is None) or s.role == "covariate")
        in_features = sum(self._width(sites[name]) for name in self.inputs)
        self.encoders = nn.ModuleDict()
        self.loc = nn.ParameterDict()
        self.raw_scale = nn.ParameterDict()
        for site in self.order:
            if site.role == "param" and site.guide == "meanfield":
                shape = biject_to(SUPPORTS[FAMILIES[site.family].support]).inverse_shape(torch.Size(site.shape))
                self.loc[site.name] = nn.Parameter(0.1 * torch.randn(shape))
                self.raw_scale[site.name] = nn.Parameter(torch.full(shape, -3.0))
            elif self.guided(site):
                extra = sum(sites[p].num_values for p in site.parents if self._discrete_parent(sites[p]))
                out = site.num_values if site.is_discrete else 2 * site.dim
                self.encoders[site.name] = parts.pop(site.name, None) or FlatMLP([in_features + extra,
                                                                                  *hidden_dims, out])
        if parts:
            raise ConfigError(f"guide parts {sorted(parts)} replace nothing: those sites need no guide (globals by "
                              "MAP, discrete sites enumerated in the model, observed sites)")

    def guided(self, site: Site) -> bool:
        """Sites the guide samples per item: continuous latents, and discrete sites enumerated in the guide."""
        if site.role == "latent" and not site.is_discrete:
            return True
        return site.enumerated and self.declaration.guide_enumerated(site.name)

    def _discrete_parent(self, site: Site) -> bool:
        return site.enumerated and self.declaration.guide_enumerated(site.name)

    def _width(self, site: Site) -> int:
        shape = self.shapes.get(site.name, ())
        size = math.prod(shape) if shape else 1
        return size * site.categories if site.family == "categorical" else size

    def features(self, arrays: dict, dtype) -> torch.Tensor:
        """``(batch, in_features)``: the fully observed sites and covariates, categorical codes one-hot."""
        parts = []
        for name in self.inputs:
            site, value = self.declaration.by_name[name], arrays[name]
            if site.family == "categorical":
                parts.append(nn.functional.one_hot(value.long(), site.categories).to(dtype).reshape(value.shape[0], -1))
            else:
                parts.append(value.to(dtype).reshape(value.shape[0], -1))
        return concat_features(parts)

    def forward(self, *data, num_data: int | None = None):
        names = self.declaration.data_names
        arrays = dict(zip(names, data, strict=True))
        sites = self.declaration.by_name
        dtype = next(self.parameters()).dtype if any(True for _ in self.parameters()) else torch.get_default_dtype()
        values: dict = {}
        for site in self.order:
            if site.role == "param" and site.guide == "meanfield":
                support = SUPPORTS[FAMILIES[site.family].support]
                base = dist.Normal(self.loc[site.name], nn.functional.softplus(self.raw_scale[site.name]) + MIN_SCALE)
                base = base.to_event(base.batch_shape.__len__())
                q = dist.TransformedDistribution(base, [biject_to(support)])
                values[site.name] = pyro.sample(site.name, q)
        if not self.encoders:
            return values
        x = self.features(arrays, dtype)
        with data_plate(data[0], num_data):
            for site in self.order:
                if not self.guided(site):
                    continue
                parents = [as_features(values[p], sites[p].num_values, False, dtype) for p in site.parents
                           if self._discrete_parent(sites[p])]
                raw = self.encoders[site.name](concat_features([x, *parents]) if parents else x)
                if site.is_discrete:
                    values[site.name] = self._discrete(site, raw, arrays)
                    continue
                loc, raw_scale = raw.chunk(2, -1)
                q = DiagonalNormal(loc, nn.functional.softplus(raw_scale) + MIN_SCALE)
                if FAMILIES[site.family].support == "positive":
                    q = dist.TransformedDistribution(q, [transforms.ExpTransform()])
                values[site.name] = pyro.sample(site.name, q)
        return values

    def _discrete(self, site: Site, logits: torch.Tensor, arrays: dict) -> torch.Tensor:
        infer = {"enumerate": "parallel"}
        if site.family == "bernoulli":  # two logits -> one
            logits = torch.log_softmax(logits, -1)
            logits = logits[..., 1] - logits[..., 0]
        if site.mask is None:
            q = dist.Categorical(logits=logits) if site.family == "categorical" else dist.Bernoulli(logits=logits)
            return pyro.sample(site.name, q, infer=infer)
        mask, given = arrays[site.mask].bool(), arrays[site.name].long().clamp_min(0)
        if site.family == "categorical":
            point = torch.full_like(logits, IMPOSSIBLE).scatter(-1, given.unsqueeze(-1), 0.0)
            q = dist.Categorical(logits=torch.where(mask.unsqueeze(-1), point, logits))
        else:
            q = dist.Bernoulli(logits=torch.where(mask, (2 * given.to(logits.dtype) - 1) * -IMPOSSIBLE, logits))
        return pyro.sample(f"{site.name}_missing", q, infer=infer)
