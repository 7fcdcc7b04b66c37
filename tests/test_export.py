"""Daily CSV export and Camtrap DP package, from a real database filled through Database."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import frictionless  # noqa: F401
import numpy as np
import pytest
from helpers import fill_db, utc

from edge.cli import main
from edge.config import ExportConfig, SiteConfig
from edge.errors import ExportError, StorageError
from edge.export import export_days, resolve_days, validate_camtrap_dp, write_camtrap_dp
from edge.export.csvsafe import atomic_write, safe_cell
from edge.export.daily import snapshots_csv
from edge.export.data import SnapshotRecord, TrackRecord, day_window, ordered_levels
from edge.intervals import SummaryRow, store_summary
from edge.store.db import Database
from edge.store.schema import DetectionRow, RunInfo, TrackRow, utc_iso

D = date(2026, 7, 1)  # the night of 1 to 2 July; Berlin is UTC+2, so the day is 10:00Z to 10:00Z
SITE = SiteConfig(name="Meadow plot 3", latitude=52.52, longitude=13.4, timezone="Europe/Berlin")
EXPORT = ExportConfig(day_starts_at="12:00")
HYPERLINK = '=HYPERLINK("http://evil.example/x","click")'


def lep(species: str, family: str = "Noctuidae") -> dict[str, str]:
    # The pipeline writes lineage finest first (Taxonomy.ancestors); the export must not rely on it.
    return {"species": species, "family": family, "order": "Lepidoptera"}


# track_id: (run, first_utc, status, level, lineage, score)
TRACKS: dict[int, tuple[int, str, str, str | None, dict[str, str] | None, float | None]] = {
    1: (1, "2026-07-01T19:00:00", "ended", "species", lep("Noctua pronuba"), 0.9),
    2: (1, "2026-07-01T20:00:00", "ended", "species", lep("Noctua pronuba"), 0.8),
    3: (2, "2026-07-01T23:30:00", "ended", "species", lep("Noctua pronuba"), 0.7),
    4: (2, "2026-07-01T23:40:00", "ended", "species", lep("Agrotis exclamationis"), 0.6),
    5: (1, "2026-07-01T21:00:00", "ended", "family", {"family": "Geometridae", "order": "Lepidoptera"}, 0.5),
    6: (1, "2026-07-01T21:10:00", "ended", "order", {"order": "Diptera"}, 0.4),
    7: (2, "2026-07-02T01:00:00", "ended", None, None, None),  # unsure
    8: (2, "2026-07-02T02:00:00", "ended", None, None, None),  # unsure
    9: (1, "2026-07-01T21:20:00", "discarded", "species", lep("Noctua pronuba"), 0.9),  # never counted
    10: (1, "2026-07-01T09:59:59", "ended", "species", lep("Noctua pronuba"), 0.9),  # the day before
    11: (2, "2026-07-02T09:59:59.500000", "ended", "species", lep("Noctua pronuba"), 0.95),  # before noon
    12: (2, "2026-07-02T10:00:00", "ended", "species", lep("Noctua pronuba"), 0.9),  # the next day
    13: (1, "2026-07-01T21:30:00", "ended", "species", lep(HYPERLINK, family="+1"), 0.3),
    14: (2, "2026-07-02T03:00:00", "confirmed", "species", lep("Noctua pronuba"), 0.9),  # not finished
}
IN_DAY = [1, 2, 3, 4, 5, 6, 7, 8, 11, 13]
# (run, start, end, effort_s): noon splits the first and last in half; local midnight splits nothing.
SUMMARIES = [
    (1, "2026-07-01T09:30:00", "2026-07-01T10:30:00", 3000.0),
    (1, "2026-07-01T21:30:00", "2026-07-01T22:30:00", 3600.0),
    (2, "2026-07-02T02:00:00", "2026-07-02T02:15:00", 900.0),
    (2, "2026-07-02T09:45:00", "2026-07-02T10:15:00", 1200.0),
]
EFFORT_D = 1500.0 + 3600.0 + 900.0 + 600.0


def run_config(site: SiteConfig) -> str:
    return json.dumps({"device_id": "trap-01", "site": site.model_dump()})


def build_db(data_dir: Path) -> Path:
    """Two runs, tracks at three levels, unsure ones, crops (one deleted) and summaries."""
    db = Database(data_dir / "trapcam.db", crops_root=data_dir / "crops")
    info = RunInfo(
        device_id="trap-01",
        software_version="0.1.0",
        config_json=run_config(SITE),
        source="synthetic",
        model_name="moths-v2",
        model_sha256="ab" * 32,
    )
    sized = {"length_px": 120.0, "length_mm": 14.4, "size_class": "large"}
    extra = {tid: {"best_detection_id": tid * 10, **(sized if tid == 1 else {})} for tid in (1, 2, 3, 4)}
    fill_db(db, info, TRACKS, SUMMARIES, extra=extra)
    crop = np.full((24, 24, 3), 120, np.uint8)
    for tid in (1, 2, 3, 4):
        run, first, _status, level, lineage, score = TRACKS[tid]
        t0 = utc(first)
        label = None if lineage is None or level is None else lineage[level]
        db.add_detection(
            DetectionRow(
                tid * 10, run, tid, 1, t0 + timedelta(seconds=5), 0, 0, 20, 20, 400, 0.9, level, label, score
            ),
            crop=crop if tid != 4 else None,
        )
        if tid == 3:  # a second, worse crop that survives when retention deletes the best one
            db.add_detection(
                DetectionRow(
                    31, run, tid, 2, t0 + timedelta(seconds=9), 0, 0, 20, 20, 400, 0.8, level, label, 0.5
                ),
                crop=crop,
            )
    db.submit(
        "UPDATE detections SET crop_deleted_utc = ? WHERE detection_id = ?",
        (utc_iso(utc("2026-07-05T00:00:00")), 30),
    )
    db.flush()
    db.close()
    return data_dir / "trapcam.db"


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_db(tmp_path_factory.mktemp("data"))


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def counts_of(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    return {(r["level"], r["taxon"]): r for r in read_csv(path)}


# ---------------------------------------------------------------- days


def test_days_resolve_to_local_windows_with_the_night_in_one_file() -> None:
    assert day_window(D, "Europe/Berlin", "12:00") == (utc("2026-07-01T10:00:00"), utc("2026-07-02T10:00:00"))
    start, end = day_window(date(2026, 3, 28), "Europe/Berlin", "12:00")  # clocks go forward that night
    assert end - start == timedelta(hours=23)
    now = datetime(2026, 7, 3, 9, 0, tzinfo=timezone.utc)  # 11:00 in Berlin: the night of the 2nd still runs
    assert resolve_days(tz="Europe/Berlin", now=now) == [date(2026, 7, 1)]
    later = datetime(2026, 7, 3, 10, 0, tzinfo=timezone.utc)
    assert resolve_days(tz="Europe/Berlin", now=later) == [date(2026, 7, 2)]
    assert resolve_days(since="2026-06-29", until="2026-07-01") == [date(2026, 6, 29), date(2026, 6, 30), D]
    assert resolve_days(since="2026-06-30", tz="UTC", day_starts_at="00:00", now=later) == [
        date(2026, 6, 30),
        date(2026, 7, 1),
        date(2026, 7, 2),
    ]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"day": "2026-13-01"}, "--date '2026-13-01'"),
        ({"day": "yesterday"}, "expected a date as YYYY-MM-DD"),
        ({"day": "20260701"}, "expected a date as YYYY-MM-DD"),
        ({"since": "2026-07-05", "until": "2026-07-01"}, "--since 2026-07-05 is after --until 2026-07-01"),
        ({"until": "2026-07-01"}, "--until needs --since"),
    ],
)
def test_bad_dates_are_one_line_errors(kwargs: dict[str, str], needle: str) -> None:
    with pytest.raises(ExportError) as err:
        resolve_days(**kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_levels_are_ordered_coarse_to_fine_from_the_data() -> None:
    t0 = utc("2026-07-01T20:00:00")

    def rec(level: str, lineage: dict[str, str]) -> TrackRecord:
        return TrackRecord(1, 1, t0, t0, 1, level, lineage[level], 0.5, lineage)

    # Unknown level names: the data says "zeta" is above "alpha", whatever the alphabet says.
    assert ordered_levels([rec("alpha", {"alpha": "a1", "zeta": "z1"})]) == ["zeta", "alpha"]
    assert ordered_levels([rec("species", lep("x"))]) == ["order", "family", "species"]


# ---------------------------------------------------------------- daily files


def test_counts_per_level_by_content(db_path: Path, tmp_path: Path) -> None:
    paths = export_days(db_path, tmp_path, [D], SITE, EXPORT)
    counts_path, tracks_path = paths
    assert counts_path == tmp_path / "2026-07-01" / "counts_trap-01_2026-07-01.csv"
    assert tracks_path == tmp_path / "2026-07-01" / "tracks_trap-01_2026-07-01.csv"
    rows = read_csv(counts_path)
    got = {(r["level"], r["taxon"]): int(r["count"]) for r in rows}
    expected = {
        ("order", "Diptera"): 1,
        ("order", "Lepidoptera"): 7,
        ("family", "'+1"): 1,
        ("family", "Geometridae"): 1,
        ("family", "Noctuidae"): 5,
        ("species", "'" + HYPERLINK): 1,
        ("species", "Agrotis exclamationis"): 1,
        ("species", "Noctua pronuba"): 4,
        ("unsure", "unsure"): 2,
        ("all", "all"): len(IN_DAY),
    }
    assert got == expected
    assert [r["level"] for r in rows] == ["order"] * 2 + ["family"] * 3 + ["species"] * 3 + ["unsure", "all"]
    noctua = counts_of(counts_path)[("species", "Noctua pronuba")]
    assert noctua["first_seen"] == "2026-07-01T21:00:00+02:00"
    assert noctua["last_seen"] == "2026-07-02T12:00:29+02:00"  # track 11, seen until just after noon
    assert noctua["mean_confidence"] == f"{(0.9 + 0.8 + 0.7 + 0.95) / 4:.4f}"
    assert noctua["date"] == "2026-07-01" and noctua["device_id"] == "trap-01"
    assert {r["effort_hours"] for r in rows} == {f"{EFFORT_D / 3600:.3f}"}
    assert counts_of(counts_path)[("unsure", "unsure")]["mean_confidence"] == ""

    tracks = read_csv(tracks_path)
    assert [int(r["track_id"]) for r in tracks] == sorted(IN_DAY, key=lambda t: (utc(TRACKS[t][1]), t))
    assert list(tracks[0]) == [
        "track_id",
        "run_id",
        "first_seen",
        "last_seen",
        "duration_s",
        "hits",
        "level",
        "label",
        "score",
        "length_px",
        "length_mm",
        "size_class",
        "order",
        "family",
        "species",
        "best_crop",
    ]
    by_id = {int(r["track_id"]): r for r in tracks}
    assert by_id[5]["family"] == "Geometridae" and by_id[5]["species"] == "" and by_id[5]["level"] == "family"
    assert by_id[7]["label"] == "" and by_id[7]["order"] == ""
    assert by_id[1]["best_crop"] == "2026-07-01/1/10.jpg"
    assert by_id[3]["best_crop"] == "2026-07-01/3/31.jpg"  # the best crop was deleted by retention
    assert by_id[4]["best_crop"] == ""
    assert by_id[1]["duration_s"] == "30.000" and by_id[1]["score"] == "0.9000"
    assert (by_id[1]["length_px"], by_id[1]["length_mm"], by_id[1]["size_class"]) == ("120", "14.40", "large")
    assert (by_id[5]["length_px"], by_id[5]["length_mm"], by_id[5]["size_class"]) == ("", "", "")

    # The next day gets the noon track and the other half of the summary that crosses noon.
    nxt = counts_of(export_days(db_path, tmp_path, [D + timedelta(days=1)], SITE, EXPORT)[0])
    assert nxt[("all", "all")]["count"] == "1"
    assert nxt[("all", "all")]["effort_hours"] == f"{600 / 3600:.3f}"


def test_formula_injection_is_escaped(db_path: Path, tmp_path: Path) -> None:
    counts_path, tracks_path = export_days(db_path, tmp_path, [D], SITE, EXPORT)
    cells = [
        cell
        for path in (counts_path, tracks_path)
        for row in csv.reader(io.StringIO(path.read_text()))
        for cell in row
    ]
    assert "'" + HYPERLINK in cells and "'+1" in cells
    assert HYPERLINK not in cells and "+1" not in cells
    assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells)
    assert [safe_cell(v) for v in ("@SUM(A1)", "-2+3", "\tx", "Noctua", None, True)] == [
        "'@SUM(A1)",
        "'-2+3",
        "'\tx",
        "Noctua",
        "",
        "true",
    ]


def test_rerun_is_byte_identical_and_leaves_unchanged_files_alone(db_path: Path, tmp_path: Path) -> None:
    paths = export_days(db_path, tmp_path, [D], SITE, EXPORT)
    first = {p: p.read_bytes() for p in paths}
    assert all(b"\r\n" not in data for data in first.values())
    for p in paths:
        os.utime(p, (1_000_000_000, 1_000_000_000))  # an old mtime must neither matter nor change
    assert export_days(db_path, tmp_path, [D], SITE, EXPORT) == paths
    assert {p: p.read_bytes() for p in paths} == first
    assert all(p.stat().st_mtime == 1_000_000_000 for p in paths)
    shutil.rmtree(tmp_path / "2026-07-01")
    export_days(db_path, tmp_path, [D], SITE, EXPORT)
    assert {p: p.read_bytes() for p in paths} == first
    assert sorted(p.name for p in (tmp_path / "2026-07-01").iterdir()) == sorted(p.name for p in paths)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.csv"
    atomic_write(target, b"old\n")

    def chunks():
        yield b"new, half"
        raise RuntimeError("crashed midway")

    with pytest.raises(RuntimeError):
        atomic_write(target, chunks())
    assert target.read_bytes() == b"old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.csv"]

    # The disk fills up while the export writes: the earlier day's files survive untouched.
    data = tmp_path / "data"
    shutil.copytree(db_path.parent, data)
    paths = export_days(data / "trapcam.db", tmp_path / "out", [D], SITE, EXPORT)
    before = {p: p.read_bytes() for p in paths}
    db = Database(data / "trapcam.db")
    t0 = utc("2026-07-01T22:00:00")
    db.upsert_track(TrackRow(99, 2, "ended", t0, t0, 3, 0, 0, 5, 5, "order", "Diptera", 0.5, None, None, 0.0))
    db.close()

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ExportError, match="No space left on device; the old file was kept"):
        export_days(data / "trapcam.db", tmp_path / "out", [D], SITE, EXPORT)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in paths} == before
    assert not list((tmp_path / "out").rglob("*.tmp"))
    after = export_days(data / "trapcam.db", tmp_path / "out", [D], SITE, EXPORT)
    assert counts_of(after[0])[("all", "all")]["count"] == str(len(IN_DAY) + 1)


def test_export_works_while_the_trap_writes(db_path: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(db_path.parent, data)
    db = Database(data / "trapcam.db", batch_size=5, flush_interval_s=0.01)
    stop = threading.Event()
    added: list[int] = []

    def trap() -> None:
        """The trap's writer: one finished track and one summary every millisecond or so."""
        first_id = db.next_ids()[0]
        t0 = utc("2026-07-01T12:00:00")
        for i in range(5000):
            if stop.is_set():
                return
            t = t0 + timedelta(seconds=i)
            row = TrackRow(first_id + i, 2, "ended", t, t, 2, 0, 0, 5, 5, "order", "Diptera", 0.5, None, None)
            db.upsert_track(row)
            store_summary(db, SummaryRow(2, t, t + timedelta(seconds=1), 1.0, 1, 0, 1, {}))
            added.append(row.track_id)
            time.sleep(0.001)

    writer = threading.Thread(target=trap)
    writer.start()
    seen: list[int] = []
    try:
        # Export again and again while rows keep arriving (at least 15 times, until growth is seen).
        while len(seen) < 15 or (seen[-1] == seen[0] and len(seen) < 2000):
            counts_path, tracks_path = export_days(data / "trapcam.db", tmp_path / "out", [D], SITE, EXPORT)
            n = int(counts_of(counts_path)[("all", "all")]["count"])
            assert n == len(read_csv(tracks_path))  # one snapshot: both files describe the same moment
            seen.append(n)
    finally:
        stop.set()
        writer.join()
        db.close()
    assert seen == sorted(seen) and seen[0] >= len(IN_DAY)
    assert seen[-1] > seen[0]  # the exports really ran next to the writer
    final = export_days(data / "trapcam.db", tmp_path / "out", [D], SITE, EXPORT)
    assert counts_of(final[0])[("all", "all")]["count"] == str(len(IN_DAY) + len(added))


