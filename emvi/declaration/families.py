"""Distribution families: any ``pyro.distributions`` class by name, read off the class itself, and the short aliases.

:func:`family` resolves a name. A Pyro class name (``"StudentT"``, ``"ZeroInflatedPoisson"``, ``"VonMises"``...)
gives a :class:`Family` whose parameters, their constraints and support come from the class's ``arg_constraints``,
constructor signature and ``support``; nothing is listed by hand. The rule for the arguments:

* a constructor argument without a default is required; one with a numeric default is optional;
* arguments defaulting to ``None`` are alternative parameterisations: ``X`` and ``X_logits`` form one group,
  ``probs`` and ``logits`` another, and the remaining ``None`` ones a third (e.g. a covariance, a precision or a
  ``scale_tril``); a declaration gives exactly one of each group, the first in the signature being the group's name;
* an argument with an integer constraint (``Binomial``'s ``total_count``) takes a constant only; a required argument
  without a constraint (a non-tensor one, e.g. ``LKJCholesky``'s ``dim``) makes the family unusable here.

A learned expression feeding a parameter passes through ``transform_to(constraint)`` (``exp`` for a positive one,
``sigmoid`` for a probability). Declarations take families with a scalar support (a vector site applies one per
feature); vector-valued ones are the aliases ``mvnormal``, ``multinomial`` and ``dirichlet``. The aliases
(:data:`ALIASES`: ``normal``, ``categorical``...) are a thin name map onto the same classes, restricted to the
parameters they always took; their Pyro spellings (``Normal``, ``Categorical``...) are stored as the alias.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property

import pyro.distributions as dist
from torch.distributions import Distribution, constraints

from ..errors import ConfigError

SPELLINGS = {"Normal": "normal", "MultivariateNormal": "mvnormal", "LogNormal": "lognormal", "Gamma": "gamma",
             "Bernoulli": "bernoulli", "Categorical": "categorical", "Poisson": "poisson",
             "Multinomial": "multinomial", "Dirichlet": "dirichlet"}
"""Pyro names stored as their alias (so that EM, table indexing and the vector families treat them alike); ``Beta``
stays the Pyro family (any role, a latent's guide through sigmoid), ``beta`` the alias of globals' priors."""


@dataclass(frozen=True)
class Family:
    """A distribution family: its parameters with their constraints' names (``"real"``, ``"positive"``,
    ``"probability"``, ``"lower_cholesky"``...), its support's name and the Pyro class behind it."""

    params: tuple[tuple[str, str], ...]
    """The required parameters and the first member of each alternative group (what ``names`` lists)."""
    support: str
    """real, positive, binary, finite (categorical), count (unbounded integers), simplex, unit, counts (multinomial),
    or the support constraint's name for other families."""
    roles: tuple[str, ...] = ("param", "latent", "observed")
    pyro_name: str = ""
    alternatives: tuple[tuple[str, ...], ...] = ()
    """Groups of alternative parameterisations, each given exactly once (``("probs", "logits")``)."""
    optional: tuple[str, ...] = ()
    """Parameters with a default value in the constructor."""
    integer: tuple[str, ...] = ()
    """Parameters with an integer constraint: constants only."""
    constraints: dict = field(default_factory=dict, compare=False, repr=False)
    """Parameter name -> torch constraint."""
    support_constraint: constraints.Constraint | None = field(default=None, compare=False, repr=False)
    """The class's support (None where it depends on the parameters)."""
    enumerable: bool = False
    """Finite discrete support Pyro can enumerate (``has_enumerate_support``)."""
    alias: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.params)

    @property
    def accepted(self) -> tuple[str, ...]:
        """Parameter names a declaration may give: every member of each group, and the optional ones (the aliases
        categorical and bernoulli take ``probs`` instead of ``logits``: a global on the simplex / in (0, 1))."""
        if self.alias:
            return self.names + (("probs",) if "logits" in self.names else ())
        grouped = [p for group in self.alternatives for p in group]
        return tuple(dict.fromkeys([*self.names, *grouped, *self.optional]))

    def constraint(self, param: str) -> str:
        return "probability" if param == "probs" and self.alias else self._constraint_names[param]

    @cached_property
    def _constraint_names(self) -> dict[str, str]:
        # Named once per family: models ask for a parameter's constraint in every step of a fit.
        return {name: constraint_name(c) for name, c in self.constraints.items()}

    def missing(self, given) -> list[str]:
        """Parameters (or groups, ``"gate or gate_logits"``) a declaration giving ``given`` lacks."""
        groups = {group[0]: group for group in self.alternatives}
        if self.alias and "logits" in self.names:
            groups["logits"] = ("logits", "probs")
        return [" or ".join(groups.get(p, (p,))) for p in self.names
                if not any(q in given for q in groups.get(p, (p,)))]

    def conflicts(self, given) -> list[tuple[str, ...]]:
        """Groups of which ``given`` names more than one member."""
        groups = self.alternatives + ((("logits", "probs"),) if self.alias and "logits" in self.names else ())
        return [tuple(p for p in group if p in given) for group in groups if sum(p in given for p in group) > 1]

    @property
    def discrete(self) -> bool:
        return self.support in ("binary", "finite", "count", "counts") or bool(
            self.support_constraint is not None and self.support_constraint.is_discrete)

    @property
    def finite(self) -> bool:
        return self.support in ("binary", "finite") or (self.enumerable and not self.alias)

    def bijection_support(self) -> constraints.Constraint:
        """The support a global's or a latent's unconstrained value is mapped onto (``transform_to`` of it)."""
        if self.alias:
            return {"real": constraints.real, "positive": constraints.positive, "simplex": constraints.simplex,
                    "unit": constraints.unit_interval}[self.support]
        if self.support_constraint is None or self.discrete:
            raise ConfigError(f"the {self.pyro_name} family has no fixed continuous support to map values onto")
        return self.support_constraint

    def support_size(self, constants: tuple[tuple[str, float], ...]) -> int | None:
        """K of an enumerable Pyro family whose support is 0..K-1 once its constant parameters (``(name, value)``
        pairs, e.g. Binomial's total_count) are known; None otherwise (e.g. an alias, or a learned total_count)."""
        if self.alias or not self.enumerable:
            return None
        return _support_size(self.pyro_name, tuple(sorted(constants)))

    @property
    def reparameterisable(self) -> bool:
        """A continuous latent of this family gets the derived guide: a Normal pushed through
        ``transform_to(support)`` (the aliases: normal, mvnormal, lognormal and gamma)."""
        if self.alias:
            return self.support in ("real", "positive") and "latent" in self.roles
        return not self.discrete and self.support_constraint is not None


