"""The server's pieces without training: who may join, which heads are averaged, the weighted average, TLS."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from flwr.common import Code, GetPropertiesRes, Status
from flwr.server.client_manager import SimpleClientManager

from arkx.config import ConfigError
from arkx.errors import ArkxFileNotFoundError
from arkx.federated import auth
from arkx.federated.config import load_federation_config
from arkx.federated.run import InProcessClientProxy, server_certificates
from arkx.federated.server import FederatedArk, aggregate_updates
from arkx.federated.weights import load_master, save_master

KEY_A, KEY_B = "a" * 32, "b" * 32


class FakeSite:
    """Answers get_properties as a site would; ``key``: the secret it answers the challenge with."""

    def __init__(self, name, heads, key=None):
        self.name, self.heads, self.key = name, heads, key

    def get_properties(self, ins):
        props = {"site": self.name, "examples": 10, "heads": json.dumps(self.heads)}
        if self.key is not None:
            props["answer"] = auth.answer(self.key, self.name, ins.config["challenge"])
        return GetPropertiesRes(status=Status(code=Code.OK, message=""), properties=props)


def head(name, labels=("x", "y")):
    return dict(name=name, kind="multilabel", labels=list(labels), n=5)


def fed(tmp_path, **extra):
    site = {"datasets": [{"type": "shenzhen", "root": str(tmp_path)}]}
    raw = dict(sites={"a": {"config": site}, "b": {"config": site}, "c": {"config": site}}, min_clients=1,
               join_timeout=1, out=str(tmp_path / "out"), **extra)
    return load_federation_config(raw)


def manager(*sites):
    m = SimpleClientManager()
    for i, s in enumerate(sites):
        m.register(InProcessClientProxy(f"cid{i}", s))
    return m


def test_only_sites_that_prove_their_key_take_part(tmp_path, caplog):
    strategy = FederatedArk(fed(tmp_path), {}, keys={"a": KEY_A, "b": KEY_B})
    m = manager(FakeSite("a", [head("h")], KEY_A), FakeSite("b", [head("h")], KEY_A),  # b answers with a's key
                FakeSite("c", [head("h")], None), FakeSite("zz", [head("h")], KEY_A))
    with caplog.at_level(logging.WARNING, logger="arkx.federated"):
        chosen = strategy.configure_fit(1, strategy.master_parameters(), m)
    assert [c.cid for c, _ in chosen] == ["cid0"]
    assert "failed authentication as site 'b'" in caplog.text
    assert "failed authentication as site 'c'" in caplog.text
    assert "site 'zz', which is not in the federation" in caplog.text


def test_without_auth_every_configured_site_joins(tmp_path):
    strategy = FederatedArk(fed(tmp_path), {})
    m = manager(FakeSite("a", [head("h")]), FakeSite("b", [head("h")]), FakeSite("c", [head("h")]))
    assert len(strategy.configure_fit(1, strategy.master_parameters(), m)) == 3


def test_heads_averaged_are_those_at_several_sites_with_the_same_labels(tmp_path, caplog):
    strategy = FederatedArk(fed(tmp_path), {})
    m = manager(FakeSite("a", [head("shared"), head("own_a"), head("clash")]),
                FakeSite("b", [head("shared"), head("clash", ("p", "q"))]), FakeSite("c", [head("own_c")]))
    with caplog.at_level(logging.WARNING, logger="arkx.federated"):
        chosen = strategy.configure_fit(1, strategy.master_parameters(), m)
    assert json.loads(chosen[0][1].config["shared_heads"]) == ["shared"]
    assert "head 'clash' is at sites ['a', 'b'] with different labels" in caplog.text


def test_fedprox_sends_mu_fedavg_does_not(tmp_path):
    m = manager(FakeSite("a", []))
    prox = FederatedArk(fed(tmp_path, strategy={"name": "fedprox", "mu": 0.25}), {})
    assert prox.configure_fit(1, prox.master_parameters(), m)[0][1].config["proximal_mu"] == 0.25
    avg = FederatedArk(fed(tmp_path), {})
    assert "proximal_mu" not in avg.configure_fit(1, avg.master_parameters(), m)[0][1].config


def test_aggregate_weights_each_group_by_its_own_counts_and_keeps_unsent_keys():
    def update(bb, h, w_bb, w_h):
        state = {"backbone.w": torch.tensor([bb]), "heads.h.w": torch.tensor([h])}
        return dict(state=state, groups=["backbone", "heads/h"], weights={"backbone": w_bb, "heads/h": w_h})

    master = {"backbone.w": torch.tensor([0.0]), "heads.h.w": torch.tensor([0.0]), "heads.g.w": torch.tensor([5.0])}
    new = aggregate_updates({"b": update(4.0, 10.0, 3, 1), "a": update(1.0, 2.0, 1, 3)}, master)
    assert new["backbone.w"].item() == pytest.approx((4 * 3 + 1 * 1) / 4)
    assert new["heads.h.w"].item() == pytest.approx((10 * 1 + 2 * 3) / 4)
    assert new["heads.g.w"].item() == 5.0  # sent by no site: the master's value stays


def test_master_checkpoint_round_trip_and_a_torn_file_is_a_clear_error(tmp_path):
    state = {"backbone.w": torch.arange(4.0)}
    save_master(tmp_path, state, 3, {"rounds": []})
    loaded, rnd = load_master(tmp_path)
    assert rnd == 3 and torch.equal(loaded["backbone.w"], state["backbone.w"])
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    (tmp_path / "master.safetensors").write_bytes(b"garbage")
    with pytest.raises(Exception, match="not a readable master checkpoint"):
        load_master(tmp_path)


def test_server_refuses_missing_or_bad_certificates(tmp_path):
    with pytest.raises(ArkxFileNotFoundError, match=r"tls\.cert: .*server\.pem not found"):
        (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
        server_certificates(fed(tmp_path, tls={"ca": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "server.pem"),
                                               "key": str(tmp_path / "server.key")}))
    with pytest.raises(ConfigError, match="the server needs tls.cert and tls.key"):
        server_certificates(fed(tmp_path, tls={"ca": str(tmp_path / "ca.pem")}))
    (tmp_path / "server.pem").write_text("not pem")
    (tmp_path / "server.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match=r"tls\.cert: .*is not a PEM file"):
        server_certificates(fed(tmp_path, tls={"ca": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "server.pem"),
                                               "key": str(tmp_path / "server.key")}))
    assert server_certificates(fed(tmp_path)) is None  # no tls: plain gRPC, with a warning


def test_key_files_are_checked(tmp_path):
    (tmp_path / "keys.json").write_text(json.dumps({"a": "short"}))
    with pytest.raises(ConfigError, match="at least 16 characters"):
        auth.read_keys(tmp_path / "keys.json")
    with pytest.raises(ArkxFileNotFoundError, match="--key: .*nope.key not found"):
        auth.read_key(tmp_path / "nope.key")