def test_missing_and_corrupt_databases_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="database not found"):
        export_days(tmp_path / "none.db", tmp_path, [D], SITE, EXPORT)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not an sqlite file" * 200)
    with pytest.raises(StorageError) as err:
        export_days(bad, tmp_path, [D], SITE, EXPORT)
    assert "cannot be read as an SQLite database" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "2026-07-01").exists()


# ---------------------------------------------------------------- Camtrap DP


def test_camtrap_dp_package_is_valid_and_idempotent(db_path: Path, tmp_path: Path) -> None:
    pkg = write_camtrap_dp(db_path, tmp_path, [D], SITE, EXPORT, "trap-01")
    assert pkg == tmp_path / "camtrap-dp_trap-01_2026-07-01"
    assert validate_camtrap_dp(pkg) == []
    descriptor = json.loads((pkg / "datapackage.json").read_text())
    assert (
        descriptor["profile"]
        == "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0/camtrap-dp-profile.json"
    )
    assert [r["schema"] for r in descriptor["resources"]] == [
        f"https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0/{n}-table-schema.json"
        for n in ("deployments", "media", "observations")
    ]
    assert descriptor["spatial"] == {"type": "Point", "coordinates": [13.4, 52.52]}
    noctua = next(t for t in descriptor["taxonomic"] if t["scientificName"] == "Noctua pronuba")
    assert noctua == {
        "scientificName": "Noctua pronuba",
        "taxonRank": "species",
        "order": "Lepidoptera",
        "family": "Noctuidae",
    }
    observations = read_csv(pkg / "observations.csv")
    assert sorted(int(o["eventID"]) for o in observations) == sorted(IN_DAY)
    by_event = {int(o["eventID"]): o for o in observations}
    assert by_event[1]["scientificName"] == "Noctua pronuba" and by_event[1]["observationType"] == "animal"
    assert by_event[1]["classifiedBy"] == "moths-v2" and by_event[1]["classificationProbability"] == "0.9000"
    # unsure: an insect the model answered without a confident level (DESIGN.md: `animal`, no name;
    # `unclassified` means "not classified yet")
    assert by_event[7]["observationType"] == "animal" and by_event[7]["scientificName"] == ""
    assert by_event[7]["classificationMethod"] == ""
    # body size in the tags: mm where known, its class; nothing where the track has none
    assert by_event[1]["observationTags"].endswith("|hits:6|size_class:large|length_mm:14.40")
    assert "size_class" not in by_event[5]["observationTags"]
    assert by_event[13]["scientificName"] == "'" + HYPERLINK
    assert {o["observationLevel"] for o in observations} == {"event"}
    deployments = read_csv(pkg / "deployments.csv")
    assert [d["deploymentID"] for d in deployments] == ["trap-01-run1", "trap-01-run2"]
    assert deployments[1]["deploymentEnd"] == "2026-07-02T10:00:30Z"  # track 11 ends after noon
    media = read_csv(pkg / "media.csv")
    assert sorted(m["filePath"] for m in media) == [
        "media/2026-07-01/1/10.jpg",
        "media/2026-07-01/2/20.jpg",
        "media/2026-07-01/3/31.jpg",
    ]
    assert all((pkg / m["filePath"]).is_file() and m["filePublic"] == "false" for m in media)

    files = sorted(p for p in pkg.rglob("*") if p.is_file())
    first = {p: p.read_bytes() for p in files}
    write_camtrap_dp(db_path, tmp_path, [D], SITE, EXPORT, "trap-01")
    assert {p: p.read_bytes() for p in sorted(q for q in pkg.rglob("*") if q.is_file())} == first


