"""Entry points: a simulation on one machine, and the real server and client processes.

- :func:`simulate` (``arkx federate CONFIG``): every site in this process, trained one after the other,
  driven by Flower's server loop and client manager through in-process client proxies
  (:class:`InProcessClientProxy`). flwr 1.42's own simulation engine needs Ray (``flwr[simulation]``),
  a heavy dependency that a CPU-only or offline machine may not have, so arkx does not use it.
- :func:`serve` (``arkx federate server CONFIG``): the server on ``address`` (Flower's gRPC transport,
  ``flwr.server.start_server``), TLS with ``tls``, client authentication with ``auth``.
- :func:`join` (``arkx federate client CONFIG --site NAME``): one site's process (``flwr.client.start_client``).

Each party keeps its state on disk and picks it up again when restarted: the server resumes after the last
checkpointed round (``resume=True``), a site continues from its run folder and rejoins the next round.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..config import ConfigError
from ..errors import ArkxFileNotFoundError, ArkxRuntimeError
from . import auth
from ._flower import (
    ClientProxy,
    DisconnectRes,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    GetPropertiesIns,
    GetPropertiesRes,
    ReconnectIns,
    ServerConfig,
    SimpleClientManager,
    start_client,
    start_server,
)
from .client import SiteClient
from .config import FederationConfig, load_federation_config, shared_model, site_config
from .server import FederatedArk, FederationServer
from .site import Site
from .weights import MASTER_FILE, SHARED_GROUPS, load_master, selected_state

log = logging.getLogger("arkx.federated")


class InProcessClientProxy(ClientProxy):
    """A Flower client proxy that calls a :class:`SiteClient` in this process (the simulation's transport)."""

    def __init__(self, cid: str, client: SiteClient):
        super().__init__(cid)
        self.client = client

    def get_properties(self, ins: GetPropertiesIns, timeout, group_id) -> GetPropertiesRes:
        return self.client.get_properties(ins)

    def get_parameters(self, ins: GetParametersIns, timeout, group_id) -> GetParametersRes:
        return self.client.get_parameters(ins)

    def fit(self, ins: FitIns, timeout, group_id) -> FitRes:
        return self.client.fit(ins)

    def evaluate(self, ins: EvaluateIns, timeout, group_id) -> EvaluateRes:
        return self.client.evaluate(ins)

    def reconnect(self, ins: ReconnectIns, timeout, group_id) -> DisconnectRes:
        return DisconnectRes(reason="")


def as_federation(config: FederationConfig | str | Path | dict, overrides: list[str] | None = None
                  ) -> FederationConfig:
    if isinstance(config, FederationConfig):
        return config if not overrides else load_federation_config(config.model_dump(mode="json"), overrides)
    return load_federation_config(config, overrides)


def initial_master(fed: FederationConfig) -> dict[str, torch.Tensor]:
    """The master model before round 1: the shared groups of the federation's model, seeded with ``seed``."""
    from ..models.ark import build_model

    torch.manual_seed(fed.seed)
    return selected_state(build_model(shared_model(fed), []), SHARED_GROUPS)


def _strategy(fed: FederationConfig, resume: bool, keys: dict[str, str] | None) -> FederatedArk:
    folder = fed.server_folder()
    found = load_master(folder)
    if found is not None and not resume:
        raise ConfigError(f"{folder} already holds a federation ({MASTER_FILE}); resume it with --resume "
                          "(resume=True) or choose another `out`")
    if found is None and resume:
        raise ArkxFileNotFoundError(f"nothing to resume in {folder}: no {MASTER_FILE}")
    if found is None:
        return FederatedArk(fed, initial_master(fed), 0, keys)
    state, rounds_done = found
    log.info("resuming from %s after round %d", folder / MASTER_FILE, rounds_done)
    return FederatedArk(fed, state, rounds_done, keys)


def simulate(config: FederationConfig | str | Path | dict, *, overrides: list[str] | None = None,
             resume: bool = False, progress: bool = False) -> FederatedArk:
    """Run the whole federation in this process (the sites train one after the other); returns the strategy
    (its ``master``, ``history``). ``resume``: continue after the last checkpointed round."""
    from ..training.runfolder import RunLock

    fed = as_federation(config, overrides)
    if not resume:
        busy = [n for n in fed.sites if (site_config(fed, n).run.out / "checkpoints" / "last.pt").exists()]
        if busy:
            raise ConfigError(f"site run folder(s) of {busy} already hold a run; resume the federation with "
                              "--resume or choose another `out`")
    keys = auth.read_keys(fed.auth.keys) if fed.auth is not None else None
    strategy = _strategy(fed, resume, keys)
    manager = SimpleClientManager()
    for name in fed.sites:
        client = make_client(fed, name, key=keys.get(name) if keys else None, progress=progress)
        manager.register(InProcessClientProxy(name, client))
    server = FederationServer(client_manager=manager, strategy=strategy)
    server.set_max_workers(1)  # one site at a time: training uses the process's global RNG and every core
    fed.server_folder().mkdir(parents=True, exist_ok=True)
    with RunLock(fed.server_folder()):
        server.fit(fed.rounds, fed.round_timeout)
    return strategy


def make_client(fed: FederationConfig, name: str, key: str | None = None, progress: bool = False) -> SiteClient:
    cfg = site_config(fed, name)  # checked now: a bad site config fails before any training
    return SiteClient(name, lambda: Site(name, cfg, fed.local_rounds, progress=progress), key=key)


def server_certificates(fed: FederationConfig) -> tuple[bytes, bytes, bytes] | None:
    """``(ca, cert, key)`` PEM bytes for the server, or None without ``tls`` (with a warning): each file must
    exist and hold PEM data, else a one-line error naming the key and the file."""
    if fed.tls is None:
        log.warning("the server runs WITHOUT TLS (no `tls` in the config): traffic is readable on the network; "
                    "use this on loopback or a trusted network only")
        return None
    if fed.tls.cert is None:
        raise ConfigError("tls: the server needs tls.cert and tls.key (its certificate and private key) besides "
                          "tls.ca")
    return tuple(_pem(getattr(fed.tls, k), f"tls.{k}") for k in ("ca", "cert", "key"))  # type: ignore[return-value]


def _pem(path: Path, key: str) -> bytes:
    if not Path(path).is_file():
        raise ArkxFileNotFoundError(f"{key}: {path} not found")
    data = Path(path).read_bytes()
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{key}: {path} is not a PEM file (no -----BEGIN line)")
    return data


def serve(config: FederationConfig | str | Path | dict, *, overrides: list[str] | None = None,
          resume: bool = False) -> FederatedArk:
    """The federation's server process (blocks until the last round is done)."""
    from ..training.runfolder import RunLock

    fed = as_federation(config, overrides)
    certificates = server_certificates(fed)
    keys = auth.read_keys(fed.auth.keys) if fed.auth is not None else None
    if keys is not None:
        unknown = sorted(set(fed.sites) - set(keys))
        if unknown:
            log.warning("auth.keys has no key for site(s) %s: they cannot join", unknown)
    strategy = _strategy(fed, resume, keys)
    server = FederationServer(client_manager=SimpleClientManager(), strategy=strategy)
    fed.server_folder().mkdir(parents=True, exist_ok=True)
    with RunLock(fed.server_folder()):
        start_server(server_address=fed.address, server=server,
                     config=ServerConfig(num_rounds=fed.rounds, round_timeout=fed.round_timeout),
                     certificates=certificates)
    return strategy


def wait_for_server(address: str, timeout: float) -> None:
    """Wait until something listens on ``address`` (Flower's legacy client gives up at once when the server is
    not up yet, so a site started before the server would fail)."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=5):
                return
        except OSError as err:
            if time.monotonic() > deadline:
                raise ArkxRuntimeError(f"no federation server at {address} after {timeout:.0f} s ({err.strerror or err}); "
                                       "start `arkx federate server` first, or raise join_timeout") from None
            time.sleep(0.5)


def join(config: FederationConfig | str | Path | dict, site: str, *, overrides: list[str] | None = None,
         key_file: Path | None = None, progress: bool = False) -> None:
    """Site ``site``'s client process: connects to ``address`` (retrying for ``join_timeout`` seconds), trains
    when the server asks, keeps its state in its run folder (a restarted client continues from it)."""
    from ..training.runfolder import RunLock

    fed = as_federation(config, overrides)
    if fed.auth is not None and key_file is None:
        raise ConfigError(f"the federation requires authentication (auth in the config): give site {site!r} its "
                          "key with --key FILE")
    key = auth.read_key(key_file) if key_file is not None else None
    root = None
    if fed.tls is not None:
        root = _pem(fed.tls.ca, "tls.ca")
    cfg = site_config(fed, site)
    cfg.run.out.mkdir(parents=True, exist_ok=True)
    with RunLock(cfg.run.out):
        client = SiteClient(site, lambda: Site(site, cfg, fed.local_rounds, progress=progress), key=key)
        _ = client.site  # prepare the datasets (and restore the site's state) before connecting
        wait_for_server(fed.address, fed.join_timeout)
        start_client(server_address=fed.address, client=client, root_certificates=root, insecure=fed.tls is None,
                     max_wait_time=fed.join_timeout)
