"""The adapter registry: adapter name -> how to read that provider's folder.

Adding a public dataset is one adapter module that decorates its ``read`` function with
:func:`register`, plus one import line in ``arkx/data/adapters/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from ..records import DatasetFormatError, Records


class AdapterOptions(BaseModel):
    """Base of every adapter's typed options; unknown option names are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: seed of the patient-level split made where the provider ships no split files
    split_seed: int = 0


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    read: Callable[..., Records]
    options: type[AdapterOptions]
    layout: str  # the folder the adapter expects, as a short human-readable listing
    summary: str


_REGISTRY: dict[str, AdapterSpec] = {}


def register(name: str, *, options: type[AdapterOptions] = AdapterOptions, layout: str, summary: str):
    """Decorator: declare ``read(root: Path, options) -> Records`` as the adapter ``name``."""

    def wrap(read: Callable[..., Records]) -> Callable[..., Records]:
        if name in _REGISTRY:
            raise ValueError(f"adapter {name!r} registered twice")
        _REGISTRY[name] = AdapterSpec(name=name, read=read, options=options, layout=layout, summary=summary)
        return read

    return wrap


def adapter_names() -> list[str]:
    return sorted(_REGISTRY)


def get_adapter(name: str) -> AdapterSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown dataset type {name!r}; known types: {', '.join(adapter_names())}") from None


def validate_options(name: str, options: dict[str, Any] | None) -> AdapterOptions:
    """Typed options for adapter ``name``; errors name the offending option."""
    spec = get_adapter(name)
    try:
        return spec.options(**(options or {}))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"options of dataset type {name!r}: {problems}") from None


def read_dataset(name: str, root: str | Path, **options: Any) -> Records:
    """Read one dataset folder with adapter ``name`` (the public entry point)."""
    spec = get_adapter(name)
    opts = validate_options(name, options)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetFormatError(f"{name}: dataset folder {root} does not exist or is not a folder")
    return spec.read(root, opts)