def constraint_name(c) -> str:
    """A short name of a torch constraint: real, positive, probability, lower_cholesky, simplex, integer, or its
    class's name."""
    base = c.base_constraint if isinstance(c, constraints.independent) else c
    if base is constraints.real or isinstance(base, type(constraints.real)):
        return "real"
    if isinstance(base, (constraints.greater_than, constraints.greater_than_eq)) and not base.is_discrete \
            and base.lower_bound == 0:
        return "positive"
    if isinstance(base, (constraints.interval, constraints.half_open_interval)) and not base.is_discrete \
            and (base.lower_bound, base.upper_bound) == (0, 1):
        return "probability"
    if isinstance(base, type(constraints.lower_cholesky)):
        return "lower_cholesky"
    if isinstance(base, type(constraints.simplex)):
        return "simplex"
    if base.is_discrete:
        return "integer"
    return type(base).__name__.strip("_").lower()


def _probe_event_shape(pyro_name: str, names: tuple[str, ...], integer: tuple[str, ...]):
    """The event shape of the class built from scalar placeholders (None where that fails)."""
    import torch
    from torch.distributions import transform_to

    cls = getattr(dist, pyro_name)
    try:
        args = {p: torch.tensor(1.0) if p in integer else transform_to(cls.arg_constraints[p])(torch.zeros(()))
                for p in names}
        return tuple(cls(**args, validate_args=False).event_shape)
    except Exception:  # noqa: BLE001 - any class that cannot be built this way is refused by the caller
        return None


@cache
def _support_size(pyro_name: str, constants: tuple[tuple[str, float], ...]) -> int | None:
    import torch
    from torch.distributions import transform_to

    family = pyro_family(pyro_name)
    given = dict(constants)
    if any(p not in given for p in family.integer if p in family.names):
        return None
    # the other parameters at an arbitrary valid value: the support depends only on the integer ones
    args = {p: transform_to(family.constraints[p])(torch.zeros(())) for p in family.names if p not in family.integer}
    args.update({p: torch.tensor(float(given[p])) for p in family.integer if p in given})
    values = getattr(dist, pyro_name)(**args, validate_args=False).enumerate_support(expand=False).reshape(-1)
    return len(values) if torch.equal(values, torch.arange(len(values), dtype=values.dtype)) else None


def _support_name(support, enumerable: bool) -> str:
    if support is None:
        return "finite" if enumerable else "dependent"
    name = constraint_name(support)
    if isinstance(support, type(constraints.boolean)):
        return "binary"
    if isinstance(support, type(constraints.nonnegative_integer)) and support.lower_bound == 0:
        return "count"
    if name == "probability":
        return "unit"
    if name == "integer" and enumerable:
        return "finite"
    return name


def _static(value):
    """A class attribute's constraint, or None where it is computed per instance."""
    return value if isinstance(value, constraints.Constraint) and not isinstance(value, constraints._Dependent) \
        else None


