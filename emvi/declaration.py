"""Declarations: a latent-variable model as a set of named sites, each a distribution family whose parameters are
functions of its parents. Pure data and validation (no torch modules); :mod:`emvi.models.declared` turns a
declaration into the Pyro model, :mod:`emvi.guides.declared` into the derived guide, :mod:`emvi.catalog.declared`
into a registry entry with every hook.

A site has a role:

* ``param`` — a global (outside the data plate): a point estimate (MAP) by default, with a prior when it has a
  family (``param("mu", "normal", shape=(3, 2), loc=0.0, scale="s")``); ``guide="meanfield"`` asks for a mean-field
  Normal guide in the unconstrained space instead. Without a family it is a plain learned tensor
  (``positive=True`` keeps it > 0).
* ``latent`` — per item, in the data plate: discrete (categorical, bernoulli: scalar, enumerated exactly in
  parallel) or continuous (normal, mvnormal, lognormal, gamma: amortised reparameterised guide q(t | observations,
  values of its discrete parents)).
* ``observed`` — per item, read from the data array of the same name; ``mask="y_mask"`` makes a discrete site
  observed where the mask is true and latent (enumerated) elsewhere.
* ``covariate`` — per item input data, no distribution.

A family parameter is an *expression*:

========================  =============================================================================
``2.0``                   a constant
``"s"``, ``"mu[z]"``      the value of site ``s``; global ``mu``'s row picked by discrete site ``z``
``table("z")``            a learned parameter table, one row per value of the discrete site ``z``
``learned()``             a learned tensor shared by all items
``linear("t", "c")``      an affine map of the concatenated inputs (discrete inputs one-hot encoded)
``mlp("t", hidden=(64,))``  an MLP (``emvi.nn.FlatMLP``); ``conv("t")`` the conv decoder (images)
``module(net, "t")``      the user's ``nn.Module`` (or a factory ``f(in_features, out_features)``)
========================  =============================================================================

A learned expression (table, learned, linear, mlp, conv, module) feeding a positive parameter (a scale, a rate, a
concentration) is on the log scale: the parameter is ``exp`` of it. Probabilities are given as ``logits``. The
``mvnormal`` family, Normal(loc, L Lᵀ) over a vector site of size q, takes ``scale_tril`` L ``(q, q)``: a learned
expression gives its q² entries, the strict lower triangle as they are and the diagonal on the log scale.
The same declaration is plain data in a spec file (``[model.sites.x] role = "observed" ...``):
:meth:`Declaration.to_dict` / :meth:`Declaration.from_dict` convert between the two.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, DataError

ROLES = ("param", "latent", "observed", "covariate")
GLOBAL_GUIDES = ("map", "meanfield")


@dataclass(frozen=True)
class Family:
    """A distribution family: its parameters and their constraints (``"real"``, ``"positive"`` or
    ``"lower_cholesky"``), its support."""

    params: tuple[tuple[str, str], ...]
    support: str
    """real, positive, binary, finite (categorical), count (unbounded integers), simplex, unit, counts (multinomial)."""
    roles: tuple[str, ...] = ("param", "latent", "observed")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.params)

    @property
    def accepted(self) -> tuple[str, ...]:
        """Parameter names a declaration may give: categorical and bernoulli take ``probs`` instead of ``logits``
        (a global on the simplex / in (0, 1), e.g. Dirichlet-distributed mixture weights)."""
        return self.names + (("probs",) if "logits" in self.names else ())

    def constraint(self, param: str) -> str:
        return "probability" if param == "probs" else dict(self.params)[param]

    @property
    def discrete(self) -> bool:
        return self.support in ("binary", "finite", "count", "counts")

    @property
    def finite(self) -> bool:
        return self.support in ("binary", "finite")


FAMILIES: dict[str, Family] = {
    "normal": Family((("loc", "real"), ("scale", "positive")), "real"),
    "mvnormal": Family((("loc", "real"), ("scale_tril", "lower_cholesky")), "real", ("latent", "observed")),
    "lognormal": Family((("loc", "real"), ("scale", "positive")), "positive"),
    "gamma": Family((("concentration", "positive"), ("rate", "positive")), "positive"),
    "bernoulli": Family((("logits", "real"),), "binary", ("latent", "observed")),
    "categorical": Family((("logits", "real"),), "finite", ("latent", "observed")),
    "poisson": Family((("rate", "positive"),), "count", ("latent", "observed")),
    "multinomial": Family((("logits", "real"),), "counts", ("observed",)),
    "dirichlet": Family((("concentration", "positive"),), "simplex", ("param", "latent")),
    "beta": Family((("concentration1", "positive"), ("concentration0", "positive")), "unit", ("param", "latent")),
}
STORY_NAMES = {"mvnormal": "MultivariateNormal", "lognormal": "LogNormal"}
CONTINUOUS_LATENTS = ("normal", "mvnormal", "lognormal", "gamma")
"""Continuous local latents the derived guide can reparameterise (Normal, or LogNormal for positive support)."""
LATENT_DEFAULTS = {"normal": {"loc": 0.0, "scale": 1.0}, "mvnormal": {"loc": 0.0, "scale_tril": 1.0},
                   "lognormal": {"loc": 0.0, "scale": 1.0},
                   "gamma": {"concentration": 1.0, "rate": 1.0}}
LEARNED_KINDS = ("table", "learned", "linear", "mlp", "conv", "module")
_REF = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*([A-Za-z_][A-Za-z0-9_]*)\s*\])?\s*$")


@dataclass(frozen=True)
class Expr:
    """A family parameter as a function of the site's parents; see the module docstring."""

    kind: str
    """constant, ref, table, learned, linear, mlp, conv or module."""
    inputs: tuple[str, ...] = ()
    index: str | None = None
    """The discrete site picking a row (``ref`` with ``[z]``, ``table``)."""
    value: float | None = None
    hidden: tuple[int, ...] = ()
    module: Any = field(default=None, compare=False)
    """An ``nn.Module``, a factory ``f(in_features, out_features) -> nn.Module``, or ``"pkg.mod:attr"``."""

    @property
    def learned(self) -> bool:
        return self.kind in LEARNED_KINDS

    @property
    def parents(self) -> tuple[str, ...]:
        return self.inputs + ((self.index,) if self.index else ())

    def __str__(self) -> str:
        if self.kind == "constant":
            return f"{self.value:g}"
        if self.kind == "ref":
            return self.inputs[0] + (f"[{self.index}]" if self.index else "")
        if self.kind == "table":
            return f"table[{self.index}]"
        if self.kind == "learned":
            return "learned"
        extra = f"; hidden {list(self.hidden)}" if self.kind == "mlp" else (f"; per {self.index}" if self.index else "")
        name = self.kind if self.kind != "module" else _module_name(self.module)
        return f"{name}({', '.join(self.inputs)}{extra})"

    def to_data(self):
        """Plain data for a spec file."""
        if self.kind == "constant":
            return self.value
        if self.kind == "ref":
            return str(self)
        if self.kind == "table":
            return {"table": self.index}
        if self.kind == "learned":
            return {"learned": True}
        out: dict = {self.kind: list(self.inputs)}
        if self.kind == "mlp":
            out["hidden"] = list(self.hidden)
        if self.kind == "linear" and self.index:
            out["by"] = self.index
        if self.kind == "module":
            out = {"module": self.module if isinstance(self.module, str) else _module_name(self.module),
                   "inputs": list(self.inputs)}
        return out


