"""The cache folder's lock, and decoding workers that die with the process that started them.

Why POSIX record locks (``fcntl.lockf``) and not ``flock``: an ``flock`` lock belongs to the open file
description, which every forked child shares; the decoding workers of a prepare killed with ``kill -9``
lived on (re-parented to init) and kept the cache locked forever. A record lock belongs to the
process that took it: forked workers never hold it, and the kernel drops it the moment its holder
dies, so a lock left by a dead process is taken over at once. Two caveats of record locks are handled
here: they do not exclude two threads of one process (an in-process lock per folder does), and closing
*any* descriptor of the file drops them (this module opens the lock file once per hold and reads the
holder's note through that same descriptor).

The holder writes a note into the lock file (pid, host, command line, since when); a process that
has to wait names the holder in a WARNING (visible with ``--quiet``), and on Linux also the processes
that ``/proc/locks`` says really hold it, should the note be stale.

Workers: :func:`worker_initializer` makes each decoding worker die with its parent: on Linux the kernel
sends it SIGKILL when the parent dies (``PR_SET_PDEATHSIG``), and everywhere a watchdog thread exits
the worker once its parent process is gone.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from ..errors import ArkxRuntimeError

__all__ = ["LOCK_FILE", "LockBusy", "folder_lock", "worker_initializer", "describe_holder"]

log = logging.getLogger("arkx.data")

LOCK_FILE = ".lock"
#: While waiting, the WARNING naming the holder is repeated this often (seconds).
WAIT_REPORT_EVERY = 300.0
_HELD_ERRNOS = (errno.EAGAIN, errno.EACCES)  # what F_SETLK answers for a lock held elsewhere

_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()
_held_here: set[str] = set()  # folders whose file lock this process holds now


class LockBusy(ArkxRuntimeError):
    """The folder is locked by another process (raised only by non-blocking attempts)."""


# ----------------------------------------------------------------------------------------------------
# the lock


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, blocking: bool = True):
    """Hold ``folder/.lock`` exclusively (against other processes and other threads of this one).

    Yields True when the lock is held, False on a file system without locks (the caller proceeds
    unlocked, as before). Raises :class:`LockBusy` when ``blocking`` is False and the folder is locked,
    and the ``OSError`` of opening the lock file (e.g. a read-only file system) unchanged.
    """
    folder = Path(folder)
    key = os.path.realpath(folder)
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(key, threading.Lock())
    if not tlock.acquire(blocking=False):
        if not blocking:
            raise LockBusy(f"{folder} is locked by another thread of this process")
        log.warning("%s: waiting for another thread of this process that holds its lock", folder)
        tlock.acquire()
    try:
        with _file_lock(folder, blocking) as held:
            if held:
                _held_here.add(key)
            try:
                yield held
            finally:
                _held_here.discard(key)
    finally:
        tlock.release()


def held_by_this_process(folder: str | os.PathLike) -> bool:
    """True while this process holds ``folder``'s lock (testing it again would release it: see the module doc)."""
    return os.path.realpath(folder) in _held_here


@contextlib.contextmanager
def _file_lock(folder: Path, blocking: bool):
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield False
        return
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            held = _acquire(fcntl, fd, folder, blocking)
            if held and not _still_linked(fd, path):
                # the folder was removed (``arkx cache clean``) while we waited: start over in a fresh one
                fcntl.lockf(fd, fcntl.LOCK_UN)
                os.close(fd)
                folder.mkdir(parents=True, exist_ok=True)
                continue
        except BaseException:
            os.close(fd)
            raise
        break
    try:
        if held:
            _write_note(fd)
        yield held
    finally:
        if held:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            with contextlib.suppress(OSError):
                fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)


