"""`trapcam report`: aggregates, PNGs and the HTML page from a real database filled through Database.

Expected numbers are computed here from the fixture table by plain arithmetic (Berlin is UTC+2 in
July; a night starts at 12:00 local, i.e. 10:00Z), independently of the report's own zone logic.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

import matplotlib  # noqa: F401
import pytest
from helpers import fill_db, utc
from PIL import Image

from edge.cli import main
from edge.config import ExportConfig, SiteConfig, load_config
from edge.errors import ExportError, ReportError, StorageError
from edge.report import load_report, write_report
from edge.report.data import taxa_csv
from edge.report.html import render_html
from edge.report.plots import DPI, SIZE_IN
from edge.store.db import Database
from edge.store.schema import RunInfo

ROOT = Path(__file__).resolve().parents[1]
SITE = SiteConfig(name="Meadow", latitude=52.52, longitude=13.4, timezone="Europe/Berlin")
EXPORT = ExportConfig(day_starts_at="12:00")
OFFSET = timedelta(hours=2)  # CEST
EVIL = "<script>alert(1)</script>"


def lep(species: str, family: str = "Noctuidae") -> dict[str, str]:
    return {"species": species, "family": family, "order": "Lepidoptera"}


# (run, first_utc, status, level, lineage, score); nights of 10 and 11 July 2026
Track = tuple[int, str, str, str | None, dict[str, str] | None, float | None]
TRACKS: list[Track] = [
    (1, "2026-07-10T19:30:00", "ended", "species", lep("Noctua pronuba"), 0.9),
    (1, "2026-07-10T21:59:00", "ended", "species", lep("Noctua pronuba"), 0.7),  # 23:59 local
    (1, "2026-07-10T22:01:00", "ended", "species", lep("Noctua pronuba"), 0.8),  # 00:01 local, same night
    (1, "2026-07-10T23:15:00", "ended", "species", lep("Agrotis exclamationis"), 0.6),
    (1, "2026-07-10T22:30:00", "ended", "family", {"family": "Geometridae", "order": "Lepidoptera"}, 0.5),
    (1, "2026-07-11T01:00:00", "ended", "order", {"order": "Diptera"}, 0.4),
    (1, "2026-07-11T02:00:00", "ended", None, None, None),  # unsure
    (
        1,
        "2026-07-11T09:59:00",
        "ended",
        "species",
        lep(EVIL, family="Erebidae"),
        0.3,
    ),  # 11:59 local: night 10
    (1, "2026-07-10T23:00:00", "discarded", "species", lep("Noctua pronuba"), 0.9),  # never counted
    (2, "2026-07-11T10:00:00", "ended", "species", lep("Noctua pronuba"), 0.95),  # 12:00 local: night 11
    (2, "2026-07-11T20:00:00", "ended", None, None, None),  # unsure
    (2, "2026-07-11T21:45:00", "ended", "species", lep("Agrotis exclamationis"), 0.5),
    (2, "2026-07-11T22:15:00", "ended", "family", {"family": "Geometridae", "order": "Lepidoptera"}, 0.7),
    (2, "2026-07-12T00:30:00", "confirmed", "species", lep("Noctua pronuba"), 0.9),  # not finished
]
# (run, start, end, effort_s): the first crosses local midnight (no split), the last crosses noon.
SUMMARIES = [
    (1, "2026-07-10T19:00:00", "2026-07-10T23:00:00", 14000.0),
    (1, "2026-07-10T23:00:00", "2026-07-11T03:00:00", 14400.0),
    (2, "2026-07-11T19:00:00", "2026-07-11T21:00:00", 7200.0),
    (2, "2026-07-12T09:00:00", "2026-07-12T11:00:00", 6000.0),  # split at 10:00Z: nights 11 and 12
]
EFFORT_H = {
    date(2026, 7, 10): (14000 + 14400) / 3600,
    date(2026, 7, 11): (7200 + 3000) / 3600,
    date(2026, 7, 12): 3000 / 3600,
}


def night(first: str) -> date:
    """The night by arithmetic: local (UTC+2) minus 12 hours."""
    return (utc(first) + OFFSET - timedelta(hours=12)).date()


def finest(lineage: dict[str, str] | None, order: tuple[str, ...] = ("species", "family", "order")) -> str:
    if not lineage:
        return "unsure"
    return next(lineage[lv] for lv in order if lv in lineage)


def finished() -> list[Track]:
    return [t for t in TRACKS if t[2] == "ended"]


def fill(
    path: Path, tracks: list[Track] = TRACKS, summaries: list[tuple[int, str, str, float]] = SUMMARIES
) -> Path:
    db = Database(path)
    info = RunInfo(device_id="trap-07", software_version="0.1.0", config_json="{}", source="synthetic")
    fill_db(db, info, dict(enumerate(tracks, start=1)), summaries, seconds=40, hits=5)
    db.flush()
    db.close()
    return path


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fill(tmp_path_factory.mktemp("report") / "trapcam.db")


def write_config(tmp_path: Path, data_dir: Path) -> Path:
    config = tmp_path / "trap.yaml"
    config.write_text(
        f"device_id: trap-07\ndata_dir: {data_dir}\nsource: {{kind: synthetic}}\n"
        "site: {name: Meadow, latitude: 52.52, longitude: 13.4, timezone: Europe/Berlin}\n"
        "export: {day_starts_at: '12:00'}\n"
    )
    return config


# ---------------------------------------------------------------- aggregates


def test_per_taxon_rows_match_independent_counts(db_path: Path) -> None:
    data = load_report(db_path, SITE, EXPORT)
    assert data.level == "species" and data.levels == ["order", "family", "species"]
    assert (data.first_night, data.last_night) == (date(2026, 7, 10), date(2026, 7, 12))  # effort only
    groups: dict[str, list] = defaultdict(list)
    for t in finished():
        groups[finest(t[4])].append(t)
    got = {t.taxon: t for t in data.taxa}
    assert set(got) == set(groups)
    for name, group in groups.items():
        row = got[name]
        assert row.count == len(group), name
        assert row.first_seen == min(utc(t[1]) for t in group)
        assert row.last_seen == max(utc(t[1]) for t in group) + timedelta(seconds=40)
        scores = [t[5] for t in group if t[5] is not None]
        assert row.mean_confidence == (pytest.approx(sum(scores) / len(scores)) if scores else None)
        assert row.nights_seen == len({night(t[1]) for t in group})
    assert got["unsure"].level is None and got["Diptera"].level == "order"
    assert got["Geometridae"].level == "family" and got["Noctua pronuba"].level == "species"
    assert data.total_tracks == len(finished()) == 12
    assert data.taxa[-1].taxon == "unsure"  # its own row, last
    assert [t.count for t in data.taxa[:-1]] == sorted((t.count for t in data.taxa[:-1]), reverse=True)


def test_per_night_counts_and_effort_cross_local_midnight(db_path: Path) -> None:
    data = load_report(db_path, SITE, EXPORT)
    expected: dict[date, Counter[str]] = defaultdict(Counter)
    for t in finished():
        expected[night(t[1])][finest(t[4])] += 1
    assert [n.night for n in data.nights] == sorted(EFFORT_H)
    for n in data.nights:
        assert n.counts == dict(expected[n.night])
        assert n.effort_hours == pytest.approx(EFFORT_H[n.night])
    # the 23:59 and 00:01 local moths are the same night; the 11:59 one still the night before
    assert [n.total for n in data.nights] == [8, 4, 0]


def test_activity_per_local_hour(db_path: Path) -> None:
    data = load_report(db_path, SITE, EXPORT)
    expected: dict[str, list[int]] = defaultdict(lambda: [0] * 24)
    for t in finished():
        expected[finest(t[4])][(utc(t[1]).hour + 2) % 24] += 1
    assert data.hourly == dict(expected)
    assert data.hourly["Noctua pronuba"][23] == 1 and data.hourly["Noctua pronuba"][0] == 1
    # The plot's hour axis starts where the export day starts, so a night is one block.
    start = int(EXPORT.day_starts_at.split(":")[0])
    assert data.hour_order[0] == start and sorted(data.hour_order) == list(range(24))
    assert data.hour_order[(23 - start) % 24 + 1] == 0  # midnight right after 23:00, not at an end
    late = load_report(db_path, SITE, EXPORT.model_copy(update={"day_starts_at": "18:30"}))
    assert late.hour_order[:3] == [18, 19, 20] and late.hour_order[-1] == 17


def test_level_family_rolls_species_up_and_unknown_level_is_one_line(db_path: Path) -> None:
    data = load_report(db_path, SITE, EXPORT, level="family")
    counts = {t.taxon: t.count for t in data.taxa}
    expected = Counter(finest(t[4], ("family", "order")) for t in finished())
    assert counts == dict(expected)
    assert counts["Noctuidae"] == 6 and counts["Diptera"] == 1
    with pytest.raises(ReportError, match=r"--level 'genus'.*order, family, species"):
        load_report(db_path, SITE, EXPORT, level="genus")


def test_since_until_select_nights_and_bad_dates_fail(db_path: Path) -> None:
    data = load_report(db_path, SITE, EXPORT, since="2026-07-11", until="2026-07-11")
    assert [n.night for n in data.nights] == [date(2026, 7, 11)]
    assert data.total_tracks == 4
    wide = load_report(db_path, SITE, EXPORT, since="2026-07-09", until="2026-07-12")
    assert [n.total for n in wide.nights] == [0, 8, 4, 0]
    with pytest.raises(ExportError, match="--since '2026-13-01'"):
        load_report(db_path, SITE, EXPORT, since="2026-13-01")
    with pytest.raises(ReportError, match="--since 2026-07-12 is after --until 2026-07-10"):
        load_report(db_path, SITE, EXPORT, since="2026-07-12", until="2026-07-10")


def test_taxa_csv_is_spreadsheet_safe(db_path: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(taxa_csv(load_report(db_path, SITE, EXPORT)).decode())))
    by = {r["taxon"]: r for r in rows}
    assert by["Noctua pronuba"]["count"] == "4" and by["unsure"]["level"] == "unsure"
    assert by["Noctua pronuba"]["first_seen"] == "2026-07-10T21:30:00+02:00"
    assert sum(int(r["count"]) for r in rows) == 12


# ---------------------------------------------------------------- files


def test_report_files_pngs_and_escaped_html(db_path: Path, tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, db_path.parent))
    paths = write_report(cfg, tmp_path / "out", top=2)
    names = [p.name for p in paths]
    assert names == ["report.html", "activity_per_hour.png", "counts_per_night.png", "taxa.csv"]
    for png in paths[1:3]:
        with Image.open(png) as im:
            assert im.format == "PNG"
            assert im.size == (int(SIZE_IN[0] * DPI), int(SIZE_IN[1] * DPI))
            assert len(im.convert("L").getcolors(maxcolors=256) or []) > 10  # something drawn, not blank
        assert png.stat().st_size > 10_000
    page = paths[0].read_text(encoding="utf-8")
    assert '<td>Noctua pronuba</td><td>species</td><td class="num">4</td>' in page
    assert '<td>Agrotis exclamationis</td><td>species</td><td class="num">2</td>' in page
    assert '<tr class="unsure"><td>unsure</td><td>-</td><td class="num">2</td>' in page
    assert '<td>all</td><td></td><td class="num">12</td>' in page
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('src="data:image/png;base64,') == 2
    assert "<script" not in page and "<link" not in page and 'src="http' not in page
    assert "trap-07" in page and "2026-07-10 to 2026-07-12" in page
    assert "finished tracks" in page and "unsure" in page


def test_dollar_labels_do_not_break_the_plots(tmp_path: Path) -> None:
    tracks = [(1, "2026-07-10T20:00:00", "ended", "species", lep("$x^{"), 0.5)]
    db = fill(tmp_path / "d.db", tracks=tracks, summaries=[])
    cfg = load_config(write_config(tmp_path, tmp_path))
    cfg = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"database": db})})
    paths = write_report(cfg, tmp_path / "out")
    assert all(p.is_file() for p in paths)


def test_empty_database_still_writes_a_page(tmp_path: Path) -> None:
    Database(tmp_path / "trapcam.db").close()
    cfg = load_config(write_config(tmp_path, tmp_path))
    paths = write_report(cfg)
    assert paths[0] == tmp_path / "report" / "report.html"
    page = paths[0].read_text(encoding="utf-8")
    assert "No finished tracks in this period" in page and "no data" in page
    for png in paths[1:3]:
        with Image.open(png) as im:
            assert im.format == "PNG"
    assert paths[3].read_text() == "taxon,level,count,first_seen,last_seen,mean_confidence,nights_seen\n"


def test_render_html_escapes_the_device_and_has_no_external_parts(db_path: Path) -> None:
    data = load_report(db_path, SITE, EXPORT, since="2026-07-11", until="2026-07-11")
    page = render_html(data, [])
    assert "<img" not in page and "night of 2026-07-11" in page
    assert '<td>Noctua pronuba</td><td>species</td><td class="num">1</td>' in page


# ---------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edge", "report", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_cli_end_to_end(db_path: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path, db_path.parent)
    out = tmp_path / "rep"
    done = _cli("-c", str(config), "--since", "2026-07-10", "--until", "2026-07-11", "--out", str(out))
    assert done.returncode == 0, done.stderr
    printed = done.stdout.split()
    assert printed == [
        str(out / "report.html"),
        str(out / "activity_per_hour.png"),
        str(out / "counts_per_night.png"),
        str(out / "taxa.csv"),
    ]
    assert all(Path(p).is_file() for p in printed)
    assert '<td class="num">12</td>' in (out / "report.html").read_text(encoding="utf-8")


def test_cli_bad_date_missing_database_and_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, tmp_path / "nothing")
    bad = _cli("-c", str(config), "--since", "10.07.2026")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [
        "trapcam: error: --since '10.07.2026': expected a date as YYYY-MM-DD"
    ]
    assert main(["report", "-c", str(config)]) == StorageError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "database not found" in err[0]
    (tmp_path / "nothing").mkdir()
    Database(tmp_path / "nothing" / "trapcam.db").close()
    assert main(["report", "-c", str(config), "--since", "2026-07-10"]) == 0
    assert "No finished tracks" in (tmp_path / "nothing" / "report" / "report.html").read_text()


def test_import_is_light_and_missing_matplotlib_is_one_line(db_path: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import edge.report, edge.report.plots, edge.cli\n"
        "assert 'matplotlib' not in sys.modules, 'imported at module level'\n"
        "sys.modules['matplotlib'] = None  # as if not installed\n"
        "from edge.cli import main\n"
        f"sys.exit(main(['report', '-c', {str(write_config(tmp_path, db_path.parent))!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == ReportError.exit_code, done.stderr
    assert done.stderr.strip().splitlines() == [
        "trapcam: error: the report needs matplotlib: pip install 'trapcam[report]'"
    ]