def _module_name(module) -> str:
    if isinstance(module, str):
        return module
    cls = module if isinstance(module, type) else type(module)
    return getattr(module, "__qualname__", None) or cls.__name__


def table(by: str) -> Expr:
    """A learned table with one row per value of the discrete site ``by``."""
    return Expr("table", index=by)


def learned() -> Expr:
    """A learned tensor shared by all items (e.g. a per-feature scale)."""
    return Expr("learned")


def linear(*inputs: str, by: str | None = None) -> Expr:
    """An affine map of the inputs; ``by="z"``: one map per value of the discrete site ``z`` (a regression per
    component)."""
    return Expr("linear", inputs=tuple(inputs), index=by)


def mlp(*inputs: str, hidden=(64,)) -> Expr:
    return Expr("mlp", inputs=tuple(inputs), hidden=tuple(int(h) for h in hidden))


def conv(input_site: str) -> Expr:
    return Expr("conv", inputs=(input_site,))


def module(net, *inputs: str) -> Expr:
    """The user's ``nn.Module`` (or factory ``f(in_features, out_features)``, or ``"pkg.mod:attr"``) on the inputs."""
    return Expr("module", inputs=tuple(inputs), module=net)


def expr(value, where: str = "") -> Expr:
    """An :class:`Expr` from a number, ``"name"``/``"name[z]"``, a mapping (spec files) or an Expr."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, a site name or a mapping, got {value!r}")
    if isinstance(value, (int, float)):
        return Expr("constant", value=float(value))
    if isinstance(value, str):
        match = _REF.match(value)
        if not match:
            raise ConfigError(f"{where}: {value!r} is not a site name or 'name[index]'")
        return Expr("ref", inputs=(match.group(1),), index=match.group(2))
    if isinstance(value, dict):
        kinds = [k for k in value if k in LEARNED_KINDS]
        allowed = {"hidden", "inputs", "by"} | set(LEARNED_KINDS)
        unknown = sorted(set(value) - allowed)
        if len(kinds) != 1 or unknown:
            raise ConfigError(f"{where}: a mapping needs exactly one of {', '.join(LEARNED_KINDS)} (plus hidden, "
                              f"inputs), got keys {sorted(value)}")
        kind = kinds[0]
        raw = value[kind]
        if kind == "table":
            return table(str(raw))
        if kind == "learned":
            return learned()
        if kind == "module":
            return module(str(raw), *_names(value.get("inputs", ()), where))
        inputs = _names(raw, where)
        if kind == "mlp":
            return mlp(*inputs, hidden=value.get("hidden", (64,)))
        if kind == "linear":
            return linear(*inputs, by=value.get("by"))
        return Expr(kind, inputs=inputs)
    raise ConfigError(f"{where}: expected a number, a site name or a mapping, got {type(value).__name__}")


def _names(raw, where) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else list(raw)
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{where}: inputs must be site names, got {raw!r}")
    return tuple(items)


@dataclass(frozen=True)
class Site:
    """One named site; see the module docstring for roles and expressions."""

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
        """A scalar discrete site known without the data: a discrete latent, or a partly observed label."""
        return self.family in ("categorical", "bernoulli") and self.dim is None and (
            self.role == "latent" or self.mask is not None)

    @property
    def may_index(self) -> bool:
        """Can pick rows of a table: a scalar discrete site (an observed one is checked against its data)."""
        return self.family in ("categorical", "bernoulli") and self.dim is None and self.role in ("latent", "observed")

    @property
    def num_values(self) -> int | None:
        """K of a scalar discrete site."""
        if self.family == "bernoulli" and self.dim is None:
            return 2
        return self.categories if self.family == "categorical" and self.dim is None else None

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


def _site(name, role, family, params, **kwargs) -> Site:
    where = f"site {name!r}"
    fam = FAMILIES.get(family) if family is not None else None
    if family is not None and fam is None:
        raise ConfigError(f"{where}: unknown family {family!r}; use one of {', '.join(FAMILIES)}")
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
    fam = FAMILIES.get(family) if family else None
    if family is not None and fam is None:
        raise ConfigError(f"{where}.family: unknown family {family!r}; use one of {', '.join(FAMILIES)}")
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
            return param(name, family, tuple(data.get("shape", ())), guide=data.get("guide", "map"),
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


@dataclass(frozen=True)
class Declaration:
    """A named model: its sites, validated on construction (each error names the site)."""

    name: str
    sites: tuple[Site, ...]
    description: str = ""

    def __post_init__(self):
        object.__setattr__(self, "sites", tuple(self.sites))
        validate(self)

    # -- structure ----------------------------------------------------------------------------------------------------

    @property
    def by_name(self) -> dict[str, Site]:
        return {s.name: s for s in self.sites}

    def order(self) -> list[Site]:
        """Sites in an order where every parent comes before its children (globals first)."""
        return _topological(self)

    def children(self, name: str) -> list[Site]:
        return [s for s in self.sites if name in s.parents]

    def guide_enumerated(self, name: str) -> bool:
        """A discrete site that is a parent of a continuous latent, or listed in one's ``guide_given``, is enumerated
        in the guide (q(z | x), so that q(t | x, z) can condition on it); other discrete sites are enumerated in the
        model."""
        site = self.by_name[name]
        if not site.enumerated or site.summed_in == "model":
            return False
        return any(c.role == "latent" and not c.is_discrete for c in self.children(name)) or any(
            name in c.guide_given for c in self.sites)

    def guide_inputs(self, name: str) -> tuple[str, ...]:
        """The discrete sites continuous latent ``name``'s guide conditions on: its guide-enumerated discrete parents,
        then its ``guide_given``."""
        site = self.by_name[name]
        return tuple(p for p in dict.fromkeys(site.parents + site.guide_given) if self.guide_enumerated(p))

    @property
    def data_names(self) -> tuple[str, ...]:
        """The data arrays the model reads, in the order it receives them: fully observed sites (the first is what
        dynamic binarisation and the data plate act on), partly observed ones, masks, covariates."""
        names = [s.name for s in self.sites if s.role == "observed" and s.mask is None]
        names += [s.name for s in self.sites if s.role == "observed" and s.mask is not None]
        names += [s.mask for s in self.sites if s.mask]
        names += [s.name for s in self.sites if s.role == "covariate"]
        return tuple(dict.fromkeys(names))

    @property
    def has_enumeration(self) -> bool:
        return any(s.enumerated for s in self.sites)

    @property
    def elbo(self) -> str:
        """TraceEnum_ELBO when a discrete local is (partly) latent, else Trace_ELBO."""
        return "enum" if self.has_enumeration else "trace"

    def em_ready(self) -> str | None:
        """None if generic EM applies (every latent discrete, closed-form M-steps), else why not."""
        latents = [s for s in self.sites if s.role == "latent"]
        if len(latents) != 1 or not latents[0].is_discrete or latents[0].family != "categorical":
            return "EM needs exactly one latent site, a categorical one"
        z = latents[0]
        if z.param_dict["logits"].kind != "learned":
            return f"EM needs site {z.name!r}'s logits learned (mixture weights)"
        for s in self.sites:
            if s.role == "covariate" or (s.role == "param" and s.guide != "map") or s.mask:
                return f"site {s.name!r}: EM takes no covariates, masks or mean-field globals"
            if s.role == "param" and s.family is not None:
                return f"site {s.name!r}: EM has no closed-form M-step for priors on globals"
            if s.role == "observed":
                if s.family not in ("normal", "poisson", "bernoulli", "categorical"):
                    return f"site {s.name!r}: no closed-form M-step for the {s.family} family"
                for p, e in s.params:
                    if e.kind not in ("table", "learned", "constant") or (e.kind == "table" and e.index != z.name):
                        return f"site {s.name!r}: EM needs parameter {p!r} as a table[{z.name}], learned or constant"
                    if e.kind == "learned" and not (s.family == "normal" and p == "scale"):
                        return f"site {s.name!r}: EM supports a shared learned value only for a normal scale"
        return None

    def mcmc_ready(self) -> str | None:
        """None if NUTS applies (``--method mcmc``): some global has a prior (a family), which NUTS samples, and every
        per-item latent is discrete (summed out exactly); else why not. What has no prior stays at the point fit the
        chains start from (see :meth:`emvi.models.declared.DeclaredModel.with_random_globals`)."""
        if not any(s.role == "param" and s.family is not None for s in self.sites):
            return ("NUTS samples the globals declared with a prior and there is none; declare one, e.g. "
                    "param('mu', 'normal', shape=(3, 2), loc=0.0, scale=1.0)")
        for s in self.sites:
            if s.role == "latent" and not s.is_discrete:
                return (f"site {s.name!r} is a continuous per-item latent; NUTS here samples the globals with the "
                        "discrete sites summed out")
            for p, e in s.params:
                if e.kind in ("mlp", "conv", "module"):
                    return (f"site {s.name!r}: parameter {p!r} is a network ({e.kind}); the point fit NUTS starts "
                            "from is a full-batch L-BFGS MAP, meant for tables and linear maps")
        return None

    # -- conversion and printing --------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"sites": {s.name: s.to_data() for s in self.sites}}

    @classmethod
    def from_dict(cls, name: str, data: dict, where: str = "model") -> Declaration:
        sites = data.get("sites") if isinstance(data, dict) else None
        if not isinstance(sites, dict) or not sites:
            raise ConfigError(f"{where}.sites must be a table of sites ([{where}.sites.NAME] role = ...), got {sites!r}")
        parsed = tuple(site_from_data(n, d, f"{where}.sites.{n}") for n, d in sites.items())
        try:
            return cls(name, parsed, data.get("description", ""))
        except DeclarationError as exc:
            raise DeclarationError(f"{where}.sites.{exc.site}: {exc}", exc.site) from None

    def story(self, shapes: dict[str, tuple[int, ...]] | None = None) -> str:
        """The generative story: one line per site with its distribution, parents and shape."""
        shapes = shapes or {}
        lines = [f"model {self.name!r}: {self.description}".rstrip(": ") if self.description else f"model {self.name!r}"]
        for site in self.order():
            args = ", ".join(f"{p}={e}" for p, e in site.params)
            dist = f"{STORY_NAMES.get(site.family, site.family.capitalize())}({args})" if site.family else ""
            if site.role == "param":
                shape = tuple(site.shape)
                rhs = f"~ {dist}" if site.family else ("learned (> 0)" if site.positive else "learned")
                note = "" if not site.family else (" MAP" if site.guide == "map" else " mean-field guide")
                lines.append(f"  {site.name} {rhs}  shape {shape}{note}")
                continue
            name = f"{site.name}_n"
            shape = shapes.get(site.name, ((site.dim,) if site.dim else ()))
            if site.role == "covariate":
                lines.append(f"  {name} given (covariate)  shape {shape or '(from data)'}")
                continue
            if site.is_discrete:
                how = "observed where " + site.mask + ", else enumerated" if site.mask else (
                    "observed" if site.role == "observed" else "enumerated")
                if site.enumerated and self.guide_enumerated(site.name):
                    how += " in the guide q(" + site.name + " | data)"
                detail = f"values 0..{site.num_values - 1}; {how}"
            elif site.role == "observed":
                detail = f"shape {shape if shape else '(from data)'}; observed"
            else:
                given = ", ".join(["data", *self.guide_inputs(site.name)])
                detail = f"shape {shape}; guide q({site.name} | {given})"
            lines.append(f"  {name} ~ {dist}  {detail}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.story()


def declare(name: str, *sites: Site, description: str = "") -> Declaration:
    """A validated :class:`Declaration` from sites (the Python form of a spec's ``[model.sites]``)."""
    return Declaration(name, tuple(sites), description)


# -- shapes -------------------------------------------------------------------------------------------------------------


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


# -- validation ---------------------------------------------------------------------------------------------------------


class DeclarationError(ConfigError):
    """A declaration's site is malformed; ``site`` names it."""

    def __init__(self, message: str, site: str | None = None):
        super().__init__(message)
        self.site = site


def _fail(decl: Declaration, site: str, message: str):
    raise DeclarationError(f"model {decl.name!r}, site {site!r}: {message}", site)


def validate(decl: Declaration) -> None:
    """Check a declaration once; every error is one line naming the model and the site."""
    if not isinstance(decl.name, str) or not decl.name:
        raise ConfigError(f"a declared model needs a name, got {decl.name!r}")
    names = [s.name for s in decl.sites]
    if not names:
        raise ConfigError(f"model {decl.name!r} declares no sites")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"model {decl.name!r}: site name(s) {duplicates} declared twice")
    sites = decl.by_name
    if not any(s.role == "observed" for s in decl.sites):
        raise ConfigError(f"model {decl.name!r} has no observed site; declare the data with observed(...)")
    for s in decl.sites:
        fam = FAMILIES.get(s.family) if s.family else None
        if s.role not in ROLES:
            _fail(decl, s.name, f"role must be one of {', '.join(ROLES)}, got {s.role!r}")
        if s.role in ("latent", "observed") and fam is None:
            _fail(decl, s.name, f"a {s.role} site needs a family; use one of {', '.join(FAMILIES)}")
        if fam is not None and s.role not in fam.roles:
            _fail(decl, s.name, f"the {s.family} family is for {' or '.join(fam.roles)} sites, not {s.role}")
        if fam is not None:
            missing = [p for p in fam.names if p not in s.param_dict and not (p == "logits" and "probs" in s.param_dict)]
            if "logits" in s.param_dict and "probs" in s.param_dict:
                _fail(decl, s.name, "give logits or probs, not both")
            if "probs" in s.param_dict and s.param_dict["probs"].kind != "ref":
                _fail(decl, s.name, "probs must name a global on the simplex (e.g. a dirichlet param); learned "
                                    "probabilities are given as logits")
            if missing:
                _fail(decl, s.name, f"{s.family} needs parameter(s) {missing}")
        if s.guide not in GLOBAL_GUIDES:
            _fail(decl, s.name, f"guide must be one of {', '.join(GLOBAL_GUIDES)}, got {s.guide!r}")
        if s.guide != "map" and (s.role != "param" or fam is None):
            _fail(decl, s.name, "a mean-field guide is for global sites with a family (a prior)")
        for key in ("dim", "categories"):
            value = getattr(s, key)
            if value is not None and value < 1:
                _fail(decl, s.name, f"{key} must be >= 1, got {value}")
        if s.family in ("categorical", "multinomial") and s.family == "categorical" and (s.categories or 0) < 2:
            _fail(decl, s.name, "a categorical site needs categories >= 2")
        if s.family == "multinomial" and s.dim is not None:
            _fail(decl, s.name, "a multinomial site's size comes from its logits (the vocabulary); drop dim")
        if s.role == "latent":
            if fam.discrete and not fam.finite:
                _fail(decl, s.name, f"an enumerated site needs finite support, and {s.family} has unbounded support; "
                                    "observe it, or use a categorical latent")
            if fam.finite and s.dim is not None:
                _fail(decl, s.name, "a discrete latent is enumerated per item and must be scalar; drop dim")
            if not fam.discrete:
                if s.family not in CONTINUOUS_LATENTS:
                    _fail(decl, s.name, f"a continuous latent needs a reparameterisable family for the derived guide "
                                        f"({', '.join(CONTINUOUS_LATENTS)}), got {s.family}; make it a global "
                                        "(param) or use one of those")
                if s.dim is None:
                    _fail(decl, s.name, "a continuous latent needs its size, dim = q")
        if s.mask is not None and not (s.role == "observed" and s.is_discrete):
            _fail(decl, s.name, "a mask (partly observed) is for scalar categorical/bernoulli observed sites")
        if s.mask is not None and s.mask in sites:
            _fail(decl, s.name, f"mask {s.mask!r} names a site; it must name a data array")
        _check_guide_options(decl, s)
        for p, e in s.params:
            _check_expr(decl, s, p, e)
    _topological(decl)  # raises on a cycle