def _acquire(fcntl, fd: int, folder: Path, blocking: bool) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno not in _HELD_ERRNOS:  # ENOLCK, EOPNOTSUPP...: a file system without locks
            log.debug("cannot lock %s (%s); going on without a lock", folder, e)
            return False
    if not blocking:
        raise LockBusy(f"{folder} is locked by {describe_holder(fd)}")
    started = time.monotonic()
    next_report = started
    delay = 0.05
    while True:
        now = time.monotonic()
        if now >= next_report:
            waited = f" (waited {now - started:.0f} s so far)" if now > started else ""
            log.warning("%s: waiting for the lock held by %s%s", folder, describe_holder(fd), waited)
            next_report = now + WAIT_REPORT_EVERY
        time.sleep(delay)
        delay = min(2 * delay, 1.0)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            log.info("%s: lock acquired after %.1f s", folder, time.monotonic() - started)
            return True
        except OSError as e:
            if e.errno not in _HELD_ERRNOS:
                raise


def _still_linked(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# ----------------------------------------------------------------------------------------------------
# the holder's note


def _write_note(fd: int) -> None:
    note = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command_line(),
            "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    with contextlib.suppress(OSError):  # a note is a courtesy; the lock itself is what counts
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(note) + "\n").encode(), 0)


def _read_note(fd: int) -> dict | None:
    try:
        data = json.loads(os.pread(fd, 8192, 0).decode("utf-8", "replace") or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe_holder(fd: int) -> str:
    """Who holds the lock open on ``fd``: the holder's note, checked against ``/proc/locks`` on Linux."""
    note = _read_note(fd)
    real = [pid for pid in _proc_lock_pids(fd) if pid != os.getpid()]
    if note and isinstance(note.get("pid"), int):
        text = (f"pid {note['pid']} on {note.get('host', '?')} ({note.get('command', '?')}), "
                f"since {note.get('since', '?')}{_age(note.get('since'))}")
        stale = note.get("host") == socket.gethostname() and (not _alive(note["pid"]) or
                                                              (real and note["pid"] not in real))
        if stale:
            text += f"; that process is gone, the lock is held by {_pids_text(real) or 'an unknown process'}"
        return text
    return _pids_text(real) or "another process (no holder recorded)"


def _pids_text(pids: list[int]) -> str:
    return ", ".join(f"pid {pid} ({_command_of(pid)})" for pid in pids)


def _age(since) -> str:
    try:
        then = _dt.datetime.fromisoformat(str(since))
    except ValueError:
        return ""
    seconds = (_dt.datetime.now(_dt.timezone.utc) - then).total_seconds()
    return f", {seconds:.0f} s ago" if seconds < 120 else f", {seconds / 60:.0f} min ago"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command_line() -> str:
    try:
        return _one_line(Path("/proc/self/cmdline").read_bytes())
    except OSError:
        return _one_line(" ".join([sys.executable, *sys.argv]).encode())


def _command_of(pid: int) -> str:
    try:
        return _one_line(Path(f"/proc/{pid}/cmdline").read_bytes()) or "command unknown"
    except OSError:
        return "command unknown"


def _one_line(raw: bytes, limit: int = 240) -> str:
    """A command line for a log message: one line, its start and end kept when it is long."""
    text = " ".join(raw.replace(b"\0", b" ").decode("utf-8", "replace").split())
    return text if len(text) <= limit else f"{text[: limit // 2 - 2]} ... {text[-(limit // 2 - 3):]}"


def _proc_lock_pids(fd: int) -> list[int]:
    """Pids that hold a lock on the file of ``fd`` according to ``/proc/locks`` (Linux; else [])."""
    try:
        inode = os.fstat(fd).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or "->" in fields:  # "->" marks a process waiting for the lock, not holding it
            continue
        try:
            pid = int(fields[4])
            ino = int(fields[5].split(":")[-1])
        except ValueError:
            continue
        if ino == inode and pid not in pids:
            pids.append(pid)
    return pids


# ----------------------------------------------------------------------------------------------------
# decoding workers die with their parent


def worker_initializer(parent_pid: int) -> None:
    """Runs first in every decoding worker: tie its life to the process that started it."""
    _set_parent_death_signal()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="arkx-parent-watch", daemon=True).start()


def _set_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        return libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, every: float = 1.0) -> None:
    while True:
        time.sleep(every)
        if os.getppid() != parent_pid:
            os._exit(1)
