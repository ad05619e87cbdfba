"""The real thing: `arkx federate server` and `arkx federate client` processes talking over loopback gRPC."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from .conftest import federation_dict

ARKX = [sys.executable, "-m", "arkx.cli", "--quiet"]
HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(roots, tmp_path, **extra) -> Path:
    cfg = federation_dict(roots, tmp_path / "fed", sites=("b", "c"), address=f"127.0.0.1:{free_port()}",
                          join_timeout=120, **extra)
    path = tmp_path / "federation.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(args, log: Path, prefix=ARKX) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(prefix + args, stdout=open(log, "a"), stderr=subprocess.STDOUT, env=env)


def wait_for(predicate, timeout: float, what: str, procs=()):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        for p in procs:
            if p.poll() is not None and p.returncode != 0:
                raise AssertionError(f"{what}: a process exited with {p.returncode}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def rounds_of(tmp_path) -> list[dict]:
    path = tmp_path / "fed" / "server" / "master.json"
    try:
        return json.loads(path.read_text())["rounds"]
    except (OSError, ValueError, KeyError):
        return []


def finish(procs, timeout=300):
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.slow
def test_server_and_two_clients_over_loopback(fed_roots, tmp_path):
    config = write_config(fed_roots, tmp_path)
    server = start(["federate", "server", str(config)], tmp_path / "server.log")
    clients = [start(["federate", "client", str(config), "--site", s], tmp_path / f"{s}.log") for s in ("b", "c")]
    assert finish([server, *clients]) == [0, 0, 0], (tmp_path / "server.log").read_text()[-3000:]
    rounds = rounds_of(tmp_path)
    assert [(r["round"], r["sites"]) for r in rounds] == [(1, ["b", "c"]), (2, ["b", "c"])]
    assert "federation done: 2 round(s)" in (tmp_path / "server.log").read_text()
    master = load_file(str(tmp_path / "fed" / "server" / "master.safetensors"))
    for site in ("b", "c"):  # the master went back to each site, which keeps it in its run folder
        student = torch.load(tmp_path / "fed" / "sites" / site / "checkpoints" / "last.pt", weights_only=True)["student"]
        assert all(torch.equal(student[k], v) for k, v in master.items() if k in student), site
        assert json.loads((tmp_path / "fed" / "sites" / site / "federated.json").read_text())["phase"] == "synced"


@pytest.mark.slow
def test_a_client_killed_mid_round_does_not_stop_the_round_and_rejoins(fed_roots, tmp_path):
    # round 1 needs one result; round 2 waits for both sites, so the restarted client is in it
    config = write_config(fed_roots, tmp_path, min_clients=1, wait_for_clients=2)
    marker = tmp_path / "c-training"
    server = start(["federate", "server", str(config)], tmp_path / "server.log")
    b = start(["federate", "client", str(config), "--site", "b"], tmp_path / "b.log")
    c = start(["federate", "client", str(config), "--site", "c"], tmp_path / "c.log",
              prefix=[sys.executable, str(HERE / "slow_client.py"), str(marker), "--", "--quiet"])
    wait_for(marker.exists, 240, "site c to start training", [server, b])
    c.send_signal(signal.SIGKILL)
    c.wait()
    wait_for(lambda: len(rounds_of(tmp_path)) >= 1, 240, "round 1 without site c", [server, b])
    c = start(["federate", "client", str(config), "--site", "c"], tmp_path / "c.log")
    assert finish([server, b, c]) == [0, 0, 0], (tmp_path / "server.log").read_text()[-3000:]
    rounds = rounds_of(tmp_path)
    assert [(r["round"], r["sites"], r["missing"]) for r in rounds] == [(1, ["b"], ["c"]), (2, ["b", "c"], [])]
    assert "no result from site(s) ['c']" in (tmp_path / "server.log").read_text()


@pytest.mark.slow
def test_a_killed_server_resumes_from_its_last_round(fed_roots, tmp_path):
    config = write_config(fed_roots, tmp_path, rounds=3)
    server = start(["federate", "server", str(config)], tmp_path / "server.log")
    clients = [start(["federate", "client", str(config), "--site", s], tmp_path / f"{s}.log") for s in ("b", "c")]
    wait_for(lambda: len(rounds_of(tmp_path)) >= 1, 240, "round 1", [server, *clients])
    server.send_signal(signal.SIGKILL)
    server.wait()
    for p in clients:  # the clients lose their server; whatever they do, they are restarted below
        p.kill()
        p.wait()
    before = rounds_of(tmp_path)
    refused = subprocess.run(ARKX + ["federate", "server", str(config)], capture_output=True, text=True, timeout=120,
                             check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    server = start(["federate", "server", str(config), "--resume"], tmp_path / "server.log")
    clients = [start(["federate", "client", str(config), "--site", s], tmp_path / f"{s}.log") for s in ("b", "c")]
    assert finish([server, *clients]) == [0, 0, 0], (tmp_path / "server.log").read_text()[-3000:]
    after = rounds_of(tmp_path)
    assert [r["round"] for r in after] == [1, 2, 3]
    assert after[: len(before)] == before  # the rounds done before the kill were not run again