def _check_guide_options(decl: Declaration, s: Site) -> None:
    """``guide_given`` lists discrete local sites of a continuous latent; ``classify`` needs a q(y | x)."""
    if s.guide_given and not (s.role == "latent" and s.family in CONTINUOUS_LATENTS):
        _fail(decl, s.name, "guide_given is for continuous latents (the guide q(t | data, y) of a normal, mvnormal, "
                            "lognormal or gamma site)")
    for name in s.guide_given:
        other = decl.by_name.get(name)
        if other is None or not other.is_local or not other.is_discrete:
            _fail(decl, s.name, f"guide_given lists {name!r}; only discrete local sites (a categorical/bernoulli "
                                "latent or partly observed label) may be listed")
    if s.summed_in not in ("auto", "model"):
        _fail(decl, s.name, f"summed_in must be auto or model, got {s.summed_in!r}")
    if s.summed_in != "auto" and not (s.role == "latent" and s.is_discrete):
        _fail(decl, s.name, "summed_in is for discrete latents (categorical or bernoulli)")
    if s.summed_in == "model" and any(s.name in c.guide_given for c in decl.sites):
        _fail(decl, s.name, "a site summed in the model cannot be in a guide_given; drop one of the two")
    if isinstance(s.classify, bool) or not isinstance(s.classify, (int, float)) or not s.classify >= 0 \
            or not math.isfinite(s.classify):
        _fail(decl, s.name, f"classify must be a finite number >= 0, got {s.classify!r}")
    if s.classify and not (s.mask is not None and decl.guide_enumerated(s.name)):
        _fail(decl, s.name, "classify needs a classifier q(y | data) in the guide: give the site a mask and list it "
                            f"in a continuous latent's guide_given, e.g. latent('t', 'normal', dim=2, "
                            f"guide_given=('{s.name}',))")


