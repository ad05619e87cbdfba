"""metrics.csv: which labels a mean leaves out is written down; a damaged or empty file does not stop a
resume (issue 19 items 14 and 16)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from arkx.evaluation.metrics import multilabel_auc
from arkx.evaluation.reports import MEAN_LABEL, METRIC_COLUMNS, MetricsLog, read_metrics


def _result():
    y = np.array([[1, 0, np.nan], [0, 0, np.nan], [1, 0, np.nan], [0, 0, np.nan]])
    s = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.5], [0.8, 0.2, 0.5], [0.1, 0.4, 0.5]])
    return multilabel_auc(s, y, ("a", "b", "c"))


def _add(log: MetricsLog, step: int = 0) -> None:
    log.add_auc(step=step, round_=0, trained="d", model="teacher", dataset="d", split="val", result=_result())


def test_labels_left_out_of_the_mean_are_named_in_metrics_csv(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    _add(log)
    frame = pd.read_csv(tmp_path / "metrics.csv", keep_default_na=False)
    assert list(frame.columns) == list(METRIC_COLUMNS)
    notes = dict(zip(frame["label"], frame["note"]))
    assert notes["a"] == ""
    assert notes["b"] == "one class only (0 positive, 4 negative)"
    assert notes["c"] == "no labelled image"
    assert notes[MEAN_LABEL] == "mean of 1 of 3 labels; excluded: b, c"
    assert _result().excluded() == {"b": "one class only (0 positive, 4 negative)", "c": "no labelled image"}


@pytest.mark.parametrize("content", ["", ",,,,,,,,,,\n,,,,,,,,,,\n"])
def test_an_empty_metrics_csv_or_rows_of_commas_do_not_stop_a_resume(tmp_path, content):
    (tmp_path / "metrics.csv").write_text(content)
    log = MetricsLog(tmp_path, start_step=3, tensorboard=False)
    _add(log, step=3)
    frame = read_metrics(tmp_path)
    assert list(frame.columns) == list(METRIC_COLUMNS) and set(frame["step"]) == {3}
    set_aside = list(tmp_path.glob("metrics.csv.damaged-*"))
    assert len(set_aside) == (1 if content else 0)  # an empty file is a fresh start, not damage


def test_rows_of_commas_in_a_run_s_metrics_are_dropped_and_good_rows_kept(tmp_path, caplog):
    log = MetricsLog(tmp_path, tensorboard=False)
    _add(log, step=0)
    with open(tmp_path / "metrics.csv", "a") as handle:
        handle.write(",,,,,,,,,,\n")
    good = (tmp_path / "metrics.csv").read_text().splitlines()[:-1]
    with caplog.at_level("WARNING", logger="arkx"):
        MetricsLog(tmp_path, start_step=1, tensorboard=False)
    assert "1 empty row(s) dropped" in caplog.text
    assert (tmp_path / "metrics.csv").read_text().splitlines() == good  # the good rows, byte for byte


@pytest.mark.parametrize("content,why", [("something else\nentirely\n", "missing"),
                                         ('a,b\n1,2\n3,4,5,6\n', "unreadable")])
def test_an_unreadable_metrics_csv_is_set_aside_not_fatal(tmp_path, caplog, content, why):
    (tmp_path / "metrics.csv").write_text(content)
    with caplog.at_level("WARNING", logger="arkx"):
        MetricsLog(tmp_path, start_step=2, tensorboard=False)
    assert "starting a new metrics.csv" in caplog.text and why in caplog.text
    aside = list(tmp_path.glob("metrics.csv.damaged-*"))
    assert len(aside) == 1 and aside[0].read_text() == content
    assert read_metrics(tmp_path).empty


def test_a_metrics_csv_from_before_the_note_column_is_upgraded(tmp_path):
    old = ",".join(METRIC_COLUMNS[:-1]) + "\n0,0,d,teacher,d,val,a,0.5,2,2\n1,0,d,teacher,d,val,a,0.6,2,2\n"
    (tmp_path / "metrics.csv").write_text(old)
    log = MetricsLog(tmp_path, start_step=2, tensorboard=False)  # nothing to drop, a column to add
    _add(log, step=2)
    frame = read_metrics(tmp_path)
    assert list(frame.columns) == list(METRIC_COLUMNS) and list(frame["step"]) == [0, 1, 2, 2, 2, 2]
