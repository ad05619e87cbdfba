"""The server checkpoints the master every round and a killed federation resumes from the last round."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from arkx.config import ConfigError
from arkx.errors import ArkxFileNotFoundError
from arkx.federated import simulate
from arkx.federated.server import FederatedArk

from .conftest import federation_dict


def test_killed_after_round_1_resumes_at_round_2_with_the_uninterrupted_result(fed_roots, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    simulate(federation_dict(fed_roots, whole, sites=("b", "c")))

    killed = tmp_path / "killed"
    original = FederatedArk.checkpoint

    def checkpoint_then_die(self):
        original(self)
        if self.rounds_done == 1:
            raise KeyboardInterrupt("killed after round 1's checkpoint")

    with monkeypatch.context() as mp:
        mp.setattr(FederatedArk, "checkpoint", checkpoint_then_die)
        with pytest.raises(KeyboardInterrupt):
            simulate(federation_dict(fed_roots, killed, sites=("b", "c")))
    assert json.loads((killed / "server" / "master.json").read_text())["rounds_done"] == 1

    with pytest.raises(ConfigError, match="--resume"):
        simulate(federation_dict(fed_roots, killed, sites=("b", "c")))
    trained = []
    original_fit_round = __import__("arkx.federated.server", fromlist=["FederationServer"]).FederationServer.fit_round

    def fit_round(self, server_round, timeout):
        trained.append(server_round)
        return original_fit_round(self, server_round, timeout)

    monkeypatch.setattr("arkx.federated.server.FederationServer.fit_round", fit_round)
    strategy = simulate(federation_dict(fed_roots, killed, sites=("b", "c")), resume=True)
    assert trained == [2] and strategy.rounds_done == 2
    a, b = load_file(str(whole / "server" / "master.safetensors")), load_file(str(killed / "server" / "master.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_with_nothing_to_resume_is_a_clear_error(fed_roots, tmp_path):
    with pytest.raises(ArkxFileNotFoundError, match="nothing to resume"):
        simulate(federation_dict(fed_roots, tmp_path / "none", sites=("c",), min_clients=1), resume=True)
