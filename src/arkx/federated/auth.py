"""Client authentication: a site proves it holds its secret key without sending it.

Before the server sends a site the master model or accepts its weights, it sends a fresh random challenge
(in Flower's ``get_properties`` message); the site answers ``HMAC-SHA256(key, site + challenge)``. The
server holds ``{site: key}`` (``auth.keys``), each site only its own key. Over TLS this also keeps the
challenge and the answer private; without TLS it still keeps out a process that does not hold the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from pathlib import Path

from ..config import ConfigError
from ..errors import ArkxFileNotFoundError

MIN_KEY_CHARS = 16


def new_challenge() -> str:
    return secrets.token_hex(16)


def answer(key: str, site: str, challenge: str) -> str:
    return hmac.new(key.encode(), f"{site}\n{challenge}".encode(), hashlib.sha256).hexdigest()


def verify(keys: dict[str, str], site: str, challenge: str, given: str) -> bool:
    key = keys.get(site)
    return key is not None and hmac.compare_digest(answer(key, site, challenge), str(given))


def _checked(key: str, where: str) -> str:
    key = key.strip()
    if len(key) < MIN_KEY_CHARS:
        raise ConfigError(f"{where}: a site key needs at least {MIN_KEY_CHARS} characters (e.g. `python -c "
                          "\"import secrets; print(secrets.token_hex(32))\"`)")
    return key


def read_keys(path: Path) -> dict[str, str]:
    """The server's ``{site: key}`` JSON file."""
    path = Path(path)
    if not path.is_file():
        raise ArkxFileNotFoundError(f"auth.keys: {path} not found (a JSON file {{site: secret key}})")
    try:
        keys = json.loads(path.read_text())
    except ValueError as err:
        raise ConfigError(f"auth.keys: {path} is not JSON ({err})") from None
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ConfigError(f"auth.keys: {path} must be a JSON object {{site: secret key (a string)}}")
    return {site: _checked(key, f"auth.keys: {path}: site {site!r}") for site, key in keys.items()}


def read_key(path: Path) -> str:
    """A site's own key file (the key on its first line)."""
    path = Path(path)
    if not path.is_file():
        raise ArkxFileNotFoundError(f"--key: {path} not found")
    return _checked(path.read_text(), f"--key: {path}")
