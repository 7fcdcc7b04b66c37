"""Reading what the exports need from a trap database: read-only, one consistent snapshot.

The trap may be writing while the export runs (WAL): everything is read inside one read
transaction, so the counts, the tracks and the effort of a file all describe the same moment.
Only finished tracks (status 'ended') are exported; 'discarded' ones (noise, not insects, slivers at the
frame's border: `discard_reason`) never.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge.classify.taxonomy import RANKS
from edge.classify.types import BACKGROUND, UNKNOWN
from edge.errors import ExportError, StorageError
from edge.intervals import track_lineage
from edge.store.db import connect_reader
from edge.store.schema import CURRENT_RUNS, OPEN_SET_SCHEMA, get_version, parse_utc, utc_iso

NEEDED_SCHEMA = 3
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# ---------------------------------------------------------------- days


def parse_day(text: str, option: str = "--date") -> date:
    """A YYYY-MM-DD date, or an ExportError naming the option and the bad value."""
    if not isinstance(text, str) or not _DATE.match(text):
        raise ExportError(f"{option} {text!r}: expected a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ExportError(f"{option} {text!r}: not a valid date ({exc})") from None


def day_starts(export_day_starts_at: str) -> tuple[int, int]:
    hh, mm = export_day_starts_at.split(":")
    return int(hh), int(mm)


def day_window(day: date, tz: str, day_starts_at: str) -> tuple[datetime, datetime]:
    """[start, end) in UTC of the export 'day' named `day`: from D at day_starts_at to D+1 (local)."""
    zone = ZoneInfo(tz)
    hh, mm = day_starts(day_starts_at)
    start = datetime(day.year, day.month, day.day, hh, mm, tzinfo=zone)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, hh, mm, tzinfo=zone)
    return start.astimezone(timezone.utc), end.astimezone(timezone.utc)


def day_of(moment: datetime, tz: str, day_starts_at: str) -> date:
    """The export day that `moment` falls in (a night after midnight belongs to the day before)."""
    candidate = moment.astimezone(ZoneInfo(tz)).date()
    if moment < day_window(candidate, tz, day_starts_at)[0]:
        candidate -= timedelta(days=1)
    return candidate


def last_ended_day(tz: str, day_starts_at: str, now: datetime | None = None) -> date:
    """The latest export day that has fully ended at `now` ('yesterday' in export terms)."""
    now = now or datetime.now(timezone.utc)
    candidate = now.astimezone(ZoneInfo(tz)).date()
    while day_window(candidate, tz, day_starts_at)[1] > now:
        candidate -= timedelta(days=1)
    return candidate


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class TrackRecord:
    """One finished track, as the exports show it."""

    track_id: int
    run_id: int
    first: datetime
    last: datetime
    hits: int
    level: str | None
    label: str | None
    score: float | None
    lineage: dict[str, str]
    best_detection_id: int | None = None
    crop_path: str | None = None  # relative to the crops folder; None when no crop is left
    crop_detection_id: int | None = None
    crop_ts: datetime | None = None
    length_px: float | None = None
    length_mm: float | None = None
    size_class: str | None = None

    @property
    def unknown(self) -> bool:
        """The open set found the insect unlike every taxon of the model (DESIGN.md: its own row)."""
        return self.label == UNKNOWN

    @property
    def unsure(self) -> bool:
        """No taxon named at any level (the vote abstained, or the model said `background`)."""
        return not self.lineage and not self.unknown

    @property
    def background(self) -> bool:
        """A third-party model's `background` answer: counted as unsure, but it is what the model said
        (Camtrap DP `unknown`), not an abstention (`animal` without a name)."""
        return self.label == BACKGROUND


@dataclass(frozen=True)
class RunRecord:
    run_id: int
    device_id: str
    started: datetime
    ended: datetime | None
    software_version: str
    model_name: str | None
    model_sha256: str | None
    source: str
    config: dict[str, Any] = field(default_factory=dict)
    last_activity: datetime | None = None  # latest summary end / track end of the run


@contextlib.contextmanager
def snapshot(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection inside one read transaction, after checking it is a usable trap database."""
    db_path = Path(db_path)
    conn = connect_reader(db_path)
    try:
        try:
            conn.execute("BEGIN")
            version = get_version(conn)
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{db_path}: cannot be read as an SQLite database ({exc})") from None
        if version == 0:
            raise StorageError(f"{db_path}: is not a trapcam database (no schema version)")
        if version < NEEDED_SCHEMA:
            raise StorageError(
                f"{db_path}: has schema {version}; the export needs schema {NEEDED_SCHEMA} "
                f"(start the trap once with this trapcam version to migrate it)"
            )
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{db_path}: read failed: {exc}") from None
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("COMMIT")
        conn.close()


def current_runs(conn: sqlite3.Connection, column: str = "run_id") -> str:
    """An SQL condition (starting with AND) that leaves out runs a `--from-start` replay superseded
    (their rows are kept, marked; the newer run's are the counts). Empty before schema 7."""
    if get_version(conn) < 7:
        return ""
    return f" AND {column} IN ({CURRENT_RUNS})"


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _opt_ts(text: str | None) -> datetime | None:
    return None if text is None else parse_utc(text)


