"""Reading config YAML safely, and the error every config problem raises.

Every arkx config (and every YAML value arkx reads: overrides, ``--option`` values, label maps) goes
through :func:`load_yaml_text`: ``yaml.SafeLoader`` tags only, a key given twice in one mapping is refused
(YAML would silently keep the last), and a document whose aliases expand to more than
:data:`MAX_EXPANDED_NODES` nodes (a "billion laughs" bomb) is refused before it is built.
:func:`read_yaml_file` reads a file so that every problem (a folder, a missing file, not UTF-8, not YAML)
is a one-line :class:`ConfigError` naming the file. :mod:`arkx.config` re-exports these names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ArkxValueError


class ConfigError(ArkxValueError):
    """A config that cannot be used; the message names the key path and what was expected."""


#: most nodes a config may expand to once aliases are followed; real configs have a few hundred, while a
#: nested-alias "billion laughs" file of a few hundred bytes expands to billions when it is written back
MAX_EXPANDED_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (YAML would let the last one win
    silently) and a document whose aliases expand to more than :data:`MAX_EXPANDED_NODES` nodes."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:  # ``<<: *defaults`` merges, and explicit keys may override it
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key; the base class reports it
                    continue
                if first is not None:
                    raise ConfigError(f"{self.name}: line {line}: key {key!r} repeats the key of line {first} "
                                      "(YAML would silently keep only the last one)")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node, self.name)
        return node


def _check_expansion(root, source: str) -> None:
    """Refuse a node graph whose aliases expand to too many nodes (an alias bomb). Counts with memoised
    sizes per node, so the check costs the distinct nodes, not the expansion."""
    sizes: dict[int, int] = {}

    def size(node, depth: int = 0) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > 200:
            raise ConfigError(f"{source}: nested more than 200 levels deep")
        sizes[key] = 1  # a cycle (a recursive alias) counts once instead of looping
        children = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        total = 1 + sum(size(child, depth + 1) for child in children)
        sizes[key] = total
        if total > MAX_EXPANDED_NODES:
            raise ConfigError(f"{source}: the YAML expands to more than {MAX_EXPANDED_NODES} values through its "
                              "aliases (&anchor / *alias); a config never needs that many, refusing")
        return total

    size(root)


def load_yaml_text(text: str, source: str = "<text>") -> Any:
    """Parse YAML the way every arkx config is read: safe tags only, no repeated keys, bounded aliases."""
    loader = _ConfigLoader(text)
    loader.name = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml_file(path: str | Path) -> Any:
    """Read a YAML config file; every problem is a one-line :class:`ConfigError` naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a config file; give the YAML file itself"
                          + (f" (e.g. {path / 'config.yaml'})" if (path / "config.yaml").is_file() else ""))
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
                          "save the config as UTF-8") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        return load_yaml_text(text, str(path))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
