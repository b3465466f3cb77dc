"""Sites: one named random variable, covariate or global of a declaration, and the builders ``param``,
``latent``, ``observed``, ``covariate`` (see :mod:`emvi.declaration` for the roles)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError, short_repr
from .expressions import LATENT_DEFAULTS, ROLES, Expr, _names, expr, learned
from .families import canonical
from .families import family as find_family


@dataclass(frozen=True)
class Site:
    """One named site; see :mod:`emvi.declaration` for roles and :mod:`emvi.declaration.expressions` for
    expressions."""

    name: str
    role: str
    family: str | None = None
    params: tuple[tuple[str, Expr], ...] = ()
    dim: int | None = None
    """Event size of a local site (None: one scalar per item; observed sites take it from the data)."""
    categories: int | None = None
    """Number of values of a categorical site (per feature for a vector of codes)."""
    shape: tuple[int, ...] = ()
    """Shape of a global (param) site."""
    mask: str | None = None
    """Data array (booleans per item) saying where a discrete observed site is observed; latent elsewhere."""
    guide: str = "map"
    """Global sites: map (point estimate) or meanfield (Normal guide in the unconstrained space)."""
    positive: bool = False
    """A family-less global kept > 0."""
    guide_given: tuple[str, ...] = ()
    """Continuous latents: discrete local sites the guide conditions on besides the site's discrete parents, q(t | data,
    y) for y in ``guide_given``; each such site is enumerated in the guide (q(y | data)). M2's style t is independent
    of the label y a priori, yet its posterior is not."""
    summed_in: str = "auto"
    """Discrete latents: where the site is summed out. ``auto``: in the guide (q(z | x)) when z is a parent of a
    continuous latent, else in the model; ``model``: always in the model, so a child t gets the guide q(t | x) and
    the model the exact marginal log Σ_z p(z) p(t | z) (the mixture prior's density; p(z | x, t) is exact)."""
    classify: float = 0.0
    """Partly observed discrete sites enumerated in the guide: weight c of the classification term c · log q(y_n |
    data_n) added to the training objective for each labelled item (Kingma et al. 2014's α = c · N_labelled); never
    part of the ELBO that evaluation reports."""

    @property
    def param_dict(self) -> dict[str, Expr]:
        return dict(self.params)

    @property
    def parents(self) -> tuple[str, ...]:
        seen: list[str] = []
        for _, e in self.params:
            seen += [p for p in e.parents if p not in seen]
        return tuple(seen)

    @property
    def is_local(self) -> bool:
        return self.role in ("latent", "observed", "covariate")

    @property
    def is_discrete(self) -> bool:
        """A scalar discrete site known without the data: a discrete latent (categorical, bernoulli, or a Pyro family
        with an enumerable support), or a partly observed label."""
        if self.family in ("categorical", "bernoulli"):
            return self.dim is None and (self.role == "latent" or self.mask is not None)
        return self.role == "latent" and self.dim is None and self.family is not None and \
            find_family(self.family).enumerable

    @property
    def may_index(self) -> bool:
        """Can pick rows of a table: a scalar discrete site (an observed one is checked against its data): categorical,
        bernoulli, or a Pyro family with support 0..K-1 (Binomial with a constant total_count)."""
        return self.dim is None and self.role in ("latent", "observed") and (
            self.family in ("categorical", "bernoulli") or self.num_values is not None)

    @property
    def num_values(self) -> int | None:
        """K of a scalar discrete site."""
        if self.family == "bernoulli" and self.dim is None:
            return 2
        if self.family == "categorical" or self.family is None or self.dim is not None or not self.is_local:
            return self.categories if self.family == "categorical" and self.dim is None else None
        constants = tuple((p, e.value) for p, e in self.params if e.kind == "constant")
        return find_family(self.family).support_size(constants)

    def values_given(self, shapes: dict) -> int | None:
        """K when the site is scalar discrete given the per-item ``shapes`` (one-hot as a network input), else
        None."""
        return self.num_values if shapes.get(self.name, ()) == () else None

    @property
    def enumerated(self) -> bool:
        """Summed out exactly: a discrete latent, or a discrete observed site with missing values."""
        return self.is_discrete and (self.role == "latent" or (self.role == "observed" and self.mask is not None))

    def to_data(self) -> dict:
        out: dict = {"role": self.role}
        if self.family:
            out["family"] = self.family
        for key in ("dim", "categories", "mask"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.shape:
            out["shape"] = list(self.shape)
        if self.guide != "map":
            out["guide"] = self.guide
        if self.positive:
            out["positive"] = True
        if self.guide_given:
            out["guide_given"] = list(self.guide_given)
        if self.summed_in != "auto":
            out["summed_in"] = self.summed_in
        if self.classify:
            out["classify"] = self.classify
        out.update({name: e.to_data() for name, e in self.params})
        return out


SITE_KEYS = ("role", "family", "dim", "categories", "shape", "mask", "guide", "positive", "guide_given", "summed_in",
             "classify")


def param(name: str, family: str | None = None, shape=(), *, guide: str = "map", positive: bool = False,
          **params) -> Site:
    """A global site: a learned tensor of ``shape``, with a prior ``family(**params)`` when a family is given."""
    return _site(name, "param", family, params, shape=tuple(shape), guide=guide, positive=positive)


def latent(name: str, family: str, dim: int | None = None, *, categories: int | None = None,
           guide_given: tuple[str, ...] | str = (), summed_in: str = "auto", **params) -> Site:
    """A per-item latent site; normal/lognormal/gamma default to a standard prior, categorical/bernoulli to learned
    logits. ``guide_given=("y",)`` (continuous latents): the guide is q(t | data, y), y enumerated in the guide;
    ``summed_in="model"`` (discrete latents): summed out in the model (see :attr:`Site.summed_in`)."""
    given = (guide_given,) if isinstance(guide_given, str) else tuple(guide_given)
    return _site(name, "latent", family, params, dim=dim, categories=categories, guide_given=given,
                 summed_in=summed_in)


def observed(name: str, family: str, dim: int | None = None, *, categories: int | None = None,
             mask: str | None = None, classify: float = 0.0, **params) -> Site:
    """A per-item site read from the data array ``name`` (observed where ``mask`` is true, if given); ``classify=c``
    adds c · log q(name_n | data_n) per labelled item to the training objective (see :attr:`Site.classify`)."""
    return _site(name, "observed", family, params, dim=dim, categories=categories, mask=mask, classify=classify)


def covariate(name: str, dim: int | None = None) -> Site:
    """Per-item input data (the array ``name``), no distribution."""
    return Site(name, "covariate", dim=dim)


def _resolve(family, where: str):
    """The family's stored name and :class:`~emvi.declaration.families.Family` (None, None without one)."""
    if family is None:
        return None, None
    try:
        return canonical(family), find_family(family)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _site(name, role, family, params, **kwargs) -> Site:
    where = f"site {name!r}"
    family, fam = _resolve(family, where)
    unknown = sorted(set(params) - set(fam.accepted if fam else ()))
    if unknown:
        allowed = ", ".join(fam.accepted) if fam else "none (a family-less param)"
        raise ConfigError(f"{where}: unknown parameter(s) {unknown} of {family}; allowed: {allowed}")
    if role == "latent" and fam is not None:
        params = {**LATENT_DEFAULTS.get(family, {}), **params}
    if fam is not None and family in ("categorical", "bernoulli") and not {"logits", "probs"} & set(params):
        params = {**params, "logits": learned()}
    ordered = tuple((p, expr(params[p], f"{where}, parameter {p!r}")) for p in (fam.accepted if fam else ())
                    if p in params)
    return Site(name, role, family, ordered, **kwargs)


def site_from_data(name: str, data: dict, where: str) -> Site:
    """A :class:`Site` from a spec table (``where`` names it in errors)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a table of key = value pairs, got {data!r}")
    role = data.get("role")
    if role not in ROLES:
        raise ConfigError(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
    family = data.get("family")
    family, fam = _resolve(family, f"{where}.family") if family else (None, None)
    unknown = sorted(set(data) - set(SITE_KEYS) - set(fam.accepted if fam else ()))
    if unknown:
        allowed = list(SITE_KEYS) + list(fam.accepted if fam else ())
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(allowed)}")
    params = {k: data[k] for k in (fam.accepted if fam else ()) if k in data}
    for key in ("dim", "categories"):
        if data.get(key) is not None and (not isinstance(data[key], int) or isinstance(data[key], bool)):
            raise ConfigError(f"{where}.{key} must be an integer, got {data[key]!r}")
    try:
        if role == "param":
            shape = data.get("shape", ())
            if not isinstance(shape, (list, tuple)):
                raise ConfigError(f"{where}.shape must be a list of sizes such as [3], got {short_repr(shape)}")
            return param(name, family, tuple(shape), guide=data.get("guide", "map"),
                         positive=bool(data.get("positive", False)), **params)
        if role == "covariate":
            return covariate(name, data.get("dim"))
        maker = latent if role == "latent" else observed
        extra = {"mask": data.get("mask"), "classify": data.get("classify", 0.0)} if role == "observed" else {}
        for key, owner in (("mask", "observed"), ("classify", "observed"), ("guide_given", "latent"),
                           ("summed_in", "latent")):
            if data.get(key) is not None and role != owner:
                raise ConfigError(f"{where}.{key}: only {owner} sites take {key}")
        if role == "latent":
            extra = {"guide_given": _names(data.get("guide_given", ()), f"{where}.guide_given"),
                     "summed_in": data.get("summed_in", "auto")}
        return maker(name, family, data.get("dim"), categories=data.get("categories"), **extra, **params)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None

