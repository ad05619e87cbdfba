"""One progress display for every long loop of arkx (preparing a cache, pretraining, verifying).

:class:`Progress` shows a rich bar when stderr is an interactive terminal, writes a log line about
every tenth of the way otherwise (a batch job's log then says how far it got and how fast), and does
nothing when disabled. Callers only count: ``advance`` and ``describe``.
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["Progress"]


class Progress:
    """Count ``total`` units of work, shown as a rich bar on a terminal or as periodic log lines.

    Use as a context manager::

        with Progress(len(todo), "preparing chexpert", unit="images", enabled=show) as bar:
            for item in todo:
                ...
                bar.advance()

    Args:
        total: units of work in all (``completed`` of them may already be done).
        description: what is being done; :meth:`describe` changes it on the way.
        enabled: False shows and logs nothing.
        completed: units already done before this display starts (e.g. on resume).
        unit: the name of one unit in the log lines ("images", "steps").
        logger: where the log lines go when stderr is not a terminal (default ``arkx``), at INFO.
        log_every: fraction of ``total`` between two log lines.
        interactive: force the rich bar (True) or the log lines (False); default: stderr is a TTY.
    """

    def __init__(self, total: int, description: str, *, enabled: bool = True, completed: int = 0,
                 unit: str = "items", logger: logging.Logger | None = None, log_every: float = 0.1,
                 interactive: bool | None = None):
        self.total = max(int(total), 0)
        self.description = description
        self.enabled = bool(enabled)
        self.count = int(completed)
        self.unit = unit
        self.log = logger or logging.getLogger("arkx")
        self.log_every = float(log_every)
        if interactive is None:
            interactive = sys.stderr is not None and sys.stderr.isatty()
        self._interactive = interactive
        self._bar = None
        self._task = None
        self._start_count = self.count
        self._start = time.perf_counter()
        self._next_log = self._next_threshold(self.count)

    # ------------------------------------------------------------------ context
    def __enter__(self) -> Progress:
        if self.enabled and self._interactive:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                                     transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, completed=self.count)
        return self

    def __exit__(self, *exc) -> bool:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None
        return False

    # ------------------------------------------------------------------ counting
    def describe(self, description: str) -> None:
        """Change the label (shown on the bar at once, and in the next log line)."""
        self.description = description
        if self._bar is not None:
            self._bar.update(self._task, description=description)

    def advance(self, k: int = 1, description: str | None = None) -> None:
        """Count ``k`` more units done (and optionally change the label)."""
        self.count += int(k)
        if description is not None:
            self.description = description
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, advance=int(k), description=self.description)
        elif self.total and self.count >= self._next_log:
            self._log_line()
            self._next_log = self._next_threshold(self.count)

    # ------------------------------------------------------------------ helpers
    def _next_threshold(self, count: int) -> float:
        """The next count at which a log line is due: the next multiple of ``log_every * total``."""
        if not self.total:
            return float("inf")
        step = max(self.log_every * self.total, 1.0)
        return (count // step + 1) * step

    def _log_line(self) -> None:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = (self.count - self._start_count) / elapsed
        self.log.info("%s: %d/%d %s (%.3g/s)", self.description, self.count, self.total, self.unit, rate)
