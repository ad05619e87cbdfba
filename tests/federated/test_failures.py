"""A site that dies mid-round does not stop the federation; it rejoins the next round."""

from __future__ import annotations

import json
import logging

from arkx.federated import simulate
from arkx.training.engine import Engine

from .conftest import federation_dict


def die_once_at(site: str):
    """An Engine.train_step that raises in the first step ``site`` trains (its process dying mid-round)."""
    original = Engine.train_step
    died = []

    def train_step(self, step, *args, **kwargs):
        if self.out.name == site and not died:
            died.append(step.index)
            raise RuntimeError(f"site {site} killed mid-round")
        return original(self, step, *args, **kwargs)

    return train_step, died


def history(out):
    return json.loads((out / "server" / "master.json").read_text())["rounds"]


def test_a_site_failing_mid_round_is_logged_the_round_completes_and_it_rejoins(fed_roots, tmp_path, caplog,
                                                                                monkeypatch):
    train_step, died = die_once_at("c")
    monkeypatch.setattr(Engine, "train_step", train_step)
    out = tmp_path / "fed"
    with caplog.at_level(logging.WARNING, logger="arkx.federated"):
        simulate(federation_dict(fed_roots, out, sites=("b", "c"), min_clients=1))
    assert died == [0]
    rounds = history(out)
    assert [(r["round"], r["sites"], r["missing"]) for r in rounds] == [(1, ["b"], ["c"]), (2, ["b", "c"], [])]
    assert "no result from site(s) ['c']" in caplog.text
    assert "killed mid-round" in caplog.text  # the failure itself is logged


def test_a_round_with_fewer_than_min_clients_results_is_run_again(fed_roots, tmp_path, caplog, monkeypatch):
    train_step, _ = die_once_at("c")
    monkeypatch.setattr(Engine, "train_step", train_step)
    out = tmp_path / "fed"
    with caplog.at_level(logging.INFO, logger="arkx.federated"):
        simulate(federation_dict(fed_roots, out, sites=("b", "c"), min_clients=2, rounds=1))
    assert [(r["round"], r["sites"]) for r in history(out)] == [(1, ["b", "c"])]
    assert "fewer than min_clients=2: not aggregated" in caplog.text
    assert "[round 1 of 1, attempt 2]" in caplog.text
