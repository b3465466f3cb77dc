"""Exceptions raised for bad user input.

Every message is one line that names the problem, the value seen and the fix, so the CLI can print it as is.
"""

import reprlib

MESSAGE_VALUE_LIMIT = 200
"""Characters of a quoted value in an error message: a huge or deeply nested value is cut, never expanded."""

SIZE_MAX = 2**31 - 1
"""The largest size or count an option or declaration takes (refused above it, in one line): far beyond any memory,
and a product of a few such sizes still fits torch's 64-bit sizes, so the memory guard answers a huge one rather
than an overflow deep in torch."""

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxset = 3, 6, 6, 6, 6
_SHORT.maxstring = _SHORT.maxother = 80


def short_repr(value, limit: int = MESSAGE_VALUE_LIMIT) -> str:
    """``repr(value)`` for a one-line message: nested containers cut at a few items and levels (so a YAML alias
    bomb is never expanded), newlines escaped, at most ``limit`` characters."""
    text = _SHORT.repr(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class EmviError(ValueError):
    """Base class of emvi's user-facing errors (bad data, bad configuration, bad files)."""


class DataError(EmviError):
    """The data is malformed: wrong shape or dtype, NaN, negative counts, empty, or not found."""


class ConfigError(EmviError):
    """A configuration or spec value is not allowed."""


class CheckpointError(EmviError):
    """A checkpoint or run directory is missing, corrupt or incompatible."""


class NonFiniteLossError(EmviError, ArithmeticError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class DistributedError(EmviError, RuntimeError):
    """A collective operation of a multi-process fit failed or timed out (usually: another process died)."""
