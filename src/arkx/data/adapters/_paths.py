"""Where adapters look for files: folder scans that ignore what operating systems leave behind
(``._*`` AppleDouble files, ``__MACOSX/``, ``.DS_Store``, ``Thumbs.db`` ...), case-insensitive fixed
names, and paths read from label files checked to stay inside the dataset folder."""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Iterable, Iterator

from ..records import DatasetFormatError

# ------------------------------------------------------------------------- folder scans

#: files operating systems leave in folders; never data (``._*`` AppleDouble files are matched by prefix)
OS_JUNK_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
OS_JUNK_DIRS = frozenset({"__macosx", ".spotlight-v100", ".trashes", ".fseventsd"})


def is_os_junk(name: str) -> bool:
    """True for macOS AppleDouble ``._NAME`` files, ``__MACOSX/`` and ``.DS_Store`` / ``Thumbs.db`` & co."""
    low = name.lower()
    return name.startswith("._") or low in OS_JUNK_FILES or low in OS_JUNK_DIRS


def list_dir(folder: Path) -> list[Path]:
    """Sorted entries of ``folder`` without OS artefacts (:func:`is_os_junk`)."""
    return sorted(p for p in folder.iterdir() if not is_os_junk(p.name))


def walk_files(folder: Path) -> Iterator[Path]:
    """Every file under ``folder`` (sorted, depth first) without OS artefacts or their folders."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_os_junk(d))
        for name in sorted(filenames):
            if not is_os_junk(name):
                yield Path(dirpath, name)


def child(parent: Path, name: str) -> Path:
    """``parent / name``, or its case-insensitive match (``Data`` for ``data``, ``x.PNG`` for ``x.png``).

    Exact spelling wins; without any match ``parent / name`` is returned, so error messages name the
    spelling the layout documents. ``name`` may hold several ``/``-separated parts.
    """
    out = parent
    for part in Path(name).parts:
        exact = out / part
        if exact.exists() or not out.is_dir():
            out = exact
            continue
        low = part.lower()
        out = next((p for p in sorted(out.iterdir()) if p.name.lower() == low and not is_os_junk(p.name)), exact)
    return out


# ------------------------------------------------------------------------- paths read from label files


def path_in_base(base: Path, raw: str, *, dataset: str, source: Path, where: str, column: str) -> str:
    """A path read from a label file, checked to stay inside ``base``; returned relative to ``base``.

    ``raw`` relative: returned unchanged when it stays inside ``base`` after ``..`` is collapsed.
    ``raw`` absolute: accepted only when it lies inside ``base`` (returned relative to it). Anything
    else is a DatasetFormatError naming ``source``, ``where`` (e.g. ``row 7``), ``column`` and the path.

    The check is lexical: symlinks are not followed. A symlink inside the dataset folder was put there
    by whoever owns the folder (who could as well have copied the files in), and following it would
    refuse the common ``images -> /big/disk/images`` layout; what is refused is a label file steering
    reads outside the folder it describes.
    """
    text = str(raw)
    if not text.startswith(("/", "\\")) and ".." not in text:
        return text  # fast path: the common case cannot climb out
    posix = text.replace("\\", "/")
    if posixpath.isabs(posix):
        rel = _relative_to(posix, base)
        if rel is not None:
            return rel
    else:
        norm = posixpath.normpath(posix)
        if norm != ".." and not norm.startswith("../"):
            return text
    raise DatasetFormatError(
        f"{dataset}: {source} {where} column {column!r}: path {text!r} points outside {base}; paths in label "
        f"files must stay inside the dataset folder (for images kept elsewhere, name their folder with the "
        f"adapter's image_root / images_root option where it has one)")


def _relative_to(posix_abs: str, base: Path) -> str | None:
    target = posixpath.normpath(posix_abs)
    for anchor in {os.path.abspath(base), os.path.realpath(base)}:
        anchor = anchor.replace(os.sep, "/")
        if target == anchor:
            return "."
        if target.startswith(anchor.rstrip("/") + "/"):
            return target[len(anchor.rstrip("/")) + 1:]
    return None


def paths_in_base(base: Path, raws: Iterable[object], *, dataset: str, source: Path, column: str,
                  first_row: int = 2, unit: str = "row") -> list[str]:
    """:func:`path_in_base` for a column of paths; ``first_row`` numbers the first value (CSV data: 2).

    ``unit`` names a position: ``"row"`` -> ``row 7``; a JSON list such as ``"images[]"`` -> ``images[7]``."""
    def where(i: int) -> str:
        return f"{unit[:-2]}[{i}]" if unit.endswith("[]") else f"{unit} {i}"

    return [path_in_base(base, str(r), dataset=dataset, source=source, where=where(i), column=column)
            for i, r in enumerate(raws, start=first_row)]
