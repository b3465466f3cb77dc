"""Exceptions raised for bad user input.

Every message is one line that names the problem, the value seen and the fix, so the CLI can print it as is.
"""


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
