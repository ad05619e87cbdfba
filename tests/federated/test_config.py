"""The federation config: typed, validated, unknown keys named by their dotted path."""

from __future__ import annotations

import pytest
import yaml

from arkx.config import ConfigError
from arkx.federated.config import load_federation_config, shared_model, site_config

from .conftest import federation_dict, site_dict


def test_unknown_keys_are_rejected_with_their_dotted_path(fed_roots, tmp_path):
    raw = federation_dict(fed_roots, tmp_path / "f")
    raw["strategy"] = {"name": "fedprox", "mu": 0.1, "muu": 1}
    with pytest.raises(ConfigError, match=r"strategy\.muu: unknown key"):
        load_federation_config(raw)
    raw = federation_dict(fed_roots, tmp_path / "f", tls={"ca": "ca.pem", "certt": "x"})
    with pytest.raises(ConfigError, match=r"tls\.certt: unknown key"):
        load_federation_config(raw)


@pytest.mark.parametrize("change, message", [
    ({"strategy": {"name": "fedprox"}}, "mu must be > 0 for fedprox"),
    ({"strategy": {"name": "fedavg", "mu": 0.1}}, "mu is a fedprox setting"),
    ({"min_clients": 4}, "min_clients \\(4\\) is more than the 3 configured sites"),
    ({"address": "localhost"}, "expected HOST:PORT"),
    ({"rounds": 0}, "rounds: Input should be greater than or equal to 1"),
    ({"tls": {"ca": "ca.pem", "cert": "s.pem"}}, "tls.cert and tls.key go together"),
    ({"sites": {}}, "at least one site"),
])
def test_impossible_values_are_rejected(fed_roots, tmp_path, change, message):
    raw = {**federation_dict(fed_roots, tmp_path / "f"), **change}
    with pytest.raises(ConfigError, match=message):
        load_federation_config(raw)


def test_a_site_is_an_arkx_config_file_or_inline_with_the_federation_s_rounds(fed_roots, tmp_path):
    site_file = tmp_path / "b.yaml"
    site_file.write_text(yaml.safe_dump(site_dict(fed_roots, "b", tmp_path / "cache")))
    raw = federation_dict(fed_roots, tmp_path / "f", rounds=3)
    raw["local_rounds"] = 2
    raw["sites"]["b"] = "b.yaml"  # relative to the federation file
    fed_file = tmp_path / "fed.yaml"
    fed_file.write_text(yaml.safe_dump(raw))
    fed = load_federation_config(fed_file)
    b, c = site_config(fed, "b"), site_config(fed, "c")
    assert b.training.rounds == c.training.rounds == 6  # rounds × local_rounds: one schedule over the federation
    assert b.run.out == tmp_path / "f" / "sites" / "b"
    assert [d.type for d in b.datasets] == ["nih14", "shenzhen"]


def test_site_config_errors_name_the_site(fed_roots, tmp_path):
    raw = federation_dict(fed_roots, tmp_path / "f")
    raw["sites"]["c"]["config"]["training"]["lrr"] = 1
    with pytest.raises(ConfigError, match=r"(?s)sites\.c: .*training\.lrr: unknown key"):
        site_config(load_federation_config(raw), "c")


def test_every_site_must_train_the_same_model(fed_roots, tmp_path):
    raw = federation_dict(fed_roots, tmp_path / "f")
    raw["sites"]["b"]["config"]["model"]["projector_dim"] = 32
    fed = load_federation_config(raw)
    with pytest.raises(ConfigError, match=r"sites\.b: model differs .* at model\.projector_dim"):
        shared_model(fed)
    raw["model"] = dict(raw["sites"]["a"]["config"]["model"])
    with pytest.raises(ConfigError, match=r"sites\.b: model differs from the federation's model at model\.projector_dim"):
        site_config(load_federation_config(raw), "b")
