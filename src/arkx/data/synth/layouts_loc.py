"""Synthetic writers for more official layouts (filled in by the dataset work of issue 3)."""

from __future__ import annotations

#: adapter name -> writer(folder, rng, n, size) -> dataset root
WRITERS: dict = {}