_BEST_CROP = (
    "SELECT detection_id, crop_path, ts_utc FROM detections "
    "WHERE track_id = ? AND crop_path IS NOT NULL AND crop_deleted_utc IS NULL "
    "ORDER BY (detection_id = ?) DESC, score DESC, det_score DESC, detection_id LIMIT 1"
)


def read_tracks(conn: sqlite3.Connection, windows: Sequence[tuple[datetime, datetime]]) -> list[TrackRecord]:
    """Finished tracks whose first_utc lies in any window, by first_utc then track_id.

    Each carries its best crop still on disk: the best-scored detection's, else the track's
    best-scored crop that retention has not deleted.
    """
    out: list[TrackRecord] = []
    for start, end in windows:
        rows = conn.execute(
            "SELECT track_id, run_id, first_utc, last_utc, hits, level, label, score, lineage_json, "
            "best_detection_id, length_px, length_mm, size_class "
            "FROM tracks WHERE status = 'ended' AND first_utc >= ? AND first_utc < ? "
            "ORDER BY first_utc, track_id",
            (utc_iso(start), utc_iso(end)),
        ).fetchall()
        for r in rows:
            crop = conn.execute(_BEST_CROP, (r["track_id"], r["best_detection_id"] or -1)).fetchone()
            out.append(
                TrackRecord(
                    track_id=int(r["track_id"]),
                    run_id=int(r["run_id"]),
                    first=parse_utc(r["first_utc"]),
                    last=parse_utc(r["last_utc"]),
                    hits=int(r["hits"]),
                    level=r["level"],
                    label=r["label"],
                    score=None if r["score"] is None else float(r["score"]),
                    lineage=track_lineage(r),
                    best_detection_id=r["best_detection_id"],
                    crop_path=crop["crop_path"] if crop else None,
                    crop_detection_id=int(crop["detection_id"]) if crop else None,
                    crop_ts=parse_utc(crop["ts_utc"]) if crop else None,
                    length_px=r["length_px"],
                    length_mm=r["length_mm"],
                    size_class=r["size_class"],
                )
            )
    out.sort(key=lambda t: (t.first, t.track_id))
    return out


@dataclass(frozen=True)
class SnapshotRecord:
    """One time-lapse frame: when, how many insects it showed, and those by level and label
    ({level: {label: n}}, with 'unsure' and 'size_class' as in the summaries)."""

    ts: datetime
    run_id: int
    insects: int
    counts: dict[str, dict[str, int]]


def read_snapshots(conn: sqlite3.Connection, start: datetime, end: datetime) -> list[SnapshotRecord]:
    """Time-lapse frames in [start, end), by time (none from a database older than schema 4)."""
    if get_version(conn) < 4:
        return []
    rows = conn.execute(
        "SELECT ts_utc, run_id, insects, counts_json FROM snapshots WHERE ts_utc >= ? AND ts_utc < ? "
        f"{current_runs(conn)} ORDER BY ts_utc, run_id, snapshot_id",
        (utc_iso(start), utc_iso(end)),
    ).fetchall()
    return [
        SnapshotRecord(
            parse_utc(r["ts_utc"]), int(r["run_id"]), int(r["insects"]), json.loads(r["counts_json"])
        )
        for r in rows
    ]


@dataclass(frozen=True)
class SnapshotInsect:
    """A counted insect (a finished track) as one snapshot showed it: its largest piece's own answer."""

    track_id: int
    level: str | None
    label: str | None
    score: float | None
    unknown: bool = False  # the open set called this crop unlike every taxon (schema 8 on)


@dataclass(frozen=True)
class SnapshotMedia:
    """A kept time-lapse snapshot image (still on disk by the database's account) and the counted
    insects it showed: the media of a Camtrap DP media-level observation."""

    snapshot_id: int
    run_id: int
    ts: datetime
    image_path: str  # relative to the crops folder
    insects: tuple[SnapshotInsect, ...]


_SNAPSHOT_INSECTS = (
    "SELECT d.track_id, d.level, d.label, d.score, {unknown} AS unknown FROM detections d "
    "JOIN tracks t ON t.track_id = d.track_id "
    "WHERE d.ts_utc = ? AND d.run_id = ? AND d.frame_index = ? AND t.status = 'ended' "
    "ORDER BY d.track_id, d.area_px DESC, d.detection_id"
)


