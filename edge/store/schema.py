"""The database schema: its version, its migrations, and the rows written to it.

The database is the trap's memory for months, so the schema only ever moves forward through
numbered migrations, and an existing file is copied aside before any migration touches it.
The version lives in `PRAGMA user_version` (in the file header, changed inside the same
transaction as the migration, so a crash leaves either the old or the new version, never half).

Adding a table later (interval summaries, health samples, MQTT outbox) is one entry at the end
of `MIGRATIONS`:

    Migration(2, "interval summaries", '''
        CREATE TABLE summaries (summary_id INTEGER PRIMARY KEY, start_utc TEXT NOT NULL, ...);
        CREATE INDEX summaries_start ON summaries(start_utc);
    ''')

or, when SQL alone cannot express it (backfilling computed values), a callable that takes the
connection and runs statements on it: `Migration(3, "backfill", _fill_moved_px)`. Rules: never
edit a migration that has shipped (devices in the field already ran it); never COMMIT inside a
callable (`migrate` wraps each migration in its own transaction); to change a column, create a
new table, copy, drop, rename (SQLite's ALTER TABLE is limited). Write to new tables through
`Database.submit` / `Database.run_sync`, so the one writer thread stays the only writer.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import StorageError

log = logging.getLogger(__name__)

TRACK_STATUSES = ("tentative", "confirmed", "ended", "discarded")
DISCARD_REASONS = ("noise", "not_insect", "partial", "superseded")
RUN_COUNTERS = ("frames_processed", "frames_dropped", "frames_corrupt", "detections", "tracks_confirmed")

# ---------------------------------------------------------------- timestamps

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_iso(moment: datetime) -> str:
    """UTC ISO-8601 with microseconds and 'Z': sorts as text, so SQL range queries on it are correct."""
    if not isinstance(moment, datetime):
        raise StorageError(f"timestamp: expected a timezone-aware datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise StorageError(
            f"timestamp {moment.isoformat()}: expected a timezone-aware datetime, got a naive one"
        )
    return moment.astimezone(timezone.utc).strftime(_TS_FORMAT)


def parse_utc(text: str) -> datetime:
    """Read back a timestamp written by `utc_iso` (for export and reports)."""
    try:
        return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        raise StorageError(
            f"timestamp {text!r}: expected UTC ISO-8601 like 2026-07-01T21:30:00.000000Z"
        ) from None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    """Moves the schema from `version - 1` to `version`: SQL statements, or a callable on the connection."""

    version: int
    description: str
    apply: str | Callable[[sqlite3.Connection], None]


_V1 = """
CREATE TABLE runs (
    run_id            INTEGER PRIMARY KEY,
    device_id         TEXT NOT NULL,
    started_utc       TEXT NOT NULL,
    ended_utc         TEXT,
    software_version  TEXT NOT NULL,
    config_json       TEXT NOT NULL,
    model_sha256      TEXT,
    model_name        TEXT,
    source            TEXT NOT NULL,
    host              TEXT NOT NULL,
    exit_reason       TEXT,
    frames_processed  INTEGER NOT NULL DEFAULT 0,
    frames_dropped    INTEGER NOT NULL DEFAULT 0,
    frames_corrupt    INTEGER NOT NULL DEFAULT 0,
    detections        INTEGER NOT NULL DEFAULT 0,
    tracks_confirmed  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE detections (
    detection_id      INTEGER PRIMARY KEY,
    run_id            INTEGER NOT NULL REFERENCES runs(run_id),
    track_id          INTEGER,
    frame_index       INTEGER NOT NULL,
    ts_utc            TEXT NOT NULL,
    x0                INTEGER NOT NULL,
    y0                INTEGER NOT NULL,
    x1                INTEGER NOT NULL,
    y1                INTEGER NOT NULL,
    area_px           INTEGER NOT NULL,
    det_score         REAL NOT NULL,
    level             TEXT,
    label             TEXT,
    score             REAL,
    predictions_json  TEXT,
    crop_path         TEXT,
    CHECK (x1 > x0 AND y1 > y0)
);
CREATE INDEX detections_ts_utc ON detections(ts_utc);
CREATE INDEX detections_track_id ON detections(track_id);
CREATE INDEX detections_label ON detections(label);
CREATE TABLE tracks (
    track_id          INTEGER PRIMARY KEY,
    run_id            INTEGER NOT NULL REFERENCES runs(run_id),
    status            TEXT NOT NULL CHECK (status IN ('tentative', 'confirmed', 'ended', 'discarded')),
    first_utc         TEXT NOT NULL,
    last_utc          TEXT NOT NULL,
    hits              INTEGER NOT NULL,
    level             TEXT,
    label             TEXT,
    score             REAL,
    votes_json        TEXT,
    best_detection_id INTEGER,
    x0                INTEGER NOT NULL,
    y0                INTEGER NOT NULL,
    x1                INTEGER NOT NULL,
    y1                INTEGER NOT NULL,
    moved_px          REAL NOT NULL DEFAULT 0
);
CREATE INDEX tracks_first_utc ON tracks(first_utc);
CREATE INDEX tracks_label ON tracks(label);
"""

# Field operations (issue 5): the MQTT outbox, interval summaries, health samples, named counters,
# each track's taxon at every level, and crops deleted by retention (the row stays, the file goes).
_V2 = """
CREATE TABLE outbox (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id            TEXT NOT NULL UNIQUE,
    kind              TEXT NOT NULL
                      CHECK (kind IN ('status', 'track', 'summary', 'health', 'discovery', 'event')),
    topic             TEXT NOT NULL,
    payload           TEXT NOT NULL,
    qos               INTEGER NOT NULL CHECK (qos IN (0, 1, 2)),
    retain            INTEGER NOT NULL CHECK (retain IN (0, 1)),
    created_utc       TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    delivered_utc     TEXT
);
CREATE INDEX outbox_pending ON outbox(delivered_utc, seq);
CREATE TABLE counters (
    name              TEXT PRIMARY KEY,
    value             INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE summaries (
    summary_id        INTEGER PRIMARY KEY,
    run_id            INTEGER REFERENCES runs(run_id),
    start_utc         TEXT NOT NULL,
    end_utc           TEXT NOT NULL,
    effort_s          REAL NOT NULL,
    frames_processed  INTEGER NOT NULL,
    frames_dropped    INTEGER NOT NULL,
    tracks            INTEGER NOT NULL,
    counts_json       TEXT NOT NULL,
    UNIQUE (run_id, start_utc)
);
CREATE INDEX summaries_start ON summaries(start_utc);
CREATE TABLE health (
    health_id         INTEGER PRIMARY KEY,
    run_id            INTEGER REFERENCES runs(run_id),
    ts_utc            TEXT NOT NULL,
    status            TEXT NOT NULL,
    payload_json      TEXT NOT NULL
);
CREATE INDEX health_ts ON health(ts_utc);
ALTER TABLE tracks ADD COLUMN lineage_json TEXT;
ALTER TABLE detections ADD COLUMN crop_deleted_utc TEXT;
"""

# Real frames (issue 13): how many of a track's detections were cut by the frame's border, why a
# track is not counted ('noise': never confirmed; 'not_insect': voted a not-insect label;
# 'partial': only ever a sliver at the border that the model could not name), and its size.
_V3 = """
ALTER TABLE tracks ADD COLUMN edge_hits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tracks ADD COLUMN discard_reason TEXT;
ALTER TABLE tracks ADD COLUMN length_px REAL;
ALTER TABLE tracks ADD COLUMN length_mm REAL;
ALTER TABLE tracks ADD COLUMN size_class TEXT;
UPDATE tracks SET discard_reason = 'noise' WHERE status = 'discarded';
"""

# Time-lapse traps (issue 21): what each snapshot showed, and per interval the most insects seen at
# once. `snapshots` has one row per processed frame in tracker.mode timelapse: insects seen in it
# (one per track, pieces of one insect once) and counts_json {level: {label: n}} by each crop's own
# answer ('unsure' where it abstained) and {"size_class": {...}}, the summaries' structure.
_V4 = """
ALTER TABLE summaries ADD COLUMN max_insects INTEGER;
CREATE TABLE snapshots (
    snapshot_id       INTEGER PRIMARY KEY,
    run_id            INTEGER NOT NULL REFERENCES runs(run_id),
    ts_utc            TEXT NOT NULL,
    frame_index       INTEGER NOT NULL,
    insects           INTEGER NOT NULL,
    counts_json       TEXT NOT NULL
);
CREATE INDEX snapshots_ts ON snapshots(ts_utc);
"""

# Time-lapse snapshots as media (issue 21): the snapshot's own JPEG (downscaled, under the crops
# folder) so Camtrap DP can carry one media-level observation per snapshot; retention deletes
# these images first and marks image_deleted_utc, as it does for crops.
_V5 = """
ALTER TABLE snapshots ADD COLUMN image_path TEXT;
ALTER TABLE snapshots ADD COLUMN image_deleted_utc TEXT;
"""

# Secrets (issue 22): earlier versions stored the MQTT password in every run's config snapshot.
# The database travels (backups, exports, colleagues); the password must not. '(hidden)' is
# edge.config.SECRET_MARK; a snapshot that is not JSON is left as it is. secure_delete overwrites
# the old row's bytes instead of leaving them in the file's free space.
_SCRUB_SECRETS = """
UPDATE runs SET config_json = json_set(config_json, '$.mqtt.password', '(hidden)')
WHERE json_valid(config_json) AND json_type(config_json, '$.mqtt.password') = 'text'
  AND json_extract(config_json, '$.mqtt.password') != '(hidden)'
"""


def scrub_secrets(conn: sqlite3.Connection) -> int:
    """Replace stored MQTT passwords in runs.config_json (migration 6; also run on the backup a
    migration makes, so the secret is not kept there either). Returns the rows changed."""
    conn.execute("PRAGMA secure_delete = ON")
    try:
        return conn.execute(_SCRUB_SECRETS).rowcount
    finally:
        conn.execute("PRAGMA secure_delete = OFF")


# One count across restarts (issue 22). tracks.resume_json: what the tracker needs to continue a
# track the run left open (edge/track/resume.py), NULL once the tracker itself ended it.
# runs.superseded_by: a replay run with --from-start re-processed this run's frames; the older run's
# counted tracks become 'discarded' with discard_reason 'superseded', and its summaries and
# snapshots leave the exports (rows are kept, never deleted).
_V7 = """
ALTER TABLE tracks ADD COLUMN resume_json TEXT;
ALTER TABLE runs ADD COLUMN superseded_by INTEGER REFERENCES runs(run_id);
CREATE INDEX runs_source ON runs(source);
"""

# The open set per crop (DESIGN.md's outcome table). detections.unknown: the crop's embedding lay
# beyond its class's limit (edge/classify/open_set.py), so its label is what the model said, not a
# name to report; open_set_distance: that distance. Time-lapse snapshots are counted per crop, and
# Camtrap DP's media-level observations are built from these rows: an unknown crop must not be
# published under the model's label there.
OPEN_SET_SCHEMA = 8
OPEN_SET_COLUMNS = ("unknown", "open_set_distance")  # the last columns of DETECTION_COLUMNS
_V8 = """
ALTER TABLE detections ADD COLUMN unknown INTEGER NOT NULL DEFAULT 0 CHECK (unknown IN (0, 1));
ALTER TABLE detections ADD COLUMN open_set_distance REAL;
"""

# Runs whose rows count: not re-processed by a later --from-start replay (schema 7 on).
CURRENT_RUNS = "SELECT run_id FROM runs WHERE superseded_by IS NULL"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "runs, detections, tracks", _V1),
    Migration(2, "outbox, counters, summaries, health; track lineage; deleted crops", _V2),
    Migration(3, "tracks: detections cut by the frame border, why a track was discarded, size", _V3),
    Migration(4, "snapshots: insects per time-lapse frame; summaries: most insects seen at once", _V4),
    Migration(5, "snapshots: the snapshot's image file, and when retention deleted it", _V5),
    Migration(6, "runs: the MQTT password scrubbed from stored config snapshots", scrub_secrets),
    Migration(7, "tracks: state to continue an open track after a restart; runs: superseded", _V7),
    Migration(OPEN_SET_SCHEMA, "detections: the open set's answer per crop (unknown, and its distance)", _V8),
)
LATEST_VERSION = MIGRATIONS[-1].version


def split_sql(script: str) -> list[str]:
    """Split a script into statements (so each runs inside our transaction; executescript would commit)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip().strip(";").strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        raise StorageError(f"migration SQL ends with an incomplete statement: {current.strip()[:80]!r}")
    return statements


def get_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def user_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    return sorted(r[0] for r in rows)


def _check_migrations(migrations: Sequence[Migration]) -> int:
    if not migrations:
        raise StorageError("no migrations given; expected at least migration 1")
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise StorageError(
                f"migration list out of order: position {expected} holds version {migration.version}; "
                f"expected versions 1, 2, 3... without gaps"
            )
    return migrations[-1].version


def check_version(version: int, tables: Sequence[str], path: str | Path, latest: int) -> None:
    """Refuse files this software must not write: newer schemas and foreign databases."""
    if version > latest:
        raise StorageError(
            f"{path}: was written by a newer trapcam (schema {version}, this version knows {latest}); "
            f"upgrade trapcam"
        )
    if version == 0 and tables:
        raise StorageError(
            f"{path}: is an SQLite database without a trapcam schema version "
            f"(tables: {', '.join(tables[:5])}); expected a trapcam database or a new file"
        )


def _backup_path(path: Path, old: int) -> Path:
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.v{old}.bak-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.v{old}.bak-{stamp}-{n}")
        n += 1
    return candidate


def backup(conn: sqlite3.Connection, path: Path, old: int) -> Path:
    """Copy the whole database aside with SQLite's backup API (consistent even with a WAL open)."""
    target = _backup_path(path, old)
    try:
        dest = sqlite3.connect(target)
        try:
            conn.backup(dest)
            if "runs" in user_tables(dest):  # a secret an older version stored stays out of the copy too
                scrub_secrets(dest)
                dest.commit()
            ok = dest.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dest.close()
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"{path}: cannot back up to {target} before migrating: {exc}") from None
    if ok != "ok":
        raise StorageError(f"{path}: backup {target} failed its check ({ok}); nothing was migrated")
    with open(target, "rb") as f:
        os.fsync(f.fileno())
    return target


def migrate(
    conn: sqlite3.Connection, path: str | Path, migrations: Sequence[Migration] = MIGRATIONS
) -> Path | None:
    """Bring the database up to the latest version; returns the backup's path (None when none was needed).

    `conn` must be in autocommit mode (isolation_level=None). A newer or foreign database raises
    StorageError before anything is written. An existing database (version >= 1) is backed up to
    `<db>.v<old>.bak-<UTC time>` first; then every migration runs in its own transaction, so a
    failure leaves the file at the last completed version.
    """
    path = Path(path)
    latest = _check_migrations(migrations)
    old = get_version(conn)
    check_version(old, user_tables(conn), path, latest)
    if old == latest:
        return None
    saved = backup(conn, path, old) if old >= 1 else None
    if saved is not None:
        log.info("%s: backed up schema %d to %s before migrating to %d", path, old, saved, latest)
    for migration in migrations[old:]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            if isinstance(migration.apply, str):
                for statement in split_sql(migration.apply):
                    conn.execute(statement)
            else:
                migration.apply(conn)
            conn.execute(f"PRAGMA user_version = {int(migration.version)}")
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            where = f"; the backup is {saved}" if saved else ""
            raise StorageError(
                f"{path}: migration {migration.version} ({migration.description}) failed: {exc}; "
                f"the database stays at schema {get_version(conn)}{where}"
            ) from None
        if old >= 1:  # an existing file: say what changed in it, step by step
            log.info("%s: migrated to schema %d (%s)", path, migration.version, migration.description)
    if old == 0:  # a new file: one line, not one per step of a history it never had
        log.info("%s: new database (schema %d)", path, latest)
    return saved


# ---------------------------------------------------------------- rows


def _int(owner: str, name: str, value: Any, minimum: int | None = None, optional: bool = False) -> int | None:
    """Validated plain int (numpy ints accepted: sqlite3 cannot bind them, so convert here)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise StorageError(f"{owner}.{name}: expected an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise StorageError(f"{owner}.{name}: expected an integer >= {minimum}, got {value}")
    return value


def _float(owner: str, name: str, value: Any, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise StorageError(f"{owner}.{name}: expected a finite number, got {value!r}")
    return float(value)


def _bool(owner: str, name: str, value: Any) -> int:
    """A flag as SQLite stores it (0 or 1); numpy bools accepted."""
    if not isinstance(value, (bool, np.bool_)):
        raise StorageError(f"{owner}.{name}: expected true or false, got {value!r}")
    return int(bool(value))


def _text(owner: str, name: str, value: Any, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise StorageError(f"{owner}.{name}: expected text, got {value!r}")
    return value


def _json(owner: str, name: str, value: Any) -> str | None:
    """Text that is valid JSON: a JSON string is checked as is, anything else is serialised."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError as exc:
            raise StorageError(f"{owner}.{name}: expected JSON text, got invalid JSON ({exc})") from None
        return value
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as exc:
        raise StorageError(f"{owner}.{name}: cannot be stored as JSON: {exc}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _box(owner: str, x0: Any, y0: Any, x1: Any, y1: Any) -> tuple[int, int, int, int]:
    b = tuple(_int(owner, n, v) for n, v in (("x0", x0), ("y0", y0), ("x1", x1), ("y1", y1)))
    if not (b[2] > b[0] and b[3] > b[1]):  # type: ignore[operator]
        raise StorageError(f"{owner}: box ({b[0]}, {b[1]}, {b[2]}, {b[3]}): expected x1 > x0 and y1 > y0")
    return b  # type: ignore[return-value]


@dataclass(frozen=True)
class RunInfo:
    """One start of the service: what ran (software, config, model) so every row can be traced to it."""

    device_id: str
    software_version: str
    config_json: str
    source: str
    model_sha256: str | None = None
    model_name: str | None = None
    host: str = field(default_factory=lambda: os.uname().nodename if hasattr(os, "uname") else "unknown")
    started_utc: datetime = field(default_factory=utc_now)

    def params(self) -> tuple[Any, ...]:
        o = "RunInfo"
        try:
            json.loads(self.config_json)
        except (TypeError, ValueError) as exc:
            raise StorageError(
                f"RunInfo.config_json: expected a JSON document, got invalid JSON ({exc})"
            ) from None
        return (
            _text(o, "device_id", self.device_id),
            utc_iso(self.started_utc),
            _text(o, "software_version", self.software_version),
            self.config_json,
            _text(o, "model_sha256", self.model_sha256, optional=True),
            _text(o, "model_name", self.model_name, optional=True),
            _text(o, "source", self.source),
            _text(o, "host", self.host),
        )


@dataclass(frozen=True)
class DetectionRow:
    """One insect in one frame, with the classifier's answer.

    The pipeline assigns `detection_id` and `track_id` in memory (from `Database.next_ids`), so
    tracks can refer to detections before they are written. `predictions_json` holds the top-k
    per level, as JSON text or as a mapping that is serialised: {"species": [["Aglais io", 0.91]]}.
    `crop_path` is filled in by the database when a crop is stored with the row.
    """

    detection_id: int
    run_id: int
    track_id: int | None
    frame_index: int
    ts_utc: datetime
    x0: int
    y0: int
    x1: int
    y1: int
    area_px: int
    det_score: float
    level: str | None = None
    label: str | None = None
    score: float | None = None
    predictions_json: str | Mapping[str, Sequence[tuple[str, float]]] | None = None
    crop_path: str | None = None
    unknown: bool = False  # the open set called the crop unlike every taxon (label: the model's answer)
    open_set_distance: float | None = None

    @classmethod
    def from_parts(
        cls,
        detection_id: int,
        run_id: int,
        track_id: int | None,
        frame: Any,
        detection: Any,
        classification: Any | None = None,
    ) -> DetectionRow:
        """Build from the pipeline's records: edge.frames.Frame, detect.base.Detection, Classification."""
        box = detection.box
        level = label = score = predictions = None
        if classification is not None:
            level, label, score = classification.level, classification.label, classification.score
            predictions = {
                name: [[lab, round(p, 4)] for lab, p in pred.top_k]
                for name, pred in classification.levels.items()
            }
        return cls(
            detection_id=detection_id,
            run_id=run_id,
            track_id=track_id,
            frame_index=frame.index,
            ts_utc=frame.timestamp,
            x0=box.x0,
            y0=box.y0,
            x1=box.x1,
            y1=box.y1,
            area_px=detection.area_px,
            det_score=detection.score,
            level=level,
            label=label,
            score=score,
            predictions_json=predictions,
            unknown=bool(classification is not None and classification.unknown),
            open_set_distance=None if classification is None else classification.open_set_distance,
        )

    def params(self, crop_path: str | None = None) -> tuple[Any, ...]:
        """Validated values in column order; raises StorageError naming the field."""
        o = "DetectionRow"
        return (
            _int(o, "detection_id", self.detection_id, 1),
            _int(o, "run_id", self.run_id, 1),
            _int(o, "track_id", self.track_id, 1, optional=True),
            _int(o, "frame_index", self.frame_index, 0),
            utc_iso(self.ts_utc),
            *_box(o, self.x0, self.y0, self.x1, self.y1),
            _int(o, "area_px", self.area_px, 0),
            _float(o, "det_score", self.det_score),
            _text(o, "level", self.level, optional=True),
            _text(o, "label", self.label, optional=True),
            _float(o, "score", self.score, optional=True),
            _json(o, "predictions_json", self.predictions_json),
            crop_path if crop_path is not None else _text(o, "crop_path", self.crop_path, optional=True),
            _bool(o, "unknown", self.unknown),
            _float(o, "open_set_distance", self.open_set_distance, optional=True),
        )


DETECTION_COLUMNS = (
    "detection_id, run_id, track_id, frame_index, ts_utc, x0, y0, x1, y1, area_px, det_score, "
    "level, label, score, predictions_json, crop_path, " + ", ".join(OPEN_SET_COLUMNS)
)


@dataclass(frozen=True)
class TrackRow:
    """One insect followed across frames; written again (upserted) whenever it changes.

    `votes_json` holds the accumulated class votes per level ({"species": {"Aglais io": 3.2}}, as
    JSON text or a mapping), so a later re-count can re-decide; x0..y1 is the last box;
    `moved_px` the path length of its centre, which tells a sitting moth from a flying one.
    """

    track_id: int
    run_id: int
    status: str
    first_utc: datetime
    last_utc: datetime
    hits: int
    x0: int
    y0: int
    x1: int
    y1: int
    level: str | None = None
    label: str | None = None
    score: float | None = None
    votes_json: str | Mapping[str, Mapping[str, float]] | None = None
    best_detection_id: int | None = None
    moved_px: float = 0.0
    # The answer at every level it implies, e.g. {"order": "Lepidoptera", "family": "Noctuidae",
    # "species": "Noctua pronuba"}: counts per taxon at each level need no taxonomy later.
    lineage_json: str | Mapping[str, str] | None = None
    # Detections whose box touched the frame's border, and (status 'discarded' only) why.
    edge_hits: int = 0
    discard_reason: str | None = None
    # Body length (long side of the best detection's box) in full-resolution px, in mm where the
    # camera's scale is configured, and its size class (config `size`).
    length_px: float | None = None
    length_mm: float | None = None
    size_class: str | None = None
    # While open (and when a run's end closed it): the tracker's memory, so a restart continues
    # the track (edge/track/resume.py); None once the tracker ended it.
    resume_json: str | None = None

    def params(self) -> tuple[Any, ...]:
        o = "TrackRow"
        if self.status not in TRACK_STATUSES:
            raise StorageError(f"TrackRow.status: expected one of {TRACK_STATUSES}, got {self.status!r}")
        if self.discard_reason is not None and (
            self.status != "discarded" or self.discard_reason not in DISCARD_REASONS
        ):
            raise StorageError(
                f"TrackRow.discard_reason: expected one of {DISCARD_REASONS} on a discarded track, "
                f"got {self.discard_reason!r} with status {self.status!r}"
            )
        first, last = utc_iso(self.first_utc), utc_iso(self.last_utc)
        if last < first:
            raise StorageError(f"TrackRow.last_utc: {last} is before first_utc {first}")
        return (
            _int(o, "track_id", self.track_id, 1),
            _int(o, "run_id", self.run_id, 1),
            self.status,
            first,
            last,
            _int(o, "hits", self.hits, 0),
            _text(o, "level", self.level, optional=True),
            _text(o, "label", self.label, optional=True),
            _float(o, "score", self.score, optional=True),
            _json(o, "votes_json", self.votes_json),
            _int(o, "best_detection_id", self.best_detection_id, 1, optional=True),
            *_box(o, self.x0, self.y0, self.x1, self.y1),
            _float(o, "moved_px", self.moved_px),
            _json(o, "lineage_json", self.lineage_json),
            _int(o, "edge_hits", self.edge_hits, 0),
            self.discard_reason,
            _float(o, "length_px", self.length_px, optional=True),
            _float(o, "length_mm", self.length_mm, optional=True),
            _text(o, "size_class", self.size_class, optional=True),
            _text(o, "resume_json", self.resume_json, optional=True),
        )


TRACK_COLUMNS = (
    "track_id, run_id, status, first_utc, last_utc, hits, level, label, score, votes_json, "
    "best_detection_id, x0, y0, x1, y1, moved_px, lineage_json, edge_hits, discard_reason, length_px, "
    "length_mm, size_class, resume_json"
)
