"""The federation's typed, validated config (YAML on disk, pydantic in memory, like :mod:`arkx.config`).

    sites:                       # site name -> its arkx pretraining config (a path, or the config inline)
      hospital_a: configs/a.yaml
      hospital_b: {config: configs/b.yaml, overrides: ["data.batch_size=16"]}
    rounds: 10                   # federated rounds
    local_rounds: 1              # cyclic rounds each site trains per federated round (E)
    strategy: {name: fedavg}     # or {name: fedprox, mu: 0.01}
    min_clients: 2               # sites a round needs: waited for before it starts, results needed to aggregate
    address: 127.0.0.1:8080      # the server's gRPC address (real processes)
    tls: {ca: certs/ca.pem, cert: certs/server.pem, key: certs/server.key}
    auth: {keys: secrets/sites.json}
    seed: 0                      # the master model's initialisation
    out: runs/federation         # server state in out/server, each simulated site's run in out/sites/<name>

Unknown keys, wrong types and impossible values are one :class:`ConfigError` naming the dotted key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import ArkConfig, ConfigError, ModelConfig, _format_validation_error, apply_overrides, read_yaml_file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SiteEntry(_Strict):
    """One site: an arkx pretraining config (a YAML path, or the config's mapping inline) and overrides."""

    config: Path | dict[str, Any]
    overrides: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _path_shorthand(cls, data: Any) -> Any:
        # `site: path/to/config.yaml` is short for `site: {config: path/to/config.yaml}`
        return {"config": data} if isinstance(data, (str, Path)) else data


class StrategyConfig(_Strict):
    """How the server combines the sites' shared groups: FedAvg (weighted by training samples) or FedProx
    (the same average; each site adds the proximal term ``mu/2·||w - w_master||²`` to its local loss)."""

    name: Literal["fedavg", "fedprox"] = "fedavg"
    mu: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _mu_for_fedprox(self) -> StrategyConfig:
        if self.name == "fedprox" and self.mu <= 0:
            raise ValueError("strategy.mu must be > 0 for fedprox (mu = 0 is fedavg)")
        if self.name == "fedavg" and self.mu != 0:
            raise ValueError("strategy.mu is a fedprox setting; set strategy.name=fedprox or remove mu")
        return self


class TlsConfig(_Strict):
    """PEM files. The server needs ``ca``, ``cert`` and ``key``; a client needs ``ca`` (to check the server)."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls.cert and tls.key go together (the server's certificate and its private key)")
        return self


class AuthConfig(_Strict):
    """Client authentication: each site proves it holds its secret key (HMAC-SHA256 of a fresh challenge)
    before the server sends it the master model or accepts its weights.

    ``keys``: a JSON file ``{site: secret}`` that only the server reads. A client is given its own secret with
    ``arkx federate client CONFIG --site NAME --key FILE`` (in a simulation, every site's from ``keys``)."""

    keys: Path


class FederationConfig(_Strict):
    sites: dict[str, SiteEntry]
    rounds: int = Field(default=10, ge=1)
    local_rounds: int = Field(default=1, ge=1)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    min_clients: int = Field(default=2, ge=1)
    # sites that a round waits for before it starts (default: min_clients); a late site joins the next round
    wait_for_clients: int | None = Field(default=None, ge=1)
    join_timeout: float = Field(default=600.0, gt=0)  # seconds a round waits for wait_for_clients to connect
    round_timeout: float | None = Field(default=None, gt=0)  # seconds a site may train; later = a failure
    round_retries: int = Field(default=2, ge=0)  # a round with fewer than min_clients results is run again
    address: str = "127.0.0.1:8080"
    tls: TlsConfig | None = None
    auth: AuthConfig | None = None
    # the shared model (backbone, projector): every site's `model` section must equal it; unset = the sites'
    model: ModelConfig | None = None
    seed: int = 0
    out: Path = Path("runs/federation")

    @field_validator("sites")
    @classmethod
    def _some_sites(cls, value: dict[str, SiteEntry]) -> dict[str, SiteEntry]:
        if not value:
            raise ValueError("at least one site is required")
        bad = [name for name in value if not name or not all(c.isalnum() or c in "-_." for c in name)]
        if bad:
            raise ValueError(f"site names must be letters, digits, '-', '_' or '.' (they name folders): {bad}")
        return value

    @field_validator("address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @model_validator(mode="after")
    def _enough_sites(self) -> FederationConfig:
        if self.min_clients > len(self.sites):
            raise ValueError(f"min_clients ({self.min_clients}) is more than the {len(self.sites)} configured sites")
        if self.wait_for_clients is not None and not self.min_clients <= self.wait_for_clients <= len(self.sites):
            raise ValueError(f"wait_for_clients ({self.wait_for_clients}) must be between min_clients "
                             f"({self.min_clients}) and the number of sites ({len(self.sites)})")
        return self

    @property
    def clients_to_wait_for(self) -> int:
        return self.wait_for_clients or self.min_clients

    @property
    def total_local_rounds(self) -> int:
        """Cyclic rounds of a site's whole run: its LR, EMA and consistency schedules span the federation."""
        return self.rounds * self.local_rounds

    def server_folder(self) -> Path:
        return Path(self.out) / "server"

    def site_folder(self, name: str) -> Path:
        return Path(self.out) / "sites" / name


def load_federation_config(path: str | Path | dict, overrides: list[str] | None = None) -> FederationConfig:
    """Read and validate a federation config (a YAML path or a mapping); relative paths in it (sites' config
    files, tls, auth, out) are resolved against the file's folder (or the current directory for a mapping)."""
    if isinstance(path, dict):
        raw, base = path, Path.cwd()
        where = "federation config"
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"federation config {path} not found")
        raw, base = read_yaml_file(path), path.parent
        where = str(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    try:
        cfg = FederationConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{where}: {_format_validation_error(err)}") from None
    return _absolute(cfg, base.resolve())


def _absolute(cfg: FederationConfig, base: Path) -> FederationConfig:
    def fix(p: Path | None) -> Path | None:
        if p is None:
            return None
        p = Path(p).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    cfg = cfg.model_copy(deep=True)
    cfg.out = fix(cfg.out)
    for entry in cfg.sites.values():
        if not isinstance(entry.config, dict):
            entry.config = fix(entry.config)
    if cfg.tls is not None:
        cfg.tls = TlsConfig(ca=fix(cfg.tls.ca), cert=fix(cfg.tls.cert), key=fix(cfg.tls.key))
    if cfg.auth is not None:
        cfg.auth = AuthConfig(keys=fix(cfg.auth.keys))
    return cfg


def site_config(fed: FederationConfig, name: str) -> ArkConfig:
    """Site ``name``'s arkx config as the federation runs it: its run folder is ``out/sites/<name>`` (unless
    the site's config sets ``run.out`` to something else than the default), its cyclic rounds are
    ``rounds × local_rounds`` (so its LR, EMA and consistency schedules span the whole federation), and its
    ``model`` section must equal the federation's (the shared groups must have the same shapes everywhere)."""
    from ..config import RunConfig, config_from_dict, load_config, with_absolute_paths

    if name not in fed.sites:
        raise ConfigError(f"unknown site {name!r}; the federation's sites are {', '.join(fed.sites)}")
    entry = fed.sites[name]
    forced = [f"training.rounds={fed.total_local_rounds}"]
    where = f"sites.{name}"
    try:
        if isinstance(entry.config, dict):
            raw = apply_overrides(entry.config, list(entry.overrides) + forced)
            cfg = config_from_dict(raw)
        else:
            cfg = load_config(entry.config, list(entry.overrides) + forced)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if cfg.run.out == RunConfig().out:  # the default: each site's run lives inside the federation's folder
        cfg.run.out = fed.site_folder(name)
    cfg = with_absolute_paths(cfg)
    if fed.model is not None and cfg.model != fed.model:
        diff = _differing_keys(fed.model.model_dump(mode="json"), cfg.model.model_dump(mode="json"))
        raise ConfigError(f"{where}: model differs from the federation's model at {', '.join(diff)} (every site "
                          "trains the same backbone and projector)")
    return cfg


def shared_model(fed: FederationConfig) -> ModelConfig:
    """The federation's model section, or the sites' (which must then all agree)."""
    if fed.model is not None:
        return fed.model
    models = {name: site_config(fed, name).model for name in fed.sites}
    first_name, first = next(iter(models.items()))
    for name, model in models.items():
        if model != first:
            diff = _differing_keys(first.model_dump(mode="json"), model.model_dump(mode="json"))
            raise ConfigError(f"sites.{name}: model differs from site {first_name!r} at {', '.join(diff)}; every "
                              "site trains the same backbone and projector (set `model:` in the federation config)")
    return first


def _differing_keys(a: dict, b: dict, prefix: str = "model") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differing_keys(va, vb, f"{prefix}.{k}")
        elif va != vb:
            out.append(f"{prefix}.{k}")
    return out
