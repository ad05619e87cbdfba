"""The errors a user should see as one line.

Every error that arkx raises on purpose, because the input (a config, a dataset folder, an image, a
cache, a run folder) is not what it must be, derives from :class:`ArkxError`. The CLI prints those
as one line and exits with status 2; anything else is a bug and keeps its traceback. Each subclass
also derives from the builtin its callers caught before (``ValueError`` or ``RuntimeError``), so
existing ``except ValueError`` code keeps working.
"""

from __future__ import annotations


class ArkxError(Exception):
    """Base class of the errors that describe bad input or a refused operation (not a bug)."""


class ArkxValueError(ArkxError, ValueError):
    """Bad input value: a file, a row, a key or an option that is not what was expected."""


class ArkxRuntimeError(ArkxError, RuntimeError):
    """An operation refused or stopped for a reason the message states (a lock held, a change on resume)."""
