"""training.log_every: losses stay on the device and are read back every N iterations, not every step.

A non-finite loss is still reported with its dataset, step and the image ids of the very batch that
produced it; with ``on_nonfinite_loss=skip`` the decision precedes the optimizer step, so that mode
reads each loss back (documented) and a bad iteration leaves the weights exactly as they were.
"""

from __future__ import annotations

import logging
import math
import os
import sys

import pytest
import torch

from arkx.training.engine import NonFiniteLoss

from .test_engine import make_engine


def count_item_calls(monkeypatch) -> dict:
    """Count the engine's ``Tensor.item()`` calls (on a GPU each one waits for all queued work).

    Only calls made by arkx code count: the optimizer reads its CPU step counters with ``.item()``,
    which costs no device sync.
    """
    calls = {"n": 0}
    real = torch.Tensor.item

    def item(self):
        caller = sys._getframe(1).f_code.co_filename
        if f"{os.sep}arkx{os.sep}" in caller:
            calls["n"] += 1
        return real(self)

    monkeypatch.setattr(torch.Tensor, "item", item)
    return calls


def test_losses_are_read_back_every_log_every_iterations_not_each_step(tmp_path, tiny_datasets, tiny_heads,
                                                                       monkeypatch, caplog):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, log_every=2, max_iters_per_epoch=3)
    windows = []
    real = eng._read_back

    def read_back(window, step):
        if window:
            windows.append(len(window))
        return real(window, step)

    eng._read_back = read_back
    calls = count_item_calls(monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="arkx.training"):
        loss = eng.train_step(eng.schedule[0])
    assert windows == [2, 1]  # every 2 iterations, and the rest at the end of the dataset epoch
    assert calls["n"] == 1  # the step's mean, once; no read-back per iteration
    means = [r.getMessage() for r in caplog.records if "mean loss" in r.getMessage()]
    assert len(means) == 2 and all("step 0 (alpha)" in m for m in means)
    assert math.isfinite(loss)


def _poison(eng, bad_call: int) -> list:
    """Make the loss of the ``bad_call``-th batch (1-based) NaN; return the rows of every batch."""
    rows_seen = []
    real = eng._batch_loss

    def batch_loss(name, batch, *args, **kwargs):
        loss, rows = real(name, batch, *args, **kwargs)
        rows_seen.append(rows.clone())
        return (loss * float("nan") if len(rows_seen) == bad_call else loss), rows

    eng._batch_loss = batch_loss
    return rows_seen


def test_deferred_check_still_names_the_batch_that_went_non_finite(tmp_path, tiny_datasets, tiny_heads):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, log_every=2, max_iters_per_epoch=3)
    rows_seen = _poison(eng, bad_call=1)  # iteration 1 is NaN, and (NaN weights) so is iteration 2
    with pytest.raises(NonFiniteLoss) as err:
        eng.train_step(eng.schedule[0])
    message = str(err.value)
    assert "non-finite loss (nan) at step 0 (round 0, dataset alpha)" in message
    frame = tiny_datasets["alpha"].records.images
    named = message.split("batch images: ")[1].split(". The last checkpoint")[0].split(", ")
    assert named == [f"alpha:{frame['image_id'].iloc[int(r)]}" for r in rows_seen[0][:8]]
    assert len(rows_seen) == 2  # detected at the read-back after 2 iterations, not at once


def test_skip_mode_checks_before_stepping_so_a_bad_iteration_changes_nothing(tmp_path, tiny_datasets, tiny_heads):
    eng = make_engine(tmp_path, tiny_datasets, tiny_heads, on_nonfinite_loss="skip", log_every=50,
                      max_iters_per_epoch=1)
    before = {k: v.clone() for k, v in eng.student.state_dict().items()}
    state_before = len(eng.optimizer.state)
    _poison(eng, bad_call=1)
    eng.train_step(eng.schedule[0])
    assert eng.skipped_steps == 1
    after = eng.student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert len(eng.optimizer.state) == state_before  # no optimizer step at all
