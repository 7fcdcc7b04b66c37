"""The daily files' exact cells and which days an export writes, stated one by one (issue 26).

Each case pins a promise a field user relies on: which day `trapcam export` picks after a break, what
the daily timer catches up, what a message names, and what each cell of the tracks and counts files
holds (a run id, an unsure row's empty taxon, hours of effort, the most insects on one snapshot)."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge.errors import ExportError
from edge.export.daily import (
    MAX_DAYS,
    DayChoice,
    choose_days,
    counts_csv,
    counts_path,
    describe_days,
    resolve_days,
    snapshots_csv,
    tracks_csv,
    watched_days,
)
from edge.export.data import SnapshotRecord, TrackRecord
from edge.intervals import SummaryRow, store_summary
from edge.store.db import Database
from edge.store.schema import RunInfo

UTC = timezone.utc
NOW = datetime(2026, 7, 9, 14, 0, tzinfo=UTC)  # the day of 8 July (12:00 to 12:00) has ended
BERLIN = ZoneInfo("Europe/Berlin")


def day(n: int) -> date:
    return date(2026, 7, n)


def at(d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 7, d, hh, mm, tzinfo=UTC)


@pytest.fixture
def trap_db(tmp_path: Path) -> Path:
    """Summaries on the export days of 1, 3, 4 + 5 (an interval across the 12:00 boundary), 6 (one
    ending exactly at the boundary), 8 (the last that has ended at NOW) and 9 (still running)."""
    path = tmp_path / "trap.db"
    db = Database(path)
    run = db.start_run(RunInfo(device_id="trap-01", software_version="0", config_json="{}", source="x"))
    spans = [
        (at(1, 22), at(1, 22, 15)),
        (at(3, 22), at(3, 22, 15)),
        (at(5, 11, 50), at(5, 12, 5)),
        (at(7, 11, 45), at(7, 12, 0)),
        (at(8, 22), at(8, 22, 15)),
        (at(9, 13), at(9, 13, 15)),
    ]
    for start, end in spans:
        store_summary(db, SummaryRow(run, start, end, 600.0, 100, 0, 0, {}))
    store_summary(db, SummaryRow(run, at(2, 22), at(2, 22, 15), 0.0, 0, 0, 0, {}))  # no frame, no effort
    assert db.flush()
    db.close()
    return path


def test_watched_days_follow_the_export_day_and_an_interval_ending_at_its_boundary_stays_in_it(
    trap_db: Path,
) -> None:
    assert watched_days(trap_db, "UTC", "12:00") == [day(1), day(3), day(4), day(5), day(6), day(8), day(9)]


def test_by_default_the_last_finished_day_the_trap_watched(trap_db: Path, tmp_path: Path) -> None:
    assert choose_days(trap_db, tmp_path / "out", "trap-01", now=NOW) == DayChoice(
        [day(8)], "exporting 2026-07-08, the last finished day the trap watched (--date for another)"
    )


def test_the_daily_timer_catches_up_every_finished_day_not_yet_written(trap_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    counts_path(out, "trap-01", day(3)).parent.mkdir(parents=True)
    counts_path(out, "trap-01", day(3)).write_text("done", encoding="utf-8")
    choice = choose_days(trap_db, out, "trap-01", pending=True, now=NOW)
    assert choice == DayChoice(
        [day(1), day(4), day(5), day(6), day(8)],
        f"exporting 2026-07-01 .. 2026-07-08 (5 days): finished days with data not yet in {out}",
    )
    for d in choice.days:
        counts_path(out, "trap-01", d).parent.mkdir(parents=True, exist_ok=True)
        counts_path(out, "trap-01", d).write_text("done", encoding="utf-8")
    assert choose_days(trap_db, out, "trap-01", pending=True, now=NOW) == DayChoice(
        [],
        f"nothing to export: every finished day with data is in {out} "
        "(days with data: 2026-07-01 .. 2026-07-08 (6 days))",
    )
    with pytest.raises(ExportError) as raised:
        choose_days(trap_db, out, "trap-01", pending=True, until="2026-07-04", now=NOW)
    assert str(raised.value) == "--pending chooses the days itself: leave out --date, --since and --until"


def test_a_range_exports_the_watched_days_in_it_and_names_the_others(trap_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert choose_days(trap_db, out, "t", since="2026-07-01", until="2026-07-04", now=NOW) == DayChoice(
        [day(1), day(3), day(4)], "not exported, the trap did not watch: 2026-07-02"
    )
    assert choose_days(trap_db, out, "t", since="2026-07-03", until="2026-07-04", now=NOW) == DayChoice(
        [day(3), day(4)], None
    )
    have = "days with data: 2026-07-01 .. 2026-07-08 (6 days)"
    for kwargs, what in (
        ({"day": "2026-07-02"}, "on 2026-07-02"),
        ({"since": "2026-06-20", "until": "2026-06-22"}, "from 2026-06-20 to 2026-06-22"),
    ):
        with pytest.raises(ExportError) as raised:
            choose_days(trap_db, out, "t", now=NOW, **kwargs)
        assert (
            str(raised.value) == f"the trap did not watch {what} (no frame or effort in the database); {have}"
        )
    with pytest.raises(ExportError) as raised:
        choose_days(trap_db, out, "t", until="2026-07-04", now=NOW)
    assert str(raised.value) == "--until needs --since"


def test_a_trap_that_never_finished_a_day_says_so(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Database(path).close()
    with pytest.raises(ExportError) as raised:
        choose_days(path, tmp_path / "out", "t", tz="Europe/Berlin", now=NOW)
    assert str(raised.value) == f"{path}: the trap has not watched a finished day yet (no frame before today)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"day": "2026-07-01", "since": "2026-07-01"}, "--date cannot be combined with --since/--until"),
        ({"day": "2026-07-01", "until": "2026-07-01"}, "--date cannot be combined with --since/--until"),
        ({"until": "2026-07-01"}, "--until needs --since"),
        ({"since": "2026-7-1"}, "--since '2026-7-1': expected a date as YYYY-MM-DD"),
        (
            {"since": "2026-07-01", "until": "2026-07-32"},
            "--until '2026-07-32': not a valid date (day is out of range for month)",
        ),
        ({"since": "2026-07-09"}, "--since 2026-07-09 is after the last day that has ended (2026-07-08)"),
        (
            {"since": "2016-06-30", "until": "2026-07-08"},
            f"--since 2016-06-30 --until 2026-07-08: 3661 days; at most {MAX_DAYS} at once",
        ),
    ],
)
def test_day_options_that_do_not_fit_are_refused_naming_the_option(
    kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(ExportError) as raised:
        resolve_days(now=NOW, **kwargs)
    assert str(raised.value) == message


def test_a_range_of_one_day_and_of_the_most_days_at_once_are_allowed() -> None:
    assert resolve_days(since="2026-07-08", until="2026-07-08", now=NOW) == [day(8)]
    assert resolve_days(since="2026-07-08", now=NOW) == [day(8)]
    first = day(8) - timedelta(days=MAX_DAYS - 1)
    days = resolve_days(since=first.isoformat(), until="2026-07-08", now=NOW)
    assert len(days) == MAX_DAYS and days[0] == first and days[-1] == day(8)


def test_days_are_described_for_a_message() -> None:
    assert describe_days([]) == "none"
    assert describe_days([day(1)]) == "2026-07-01"
    assert describe_days([day(1), day(2)]) == "2026-07-01 .. 2026-07-02 (2 days)"


def rows_of(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"))))


LEP = {"order": "Lepidoptera", "family": "Noctuidae", "species": "Noctua pronuba"}


def test_every_cell_of_the_tracks_file() -> None:
    named = TrackRecord(
        7, 3, at(1, 21), at(1, 21, 1), 12, "species", "Noctua pronuba", 0.91234, LEP,
        crop_path="2026-07-01/7.jpg", length_px=84.4, length_mm=21.456, size_class="large",
    )  # fmt: skip
    unsure = TrackRecord(8, 3, at(1, 22), at(1, 22, 0) + timedelta(seconds=2.5), 3, "species", None, None, {})
    unknown = TrackRecord(9, 4, at(1, 23), at(1, 23, 0), 5, None, "unknown", 0.7, {})
    odd_levels = TrackRecord(
        10, 4, at(1, 23), at(1, 23), 2, "hits", "x", 0.5, {"order": "Diptera", "hits": "x", "best_crop": "y"}
    )
    rows = rows_of(tracks_csv([named, unsure, unknown, odd_levels], BERLIN))
    assert rows[0] == [
        "track_id", "run_id", "first_seen", "last_seen", "duration_s", "hits", "level", "label", "score",
        "length_px", "length_mm", "size_class", "order", "family", "species", "taxon_best_crop", "taxon_hits",
        "best_crop",
    ]  # fmt: skip
    assert rows[1] == [
        "7", "3", "2026-07-01T23:00:00+02:00", "2026-07-01T23:01:00+02:00", "60.000", "12",
        "species", "Noctua pronuba", "0.9123", "84", "21.46", "large",
        "Lepidoptera", "Noctuidae", "Noctua pronuba", "", "", "2026-07-01/7.jpg",
    ]  # fmt: skip
    assert rows[2] == [
        "8", "3", "2026-07-02T00:00:00+02:00", "2026-07-02T00:00:02+02:00", "2.500", "3",
        "", "", "", "", "", "", "", "", "", "", "", "",
    ]  # fmt: skip
    assert rows[3][6:9] == ["", "unknown", ""]  # the open set's answer has no level and no score
    assert rows[4][12:] == ["Diptera", "", "", "y", "x", ""]


def test_every_cell_of_the_counts_file_with_snapshots() -> None:
    a = TrackRecord(1, 1, at(1, 21), at(1, 21, 5), 4, "species", "Noctua pronuba", 0.8, LEP)
    b = TrackRecord(2, 1, at(1, 22), at(1, 22, 5), 4, "species", "Noctua pronuba", 0.6, LEP)
    c = TrackRecord(3, 1, at(1, 23), at(1, 23, 5), 4, "order", "Diptera", 0.9, {"order": "Diptera"})
    snaps = [
        SnapshotRecord(at(1, 21), 1, 2, {"species": {"Noctua pronuba": 2}, "order": {"Lepidoptera": 2}}),
        SnapshotRecord(at(1, 22), 1, 3, {"species": {"Noctua pronuba": 1}, "order": {"Lepidoptera": 1}}),
    ]
    rows = rows_of(counts_csv(day(1), "trap-01", [a, b, c], 5400.0, BERLIN, snaps))
    assert rows[0][-2:] == ["effort_hours", "max_per_snapshot"]
    by_taxon = {(r[2], r[3]): r for r in rows[1:]}
    assert by_taxon[("species", "Noctua pronuba")] == [
        "2026-07-01", "trap-01", "species", "Noctua pronuba", "2", "2026-07-01T23:00:00+02:00",
        "2026-07-02T00:05:00+02:00", "0.7000", "1.500", "2",
    ]  # fmt: skip
    assert by_taxon[("order", "Diptera")][-2:] == ["1.500", "0"]  # never on a snapshot
    assert by_taxon[("all", "all")][4:5] + by_taxon[("all", "all")][-1:] == ["3", "3"]
    assert rows_of(counts_csv(day(1), "trap-01", [a], 5400.0, BERLIN))[1][-1] == ""  # not a time-lapse trap


def test_snapshot_rows_keep_their_run_and_local_time_and_order_levels_by_rank() -> None:
    counts = {
        "species": {"Noctua pronuba": 1},
        "morphotype": {"brown": 1},
        "family": {"Noctuidae": 1},
        "order": {"Lepidoptera": 1},
    }
    rows = rows_of(snapshots_csv([SnapshotRecord(at(1, 21, 30), 6, 1, counts)], BERLIN))
    assert rows[1:] == [
        ["2026-07-01T23:30:00+02:00", "6", "order", "Lepidoptera", "1"],
        ["2026-07-01T23:30:00+02:00", "6", "family", "Noctuidae", "1"],
        ["2026-07-01T23:30:00+02:00", "6", "species", "Noctua pronuba", "1"],
        ["2026-07-01T23:30:00+02:00", "6", "morphotype", "brown", "1"],
        ["2026-07-01T23:30:00+02:00", "6", "all", "all", "1"],
    ]
