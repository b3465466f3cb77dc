"""Frozen configuration dataclasses <-> command-line options and plain dicts (JSON, TOML, YAML).

One description serves the CLI, spec files and run directories: each dataclass field becomes ``--field-name``, and
:func:`config_from_dict` validates a mapping against the fields, naming any unknown key or wrong type.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from typing import Any

from .errors import ConfigError, short_repr

_SIMPLE = (int, float, str, bool)


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings (a string literal right after a field) as help texts (parsed once per class), a base
    dataclass's included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object and dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls) -> dict[str, str]:
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return docs
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node, following in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(following, ast.Expr) and isinstance(getattr(following, "value", None), ast.Constant):
                if isinstance(following.value.value, str):
                    docs[node.target.id] = " ".join(following.value.value.split())
    return docs


@functools.cache
def _type_hints(cls) -> dict:
    return typing.get_type_hints(cls)  # evaluates every annotation string: once per class, not per field and call


def _field_type(cls, field: dataclasses.Field):
    return _type_hints(cls).get(field.name, field.type)


def _unwrap_optional(tp) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        return tp, optional
    return tp, False


def coerce_value(cls, name: str, value, *, where: str = "", strict: bool = False) -> Any:
    """Convert ``value`` to the type of field ``name`` of ``cls``; raise ConfigError naming the field otherwise.

    ``strict=False`` parses strings (the command line's values are strings); ``strict=True`` is for typed sources
    (spec files, ``config.json``): a string is not a number nor a bool, a float is not an int, and a number is not a
    string. Only the spelled-out empty value ``"none"``/``"null"`` of an optional field is read from a string in both.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    label = f"{where}{name}"
    if name not in fields:
        raise ConfigError(f"unknown key {label!r}; allowed keys: {', '.join(fields)}")
    tp, optional = _unwrap_optional(_field_type(cls, fields[name]))
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and optional):
        if optional:
            return None
        raise ConfigError(f"{label} may not be empty; give a value of type {getattr(tp, '__name__', tp)}")
    origin = typing.get_origin(tp)
    if strict:
        _check_strict_type(tp, value, label)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else int
            return tuple(inner(str(v).strip()) if inner in (int, float) else inner(v) for v in items if str(v).strip() != "")
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{label} must be of type {_type_name(tp)}, got {short_repr(value)}") from None
    return value


def _check_strict_type(tp, value, label: str) -> None:
    def fits(inner, item) -> bool:
        if inner is bool:
            return isinstance(item, bool)
        if inner is int:
            return isinstance(item, int) and not isinstance(item, bool)
        if inner is float:
            return isinstance(item, (int, float)) and not isinstance(item, bool)
        if inner is str:
            return isinstance(item, str)
        return True

    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else int
        ok = isinstance(value, (list, tuple)) and all(fits(inner, item) for item in value)
    else:
        ok = fits(tp, value)
    if not ok:
        raise ConfigError(f"{label} must be of type {_type_name(tp)}, got {short_repr(value)} ({type(value).__name__}); "
                          "write it without quotes" if isinstance(value, str) else
                          f"{label} must be of type {_type_name(tp)}, got {short_repr(value)} ({type(value).__name__})")


def _type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        return "list of " + getattr(typing.get_args(tp)[0], "__name__", "values")
    return getattr(tp, "__name__", str(tp))


def config_from_dict(cls, values: dict | None, *, where: str = "", strict: bool = False):
    """Build ``cls`` from a mapping; unknown keys and wrong types are errors, missing keys take their defaults.

    ``strict`` as in :func:`coerce_value` (True for spec files and run directories, False for command-line strings).
    """
    if values is not None and not isinstance(values, dict):
        raise ConfigError(f"{where.rstrip('.') or 'config'} must be a table of key = value pairs, got "
                          f"{type(values).__name__}")
    values = dict(values or {})
    kwargs = {str(name): coerce_value(cls, str(name), value, where=where, strict=strict) for name, value in values.items()}
    return cls(**kwargs)


def config_to_dict(config) -> dict:
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def add_config_arguments(parser: argparse.ArgumentParser, cls, *, group_title: str | None = None, aliases=None,
                         skip: set[str] | frozenset[str] = frozenset()) -> None:
    """Add ``--field-name`` for every field of ``cls`` but those in ``skip``; defaults stay None so only given options
    override."""
    aliases = aliases or {}
    docs = field_docs(cls)
    target = parser.add_argument_group(group_title) if group_title else parser
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, _ = _unwrap_optional(_field_type(cls, f))
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        flags = [f"--{f.name.replace('_', '-')}"] + list(aliases.get(f.name, ()))
        help_text = docs.get(f.name, "")
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_text = f"{help_text} (default: {shown})".strip()
        if tp is bool:
            target.add_argument(*flags, dest=f.name, nargs="?", const="true", default=None, metavar="BOOL", help=help_text)
        else:
            target.add_argument(*flags, dest=f.name, default=None, metavar=f.name.upper(), help=help_text)


def config_from_args(cls, namespace: argparse.Namespace, base: dict | None = None):
    """Fill ``cls`` from ``base`` (e.g. a spec file's table) overridden by the options given on the command line."""
    values = dict(base or {})
    for f in dataclasses.fields(cls):
        given = getattr(namespace, f.name, None)
        if given is not None:
            values[f.name] = given
    return config_from_dict(cls, values, where="--" if base is None else "")


METHOD_CONFIG = "method_config"
"""The key of ``config.json`` (and of the copy in every checkpoint) that holds the fitting method's settings."""
LEGACY_METHOD_CONFIG = "train"
"""Where runs written before one key held every method's settings kept an SVI fit's (read, never written)."""


def method_settings(resolved: dict) -> dict:
    """The fitting method's settings recorded in a run's resolved configuration (``config.json`` or a checkpoint's
    copy): :data:`METHOD_CONFIG`, or :data:`LEGACY_METHOD_CONFIG` in older SVI runs; ``{}`` when neither is there."""
    settings = resolved.get(METHOD_CONFIG)
    if settings is None:
        settings = resolved.get(LEGACY_METHOD_CONFIG)
    return settings if isinstance(settings, dict) else {}


MAX_SPEC_NODES = 100_000
"""Values a spec may hold once YAML's aliases are expanded (a real spec holds a few hundred)."""


def check_expanded_size(raw, where: str, limit: int = MAX_SPEC_NODES) -> None:
    """Refuse a parsed spec whose aliases expand to more than ``limit`` values, or refer to themselves: a few hundred
    bytes of nested YAML aliases (``&a [x, x], &b [*a, *a], ...``) otherwise expand to billions of values in any
    walk of the tree. Sizes are counted with shared nodes memoised, so the check itself never expands them."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in in_progress:
            raise ConfigError(f"{where} holds a value that contains itself (a recursive YAML alias); write the values "
                              "out")
        in_progress.add(key)
        total = 1 + sum(size(child) for child in (node.values() if isinstance(node, dict) else node))
        in_progress.discard(key)
        sizes[key] = total
        if total > limit:
            raise ConfigError(f"{where} expands to more than {limit:,} values (nested YAML aliases?); a spec holds "
                              "a few hundred: write the values out")
        return total

    size(raw)
