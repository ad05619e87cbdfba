"""``python -m arkx``: the ``arkx`` command, also as ``torchrun --nproc-per-node N -m arkx pretrain CONFIG``."""

import sys

from .cli import main

sys.exit(main())
