"""The adapter registry: adapter name -> how to read that provider's folder.

Adding a public dataset is one adapter module that decorates its ``read`` function with
:func:`register`, plus one import line in ``arkx/data/adapters/__init__.py``. An adapter declares its
default uncertain-label policy (``default_uncertain``); a config that leaves ``uncertain`` unset uses it.

Conventions every adapter follows (shared helpers in ``_common``): provider files are read tolerantly
(BOM, CRLF, header spaces, trailing commas, folder / extension case, OS artefacts ignored); metadata
training does not need (sex, age, view) is optional with one warning; labels, ids and paths are strict;
paths read from label files stay inside the dataset folder (``path_in_base``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from ...errors import ArkxKeyError, ArkxValueError
from ..records import DatasetFormatError, Records


class AdapterOptions(BaseModel):
    """Base of every adapter's typed options; unknown option names are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: seed of the patient-level split made where the provider ships no split files
    split_seed: int = 0


#: the uncertain-label policies a dataset can default to (arkx.config.UncertainPolicy)
UNCERTAIN_POLICIES = ("ones", "zeros", "ignore", "lsr-ones", "lsr-zeros")


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    read: Callable[..., Records]
    options: type[AdapterOptions]
    layout: str  # the folder the adapter expects, as a short human-readable listing
    summary: str
    #: policy for uncertain (-1) labels when the config does not name one (METHOD.md: CheXpert LSR-ones,
    #: MIMIC ones); harmless for datasets without uncertain labels
    default_uncertain: str = "ones"


_REGISTRY: dict[str, AdapterSpec] = {}


def register(name: str, *, options: type[AdapterOptions] = AdapterOptions, layout: str, summary: str,
             default_uncertain: str = "ones"):
    """Decorator: declare ``read(root: Path, options) -> Records`` as the adapter ``name``.

    ``default_uncertain``: the uncertain-label policy used when a config leaves ``uncertain`` unset."""
    if default_uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"adapter {name!r}: unknown default_uncertain {default_uncertain!r}; "
                         f"expected one of {UNCERTAIN_POLICIES}")

    def wrap(read: Callable[..., Records]) -> Callable[..., Records]:
        if name in _REGISTRY:
            raise ValueError(f"adapter {name!r} registered twice")
        _REGISTRY[name] = AdapterSpec(name=name, read=read, options=options, layout=layout, summary=summary,
                                      default_uncertain=default_uncertain)
        return read

    return wrap


def adapter_names() -> list[str]:
    return sorted(_REGISTRY)


def get_adapter(name: str) -> AdapterSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ArkxKeyError(f"unknown dataset type {name!r}; known types: {', '.join(adapter_names())}") from None


def default_uncertain(name: str) -> str:
    """The uncertain-label policy adapter ``name`` declares (what ``uncertain: null`` in a config means)."""
    return get_adapter(name).default_uncertain


def validate_options(name: str, options: dict[str, Any] | None) -> AdapterOptions:
    """Typed options for adapter ``name``; errors name the offending option."""
    spec = get_adapter(name)
    try:
        return spec.options(**(options or {}))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ArkxValueError(f"options of dataset type {name!r}: {problems}") from None


def read_dataset(name: str, root: str | Path, **options: Any) -> Records:
    """Read one dataset folder with adapter ``name`` (the public entry point)."""
    spec = get_adapter(name)
    opts = validate_options(name, options)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetFormatError(f"{name}: dataset folder {root} does not exist or is not a folder")
    return spec.read(root, opts)
