"""The report's two PNG plots: activity per local hour of day, and counts per night with effort.

matplotlib is an optional extra (`trapcam[report]`), so it is imported only inside these
functions, never when `edge` is imported (the trap's loop must not pay for it). Figures are
built with the object API and the Agg canvas, not pyplot: no global state, no display needed.
Taxon names come from model files, so they are escaped for matplotlib's mathtext ('$').
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from edge.errors import ReportError
from edge.export.csvsafe import atomic_write
from edge.report.data import HOURS, ReportData, top_taxa

OTHER = "other"
UNSURE_COLOUR = "#9e9e9e"
UNKNOWN_COLOUR = "#6d4c41"  # insects unlike every taxon of the model (open set)
OTHER_COLOUR = "#5d4037"
ACTIVITY_PNG = "activity_per_hour.png"
NIGHTS_PNG = "counts_per_night.png"
SIZE_IN = (10.0, 5.0)
DPI = 100


def _figure() -> Any:
    """A new matplotlib Figure on the Agg canvas, or a one-line error saying how to get matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError("the report needs matplotlib: pip install 'trapcam[report]'") from None
    fig = Figure(figsize=SIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _text(label: str) -> str:
    """A label as literal text for matplotlib (no mathtext from a '$' in a model's label)."""
    return label.replace("$", r"\$")


def _series(
    data: ReportData, top: int, values: dict[str, list[int]]
) -> list[tuple[str, list[int], str | None]]:
    """(label, values, colour) per plotted series: top taxa, then 'other', then 'unknown' and
    'unsure' (the rows without a level)."""
    keep = top_taxa(data, top)
    length = len(next(iter(values.values()))) if values else 0
    other = [0] * length
    nameless: dict[str, list[int]] = {}
    for t in data.taxa:
        if t.level is None:
            nameless[t.taxon] = values.get(t.taxon, [0] * length)
        elif t.taxon not in keep:
            other = [a + b for a, b in zip(other, values.get(t.taxon, [0] * length), strict=True)]
    out: list[tuple[str, list[int], str | None]] = [
        (name, values.get(name, [0] * length), None) for name in keep
    ]
    if any(other):
        out.append((OTHER, other, OTHER_COLOUR))
    for name, colour in (("unknown", UNKNOWN_COLOUR), ("unsure", UNSURE_COLOUR)):
        if any(nameless.get(name, [])):
            out.append((name, nameless[name], colour))
    return out


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no finished tracks {what}", ha="center", va="center", transform=ax.transAxes)


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write(path, buf.getvalue())
    return path


def plot_activity_per_hour(data: ReportData, path: Path, *, top: int = 8) -> Path:
    """Stacked bars: finished tracks per local hour of first sighting, per taxon (top N + other).

    The hour axis starts at the export day's start (`data.hour_order`), so a night is one block.
    """
    fig = _figure()
    ax = fig.add_subplot()
    order = data.hour_order
    positions = list(range(HOURS))
    by_position = {name: [values[h] for h in order] for name, values in data.hourly.items()}
    bottom = [0] * HOURS
    series = _series(data, top, by_position)
    for label, values, colour in series:
        ax.bar(positions, values, bottom=bottom, label=_text(label), color=colour, width=0.85)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    if not series:
        _no_data(ax, "in this period")
    ax.set_xticks(positions, [str(h) for h in order])
    ax.set_xlim(-0.6, HOURS - 0.4)
    ax.set_xlabel(f"hour of day ({data.timezone}, first sighting; the night from {data.day_starts_at})")
    ax.set_ylabel("insects (finished tracks)")
    ax.yaxis.get_major_locator().set_params(integer=True)  # whole insects
    ax.set_title(_text(f"Activity per hour - {data.device_id}, {data.period_text()}"))
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return _save(fig, Path(path))


def plot_counts_per_night(data: ReportData, path: Path, *, top: int = 8) -> Path:
    """Stacked bars of finished tracks per night (top N + other), effort hours on a second axis."""
    fig = _figure()
    ax = fig.add_subplot()
    xs = list(range(len(data.nights)))
    per_taxon: dict[str, list[int]] = {
        t.taxon: [n.counts.get(t.taxon, 0) for n in data.nights] for t in data.taxa
    }
    bottom = [0] * len(xs)
    series = _series(data, top, per_taxon) if xs else []
    for label, values, colour in series:
        ax.bar(xs, values, bottom=bottom, label=_text(label), color=colour, width=0.8)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]
    if not series:
        _no_data(ax, "in this period")
    ax.set_ylabel("insects (finished tracks)")
    ax.yaxis.get_major_locator().set_params(integer=True)  # whole insects
    ax.set_xlabel(f"night (starts {data.day_starts_at} local time, named by its evening)")
    ax.set_title(_text(f"Counts per night - {data.device_id}, {data.period_text()}"))
    if xs:
        step = max(1, len(xs) // 20)
        ax.set_xticks(xs[::step], [n.night.isoformat() for n in data.nights][::step], rotation=45, ha="right")
        effort_ax = ax.twinx()
        effort_ax.plot(xs, [n.effort_hours for n in data.nights], color="black", marker="o", label="effort")
        effort_ax.set_ylabel("effort (hours watched)")
        effort_ax.set_ylim(bottom=0)
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize="small")
    return _save(fig, Path(path))


def write_plots(data: ReportData, out_dir: Path, *, top: int = 8) -> list[Path]:
    """Both PNGs into out_dir; returns their paths."""
    out_dir = Path(out_dir)
    return [
        plot_activity_per_hour(data, out_dir / ACTIVITY_PNG, top=top),
        plot_counts_per_night(data, out_dir / NIGHTS_PNG, top=top),
    ]
