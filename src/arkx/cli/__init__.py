"""The ``arkx`` command line, a thin layer over :mod:`arkx.api`.

Expected failures (:class:`arkx.errors.ArkxError`: a config typo, a dataset folder in the wrong layout, a
missing file, a refused resume) print one line and exit with status 2; ``--debug`` shows the traceback.
Anything else is a bug and keeps its traceback. Ctrl-C during a run prints where to resume (status 130).

This package holds the parser, the command table and the error handling; the commands live in
:mod:`arkx.cli.data` (synth, datasets, prepare, cache), :mod:`arkx.cli.train` (demo, pretrain) and
:mod:`arkx.cli.reuse` (embed, probe, finetune, zeroshot, predict, info, export).
"""

from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from ._common import _examples, _parse_options  # noqa: F401  (re-exported: arkx.cli._examples, ...)
from .data import (
    _add_cache,
    _add_datasets,
    _add_prepare,
    _add_synth,
    _cmd_cache,
    _cmd_datasets,
    _cmd_prepare,
    _cmd_synth,
    _repair_line,  # noqa: F401  (re-exported)
    _verify_cache,  # noqa: F401  (re-exported)
)
from .reuse import (
    _add_embed,
    _add_export,
    _add_finetune,
    _add_info,
    _add_predict,
    _add_probe,
    _add_zeroshot,
    _cmd_embed,
    _cmd_export,
    _cmd_finetune,
    _cmd_info,
    _cmd_predict,
    _cmd_probe,
    _cmd_zeroshot,
)
from .train import _add_demo, _add_pretrain, _cmd_demo, _cmd_pretrain
from .evaluate import _add_evaluate, _cmd_evaluate
from .report import _add_report, _cmd_report
from .federate import _add_federate, _cmd_federate
from .experiment import _add_experiment, _cmd_experiment

__all__ = ["COMMANDS", "DESCRIPTION", "EPILOG", "build_parser", "main"]

DESCRIPTION = """\
arkx pretrains one chest X-ray foundation model on many differently labelled public datasets
(Ark, Ark+, Foundation X): each dataset keeps its own labels and head, one backbone learns from all."""

EPILOG = """\
first steps:
  arkx demo                                  synthetic data, a tiny CPU run, the comparison table
  arkx datasets list                         the dataset types and the folder layout each expects
  arkx datasets inspect DIR --type chexpert  what arkx reads from your copy of a dataset
  arkx prepare CONFIG.yaml                   decode the images once into the cache (optional)
  arkx pretrain CONFIG.yaml                  train; the run folder is run.out in the config
  arkx pretrain --resume RUN_DIR             continue an interrupted run

Run `arkx COMMAND --help` for a command's options and an example."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arkx", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"arkx {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_synth, _add_demo, _add_pretrain, _add_prepare, _add_datasets, _add_cache,
                _add_embed, _add_probe, _add_info, _add_export, _add_zeroshot,
                _add_predict, _add_finetune, _add_evaluate, _add_report, _add_federate, _add_experiment):
        add(sub)
    return parser


COMMANDS = {"synth": _cmd_synth, "demo": _cmd_demo, "pretrain": _cmd_pretrain, "prepare": _cmd_prepare,
            "datasets": _cmd_datasets, "cache": _cmd_cache,
            "embed": _cmd_embed, "probe": _cmd_probe, "info": _cmd_info, "export": _cmd_export,
            "zeroshot": _cmd_zeroshot, "predict": _cmd_predict,
            "finetune": _cmd_finetune, "evaluate": _cmd_evaluate, "report": _cmd_report,
            "federate": _cmd_federate, "experiment": _cmd_experiment}


def _configure_logging(quiet: bool) -> None:
    """Console: INFO (WARNING with --quiet). The level is the console handler's, not the loggers', so a
    run's log file (``run.log``) still receives INFO records with --quiet."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.quiet)
    from ..errors import ArkxError

    try:
        return COMMANDS[args.command](args)
    except ArkxError as err:  # bad input or a refused operation; any other exception is a bug: traceback
        if args.debug:
            raise
        print(f"arkx {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        if args.debug:
            raise
        print(f"arkx {args.command}: {err or 'interrupted'}", file=sys.stderr)
        return 130

