"""One self-contained HTML page: the per-taxon table, the plots inlined, and how to read them.

Self-contained so it can be mailed or opened offline in the field: no external CSS, JS or
image files (the PNGs are embedded as base64). Every text from the database is HTML-escaped:
taxon names come from model files and a device id from a config, neither is trusted markup.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path
from zoneinfo import ZoneInfo

from edge.export.csvsafe import atomic_write
from edge.export.daily import local_iso
from edge.report.data import ReportData

REPORT_HTML = "report.html"
_CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 70em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.unsure td { color: #666; font-style: italic; }
img { max-width: 100%; height: auto; display: block; margin: 1em 0; }
.note { background: #f4f4f4; padding: 0.6em 1em; border-left: 4px solid #888; }
"""


def _cell(text: str, num: bool = False) -> str:
    return f'<td class="num">{escape(text)}</td>' if num else f"<td>{escape(text)}</td>"


def taxa_table(data: ReportData) -> str:
    """The per-taxon table as an HTML <table> (escaped), one <tr> per row of taxa.csv."""
    zone = ZoneInfo(data.timezone)
    head = "".join(
        f"<th>{escape(h)}</th>"
        for h in ("Taxon", "Level", "Count", "First seen", "Last seen", "Mean confidence", "Nights seen")
    )
    rows = []
    for t in data.taxa:
        cls = ' class="unsure"' if t.level is None else ""
        rows.append(
            f"<tr{cls}>"
            + _cell(t.taxon)
            + _cell(t.level or "-")
            + _cell(str(t.count), num=True)
            + _cell(local_iso(t.first_seen, zone) if t.first_seen else "")
            + _cell(local_iso(t.last_seen, zone) if t.last_seen else "")
            + _cell(f"{t.mean_confidence:.2f}" if t.mean_confidence is not None else "", num=True)
            + _cell(str(t.nights_seen), num=True)
            + "</tr>"
        )
    total = _cell("all") + _cell("") + _cell(str(data.total_tracks), num=True) + _cell("") * 4
    rows.append(f'<tr class="total">{total}</tr>')
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def _img(png: Path, alt: str) -> str:
    b64 = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{b64}">'


def render_html(data: ReportData, pngs: Sequence[tuple[Path, str]]) -> str:
    """The page's text; `pngs` are (file, caption) pairs, embedded in that order."""
    title = f"Insect report - {data.device_id}, {data.period_text()}"
    level = f"at level <b>{escape(data.level)}</b>" if data.level else "(no track has a taxon)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>Device <b>{escape(data.device_id)}</b>; times in {escape(data.timezone)}; a night runs from "
        f"{escape(data.day_starts_at)} local time to the next day's, named by its evening. "
        f"{data.total_tracks} insects in {len(data.nights)} nights, "
        f"{data.effort_hours:.1f} hours watched.</p>",
    ]
    if data.empty:
        parts.append(
            '<p class="empty"><b>No finished tracks in this period</b> '
            + ("(the database holds no data yet)." if data.first_night is None else "(nothing was counted).")
            + "</p>"
        )
    parts += [
        '<div class="note"><h2>How to read this</h2><ul>',
        "<li>Counts are <b>finished tracks</b>: each insect followed across frames is counted once, "
        "however long it sat in view; never frames.</li>",
        "<li><b>unsure</b> means the classifier abstained at every level (below its confidence "
        "threshold): an insect was there, but the model would not name it.</li>",
        f"<li>Taxa are shown {level}; a track named only to a coarser level keeps that name "
        "(the Level column says which).</li>",
        "<li>Mean confidence is the mean of the tracks' own vote scores (0 to 1). Effort is the hours "
        "the trap really watched; compare nights by counts per effort hour.</li>",
        "</ul></div>",
        "<h2>Per taxon</h2>",
        taxa_table(data),
    ]
    for png, caption in pngs:
        parts += [f"<h2>{escape(caption)}</h2>", _img(png, caption)]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(data: ReportData, out_dir: Path, pngs: Sequence[tuple[Path, str]]) -> Path:
    """Write <out_dir>/report.html atomically; returns its path."""
    path = Path(out_dir) / REPORT_HTML
    atomic_write(path, render_html(data, pngs).encode("utf-8"))
    return path
