"""The guide derived from a :class:`emvi.declaration.Declaration`, with nothing written by the user.

* Globals: nothing for a MAP global (a module parameter of the model); for ``guide="meanfield"`` a Normal with learned
  location and scale in the unconstrained space, pushed through the support's bijection.
* A discrete latent that is a parent of a continuous latent (or listed in its ``guide_given``): q(z_n | data_n) =
  Categorical(g_z(data_n)), enumerated in parallel (exact expectation over z), and a point mass on the given value
  where a mask says it is observed. Other discrete latents are enumerated in the model and have no guide site.
* A continuous latent t: q(t_n | data_n, z_n) = Normal(g_μ, diag g_σ²) (LogNormal for a positive support; a Pyro
  family's support S: that Normal pushed through ``transform_to(S)``, e.g. a logistic-normal on (0, 1)),
  reparameterised, from an MLP on the concatenated observations and covariates (categorical codes one-hot) and the
  one-hot values of the guide-enumerated z of :meth:`~emvi.declaration.Declaration.guide_inputs` (t's discrete
  parents and ``guide_given``): q(t | x, z). The value of t therefore has shape ``(K, batch, q)`` under
  enumeration: one draw per value of z.
* A partly observed site y with ``classify=c`` (M2's classifier): a factor ``-c · mask_n · log q(y_n | data_n)`` in
  the guide (Kingma et al. 2014, eq. 9: the ELBO's -log q term turns it into +c log q(y | x) on labelled items). It
  is tagged ``infer={"training_term": True}``; :func:`emvi.inference.likelihood.without_training_terms` hides it,
  so the ELBO and log p(x) that evaluation reports do not include it.

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
from torch.distributions import biject_to, transform_to, transforms

from ..declaration import FAMILIES, Declaration, Site, site_shapes
from ..distributions import DiagonalNormal
from ..errors import ConfigError
from ..nn import FlatMLP, as_features, concat_features
from ..plates import TRAINING_TERM, data_plate

MIN_SCALE = 1e-5
IMPOSSIBLE = -1e30


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
                shape = biject_to(FAMILIES[site.family].bijection_support()).inverse_shape(torch.Size(site.shape))
                self.loc[site.name] = nn.Parameter(0.1 * torch.randn(shape))
                self.raw_scale[site.name] = nn.Parameter(torch.full(shape, -3.0))
            elif self.guided(site):
                extra = sum(sites[p].num_values for p in self._given(site))
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

    def _given(self, site: Site) -> tuple[str, ...]:
        """The guide-enumerated discrete sites q(site | data, ...) conditions on (none for a discrete site)."""
        return () if site.is_discrete else self.declaration.guide_inputs(site.name)

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
        first = next(self.parameters(), None)
        dtype = first.dtype if first is not None else torch.get_default_dtype()
        values: dict = {}
        for site in self.order:
            if site.role == "param" and site.guide == "meanfield":
                support = FAMILIES[site.family].bijection_support()
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
                parents = [as_features(values[p], sites[p].num_values, False, dtype) for p in self._given(site)]
                raw = self.encoders[site.name](concat_features([x, *parents]) if parents else x)
                if site.is_discrete:
                    values[site.name] = self._discrete(site, raw, arrays)
                    if site.classify:
                        self._classification_term(site, raw, arrays)
                    continue
                loc, raw_scale = raw.chunk(2, -1)
                q = DiagonalNormal(loc, nn.functional.softplus(raw_scale) + MIN_SCALE)
                family = FAMILIES[site.family]
                if family.alias and family.support == "positive":
                    q = dist.TransformedDistribution(q, [transforms.ExpTransform()])
                elif not family.alias and family.support != "real":  # a Pyro family: through its support's bijection
                    q = dist.TransformedDistribution(q, [transform_to(family.bijection_support())])
                values[site.name] = pyro.sample(site.name, q)
        return values

    def _classification_term(self, site: Site, raw: torch.Tensor, arrays: dict) -> None:
        """``-c · mask_n · log q(y_n | data_n)`` as a guide factor (so the objective gains ``+c log q``), tagged as a
        training term that evaluation leaves out."""
        mask, given = arrays[site.mask].bool(), arrays[site.name].long().clamp_min(0)
        log_q = torch.log_softmax(raw, -1).gather(-1, given.unsqueeze(-1)).squeeze(-1)  # bernoulli: two logits too
        term = -site.classify * torch.where(mask, log_q, torch.zeros_like(log_q))
        unit = dist.Unit(term, has_rsample=True)
        pyro.sample(f"{site.name}_classification", unit, obs=unit.sample(),
                    infer={"is_auxiliary": True, TRAINING_TERM: True})

    def classifier_probs(self, name: str, *data) -> torch.Tensor:
        """``(batch, K)`` q(name_n = k | data_n) of a guide-enumerated discrete site, ignoring any given labels."""
        arrays = dict(zip(self.declaration.data_names, data, strict=True))
        logits = self.encoders[name](self.features(arrays, next(self.parameters()).dtype))
        return torch.softmax(logits, -1)

    def continuous_loc(self, name: str, *data, given: dict | None = None) -> torch.Tensor:
        """``(batch, q)`` the location of q(name_n | data_n, given) (``given``: values ``(batch,)`` of the
        guide-enumerated discrete sites it conditions on)."""
        arrays = dict(zip(self.declaration.data_names, data, strict=True))
        dtype = next(self.parameters()).dtype
        sites = self.declaration.by_name
        parts = [self.features(arrays, dtype)]
        parts += [as_features(given[p], sites[p].num_values, False, dtype) for p in self._given(sites[name])]
        return self.encoders[name](concat_features(parts)).chunk(2, -1)[0]

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
