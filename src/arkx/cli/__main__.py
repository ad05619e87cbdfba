"""``python -m arkx.cli``: the ``arkx`` command (as the ``arkx`` script runs it)."""

import sys

from . import main

sys.exit(main())
