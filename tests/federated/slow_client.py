"""Test harness: ``python slow_client.py MARKER -- ARKX ARGS``: the arkx CLI, in which the first training step
touches MARKER and then sleeps, so a test can kill this client process in the middle of a round."""

import sys
import time
from pathlib import Path

from arkx.cli import main
from arkx.training.engine import Engine

marker = Path(sys.argv[1])
original = Engine.train_step


def train_step(self, step, *args, **kwargs):
    marker.write_text(str(step.index))
    time.sleep(600)
    return original(self, step, *args, **kwargs)


Engine.train_step = train_step
sys.exit(main(sys.argv[3:]))