def _check_expr(decl: Declaration, s: Site, p: str, e: Expr) -> None:
    sites = decl.by_name
    for parent in e.parents:
        if parent not in sites:
            _fail(decl, s.name, f"parameter {p!r} refers to unknown parent {parent!r}; declared sites: "
                                f"{', '.join(sites)}")
        if parent == s.name:
            _fail(decl, s.name, f"parameter {p!r} refers to the site itself (a cycle)")
    if s.role == "param" and any(sites[q].is_local for q in e.parents):
        _fail(decl, s.name, f"global parameter {p!r} may depend only on other globals, got {list(e.parents)}")
    if s.role == "param" and e.learned:
        _fail(decl, s.name, f"parameter {p!r} of a global prior must be a constant or a global, got {e}")
    if e.index is not None:
        index = sites[e.index]
        if not index.may_index:
            _fail(decl, s.name, f"parameter {p!r} is indexed by {e.index!r}, which is not a scalar discrete local "
                                "site (categorical or bernoulli)")
        if e.kind == "ref":
            ref = sites[e.inputs[0]]
            if ref.role != "param":
                _fail(decl, s.name, f"parameter {p!r}: only a global can be indexed, {ref.name!r} is {ref.role}")
            rows = ref.shape[0] if ref.shape else None
            if rows != index.num_values:
                _fail(decl, s.name, f"parameter table {ref.name!r} has {rows} rows but {index.name!r} takes "
                                    f"{index.num_values} values; give {ref.name!r} shape ({index.num_values}, ...)")
    if s.family == "mvnormal" and p == "scale_tril" and e.kind == "ref":
        _fail(decl, s.name, f"parameter 'scale_tril' must be a constant c (the matrix c I) or a learned expression "
                            f"(table, learned, linear, mlp, ...), got the site reference {e}")
    if e.kind in ("linear", "mlp", "conv", "module"):
        if not e.inputs:
            _fail(decl, s.name, f"parameter {p!r}: {e.kind} needs at least one input site")
        for name in e.inputs:
            if not sites[name].is_local:
                _fail(decl, s.name, f"parameter {p!r}: input {name!r} of {e.kind} must be a per-item site or "
                                    "covariate (use a ref for globals)")
        if e.kind == "conv" and len(e.inputs) != 1:
            _fail(decl, s.name, f"parameter {p!r}: conv takes one input, got {list(e.inputs)}")


def _topological(decl: Declaration) -> list[Site]:
    sites = decl.by_name
    state: dict[str, int] = {}
    out: list[Site] = []

    def visit(name: str, path: list[str]):
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            _fail(decl, name, f"cycle through sites {' -> '.join(cycle)}; a site cannot depend on its descendants")
        state[name] = 1
        for parent in sites[name].parents + sites[name].guide_given:  # the guide reads y before q(t | x, y)
            if parent in sites:
                visit(parent, path + [name])
        state[name] = 2
        out.append(sites[name])

    for site in sorted(decl.sites, key=lambda s: s.role != "param"):
        visit(site.name, [])
    return out
