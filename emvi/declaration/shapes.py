"""Per-item shapes of a declaration's sites and parameters given the data's arrays."""

from __future__ import annotations

import math

from ..errors import DataError
from .core import Declaration
from .sites import Site


def site_shapes(decl: Declaration, arrays: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Per-item shape of every local site: from ``dim`` for latents, from the data array for observed sites and
    covariates. An observed site or mask missing from ``arrays`` is an error naming it."""
    shapes: dict[str, tuple[int, ...]] = {}
    for site in decl.sites:
        if site.role == "latent":
            shapes[site.name] = (site.dim,) if site.dim else ()
        elif site.role in ("observed", "covariate"):
            if site.name not in arrays:
                raise DataError(f"model {decl.name!r}: {site.role} site {site.name!r} is missing from the data "
                                f"(arrays: {', '.join(arrays) or 'none'}); save it in the .npz under {site.name!r}")
            shape = tuple(arrays[site.name])
            if site.dim is not None and shape != (site.dim,):
                raise DataError(f"model {decl.name!r}, site {site.name!r}: declared dim {site.dim} but the data has "
                                f"per-item shape {shape}")
            if len(shape) > 1:
                raise DataError(f"model {decl.name!r}, site {site.name!r}: data must be (N,) or (N, D), got per-item "
                                f"shape {shape}")
            if site.mask is not None and shape != ():
                raise DataError(f"model {decl.name!r}, site {site.name!r}: a partly observed site takes one value per "
                                f"item, data (N,); got per-item shape {shape}")
            shapes[site.name] = shape
        if site.family == "mvnormal" and len(shapes.get(site.name, ())) != 1:
            raise DataError(f"model {decl.name!r}, site {site.name!r}: an mvnormal site is a vector; its data must be "
                            f"(N, D), got per-item shape {shapes.get(site.name, ())}")
        if site.mask is not None and site.mask not in arrays:
            raise DataError(f"model {decl.name!r}: mask {site.mask!r} of site {site.name!r} is missing from the data "
                            f"(arrays: {', '.join(arrays) or 'none'})")
    return shapes


def param_shape(site: Site, param: str, shapes: dict) -> tuple[int, ...]:
    """Per-item shape of a family parameter of a local site (categorical logits add the category dimension, an
    mvnormal's scale_tril a second vector dimension)."""
    event = shapes.get(site.name, ())
    if site.family == "categorical":
        return event + (site.categories,)
    if site.family == "mvnormal" and param == "scale_tril":
        return event + event[-1:]
    return event


def feature_width(site: Site, shapes: dict) -> int:
    """Width of a site's value as a network input: one-hot K for a scalar discrete site, else its flat size."""
    if site.values_given(shapes):
        return site.num_values
    return math.prod(shapes.get(site.name, ())) or 1