def test_a_broken_package_is_reported_invalid(db_path: Path, tmp_path: Path) -> None:
    pkg = write_camtrap_dp(db_path, tmp_path, [D], SITE, EXPORT, "trap-01")
    obs = pkg / "observations.csv"
    text = obs.read_text()
    obs.write_text(
        text.replace(",event,animal,", ",event,moth,", 1).replace("trap-01-run2", "trap-01-run9", 1)
    )
    problems = validate_camtrap_dp(pkg)
    assert any("observationType" in p and "enum" in p for p in problems), problems
    assert any("foreign key" in p for p in problems), problems
    descriptor = json.loads((pkg / "datapackage.json").read_text())
    del descriptor["project"]["samplingDesign"]
    (pkg / "datapackage.json").write_text(json.dumps(descriptor))
    assert any("samplingDesign" in p for p in validate_camtrap_dp(pkg))


def test_camtrap_dp_needs_coordinates(tmp_path: Path) -> None:
    nowhere = SiteConfig(timezone="Europe/Berlin")
    data = tmp_path / "data"
    data.mkdir()
    db = Database(data / "trapcam.db")
    run = db.start_run(RunInfo("trap-01", "0.1.0", run_config(nowhere), "synthetic"))
    t0 = utc("2026-07-01T20:00:00")
    db.upsert_track(TrackRow(1, run, "ended", t0, t0, 2, 0, 0, 5, 5))
    db.close()
    with pytest.raises(ExportError, match=r"site\.latitude and site\.longitude"):
        write_camtrap_dp(data / "trapcam.db", tmp_path, [D], nowhere, EXPORT, "trap-01")


