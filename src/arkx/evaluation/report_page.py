"""The report page's parts and its HTML: a :class:`Section` per part, rendered into one self-contained page
(inline CSS, images as base64 ``data:`` URIs, no script, no other resource), written atomically."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Section:
    """One section of the page: a title, figures (PNG paths), and text: an HTML ``body`` built by the code
    (already escaped) and ``notes`` (plain text, escaped on output) saying what is missing and why."""

    key: str
    title: str
    intro: str = ""
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (png, caption)
    body: str = ""
    notes: list[str] = field(default_factory=list)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2430;
background:#f6f7f9;line-height:1.45}
header{background:#1d2b3a;color:#fff;padding:18px 32px}header h1{margin:0 0 6px;font-size:22px}
header p{margin:2px 0;font-size:13px;color:#c9d3de}
nav{padding:8px 32px;background:#e8ecf1;font-size:13px}nav a{margin-right:14px;color:#1f5fa8;text-decoration:none}
main{padding:8px 32px 40px;max-width:1400px}
section{background:#fff;border:1px solid #dde2e8;border-radius:6px;margin:18px 0;padding:14px 20px}
h2{font-size:18px;margin:4px 0 8px}.intro{color:#4a5563;font-size:14px;margin:0 0 10px}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs figure{margin:12px 0;max-width:100%}
.figs.multi figure{flex:1 1 520px;max-width:680px}
figure img{max-width:100%;height:auto;border:1px solid #eef0f3}
figcaption{font-size:13px;color:#4a5563}
.note{background:#fff7e0;border-left:4px solid #e0a800;padding:6px 10px;font-size:13px;margin:8px 0}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde2e8;padding:3px 8px;text-align:left}th{background:#eef1f5}
td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f3f5f8;padding:10px;font-size:12px;overflow:auto;max-height:520px}
details summary{cursor:pointer;font-size:13px;color:#1f5fa8;margin-top:6px}
"""


def render_page(run_dir: Path, sections: list[Section], summary: dict) -> str:
    """The whole page as one string (no external resource: images inline, CSS inline, no script)."""
    from .. import __version__

    facts = [f"run folder {run_dir.resolve()}",
             f"written {_dt.datetime.now().astimezone().isoformat(timespec='seconds')} by arkx {__version__}"]
    if summary:
        facts.append(f"steps {summary.get('steps_done', '?')} of {summary.get('total_steps', '?')}"
                     f"{' (finished)' if summary.get('finished') else ' (not finished)'}; training time "
                     f"{float(summary.get('train_seconds', 0.0)):.0f} s; images seen {summary.get('images_seen', '?')}")
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>arkx report: {html.escape(run_dir.name)}</title><style>{_CSS}</style></head><body>",
             f"<header><h1>arkx report: {html.escape(run_dir.name)}</h1>",
             *(f"<p>{html.escape(fact)}</p>" for fact in facts), "</header>",
             "<nav>" + "".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections) + "</nav><main>"]
    parts += [_render_section(s) for s in sections]
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _render_section(section: Section) -> str:
    parts = [f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>']
    if section.intro:
        parts.append(f'<p class="intro">{html.escape(section.intro)}</p>')
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in section.notes]
    if section.figures:  # several figures (ROC per head) sit side by side where the window is wide enough
        parts.append(f'<div class="figs{" multi" if len(section.figures) > 1 else ""}">')
        for path, caption in section.figures:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(section.title)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</div>")
    if section.body:
        parts.append(section.body)
    parts.append("</section>")
    return "\n".join(parts)


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for value in record:
            numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            text = "" if value is None or (np.isscalar(value) and pd.isna(value)) else str(value)
            cells.append(f'<td class="num">{html.escape(text)}</td>' if numeric or _looks_numeric(text)
                         else f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(value) -> str:
    value = pd.to_numeric(value, errors="coerce")
    return "n/a" if pd.isna(value) else f"{float(value):.4f}"


def _safe(name: str) -> str:
    """A file-name-safe form of a head name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:240] or type(err).__name__


def write_text_atomically(path: Path, text: str) -> None:
    """A reader (or a browser refreshing) never sees half a page."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a report is as readable as any file written
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
