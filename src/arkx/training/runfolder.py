"""The run folder as a resource: one run at a time holds it, and it keeps a log of what a user must find later.

**Lock.** ``RUN/.run.lock`` is held with ``flock`` for the whole run; the file names the holder (pid, host,
start time). A second ``pretrain`` or ``--resume`` on the same folder is refused with that name instead of
writing its rows and checkpoints beside the first run's. The kernel releases an ``flock`` when the last
descriptor of it closes, so a killed run frees the folder at once -- except that forked children (DataLoader
workers, decoding processes) inherit the descriptor and keep the lock while they live. So a lock whose
*recorded holder* is dead (same host; pid gone, or reused by a process that started later) is taken over:
the lock file is replaced by a new one (a new inode, which the orphans do not hold). Every acquisition
re-checks, after writing its name, that the path still names the file it locked, so two processes that
take over at once cannot both win.

**Log.** ``RUN/run.log`` receives every record of the ``arkx`` loggers at INFO and above while the run
holds the folder: skipped images and steps, compile fallbacks, accepted data changes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import socket
from pathlib import Path

from ..errors import RunFolderBusy

LOCK_FILE = ".run.lock"
LOG_FILE = "run.log"
_ATTEMPTS = 5

log = logging.getLogger("arkx.training")


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), to tell a live holder from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 of stat; fields 1-2 end with the ")" of comm


def _alive(holder: dict) -> bool | None:
    """Whether the recorded holder still runs: True, False, or None when it cannot be known (another host)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    started = holder.get("proc_start")
    now = _process_start(pid)
    return not (started and now and started != now)  # same pid, other process: the holder is gone


def _describe(holder: dict) -> str:
    if not holder:
        return "another process (it has not written its name yet)"
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


class RunLock:
    """An exclusive, non-blocking lock on a run folder (see the module doc). Use as a context manager."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        for _ in range(_ATTEMPTS):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)  # a filesystem without locks must not stop training: say so, run unlocked
                    log.warning("%s: the filesystem does not support file locks (%s); nothing stops a second "
                                "run from writing into this folder", self.folder, err.strerror)
                    return
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = self._read(fd)
                inode = os.fstat(fd).st_ino
                os.close(fd)
                if holder and _alive(holder) is False:
                    self._take_over(inode, holder)
                    continue
                raise RunFolderBusy(f"{self.folder} is in use by another arkx run ({_describe(holder)}); "
                                    "wait for it to finish, or stop it and resume") from None
            self._write_holder(fd)
            if self._still_ours(fd):
                self.fd = fd
                return
            os.close(fd)  # someone replaced the file while we wrote: look again
        raise RunFolderBusy(f"{self.folder}: could not take the run lock {self.path} after {_ATTEMPTS} attempts "
                            "(other processes keep replacing it)")

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)  # a holder's name never outlives its lock
        os.close(self.fd)
        self.fd = None

    def _take_over(self, inode: int, holder: dict) -> None:
        """Replace a lock file whose holder died while its (orphaned) children keep the flock."""
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == inode:
                os.unlink(self.path)
                log.warning("%s: taking over the run lock of %s, which is no longer running (its child "
                            "processes still held the lock)", self.folder, _describe(holder))

    def _still_ours(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            data = os.pread(fd, 4096, 0)
            holder = json.loads(data.decode()) if data.strip() else {}
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    @staticmethod
    def _write_holder(fd: int) -> None:
        pid = os.getpid()
        holder = dict(pid=pid, host=socket.gethostname(), proc_start=_process_start(pid),
                      started=_dt.datetime.now().astimezone().isoformat(timespec="seconds"))
        data = json.dumps(holder).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)


@contextlib.contextmanager
def run_log(folder: str | Path):
    """Copy the ``arkx`` loggers' records (INFO and above) into ``folder/run.log`` for the duration."""
    logger = logging.getLogger("arkx")
    handler = logging.FileHandler(Path(folder) / LOG_FILE, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # so the file gets INFO records even when the console shows fewer
    logger.addHandler(handler)
    try:
        yield Path(folder) / LOG_FILE
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()
