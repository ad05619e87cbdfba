"""Helpers shared by the command modules of the ``arkx`` command line: ``_examples`` (the epilog of a
subcommand's help), ``_parse_options`` (``--option KEY=VALUE`` values read as YAML) and small functions that
add the argparse options several model commands repeat. Imports nothing from the command modules.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _examples(*lines: str) -> dict:
    """add_parser keyword arguments for a subcommand whose help ends with examples."""
    return dict(epilog=("examples:\n" if len(lines) > 1 else "example:\n") + "\n".join(f"  {line}" for line in lines),
                formatter_class=argparse.RawDescriptionHelpFormatter)


def _parse_options(items: list[str]) -> dict:
    import yaml

    from ..config import load_yaml_text
    from ..errors import ArkxValueError

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ArkxValueError(f"--option {item!r}: expected KEY=VALUE")
        try:
            options[key.strip()] = load_yaml_text(value, f"--option {key}")
        except yaml.YAMLError as err:
            raise ArkxValueError(f"--option {item!r}: the value is not valid YAML "
                                 f"({' '.join(str(err).split())[:120]}); quote it") from None
    return options



def _add_dataset_options(p, what: str = "dataset") -> None:
    """``--type``, ``--root`` and ``--option``: the dataset folder a model command reads, and its adapter."""
    p.add_argument("--type", required=True, dest="type_", help=f"{what} adapter")
    p.add_argument("--root", required=True, type=Path, help=f"{what} folder")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")


def _add_which(p) -> None:
    """``--which``: the teacher or the student of a trained model."""
    p.add_argument("--which", choices=("teacher", "student"), default="teacher")


def _add_device(p) -> None:
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def _add_batch_size_and_device(p, batch_size: int) -> None:
    p.add_argument("--batch-size", type=int, default=batch_size)
    _add_device(p)
