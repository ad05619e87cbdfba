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


class ArkxFileNotFoundError(ArkxError, FileNotFoundError):
    """A file or folder the user named (a config, a run folder, a checkpoint) does not exist."""


class DiskFull(ArkxError, OSError):
    """No space left on the device while writing a file; the message names the path and the space needed."""


class RunFolderBusy(ArkxRuntimeError):
    """Another live process holds the run folder's lock; the message names it (pid, host, start time)."""


class RunChanged(ArkxRuntimeError):
    """A resume found the run's data or config changed since its last checkpoint (names what changed)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says where to resume. Still a ``KeyboardInterrupt``, so code that
    stops on Ctrl-C keeps doing so."""


class ArkxKeyError(ArkxError, KeyError):
    """An unknown name (a dataset type, a head). Printed as its message, not as a quoted key."""

    __str__ = Exception.__str__
