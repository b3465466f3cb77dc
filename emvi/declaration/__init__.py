"""Declarations: a latent-variable model as a set of named sites, each a distribution family whose parameters are
functions of its parents. Pure data and validation (no torch modules); :mod:`emvi.models.declared` turns a
declaration into the Pyro model, :mod:`emvi.guides.declared` into the derived guide, :mod:`emvi.catalog.declared`
into a registry entry with every hook, and :mod:`emvi.declaration.capabilities` says which fitting methods apply.

A site has a role:

* ``param`` — a global (outside the data plate): a point estimate (MAP) by default, with a prior when it has a
  family (``param("mu", "normal", shape=(3, 2), loc=0.0, scale="s")``); ``guide="meanfield"`` asks for a mean-field
  Normal guide in the unconstrained space instead. Without a family it is a plain learned tensor
  (``positive=True`` keeps it > 0).
* ``latent`` — per item, in the data plate: discrete (categorical, bernoulli, any Pyro family with a finite
  enumerable support: scalar, enumerated exactly in parallel) or continuous (normal, mvnormal, lognormal, gamma, any
  Pyro family with a continuous support: amortised reparameterised guide q(t | observations, values of its
  discrete parents), a Normal pushed through the support's bijection).
* ``observed`` — per item, read from the data array of the same name; ``mask="y_mask"`` makes a discrete site
  observed where the mask is true and latent (enumerated) elsewhere.
* ``covariate`` — per item input data, no distribution.

A family parameter is an *expression* (:mod:`emvi.declaration.expressions`): a constant, a site's value, a learned
table, tensor, linear map, MLP, conv decoder or the user's module. The same declaration is plain data in a spec file
(``[model.sites.x] role = "observed" ...``): :meth:`Declaration.to_dict` / :meth:`Declaration.from_dict` convert
between the two. Modules: ``expressions`` (families, expressions), ``sites`` (sites and their builders), ``core``
(:class:`Declaration`, validation), ``families`` (any ``pyro.distributions`` class by name; the aliases), ``shapes`` (per-item shapes given the data), ``capabilities``.
"""

from .core import Declaration, DeclarationError, declare, validate
from .expressions import (
    CONTINUOUS_LATENTS,
    GLOBAL_GUIDES,
    LATENT_DEFAULTS,
    LEARNED_KINDS,
    ROLES,
    STORY_NAMES,
    Expr,
    conv,
    expr,
    learned,
    linear,
    mlp,
    module,
    table,
)
from .families import ALIASES, FAMILIES, Family, family
from .shapes import feature_width, param_shape, site_shapes
from .sites import SITE_KEYS, Site, covariate, latent, observed, param, site_from_data

__all__ = ["ALIASES", "CONTINUOUS_LATENTS", "FAMILIES", "GLOBAL_GUIDES", "LATENT_DEFAULTS", "LEARNED_KINDS", "ROLES", "SITE_KEYS",
           "STORY_NAMES", "Declaration", "DeclarationError", "Expr", "Family", "Site", "conv", "covariate", "declare",
           "expr", "family", "feature_width", "latent", "learned", "linear", "mlp", "module", "observed", "param", "param_shape",
           "site_from_data", "site_shapes", "table", "validate"]