@cache
def pyro_family(name: str) -> Family:
    """The :class:`Family` of ``pyro.distributions.<name>``, read off the class (see the module docstring)."""
    cls = getattr(dist, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Distribution)) or name.startswith("_"):
        raise ConfigError(f"unknown family {name!r}; use one of {', '.join(ALIASES)} or the name of a "
                          "pyro.distributions class (e.g. StudentT, ZeroInflatedPoisson, VonMises)")
    arg_constraints = cls.__dict__.get("arg_constraints", getattr(cls, "arg_constraints", None))
    if not isinstance(arg_constraints, dict) or any(isinstance(c, constraints._Dependent)
                                                     for c in arg_constraints.values()):
        raise ConfigError(f"family {name!r}: its parameters' constraints depend on each other (computed per "
                          "instance), so a declaration cannot transform learned values into them; pick another family")
    signature = inspect.signature(cls.__init__).parameters
    required, groups, optional = [], {}, []
    for arg, spec in list(signature.items())[1:]:
        if arg == "validate_args" or spec.kind in (spec.VAR_POSITIONAL, spec.VAR_KEYWORD):
            continue
        if arg not in arg_constraints:
            if spec.default is spec.empty:
                raise ConfigError(f"family {name!r} needs the non-tensor argument {arg!r}, which a declaration "
                                  "cannot give; pick another family")
            continue
        if spec.default is spec.empty:
            required.append(arg)
        elif spec.default is None:
            if arg.endswith("_logits"):
                key = arg[:-len("_logits")]
            elif arg in ("probs", "logits"):
                key = "probs"
            else:
                key = arg if f"{arg}_logits" in signature else ""
            groups.setdefault(key, []).append(arg)
        else:
            optional.append(arg)
    support = _static(cls.__dict__.get("support", getattr(cls, "support", None)))
    enumerable = bool(cls.has_enumerate_support)
    if (support is not None and support.event_dim) or any(c.event_dim for c in arg_constraints.values()):
        raise ConfigError(f"family {name!r} has a vector event; declarations take families with a scalar support "
                          "(a site with dim= applies one per feature), or the aliases mvnormal, multinomial, dirichlet")
    alternatives = tuple(tuple(group) for group in groups.values())
    params = tuple((p, constraint_name(arg_constraints[p])) for p in [*required, *(g[0] for g in alternatives)])
    integer = tuple(p for p, c in arg_constraints.items() if c.is_discrete)
    if _probe_event_shape(name, tuple(p for p, _ in params), integer) != ():
        raise ConfigError(f"family {name!r} does not build a scalar distribution from scalar parameters; declarations "
                          "take families with a scalar support (or the aliases mvnormal, multinomial, dirichlet)")
    return Family(params, _support_name(support, enumerable), pyro_name=name, alternatives=alternatives,
                  optional=tuple(optional), integer=integer, constraints=dict(arg_constraints),
                  support_constraint=support, enumerable=enumerable)


def _alias(pyro_name: str, params: tuple[str, ...], roles=("param", "latent", "observed"), support=None) -> Family:
    """An alias: the Pyro class's family restricted to ``params`` (as the hand-written table had them)."""
    cls = getattr(dist, pyro_name)
    arg_constraints = cls.arg_constraints
    support_constraint = _static(cls.__dict__.get("support", getattr(cls, "support", None)))
    enumerable = bool(cls.has_enumerate_support)
    return Family(tuple((p, constraint_name(arg_constraints[p])) for p in params),
                  support or _support_name(support_constraint, enumerable), roles, pyro_name,
                  constraints=dict(arg_constraints), support_constraint=support_constraint, enumerable=enumerable,
                  alias=True)


ALIASES: dict[str, Family] = {
    "normal": _alias("Normal", ("loc", "scale")),
    "mvnormal": _alias("MultivariateNormal", ("loc", "scale_tril"), ("latent", "observed"), "real"),
    "lognormal": _alias("LogNormal", ("loc", "scale")),
    "gamma": _alias("Gamma", ("concentration", "rate")),
    "bernoulli": _alias("Bernoulli", ("logits",), ("latent", "observed")),
    "categorical": _alias("Categorical", ("logits",), ("latent", "observed")),
    "poisson": _alias("Poisson", ("rate",), ("latent", "observed")),
    "multinomial": _alias("Multinomial", ("logits",), ("observed",), "counts"),
    "dirichlet": _alias("Dirichlet", ("concentration",), ("param", "latent")),
    "beta": _alias("Beta", ("concentration1", "concentration0"), ("param", "latent")),
}
"""The short names and the Pyro classes they stand for, with the parameters each takes."""


def canonical(name: str) -> str:
    """The name a site stores: an alias as given, ``Categorical``/``Bernoulli`` as their alias."""
    return SPELLINGS.get(name, name)


def family(name: str) -> Family:
    """The family called ``name``: an alias, or any ``pyro.distributions`` class (a one-line error otherwise)."""
    if not isinstance(name, str):
        raise ConfigError(f"a family is a name (an alias or a pyro.distributions class), got {name!r}")
    name = canonical(name)
    return ALIASES[name] if name in ALIASES else pyro_family(name)


def distribution_class(name: str):
    return getattr(dist, family(name).pyro_name)


class FamilyTable(Mapping):
    """``FAMILIES[name]``: every family by name (an alias or a Pyro class); iterating lists the aliases."""

    def __getitem__(self, name: str) -> Family:
        try:
            return family(name)
        except ConfigError:
            raise KeyError(name) from None

    def __iter__(self):
        return iter(ALIASES)

    def __len__(self) -> int:
        return len(ALIASES)


FAMILIES = FamilyTable()

__all__ = ["ALIASES", "FAMILIES", "Family", "FamilyTable", "canonical", "constraint_name", "distribution_class", "family", "pyro_family"]
