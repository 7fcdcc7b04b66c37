"""`trapcam report` end to end: read the database once, write the PNGs, taxa.csv and the HTML page."""

from __future__ import annotations

from pathlib import Path

from edge.config import TrapConfig
from edge.export.csvsafe import atomic_write
from edge.report.data import load_report, taxa_csv
from edge.report.html import write_html
from edge.report.plots import write_plots

TAXA_CSV = "taxa.csv"
CAPTIONS = ("Activity per hour of day", "Counts per night, with effort")


def write_report(
    cfg: TrapConfig,
    out_dir: Path | None = None,
    *,
    since: str | None = None,
    until: str | None = None,
    level: str | None = None,
    top: int = 8,
) -> list[Path]:
    """Write report.html, the two PNGs and taxa.csv (default folder <data_dir>/report); returns the paths.

    An empty database or period still gives a page that says so: a quiet night is a result too.
    """
    out = Path(out_dir) if out_dir is not None else cfg.data_dir / "report"
    data = load_report(
        cfg.database_path,
        cfg.site,
        cfg.export,
        since=since,
        until=until,
        level=level,
        device_id=cfg.device_id,
    )
    pngs = write_plots(data, out, top=top)
    csv_path = out / TAXA_CSV
    atomic_write(csv_path, taxa_csv(data))
    html_path = write_html(data, out, list(zip(pngs, CAPTIONS, strict=True)))
    return [html_path, *pngs, csv_path]