# ---------------------------------------------------------------- CLI


def cli_trap(db_path: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(data folder, config file) of a trap holding a copy of the module's database, for the CLI."""
    data = tmp_path / "data"
    shutil.copytree(db_path.parent, data)
    config = tmp_path / "trap.yaml"
    config.write_text(
        f"device_id: trap-01\ndata_dir: {data}\nsource: {{kind: synthetic}}\n"
        "site: {name: Meadow plot 3, latitude: 52.52, longitude: 13.4, timezone: Europe/Berlin}\n"
    )
    return data, config


def test_cli_export_prints_the_files_it_wrote(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, config = cli_trap(db_path, tmp_path)
    assert main(["export", "-c", str(config), "--date", "2026-07-01", "--camtrap-dp", "--validate"]) == 0
    printed = capsys.readouterr().out.split()
    pkg = data / "export" / "camtrap-dp_trap-01_2026-07-01"
    assert printed == [
        str(data / "export" / "2026-07-01" / "counts_trap-01_2026-07-01.csv"),
        str(data / "export" / "2026-07-01" / "tracks_trap-01_2026-07-01.csv"),
        str(pkg / "datapackage.json"),
        str(pkg / "deployments.csv"),
        str(pkg / "media.csv"),
        str(pkg / "observations.csv"),
    ]
    assert all(Path(p).is_file() for p in printed)
    assert (pkg / "media" / "2026-07-01" / "1" / "10.jpg").is_file()

    out = tmp_path / "elsewhere"
    assert (
        main(
            ["export", "-c", str(config), "--since", "2026-06-30", "--until", "2026-07-01", "--out", str(out)]
        )
        == 0
    )
    assert len(capsys.readouterr().out.split()) == 4 and (out / "2026-06-30").is_dir()

    assert main(["export", "-c", str(config), "--date", "2026-02-30"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trapcam: error: --date '2026-02-30'") and err.count("\n") == 1

    config.write_text(config.read_text().replace(f"data_dir: {data}", f"data_dir: {tmp_path / 'empty'}"))
    assert main(["export", "-c", str(config), "--date", "2026-07-01"]) == 4
    err = capsys.readouterr().err
    assert "database not found" in err and err.count("\n") == 1


def test_cli_export_writes_the_days_the_trap_watched_and_catches_up_missed_ones(
    db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --date the export used to write 'yesterday': months after the data, two empty files
    and exit 0. The data here was watched on 2026-06-30, 07-01 and 07-02 (noon-to-noon days)."""
    data, config = cli_trap(db_path, tmp_path)
    assert main(["export", "-c", str(config)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines()[0] == (
        "trapcam: exporting 2026-07-02, the last finished day the trap watched (--date for another)"
    )
    assert [Path(p).parent.name for p in out.split()] == ["2026-07-02", "2026-07-02"]

    # a day it did not watch: one line naming the days with data, and no file
    assert main(["export", "-c", str(config), "--date", "2026-08-01"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did not watch on 2026-08-01" in err
    assert "days with data: 2026-06-30 .. 2026-07-02 (3 days)" in err
    assert not (data / "export" / "2026-08-01").exists()
    # in a range, the unwatched days are named and skipped
    assert main(["export", "-c", str(config), "--since", "2026-07-02", "--until", "2026-07-04"]) == 0
    out, err = capsys.readouterr()
    assert "did not watch: 2026-07-03, 2026-07-04" in err and len(out.split()) == 2

    # the daily timer: every finished day with data not yet exported, then nothing; a lost day again
    pending = tmp_path / "pending"
    assert main(["export", "-c", str(config), "--pending", "--out", str(pending)]) == 0
    out, err = capsys.readouterr()
    assert "exporting 2026-06-30 .. 2026-07-02 (3 days)" in err
    assert sorted({Path(p).parent.name for p in out.split()}) == ["2026-06-30", "2026-07-01", "2026-07-02"]
    assert main(["export", "-c", str(config), "--pending", "--out", str(pending)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "nothing to export" in err
    (pending / "2026-07-01" / "counts_trap-01_2026-07-01.csv").unlink()
    assert main(["export", "-c", str(config), "--pending", "--out", str(pending)]) == 0
    out, err = capsys.readouterr()
    assert {Path(p).parent.name for p in out.split()} == {"2026-07-01"}


def test_a_third_party_background_answer_is_unsure_in_the_csv_and_unknown_in_camtrap_dp(
    tmp_path: Path,
) -> None:
    """The iNaturalist model's `background` became a taxon called "background" in the daily CSV and an
    `animal` observation with scientificName background. DESIGN.md's table: counted, as `unsure`; in
    Camtrap DP `unknown` (what the model said, "cannot say what was recorded")."""
    tracks = {
        1: (1, "2026-07-01T20:00:00", "ended", "species", lep("Noctua pronuba"), 0.9),
        2: (1, "2026-07-01T20:10:00", "ended", "species", {"species": "background"}, 0.8),
        3: (1, "2026-07-01T20:20:00", "ended", None, None, None),
    }
    db = Database(tmp_path / "trapcam.db")
    fill_db(db, RunInfo("trap-01", "0.1.0", run_config(SITE), "synthetic"), tracks, SUMMARIES, runs=1)
    db.flush()
    db.close()
    counts_file, _ = export_days(tmp_path / "trapcam.db", tmp_path / "out", [D], SITE, EXPORT)
    counts = counts_of(counts_file)
    assert counts[("unsure", "unsure")]["count"] == "2" and counts[("all", "all")]["count"] == "3"
    assert not any(taxon == "background" for _, taxon in counts)
    pkg = write_camtrap_dp(tmp_path / "trapcam.db", tmp_path / "out", [D], SITE, EXPORT, "trap-01")
    assert validate_camtrap_dp(pkg) == []
    by_event = {int(o["eventID"]): o for o in read_csv(pkg / "observations.csv")}
    assert [by_event[i]["observationType"] for i in (1, 2, 3)] == ["animal", "unknown", "animal"]
    assert [by_event[i]["scientificName"] for i in (1, 2, 3)] == ["Noctua pronuba", "", ""]
    assert by_event[2]["classificationMethod"] == "machine" and by_event[3]["classificationMethod"] == ""


def test_an_unknown_insect_has_its_own_row_and_is_an_animal_without_a_name_tagged_unknown(
    tmp_path: Path,
) -> None:
    """DESIGN.md's table, the open set: counted as an insect; CSV `unknown,unknown` (its own row, not
    unsure); Camtrap DP `animal` without scientificName, tagged `unknown`; the report's own row."""
    from edge.report.data import load_report, taxa_csv

    tracks = {
        1: (1, "2026-07-01T20:00:00", "ended", "species", lep("Noctua pronuba"), 0.9),
        2: (1, "2026-07-01T20:10:00", "ended", None, None, 0.8),
        3: (1, "2026-07-01T20:20:00", "ended", None, None, None),
    }
    db = Database(tmp_path / "trapcam.db")
    info = RunInfo("trap-01", "0.1.0", run_config(SITE), "synthetic")
    fill_db(db, info, tracks, SUMMARIES, runs=1, extra={2: {"label": "unknown"}})
    db.flush()
    db.close()
    counts_file, tracks_file = export_days(tmp_path / "trapcam.db", tmp_path / "out", [D], SITE, EXPORT)
    counts = counts_of(counts_file)
    assert counts[("unknown", "unknown")]["count"] == "1" and counts[("unsure", "unsure")]["count"] == "1"
    assert counts[("all", "all")]["count"] == "3"
    rows = {int(r["track_id"]): r for r in read_csv(tracks_file)}
    assert (rows[2]["level"], rows[2]["label"], rows[2]["score"]) == ("", "unknown", "")
    pkg = write_camtrap_dp(tmp_path / "trapcam.db", tmp_path / "out", [D], SITE, EXPORT, "trap-01")
    assert validate_camtrap_dp(pkg) == []
    unknown = {int(o["eventID"]): o for o in read_csv(pkg / "observations.csv")}[2]
    assert (unknown["observationType"], unknown["scientificName"]) == ("animal", "")
    assert "unknown" in unknown["observationTags"].split("|") and unknown["classificationMethod"] == "machine"
    data = load_report(tmp_path / "trapcam.db", SITE, EXPORT)
    assert [(t.taxon, t.level, t.count) for t in data.taxa][-2:] == [
        ("unknown", None, 1),
        ("unsure", None, 1),
    ]
    assert b"\nunknown,unknown,1," in taxa_csv(data)


def test_a_snapshots_rows_go_coarse_to_fine_then_unknown_unsure_and_sizes() -> None:
    """The snapshots CSV lists a snapshot's taxa as the counts file does: ranks coarse to fine, then
    the open set's unknown, unsure, the size classes, and `all` (the insects it showed)."""
    when = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)
    counts = {
        "unsure": {"unsure": 1},
        "size_class": {"small": 3},
        "unknown": {"unknown": 1},
        "species": {"Noctua pronuba": 1},
        "order": {"Lepidoptera": 1},
    }
    text = snapshots_csv([SnapshotRecord(when, 4, 3, counts)], ZoneInfo("Europe/Berlin")).decode()
    rows = [r[2:] for r in csv.reader(io.StringIO(text))]
    assert rows == [
        ["level", "taxon", "count"],
        ["order", "Lepidoptera", "1"],
        ["species", "Noctua pronuba", "1"],
        ["unknown", "unknown", "1"],
        ["unsure", "unsure", "1"],
        ["size_class", "small", "3"],
        ["all", "all", "3"],
    ]


def test_an_inaturalist_style_label_is_a_scientific_name_with_its_common_name_beside_it(
    tmp_path: Path,
) -> None:
    """The iNaturalist insect model labels its classes "Apis mellifera (Honey Bee)". Camtrap DP's
    scientificName is what GBIF matches, so it is the name alone and the common name goes to the
    taxon's vernacularNames (ISO 639-2 `eng`); an empty "()" adds none. The daily CSV keeps the
    model's label as people read it."""
    tracks = {
        1: (1, "2026-07-01T20:00:00", "ended", "species", {"species": "Apis mellifera (Honey Bee)"}, 0.9),
        2: (1, "2026-07-01T20:10:00", "ended", "species", {"species": "Apis mellifera (Honey Bee)"}, 0.8),
        3: (1, "2026-07-01T20:20:00", "ended", "species", {"species": "Eumenes fraternus ()"}, 0.7),
        4: (1, "2026-07-01T20:30:00", "ended", "species", lep("Noctua pronuba"), 0.9),
    }
    db = Database(tmp_path / "trapcam.db")
    fill_db(db, RunInfo("trap-01", "0.1.0", run_config(SITE), "synthetic"), tracks, SUMMARIES, runs=1)
    db.flush()
    db.close()
    counts_file, _ = export_days(tmp_path / "trapcam.db", tmp_path / "out", [D], SITE, EXPORT)
    assert counts_of(counts_file)[("species", "Apis mellifera (Honey Bee)")]["count"] == "2"
    pkg = write_camtrap_dp(tmp_path / "trapcam.db", tmp_path / "out", [D], SITE, EXPORT, "trap-01")
    assert validate_camtrap_dp(pkg) == []
    by_event = {int(o["eventID"]): o for o in read_csv(pkg / "observations.csv")}
    assert [by_event[i]["scientificName"] for i in (1, 2, 3, 4)] == [
        "Apis mellifera",
        "Apis mellifera",
        "Eumenes fraternus",
        "Noctua pronuba",
    ]
    taxa = {t["scientificName"]: t for t in json.loads((pkg / "datapackage.json").read_text())["taxonomic"]}
    assert set(taxa) == {"Apis mellifera", "Eumenes fraternus", "Noctua pronuba"}
    assert taxa["Apis mellifera"]["vernacularNames"] == {"eng": "Honey Bee"}
    assert (
        "vernacularNames" not in taxa["Eumenes fraternus"] and "vernacularNames" not in taxa["Noctua pronuba"]
    )
    assert taxa["Noctua pronuba"]["family"] == "Noctuidae"


def test_a_snapshot_crop_the_open_set_called_unknown_is_no_named_observation(tmp_path: Path) -> None:
    """DESIGN.md's outcome table holds for time-lapse media too: a crop the open set called unknown
    (the detection row's `unknown`, schema 8) is an `animal` media observation without a name, tagged
    unknown, never one under the label the model gave it. Before, the media observation named it."""
    tracks = {
        1: (1, "2026-07-01T20:00:00", "ended", "species", lep("Noctua pronuba"), 0.9),
        2: (1, "2026-07-01T20:00:00", "ended", None, None, 0.8),
        3: (1, "2026-07-01T20:00:00", "ended", "species", lep("Noctua pronuba"), 0.7),
    }
    db = Database(tmp_path / "trapcam.db", crops_root=tmp_path / "crops")
    fill_db(
        db,
        RunInfo("trap-01", "0.1.0", run_config(SITE), "synthetic"),
        tracks,
        SUMMARIES,
        runs=1,
        extra={2: {"label": "unknown"}},
    )
    when = utc("2026-07-01T20:00:00")
    db.add_snapshot(1, when, 7, 3, "{}", np.full((90, 160, 3), 200, np.uint8))
    for detection_id, (track_id, unknown) in enumerate([(1, False), (2, True), (3, False)], start=1):
        db.add_detection(
            DetectionRow(
                detection_id,
                1,
                track_id,
                7,
                when,
                10 * track_id,
                10,
                10 * track_id + 8,
                18,
                64,
                1.0,
                level="species",
                label="Noctua pronuba",
                score=0.9,
                unknown=unknown,
                open_set_distance=1.7 if unknown else 0.4,
            )
        )
    db.flush()
    db.close()
    pkg = write_camtrap_dp(tmp_path / "trapcam.db", tmp_path / "out", [D], SITE, EXPORT, "trap-01")
    assert validate_camtrap_dp(pkg) == []
    media = [o for o in read_csv(pkg / "observations.csv") if o["observationLevel"] == "media"]
    shown = {(o["observationType"], o["scientificName"], o["count"], o["observationTags"]) for o in media}
    assert shown == {
        ("animal", "Noctua pronuba", "2", "snapshot|tracks:1,3"),
        ("animal", "", "1", "snapshot|unknown|tracks:2"),
    }
