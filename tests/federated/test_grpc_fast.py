"""The gRPC transport in one process, fast: the real server (TLS, client authentication) and two real Flower
clients over loopback, with stand-in sites that do not train (the slow tests run real sites in processes)."""

from __future__ import annotations

import datetime
import ipaddress
import json
import signal
import socket
import threading

import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from safetensors.torch import load_file

from arkx.federated import serve
from arkx.federated.client import SiteClient
from arkx.federated.run import initial_master, wait_for_server


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certificates(folder):
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it (PEM files)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("arkx test CA")).issuer_name(_name("arkx test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).add_extension(san, critical=False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))


class StandInSite:
    """Answers like a Site; "training" adds ``delta`` to every shared entry. ``examples``: its FedAvg weight."""

    def __init__(self, name, delta, examples):
        self.name, self.delta, self.examples = name, delta, examples
        self.received = []
        self.engine = type("E", (), {"student": type("S", (), {"group_of": staticmethod(lambda k: k.split(".")[0])})})

    def head_info(self):
        return [dict(name=f"own_{self.name}", kind="multilabel", labels=["x"], n=self.examples)]

    def group_weight(self, group):
        return self.examples

    def train_round(self, rnd, master, shared_heads, mu):
        return {k: v + self.delta for k, v in master.items()}

    def receive_master(self, rnd, master):
        self.received.append((rnd, master))
        return {"val": {"student": {f"own_{self.name}": 0.5}}}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tls_and_authenticated_clients_over_loopback_grpc(tmp_path):
    from flwr.client import start_client

    make_certificates(tmp_path)
    keys = {"a": "k" * 32, "b": "q" * 32, "c": "z" * 32}
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    site = {"datasets": [{"type": "shenzhen", "root": str(tmp_path)}]}
    cfg = dict(sites={s: {"config": site} for s in keys}, rounds=2, min_clients=2, wait_for_clients=3,
               join_timeout=60, address=f"127.0.0.1:{free_port()}", out=str(tmp_path / "out"), seed=3,
               model=dict(backbone="test_resnet", projector="linear", projector_dim=8),
               tls=dict(ca=str(tmp_path / "ca.pem"), cert=str(tmp_path / "server.pem"), key=str(tmp_path / "server.key")),
               auth=dict(keys=str(tmp_path / "keys.json")))
    sites = {"a": StandInSite("a", 1.0, 30), "b": StandInSite("b", -2.0, 10), "c": StandInSite("c", 100.0, 50)}
    given = {"a": keys["a"], "b": keys["b"], "c": "wrong" * 8}  # c does not hold its key: refused every round
    root = (tmp_path / "ca.pem").read_bytes()
    def client(name):
        wait_for_server(cfg["address"], 60)
        start_client(server_address=cfg["address"], root_certificates=root, insecure=False,
                     client=SiteClient(name, lambda: sites[name], key=given[name]))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in sites]
    for t in threads:
        t.start()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        strategy = serve(cfg)
    finally:
        for s, h in handlers.items():  # Flower's server installs its own
            signal.signal(s, h)
    for t in threads:
        t.join(timeout=30)
    first = initial_master(strategy.fed)
    master = load_file(str(tmp_path / "out" / "server" / "master.safetensors"))
    step = (1.0 * 30 + -2.0 * 10) / 40  # a and b, weighted by their examples, each round; c never takes part
    floats = [k for k, v in first.items() if v.is_floating_point()]
    assert len(floats) > 10 and master.keys() == first.keys()
    for key in floats:
        torch.testing.assert_close(master[key].double(), first[key].double() + 2 * step, rtol=0, atol=1e-5)
    assert [r["sites"] for r in strategy.history["rounds"]] == [["a", "b"], ["a", "b"]]
    assert [rnd for rnd, _ in sites["a"].received] == [1, 2] and not sites["c"].received