def read_snapshot_media(
    conn: sqlite3.Connection, windows: Sequence[tuple[datetime, datetime]]
) -> list[SnapshotMedia]:
    """Kept snapshot images in the windows, by time, each with the counted insects it showed (one
    per track: pieces of one insect once). Nothing from a database older than schema 5."""
    version = get_version(conn)
    if version < 5:
        return []
    insects_sql = _SNAPSHOT_INSECTS.format(unknown="d.unknown" if version >= OPEN_SET_SCHEMA else "0")
    out: list[SnapshotMedia] = []
    for start, end in windows:
        rows = conn.execute(
            "SELECT snapshot_id, run_id, ts_utc, frame_index, image_path FROM snapshots "
            "WHERE image_path IS NOT NULL AND image_deleted_utc IS NULL AND ts_utc >= ? AND ts_utc < ? "
            f"{current_runs(conn)} ORDER BY ts_utc, snapshot_id",
            (utc_iso(start), utc_iso(end)),
        ).fetchall()
        for r in rows:
            insects: dict[int, SnapshotInsect] = {}
            for d in conn.execute(insects_sql, (r["ts_utc"], r["run_id"], r["frame_index"])):
                insects.setdefault(
                    int(d["track_id"]),
                    SnapshotInsect(
                        int(d["track_id"]),
                        d["level"],
                        d["label"],
                        None if d["score"] is None else float(d["score"]),
                        bool(d["unknown"]),
                    ),
                )
            out.append(
                SnapshotMedia(
                    int(r["snapshot_id"]),
                    int(r["run_id"]),
                    parse_utc(r["ts_utc"]),
                    str(r["image_path"]),
                    tuple(insects.values()),
                )
            )
    return out


def effort_seconds(conn: sqlite3.Connection, start: datetime, end: datetime) -> float:
    """Watched seconds in [start, end) from the interval summaries (all runs but superseded ones).

    A summary that crosses the boundary contributes in proportion to its overlap.
    """
    total = 0.0
    rows = conn.execute(
        "SELECT start_utc, end_utc, effort_s FROM summaries WHERE end_utc > ? AND start_utc < ? "
        f"{current_runs(conn)} ORDER BY start_utc, run_id",
        (utc_iso(start), utc_iso(end)),
    ).fetchall()
    for r in rows:
        s, e, effort = parse_utc(r["start_utc"]), parse_utc(r["end_utc"]), float(r["effort_s"])
        span = (e - s).total_seconds()
        if span <= 0:
            continue
        overlap = (min(e, end) - max(s, start)).total_seconds()
        if overlap > 0:
            total += effort * min(1.0, overlap / span)
    return total


def read_runs(conn: sqlite3.Connection, run_ids: Iterable[int]) -> dict[int, RunRecord]:
    """The runs by id, with their config snapshot parsed and their latest logged moment."""
    out: dict[int, RunRecord] = {}
    for run_id in sorted(set(run_ids)):
        r = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if r is None:
            continue
        try:
            config = json.loads(r["config_json"])
        except ValueError:
            config = {}
        last = conn.execute(
            "SELECT MAX(t) FROM (SELECT MAX(end_utc) AS t FROM summaries WHERE run_id = ? "
            "UNION ALL SELECT MAX(last_utc) FROM tracks WHERE run_id = ?)",
            (run_id, run_id),
        ).fetchone()[0]
        out[run_id] = RunRecord(
            run_id=int(r["run_id"]),
            device_id=r["device_id"],
            started=parse_utc(r["started_utc"]),
            ended=_opt_ts(r["ended_utc"]),
            software_version=r["software_version"],
            model_name=r["model_name"],
            model_sha256=r["model_sha256"],
            source=r["source"],
            config=config if isinstance(config, dict) else {},
            last_activity=_opt_ts(last),
        )
    return out


def runs_between(conn: sqlite3.Connection, start: datetime, end: datetime) -> list[int]:
    """Runs that were going at some moment of [start, end) (started before end, not ended before start)."""
    rows = conn.execute(
        "SELECT run_id FROM runs WHERE started_utc < ? AND (ended_utc IS NULL OR ended_utc >= ?) "
        "ORDER BY run_id",
        (utc_iso(end), utc_iso(start)),
    ).fetchall()
    return [int(r[0]) for r in rows]


def latest_device_id(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT device_id FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
    return None if row is None else str(row[0])


# ---------------------------------------------------------------- levels


def ordered_levels(tracks: Iterable[TrackRecord]) -> list[str]:
    """Every level in the tracks' lineages, coarse to fine.

    A track's own level is finer than every other level in its lineage; what the data leaves
    open is settled by the usual rank order (order before family before species), then by name.
    """
    levels: set[str] = set()
    finer_than: dict[str, set[str]] = {}  # level -> levels known to be coarser
    for t in tracks:
        levels.update(t.lineage)
        if t.level and t.level in t.lineage:
            finer_than.setdefault(t.level, set()).update(k for k in t.lineage if k != t.level)

    def rank(level: str) -> tuple[int, str]:
        return (RANKS.index(level) if level in RANKS else len(RANKS), level)

    out: list[str] = []
    remaining = set(levels)
    while remaining:
        ready = [lv for lv in remaining if not (finer_than.get(lv, set()) & remaining)]
        pick = min(ready or remaining, key=rank)  # a cycle (inconsistent data): fall back to rank
        out.append(pick)
        remaining.discard(pick)
    return out
