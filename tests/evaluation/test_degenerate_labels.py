"""Degenerate labels are said once, at the start of a run (issue 19 item 16): a head with no known label
trains on the consistency loss alone; a label with one class in an evaluated split leaves the mean."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

import arkx
from arkx.evaluation.metrics import excluded_labels

from tests.reliability.test_resume_changes import csv_dataset, csv_entry, run_config


def test_excluded_labels_before_prediction():
    y = np.array([[1, 0, np.nan], [0, 0, np.nan], [-1, 0, 1]])
    assert excluded_labels("multilabel", y, ("a", "b", "c")) == {
        "b": "one class only (0 positive, 3 negative)", "c": "one class only (1 positive, 0 negative)"}
    one_hot = np.array([[1, 0], [1, 0], [np.nan, np.nan]])
    assert excluded_labels("multiclass", one_hot, ("x", "y")) == {  # one-vs-rest: one class seen leaves both
        "x": "one class only (2 positive, 0 negative)", "y": "one class only (0 positive, 2 negative)"}


def test_a_run_warns_once_about_unlearnable_and_unscorable_labels(tmp_path, caplog):
    unlabelled = csv_dataset(tmp_path / "blank", seed=1)
    frame = pd.read_csv(unlabelled / "labels.csv")
    frame[["Alpha", "Beta"]] = np.nan
    frame.to_csv(unlabelled / "labels.csv", index=False)
    one_class = csv_dataset(tmp_path / "oneclass", seed=2)
    frame = pd.read_csv(one_class / "labels.csv")
    frame.loc[frame["split"] == "val", "Beta"] = 0
    frame.to_csv(one_class / "labels.csv", index=False)
    cfg = run_config(tmp_path / "run", [csv_entry(unlabelled, "blank"), csv_entry(one_class, "oneclass")], rounds=1,
                     eval=dict(every="round", splits=["val"], models=["teacher"], test_at_end=False))
    with caplog.at_level(logging.WARNING, logger="arkx"):
        arkx.pretrain(cfg, progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    blank = [w for w in warnings if "'blank'" in w]
    assert any("no training image has a known label (Alpha, Beta): its head learns from the consistency loss "
               "alone" in w for w in blank)
    assert sum("'blank', split val: no label has both classes" in w for w in warnings) == 1
    assert sum("'oneclass', split val: 1 of 2 label(s) left out of the mean AUC (Beta: one class only "
               "(0 positive, 8 negative))" in w for w in warnings) == 1
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv", keep_default_na=False)
    mean = metrics[(metrics["dataset"] == "oneclass") & (metrics["label"] == "__mean__")]
    assert list(mean["note"]) == ["mean of 1 of 2 labels; excluded: Beta"]
    run_log = (tmp_path / "run" / "run.log").read_text()
    assert "left out of the mean AUC" in run_log
