"""arkx.progress: the one progress display (rich bar on a terminal, log lines otherwise, nothing when off)."""

from __future__ import annotations

import logging

from arkx.progress import Progress

LOG = logging.getLogger("arkx.test-progress")


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG.name]


def test_log_lines_every_tenth_without_a_terminal(caplog):
    with caplog.at_level(logging.INFO, logger=LOG.name):
        with Progress(50, "decoding", unit="images", logger=LOG, interactive=False) as bar:
            for _ in range(50):
                bar.advance()
    lines = _lines(caplog)
    assert len(lines) == 10
    assert lines[0].startswith("decoding: 5/50 images (") and lines[-1].startswith("decoding: 50/50 images (")


def test_resumed_count_and_changed_label_show_in_the_lines(caplog):
    with caplog.at_level(logging.INFO, logger=LOG.name):
        with Progress(10, "pretraining", completed=6, unit="steps", logger=LOG, interactive=False) as bar:
            bar.describe("round 4/5 · chexpert")
            bar.advance(1)
            bar.advance(1, description="round 4/5 · nih14 · loss 0.5")
    assert _lines(caplog)[0].startswith("round 4/5 · chexpert: 7/10 steps")
    assert _lines(caplog)[1].startswith("round 4/5 · nih14 · loss 0.5: 8/10 steps")


def test_disabled_shows_and_logs_nothing(caplog, capsys):
    with caplog.at_level(logging.INFO, logger=LOG.name):
        for interactive in (False, True):
            with Progress(4, "quiet", enabled=False, logger=LOG, interactive=interactive) as bar:
                bar.advance(4)
            assert bar._bar is None
    assert _lines(caplog) == [] and capsys.readouterr().err == ""


def test_a_terminal_gets_a_rich_bar(caplog, capsys):
    with caplog.at_level(logging.INFO, logger=LOG.name):
        with Progress(8, "preparing", completed=2, logger=LOG, interactive=True) as bar:
            bar.advance(3)
            task = bar._bar.tasks[0]
            assert (task.completed, task.total, task.description) == (5, 8, "preparing")
    assert _lines(caplog) == []  # the bar, not log lines
    assert "preparing" in capsys.readouterr().err


def test_the_engine_and_the_cache_use_it():
    import arkx.data.cache as cache
    from arkx.training import engine

    assert isinstance(engine._progress(False, 3, 0), Progress)
    assert cache.Progress is Progress and not hasattr(cache, "_Progress")
