"""The :class:`Declaration`: a named model's sites, validated once on construction (every error one line naming
the model and the site), their order, what the guide enumerates, and the printed generative story."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from functools import cached_property

from ..errors import SIZE_MAX, ConfigError, short_repr
from .expressions import CONTINUOUS_LATENTS, GLOBAL_GUIDES, ROLES, STORY_NAMES, Expr
from .families import ALIASES, FAMILIES
from .families import family as find_family
from .sites import Site, site_from_data


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

    @cached_property  # a declaration is frozen: its derived tables are computed once (the model reads them per step)
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
        return self._guide_enumerated[name]

    @cached_property
    def _guide_enumerated(self) -> dict[str, bool]:
        return {site.name: self._enumerated_in_guide(site) for site in self.sites}

    def _enumerated_in_guide(self, site: Site) -> bool:
        name = site.name
        if not site.enumerated or site.summed_in == "model" or site.family not in ("categorical", "bernoulli"):
            return False  # q(z | x) is a categorical or bernoulli; a Pyro family's finite support is summed in the model
        return any(c.role == "latent" and not c.is_discrete for c in self.children(name)) or any(
            name in c.guide_given for c in self.sites)

    def guide_inputs(self, name: str) -> tuple[str, ...]:
        """The discrete sites continuous latent ``name``'s guide conditions on: its guide-enumerated discrete parents,
        then its ``guide_given``."""
        site = self.by_name[name]
        return tuple(p for p in dict.fromkeys(site.parents + site.guide_given) if self.guide_enumerated(p))

    @cached_property
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
            shown = STORY_NAMES.get(site.family, site.family.capitalize() if site.family in ALIASES else site.family)
            dist = f"{shown}({args})" if site.family else ""
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
                values = f"values 0..{site.num_values - 1}" if site.num_values else "finite support"
                detail = f"{values}; {how}"
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
    strays = [type(s).__name__ for s in decl.sites if not isinstance(s, Site)]
    if strays:
        raise ConfigError(f"model {decl.name!r}: declare() takes sites made by param, latent, observed or covariate, "
                          f"got {', '.join(strays)}")
    names = [s.name for s in decl.sites]
    odd = [n for n in names if not isinstance(n, str) or not n.isidentifier()]
    if odd:  # a name becomes a Pyro site, a parameter prefix (name__loc) and a spec key (model.sites.NAME)
        raise ConfigError(f"model {decl.name!r}: site name(s) {short_repr(odd)} are not identifiers; use letters, "
                          "digits and _ (no dots, spaces or empty names)")
    if not names:
        raise ConfigError(f"model {decl.name!r} declares no sites")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"model {decl.name!r}: site name(s) {duplicates} declared twice")
    sites = decl.by_name
    if not any(s.role == "observed" for s in decl.sites):
        raise ConfigError(f"model {decl.name!r} has no observed site; declare the data with observed(...)")
    for s in decl.sites:
        fam = find_family(s.family) if s.family else None
        if s.role not in ROLES:
            _fail(decl, s.name, f"role must be one of {', '.join(ROLES)}, got {s.role!r}")
        if s.role in ("latent", "observed") and fam is None:
            _fail(decl, s.name, f"a {s.role} site needs a family; use one of {', '.join(FAMILIES)} or a "
                                "pyro.distributions class name")
        if fam is not None and s.role not in fam.roles:
            _fail(decl, s.name, f"the {s.family} family is for {' or '.join(fam.roles)} sites, not {s.role}")
        if fam is not None:
            given = s.param_dict
            if fam.conflicts(given):
                _fail(decl, s.name, f"give {' or '.join(fam.conflicts(given)[0])}, not both")
            if "probs" in given and fam.alias and given["probs"].kind != "ref":
                _fail(decl, s.name, "probs must name a global on the simplex (e.g. a dirichlet param); learned "
                                    "probabilities are given as logits")
            if fam.missing(given):
                _fail(decl, s.name, f"{s.family} needs parameter(s) {fam.missing(given)}")
            if s.role == "param" and not fam.alias and (fam.discrete or fam.support_constraint is None):
                _fail(decl, s.name, f"a global's prior needs a fixed continuous support to map values onto, and "
                                    f"{s.family}'s is discrete or depends on its parameters; use another family")
            for p in fam.integer:
                if p in given and given[p].kind != "constant":
                    _fail(decl, s.name, f"parameter {p!r} of {s.family} is a whole number; give it as a constant")
        if s.guide not in GLOBAL_GUIDES:
            _fail(decl, s.name, f"guide must be one of {', '.join(GLOBAL_GUIDES)}, got {s.guide!r}")
        if s.guide != "map" and (s.role != "param" or fam is None):
            _fail(decl, s.name, "a mean-field guide is for global sites with a family (a prior)")
        for key, values in (("dim", (s.dim,)), ("categories", (s.categories,)), ("shape", s.shape)):
            for value in values:
                if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                                          or not 1 <= value <= SIZE_MAX):
                    _fail(decl, s.name, f"{key} must be an integer in [1, {SIZE_MAX}], got {short_repr(value)}")
        if s.family in ("categorical", "multinomial") and s.family == "categorical" and (s.categories or 0) < 2:
            _fail(decl, s.name, "a categorical site needs categories >= 2")
        if s.family == "multinomial" and s.dim is not None:
            _fail(decl, s.name, "a multinomial site's size comes from its logits (the vocabulary); drop dim")
        if s.role == "latent":
            if fam.discrete and not fam.finite:
                _fail(decl, s.name, f"an enumerated site needs finite support, and {s.family} has unbounded support "
                                    "(it cannot be enumerated, and a discrete site has no reparameterised guide); "
                                    "observe it, or use a categorical latent")
            if fam.finite and s.dim is not None:
                _fail(decl, s.name, "a discrete latent is enumerated per item and must be scalar; drop dim")
            if not fam.discrete:
                if not fam.reparameterisable:
                    _fail(decl, s.name, f"a continuous latent needs a reparameterisable family for the derived guide "
                                        f"({', '.join(CONTINUOUS_LATENTS)}, or a Pyro class with a fixed continuous "
                                        f"support, e.g. 'Beta'), got {s.family}; make it a global (param) or use "
                                        "one of those")
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
    if s.guide_given and not (s.role == "latent" and not s.is_discrete and find_family(s.family).reparameterisable):
        _fail(decl, s.name, "guide_given is for continuous latents (the guide q(t | data, y) of a normal, mvnormal, "
                            "lognormal or gamma site)")
    for name in s.guide_given:
        other = decl.by_name.get(name)
        if other is None or not other.is_local or not other.is_discrete or other.family not in ("categorical",
                                                                                              "bernoulli"):
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
    for name in e.indices:
        if not sites[name].may_index:
            _fail(decl, s.name, f"parameter {p!r} is indexed by {name!r}, which is not a scalar discrete local "
                                "site (categorical or bernoulli)")
    if len(set(e.indices)) != len(e.indices):
        _fail(decl, s.name, f"parameter {p!r} names an index site twice: {list(e.indices)}")
    if e.index is not None:
        index = sites[e.index]
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
