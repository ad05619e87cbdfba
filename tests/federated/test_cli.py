"""`arkx federate`: argument checks and one-line errors (no training)."""

from __future__ import annotations

import pytest
import yaml

from arkx.cli import main


def config_file(tmp_path, **extra):
    site = {"datasets": [{"type": "shenzhen", "root": str(tmp_path)}]}
    raw = dict(sites={"a": {"config": site}, "b": {"config": site}}, out=str(tmp_path / "out"), **extra)
    path = tmp_path / "fed.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("argv, message", [
    (["federate", "server"], "expected `arkx federate CONFIG`"),
    (["federate", "a.yaml", "b.yaml"], "expected `arkx federate CONFIG`"),
    (["federate", "client", "CONFIG"], "needs --site NAME"),
    (["federate", "server", "CONFIG", "--site", "a"], "--site and --key are options of `arkx federate client`"),
    (["federate", "client", "CONFIG", "--site", "a", "--resume"], "--resume is a server option"),
])
def test_argument_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_server_refuses_a_missing_certificate_before_listening(tmp_path, capsys):
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    path = config_file(tmp_path, tls={"ca": "ca.pem", "cert": "server.pem", "key": "server.key"})
    assert main(["federate", "server", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tls.cert:" in err and "server.pem not found" in err


def test_a_client_of_an_authenticated_federation_needs_its_key(tmp_path, capsys):
    path = config_file(tmp_path, auth={"keys": "keys.json"})
    assert main(["federate", "client", str(path), "--site", "a"]) == 2
    assert "give site 'a' its key with --key FILE" in capsys.readouterr().err


def test_config_typos_are_named_with_their_path(tmp_path, capsys):
    path = config_file(tmp_path, roundz=3)
    assert main(["federate", str(path)]) == 2
    assert "roundz: unknown key" in capsys.readouterr().err
