"""Distribution families and the expressions that give their parameters (see :mod:`emvi.declaration`).

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
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import SIZE_MAX, ConfigError, short_repr

ROLES = ("param", "latent", "observed", "covariate")
GLOBAL_GUIDES = ("map", "meanfield")


STORY_NAMES = {"mvnormal": "MultivariateNormal", "lognormal": "LogNormal"}
CONTINUOUS_LATENTS = ("normal", "mvnormal", "lognormal", "gamma")
"""Continuous local latents the derived guide can reparameterise (Normal, or LogNormal for positive support)."""
LATENT_DEFAULTS = {"normal": {"loc": 0.0, "scale": 1.0}, "mvnormal": {"loc": 0.0, "scale_tril": 1.0},
                   "lognormal": {"loc": 0.0, "scale": 1.0},
                   "gamma": {"concentration": 1.0, "rate": 1.0}}
NETWORK_KINDS = ("mlp", "conv", "module")
"""Expressions computed by a network, whose weights only SVI fits (NUTS and EM do not)."""
LEARNED_KINDS = ("table", "learned", "linear", *NETWORK_KINDS)
_REF = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*([A-Za-z_][A-Za-z0-9_]*)\s*\])?\s*$")


@dataclass(frozen=True)
class Expr:
    """A family parameter as a function of the site's parents; see the module docstring."""

    kind: str
    """constant, ref, table, learned, linear, mlp, conv or module."""
    inputs: tuple[str, ...] = ()
    index: str | None = None
    """The discrete site picking a row (``ref`` with ``[z]``, ``table``, ``linear(..., by=)``)."""
    also_by: tuple[str, ...] = ()
    """Further discrete sites indexing a table or a linear map: ``table("z", "s")`` is ``(K_z, K_s, ...)``."""
    value: float | None = None
    hidden: tuple[int, ...] = ()
    module: Any = field(default=None, compare=False)
    """An ``nn.Module``, a factory ``f(in_features, out_features) -> nn.Module``, or ``"pkg.mod:attr"``."""

    @property
    def learned(self) -> bool:
        return self.kind in LEARNED_KINDS

    @property
    def indices(self) -> tuple[str, ...]:
        """Every discrete site indexing the expression, in the order of the table's leading dimensions."""
        return ((self.index,) if self.index else ()) + self.also_by

    @property
    def parents(self) -> tuple[str, ...]:
        return self.inputs + self.indices

    def __str__(self) -> str:
        if self.kind == "constant":
            return f"{self.value:g}"
        if self.kind == "ref":
            return self.inputs[0] + (f"[{self.index}]" if self.index else "")
        if self.kind == "table":
            return f"table[{', '.join(self.indices)}]"
        if self.kind == "learned":
            return "learned"
        extra = f"; hidden {list(self.hidden)}" if self.kind == "mlp" else (
            f"; per {', '.join(self.indices)}" if self.index else "")
        name = self.kind if self.kind != "module" else _module_name(self.module)
        return f"{name}({', '.join(self.inputs)}{extra})"

    def to_data(self):
        """Plain data for a spec file."""
        if self.kind == "constant":
            return self.value
        if self.kind == "ref":
            return str(self)
        if self.kind == "table":
            return {"table": self.index if not self.also_by else list(self.indices)}
        if self.kind == "learned":
            return {"learned": True}
        out: dict = {self.kind: list(self.inputs)}
        if self.kind == "mlp":
            out["hidden"] = list(self.hidden)
        if self.kind == "linear" and self.index:
            out["by"] = self.index if not self.also_by else list(self.indices)
        if self.kind == "module":
            out = {"module": self.module if isinstance(self.module, str) else _module_name(self.module),
                   "inputs": list(self.inputs)}
        return out


def _module_name(module) -> str:
    if isinstance(module, str):
        return module
    cls = module if isinstance(module, type) else type(module)
    return getattr(module, "__qualname__", None) or cls.__name__


def table(*by: str) -> Expr:
    """A learned table with one row per value of the discrete site ``by``; several sites ``table("z", "s")``: one
    entry per combination of their values, shape ``(K_z, K_s, ...)``."""
    if not by:
        raise ConfigError("table() needs the discrete site(s) indexing it, e.g. table('z') or table('z', 's')")
    return Expr("table", index=by[0], also_by=tuple(by[1:]))


def learned() -> Expr:
    """A learned tensor shared by all items (e.g. a per-feature scale)."""
    return Expr("learned")


def linear(*inputs: str, by: str | tuple[str, ...] | None = None) -> Expr:
    """An affine map of the inputs; ``by="z"``: one map per value of the discrete site ``z`` (a regression per
    component); ``by=("z", "s")``: one per combination of their values."""
    by = (by,) if isinstance(by, str) else tuple(by or ())
    return Expr("linear", inputs=tuple(inputs), index=by[0] if by else None, also_by=by[1:])


def mlp(*inputs: str, hidden=(64,)) -> Expr:
    """A multilayer perceptron of the inputs (concatenated, one-hot for discrete sites) with hidden layer widths
    ``hidden``, e.g. ``logits=mlp("t", hidden=(64,))`` for a VAE's decoder."""
    sizes = tuple(hidden) if isinstance(hidden, (list, tuple)) else None
    if sizes is None or any(isinstance(h, bool) or not isinstance(h, numbers.Integral) or not 1 <= h <= SIZE_MAX
                            for h in sizes):
        raise ConfigError(f"mlp hidden must be a list of layer widths in [1, {SIZE_MAX}] such as [64], got "
                          f"{short_repr(hidden)}")
    return Expr("mlp", inputs=tuple(inputs), hidden=tuple(int(h) for h in sizes))


def conv(input_site: str) -> Expr:
    """A convolutional decoder of one per-item site (a linear layer, then two stride-2 transposed convolutions,
    ``emvi.nn.ConvDecoder``) whose output has the observed images' shape; needs image data."""
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
            return table(*_names(raw, where))
        if kind == "learned":
            return learned()
        if kind == "module":
            return module(str(raw), *_names(value.get("inputs", ()), where))
        inputs = _names(raw, where)
        if kind == "mlp":
            return mlp(*inputs, hidden=value.get("hidden", (64,)))
        if kind == "linear":
            by = value.get("by")
            return linear(*inputs, by=None if by is None else _names(by, where))
        return Expr(kind, inputs=inputs)
    raise ConfigError(f"{where}: expected a number, a site name or a mapping, got {type(value).__name__}")


def _names(raw, where) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else list(raw)
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{where}: inputs must be site names, got {raw!r}")
    return tuple(items)

