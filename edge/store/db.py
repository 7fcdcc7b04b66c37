"""The trap's database: one writer thread, batched transactions, nothing logged is ever lost.

Why one writer thread: SQLite allows one writer at a time, and a transaction per row would cost
an fsync per row on an SD card. The pipeline hands rows to `Database` and carries on; the
writer gathers them into one transaction (up to `batch_size` rows or `flush_interval_s`).
When a write fails (disk full, database locked, crop folder unusable) the writer keeps the
batch and retries it with backoff; the queue is bounded, so after days without a disk the
pipeline blocks (detections matter more than frame rate) instead of eating the memory.

Why the checks at start: a corrupt file or one written by a newer trapcam is reported and left
exactly as it is (read-only probe first); an older schema is backed up before migrating.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from edge.classify.types import UNNAMED_LABELS
from edge.errors import StorageError
from edge.store.crops import CropStore, CropWriteError, check_crop
from edge.store.reserve import Reserve
from edge.store.schema import (
    DETECTION_COLUMNS,
    LATEST_VERSION,
    MIGRATIONS,
    OPEN_SET_COLUMNS,
    OPEN_SET_SCHEMA,
    RUN_COUNTERS,
    TRACK_COLUMNS,
    DetectionRow,
    Migration,
    RunInfo,
    TrackRow,
    check_version,
    get_version,
    migrate,
    user_tables,
    utc_iso,
    utc_now,
)

if TYPE_CHECKING:
    from edge.config import TrapConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

_DETECTION_PLACEHOLDERS = ", ".join("?" * len(DETECTION_COLUMNS.split(", ")))
_INSERT_DETECTION = f"INSERT INTO detections ({DETECTION_COLUMNS}) VALUES ({_DETECTION_PLACEHOLDERS})"
# Before OPEN_SET_SCHEMA a detection row had no open-set columns; a Database given an older migration
# list (the tests' stand-in for an older trapcam's file) writes only the columns before them.
_LEGACY_DETECTION_COLUMNS = len(DETECTION_COLUMNS.split(", ")) - len(OPEN_SET_COLUMNS)
_INSERT_LEGACY_DETECTION = (
    f"INSERT INTO detections ({', '.join(DETECTION_COLUMNS.split(', ')[:_LEGACY_DETECTION_COLUMNS])}) "
    f"VALUES ({', '.join('?' * _LEGACY_DETECTION_COLUMNS)})"
)
_UPSERT_TRACK = (
    f"INSERT INTO tracks ({TRACK_COLUMNS}) VALUES ({', '.join('?' * len(TRACK_COLUMNS.split(', ')))}) "
    "ON CONFLICT(track_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in TRACK_COLUMNS.split(", ")[1:])
)
_INSERT_RUN = (
    "INSERT INTO runs (device_id, started_utc, software_version, config_json, model_sha256, model_name, "
    "source, host) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# A run that has no end was cut short (SIGKILL, power loss): close it at its last logged moment,
# and settle its open tracks, which no tracker will ever continue.
_SETTLE_TRACKS_V1 = (
    "UPDATE tracks SET status = CASE status WHEN 'tentative' THEN 'discarded' ELSE 'ended' END "
    "WHERE status IN ('tentative', 'confirmed') "
    "AND run_id IN (SELECT run_id FROM runs WHERE ended_utc IS NULL)"
)
# From schema 3: the pipeline's rule too (pipeline.is_partial): a confirmed track that was only ever
# a nameless sliver at the frame's border is 'partial', not a count; and every discard says why.
_UNNAMED = ", ".join(f"'{label}'" for label in UNNAMED_LABELS)
_PARTIAL = (
    f"(edge_hits >= hits AND hits > 0 AND (label IS NULL OR label IN ({_UNNAMED})) "
    "AND MAX(COALESCE(length_px, 0), x1 - x0, y1 - y0) <= :sliver_max_px)"
)
_SETTLE_TRACKS = (
    "UPDATE tracks SET "
    f"discard_reason = CASE WHEN status = 'tentative' THEN 'noise' WHEN {_PARTIAL} THEN 'partial' END, "
    f"status = CASE WHEN status = 'tentative' OR {_PARTIAL} THEN 'discarded' ELSE 'ended' END "
    "WHERE status IN ('tentative', 'confirmed') "
    "AND run_id IN (SELECT run_id FROM runs WHERE ended_utc IS NULL)"
)
_CLOSE_INTERRUPTED = (
    "UPDATE runs SET exit_reason = 'interrupted (no clean shutdown; ended_utc is the last logged time)'"
    "{frames}, ended_utc = MAX(started_utc, "
    "COALESCE((SELECT MAX(ts_utc) FROM detections d WHERE d.run_id = runs.run_id), started_utc), "
    "COALESCE((SELECT MAX(last_utc) FROM tracks t WHERE t.run_id = runs.run_id), started_utc){health}) "
    "WHERE ended_utc IS NULL"
)
# health samples carry the wall clock: a replay's frame times may lie years before its start
_LAST_HEALTH = ", COALESCE((SELECT MAX(ts_utc) FROM health h WHERE h.run_id = runs.run_id), started_utc)"
# the run's frame counter is written at stats intervals; its summaries (the open interval's stored after
# every frame) hold every frame it committed
_SUMMARY_FRAMES = (
    ", frames_processed = MAX(frames_processed, "
    "COALESCE((SELECT SUM(frames_processed) FROM summaries s WHERE s.run_id = runs.run_id), 0))"
)
_MAX_PAGES = 1_073_741_823  # SQLite's historical maximum page count: "no limit" on every version
_SQLITE_ERROR = 1  # generic SQL error (bad statement): retrying cannot help


@dataclass(eq=False)
class _Item:
    """One unit of queued work: a statement (with an optional crop to save first) or a call."""

    sql: str = ""
    params: Sequence[Any] = ()
    crop: np.ndarray | None = None
    crop_rel: str | None = None
    jpeg: bytes | None = None
    call: Callable[[sqlite3.Connection], Any] | None = None
    between: bool = False  # run `call` alone, outside any transaction (checkpoint, VACUUM)
    future: Future[Any] | None = None
    seq: int = 0
    nbytes: int = 256
    queued_at: float = 0.0


def _is_transient(exc: BaseException) -> bool:
    """Failures of the disk or a lock are retried; a bad statement or row is not (it would jam the queue)."""
    if isinstance(exc, (CropWriteError, OSError)):
        return True
    if isinstance(
        exc,
        (
            sqlite3.IntegrityError,
            sqlite3.ProgrammingError,
            sqlite3.InterfaceError,
            sqlite3.DataError,
            sqlite3.NotSupportedError,
        ),
    ):
        return False
    if isinstance(exc, sqlite3.DatabaseError):  # OperationalError and plain DatabaseError (corrupt, I/O)
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return (code & 0xFF) != _SQLITE_ERROR
        text = str(exc).lower()
        return not any(s in text for s in ("syntax error", "no such ", "has no column", "incomplete input"))
    return False


_SQLITE_FULL = 13  # "database or disk is full" (also max_page_count reached)
_SQLITE_IOERR = 10  # "disk I/O error": on a full disk, when the WAL or shared memory cannot grow
_NEARLY_FULL = 1024 * 1024  # bytes free below which an I/O error is taken for a full disk
# A caller waiting on the writer gives up this soon when the disk is full and no reserve is left
# (at start: a clear "disk full" in seconds, not "the writer did not answer" after a minute).
_FULL_GIVE_UP_S = 5.0


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem holding `path` (its nearest existing folder); None: unknown."""
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def is_disk_full(exc: BaseException, path: Path) -> bool:
    """Does this write failure mean the disk (or the database's size cap) is full?"""
    if isinstance(exc, (OSError, CropWriteError)) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.DatabaseError):
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code == _SQLITE_FULL or "disk is full" in str(exc):
            return True
        if code == _SQLITE_IOERR or "disk i/o error" in str(exc).lower():
            free = free_bytes(path)
            return free is not None and free < _NEARLY_FULL
    return False


def _lock(path: Path) -> int:
    """Hold an exclusive flock on the database file: two trapcam processes would hand out the same ids."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"{path}: cannot open the database file: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StorageError(
            f"{path}: is in use by another trapcam process (only one may write a database); stop it first"
        ) from None
    return fd


def _ro_uri(path: Path) -> str:
    return f"{path.resolve().as_uri()}?mode=ro"


def _preflight(path: Path, check: str, latest: int) -> None:
    """Integrity and version checks through a read-only connection, so a bad file is never touched."""
    if not path.exists() or path.stat().st_size == 0:
        return
    pragma = "integrity_check(1)" if check == "full" else "quick_check(1)"
    try:
        conn = sqlite3.connect(_ro_uri(path), uri=True, isolation_level=None)
        try:
            problem = conn.execute(f"PRAGMA {pragma}").fetchone()[0]
            version, tables = get_version(conn), user_tables(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if is_disk_full(exc, path):
            raise StorageError(_disk_full_message(path, exc)) from None
        raise StorageError(
            f"{path}: cannot be read as an SQLite database ({exc}); the file was left untouched: "
            f"restore a backup or move it aside to start a new one"
        ) from None
    if problem != "ok":
        problem = " ".join(str(problem).replace("*** in database main ***", "").split())
        raise StorageError(
            f"{path}: failed the integrity check: {problem}; the file was left untouched: "
            f"restore a backup or move it aside to start a new one"
        )
    check_version(version, tables, path, latest)


def _disk_full_message(path: Path, exc: BaseException | str, doing: str = "opened") -> str:
    """A full disk is not a damaged database: say which, and never advise moving a good file."""
    free = free_bytes(path)
    room = f"{free / 2**20:.1f} MB free" if free is not None else "free space unknown"
    return (
        f"{path}: cannot be {doing}: the disk holding it is full ({room}; SQLite said: {exc}); the database "
        f"itself is fine and was left as it is: free space on that disk (other files; retention had "
        f"nothing more it may delete) and start trapcam again"
    )


def _open_writer(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return conn


def _set_pragmas(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageError(
            f"{path}: cannot switch to WAL journal mode (got {mode!r}); is it on a network share?"
        )
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: a killed process loses no commit
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_size_limit = 67108864")


class Database:
    """The one writer of a trapcam database. Methods queue work and return; `flush` waits for it.

    Keyword options: crops_root (where crops go; without it `add_detection` refuses crops),
    jpeg_quality, fsync_crops, max_queue_items / max_queue_mb (when either is reached, producers
    block with a logged warning), max_db_mb (cap the file: a full cap behaves like a full disk),
    startup_check ('full' integrity_check or the faster 'quick' check on very large files),
    busy_timeout_ms, retry_backoff_s (first and longest wait between retries), migrations (tests
    inject extra ones).
    """

    def __init__(
        self,
        path: str | Path,
        batch_size: int = 200,
        flush_interval_s: float = 1.0,
        *,
        crops_root: str | Path | None = None,
        jpeg_quality: int = 90,
        fsync_crops: bool = False,
        max_queue_items: int = 100_000,
        max_queue_mb: float = 64.0,
        max_db_mb: float | None = None,
        startup_check: Literal["full", "quick"] = "full",
        busy_timeout_ms: int = 5000,
        retry_backoff_s: tuple[float, float] = (0.1, 30.0),
        migrations: Sequence[Migration] = MIGRATIONS,
        sliver_max_px: float | None = None,
        reserve: Reserve | None = None,
    ) -> None:
        """sliver_max_px: the pipeline's sliver size (detector.sliver_limit_px) for settling the tracks
        a killed run left open; None: any size. reserve: released on the writer's first "disk full"
        (edge/store/reserve.py), so the batch it holds can be written."""
        if batch_size < 1 or flush_interval_s <= 0 or max_queue_items < 1 or max_queue_mb <= 0:
            raise StorageError(
                f"database options: expected batch_size >= 1, flush_interval_s > 0, max_queue_items >= 1, "
                f"max_queue_mb > 0; got {batch_size}, {flush_interval_s}, {max_queue_items}, {max_queue_mb}"
            )
        if startup_check not in ("full", "quick"):
            raise StorageError(
                f"database options: startup_check: expected 'full' or 'quick', got {startup_check!r}"
            )
        self.path = Path(path)
        self.crops = (
            CropStore(crops_root, jpeg_quality, fsync=fsync_crops) if crops_root is not None else None
        )
        self._batch_size = int(batch_size)
        self._flush_interval = float(flush_interval_s)
        self._max_items = int(max_queue_items)
        self._max_bytes = int(max_queue_mb * 1024 * 1024)
        self._backoff = (float(retry_backoff_s[0]), float(retry_backoff_s[1]))
        self._rejected_path = self.path.with_name(self.path.name + ".rejected.jsonl")
        self._sliver_max_px = float(sliver_max_px) if sliver_max_px is not None else 1e18

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot create its folder: {exc.strerror or exc}") from None
        latest = migrations[-1].version if migrations else 0
        self._open_set_columns = latest >= OPEN_SET_SCHEMA
        self._lock_fd: int | None = _lock(self.path)
        try:
            _preflight(self.path, startup_check, latest)
            self._conn = _open_writer(self.path, busy_timeout_ms)
            try:
                self.backup_path = migrate(self._conn, self.path, migrations)
                _set_pragmas(self._conn, self.path)
                self._page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
                ids = self._conn.execute(
                    "SELECT (SELECT MAX(detection_id) FROM detections), (SELECT MAX(track_id) FROM tracks), "
                    "(SELECT MAX(track_id) FROM detections)"
                ).fetchone()
                self._known_runs = {r[0] for r in self._conn.execute("SELECT run_id FROM runs")}
            except BaseException:
                self._conn.close()
                raise
        except sqlite3.Error as exc:
            self._unlock()
            if is_disk_full(exc, self.path):
                raise StorageError(_disk_full_message(self.path, exc)) from None
            raise StorageError(f"{self.path}: cannot open the database: {exc}") from None
        except BaseException:
            self._unlock()
            raise
        self._next_detection = (ids[0] or 0) + 1
        self._next_track = max(ids[1] or 0, ids[2] or 0) + 1
        self._ids_lock = threading.Lock()
        self._max_pages_wanted = self._pages_for(max_db_mb)
        self._max_pages_set: int | None = None

        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._resolved = threading.Condition(self._lock)
        self._items: deque[_Item] = deque()
        self._queued_bytes = 0
        self._seq = 0
        self._resolved_seq = 0
        self._inflight = 0
        self._urgent = 0
        self._closing = False
        self._closed = False
        self._abort = threading.Event()
        self._writer_failure: str | None = None
        self._explained: set[str] = set()
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

        self.transactions = 0
        self.rows_written = 0
        self.write_errors = 0
        self.rejected = 0
        self.producer_waits = 0
        self._full_warned_at = -math.inf
        self.last_error: str | None = None
        self.reserve = reserve
        # Set by the writer when a write failed because the disk (or max_db_mb) is full; the trap
        # pauses crops and runs retention at once. Cleared by `disk_has_room` once space is back.
        self.disk_full = threading.Event()
        self._failures = 0  # consecutive failed attempts at the current batch
        self._no_waiting = False  # stopping: producers no longer wait for room in the queue

        self._thread = threading.Thread(target=self._run, name="trapcam-db-writer", daemon=True)
        self._thread.start()
        atexit.register(self._at_exit)

    @classmethod
    def from_config(cls, config: TrapConfig, **overrides: Any) -> Database:
        """Open the database and crop folder that a trap configuration names."""
        s = config.storage
        options: dict[str, Any] = {
            "crops_root": config.crops_path if s.save_crops else None,
            "jpeg_quality": s.jpeg_quality,
            "fsync_crops": s.fsync_crops,
            "max_queue_items": s.max_queue_items,
            "max_queue_mb": s.max_queue_mb,
            "max_db_mb": s.max_db_mb,
            "startup_check": s.startup_check,
            "sliver_max_px": config.detector.sliver_limit_px,
            "reserve": Reserve(config.data_dir, s.reserve_mb),
        }
        options.update(overrides)
        return cls(config.database_path, s.batch_size, s.flush_interval_s, **options)

    # ------------------------------------------------------------ public: writing

    def start_run(self, info: RunInfo, timeout: float = 60.0) -> int:
        """Record the start of a run and return its run_id (waits for the commit).

        Earlier runs without an end (the process was killed) are closed first: exit_reason says
        so and their open tracks become 'ended' (confirmed) or 'discarded' (tentative).
        """
        params = info.params()

        def insert(conn: sqlite3.Connection) -> int:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(tracks)")}
            if {"edge_hits", "discard_reason"} <= columns:
                conn.execute(_SETTLE_TRACKS, {"sliver_max_px": self._sliver_max_px})
            else:
                conn.execute(_SETTLE_TRACKS_V1)
            tables = user_tables(conn)  # a schema-1 database has no health table yet
            conn.execute(
                _CLOSE_INTERRUPTED.format(
                    health=_LAST_HEALTH if "health" in tables else "",
                    frames=_SUMMARY_FRAMES if "summaries" in tables else "",
                )
            )
            run_id = conn.execute(_INSERT_RUN, params).lastrowid
            assert run_id is not None
            return int(run_id)

        run_id = self.run_sync(insert, timeout)
        with self._ids_lock:
            self._known_runs.add(run_id)
        return run_id

    def next_ids(self) -> tuple[int, int]:
        """(next_track_id, next_detection_id): above every id stored or queued, so unique across restarts."""
        with self._ids_lock:
            return self._next_track, self._next_detection

    def add_detection(self, row: DetectionRow, crop: np.ndarray | None = None) -> None:
        """Queue a detection; with a crop, the writer saves the JPEG first, then inserts the row."""
        self._check_run(row.run_id, "DetectionRow")
        item = _Item(sql=_INSERT_DETECTION if self._open_set_columns else _INSERT_LEGACY_DETECTION)
        if crop is not None:
            crops = self._crop_store("a crop")
            self._attach_image(item, crop, crops.path_for(row.ts_utc, row.track_id, row.detection_id))
        params = row.params(crop_path=item.crop_rel)
        item.params = params if self._open_set_columns else params[:_LEGACY_DETECTION_COLUMNS]
        self._put(item)
        with self._ids_lock:
            self._next_detection = max(self._next_detection, int(row.detection_id) + 1)
            if row.track_id is not None:
                self._next_track = max(self._next_track, int(row.track_id) + 1)

    def add_snapshot(
        self,
        run_id: int,
        ts_utc: datetime,
        frame_index: int,
        insects: int,
        counts_json: str,
        image: np.ndarray | None = None,
    ) -> None:
        """Queue a time-lapse snapshot's row; with an image, the writer saves its JPEG first (as it
        does a crop, atomically and retried on a full disk) and the row names it in image_path."""
        self._check_run(run_id, "add_snapshot")
        item = _Item(
            sql="INSERT INTO snapshots (run_id, ts_utc, frame_index, insects, counts_json, image_path) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        if image is not None:
            crops = self._crop_store("a snapshot image")
            self._attach_image(item, image, crops.snapshot_path_for(ts_utc, run_id, frame_index))
        item.params = (run_id, utc_iso(ts_utc), int(frame_index), int(insects), counts_json, item.crop_rel)
        self._put(item)

    def _crop_store(self, what: str) -> CropStore:
        if self.crops is None:
            raise StorageError(
                f"{self.path}: {what} was given but the database was opened without crops_root"
            )
        return self.crops

    @staticmethod
    def _attach_image(item: _Item, image: np.ndarray, rel: str) -> None:
        """The writer saves `image` as `rel` below crops_root before it runs the item's statement."""
        check_crop(image)
        item.crop = np.array(image, copy=True)  # the caller may reuse its buffer
        item.crop_rel = rel
        item.nbytes += item.crop.nbytes

    def upsert_track(self, row: TrackRow) -> None:
        """Queue an insert, or an update of every column when the track_id is already stored."""
        self._check_run(row.run_id, "TrackRow")
        self._put(_Item(sql=_UPSERT_TRACK, params=row.params()))
        with self._ids_lock:
            self._next_track = max(self._next_track, int(row.track_id) + 1)

    def update_run(self, run_id: int, **counters: int) -> None:
        """Queue new values (totals, not increments) of the run's counters, e.g. frames_processed=1200."""
        self._check_run(run_id, "update_run")
        sets, values = self._counters(counters)
        if sets:
            self._put(
                _Item(sql=f"UPDATE runs SET {', '.join(sets)} WHERE run_id = ?", params=(*values, run_id))
            )

    def end_run(self, run_id: int, exit_reason: str, **counters: int) -> None:
        """Queue the end of a run (UTC now), why it ended, and optionally its final counters."""
        self._check_run(run_id, "end_run")
        if not isinstance(exit_reason, str) or not exit_reason:
            raise StorageError(f"end_run: exit_reason: expected non-empty text, got {exit_reason!r}")
        sets, values = self._counters(counters)
        sql = f"UPDATE runs SET {', '.join(['ended_utc = ?', 'exit_reason = ?', *sets])} WHERE run_id = ?"
        self._put(_Item(sql=sql, params=(utc_iso(utc_now()), exit_reason, *values, run_id)))

    def submit(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue any statement (for tables that later migrations add: summaries, health, outbox).

        The statement is compiled once here (EXPLAIN), so a typo fails in the caller, not in the writer.
        """
        self._compile(sql, params)
        self._put(_Item(sql=sql, params=tuple(params)))

    def submit_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Queue one statement for many parameter rows, written in one go (not waited for)."""
        if not rows:
            return
        self._compile(sql, rows[0])
        frozen = [tuple(row) for row in rows]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(sql, frozen)

        self._put(_Item(call=write, nbytes=64 * len(frozen)))

    def _compile(self, sql: str, params: Sequence[Any]) -> None:
        """EXPLAIN a statement the first time it is queued: a typo fails in the caller."""
        if sql in self._explained:
            return
        with self._reader_lock:
            try:
                self._reader_conn().execute(f"EXPLAIN {sql}", tuple(params))
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: bad statement {sql[:80]!r}: {exc}") from None
        self._explained.add(sql)

    def run_sync(self, fn: Callable[[sqlite3.Connection], T], timeout: float = 60.0) -> T:
        """Run fn(connection) on the writer thread, inside its transaction, after everything queued before.

        For reads that must see queued rows and writes that need a result. fn must not COMMIT.
        """
        return self._call(_Item(call=fn, future=Future()), timeout)

    def run_between_transactions(self, fn: Callable[[sqlite3.Connection], T], timeout: float = 600.0) -> T:
        """Run fn(connection) on the writer thread with no transaction open, in a batch of its own.

        For what SQLite refuses inside a transaction: PRAGMA wal_checkpoint, VACUUM. Everything queued
        before is committed first; fn's errors go to the caller, never into a retried batch.
        """
        return self._call(_Item(call=fn, between=True, future=Future()), timeout)

    def _call(self, item: _Item, timeout: float) -> Any:
        future = item.future
        assert future is not None
        with self._lock:
            self._urgent += 1
        try:
            self._put(item)
            deadline = time.monotonic() + timeout
            stuck_since: float | None = None
            while True:
                try:
                    return future.result(min(0.5, max(0.0, deadline - time.monotonic())))
                except sqlite3.Error as exc:
                    raise StorageError(f"{self.path}: {exc}") from None
                except FutureTimeout:
                    now = time.monotonic()
                    if now >= deadline:
                        raise StorageError(
                            f"{self.path}: the writer did not answer within {timeout:g} s "
                            f"(last error: {self.last_error or 'none'})"
                        ) from None
                    # a full disk with no reserve left to give up will not heal by waiting: say so
                    full = (
                        self.disk_full.is_set() and self.failing and not (self.reserve and self.reserve.held)
                    )
                    stuck_since = (stuck_since or now) if full else None
                    if stuck_since is not None and now - stuck_since >= _FULL_GIVE_UP_S:
                        raise StorageError(
                            _disk_full_message(self.path, self.last_error or "disk full", "written")
                        ) from None
        finally:
            with self._lock:
                self._urgent -= 1

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Block until everything queued before this call is committed; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._seq
            self._urgent += 1
            self._not_empty.notify_all()
            try:
                while self._resolved_seq < target and self._writer_failure is None:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._resolved.wait(remaining)
                return self._resolved_seq >= target
            finally:
                self._urgent -= 1

    def close(self, timeout: float = 60.0) -> None:
        """Write what is queued, checkpoint, close. Idempotent.

        Raises StorageError when rows could not be written within `timeout` (disk gone): they are
        lost with the process, and that must be loud.
        """
        with self._lock:
            if self._closing:
                already = True
            else:
                already = False
                self._closing = True
                self._not_empty.notify_all()
                self._not_full.notify_all()
        if already:
            self._thread.join()
            return
        atexit.unregister(self._at_exit)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join()
        lost = self.pending()
        try:
            if lost == 0:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("PRAGMA optimize")
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            if self._reader is not None:
                self._reader.close()
        finally:
            self._unlock()
            self._closed = True
        if lost:
            raise StorageError(
                f"{self.path}: closed with {lost} queued rows not written after {timeout:g} s "
                f"(last error: {self.last_error})"
            )

    # ------------------------------------------------------------ public: state

    @property
    def failing(self) -> bool:
        """The writer's current batch has failed at least once and is being retried."""
        return self._failures > 0

    def stop_waiting(self) -> None:
        """Stopping: from now on nothing waits for room in the queue (the last rows of a stop are
        queued beyond its bound), so a stop while the disk is full ends instead of hanging."""
        self._no_waiting = True  # no lock: a signal handler calls this, maybe while this thread holds it

    def disk_has_room(self) -> None:
        """Retention made room (or the disk was never full): clear the flag, write the reserve again."""
        if self.disk_full.is_set():
            log.warning("%s: the disk has room again; crops are saved again", self.path)
        self.disk_full.clear()

    def pending(self) -> int:
        """Items queued or in the writer's current batch, not yet committed."""
        with self._lock:
            return len(self._items) + self._inflight

    @property
    def closed(self) -> bool:
        return self._closed

    def set_max_db_mb(self, max_db_mb: float | None) -> None:
        """Change the size cap at run time (None: no cap); the writer applies it before its next try."""
        self._max_pages_wanted = self._pages_for(max_db_mb)

    def stats(self) -> dict[str, Any]:
        """Counters for health reports and logs."""
        return {
            "pending": self.pending(),
            "transactions": self.transactions,
            "rows_written": self.rows_written,
            "write_errors": self.write_errors,
            "rejected": self.rejected,
            "producer_waits": self.producer_waits,
            "last_error": self.last_error,
        }

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ producer side

    def _check_run(self, run_id: Any, what: str) -> None:
        with self._ids_lock:
            known = run_id in self._known_runs
        if not known:
            raise StorageError(f"{self.path}: {what}: run_id {run_id!r} is not a run of this database")

    @staticmethod
    def _counters(counters: dict[str, Any]) -> tuple[list[str], list[int]]:
        sets, values = [], []
        for key, value in counters.items():
            if key not in RUN_COUNTERS:
                raise StorageError(f"run counter {key!r}: unknown; expected one of {', '.join(RUN_COUNTERS)}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise StorageError(f"run counter {key}: expected an integer >= 0, got {value!r}")
            sets.append(f"{key} = ?")
            values.append(int(value))
        return sets, values

    def _put(self, item: _Item) -> None:
        with self._lock:
            self._raise_if_unusable()
            if self._full(item):
                self.producer_waits += 1
                now = time.monotonic()
                level = logging.WARNING if now - self._full_warned_at >= 60.0 else logging.DEBUG
                self._full_warned_at = now if level == logging.WARNING else self._full_warned_at
                log.log(
                    level,
                    "%s: write queue full (%d items, %.0f MB); the pipeline waits for the writer "
                    "(last error: %s)",
                    self.path,
                    len(self._items),
                    self._queued_bytes / 2**20,
                    self.last_error or "none",
                )
                while self._full(item) and not self._no_waiting:
                    self._not_full.wait(0.5)
                    self._raise_if_unusable()
            self._seq += 1
            item.seq = self._seq
            item.queued_at = time.monotonic()
            self._items.append(item)
            self._queued_bytes += item.nbytes
            n = len(self._items)
            if n == 1 or n >= self._batch_size or item.future is not None:
                self._not_empty.notify()

    def _full(self, item: _Item) -> bool:
        if not self._items:
            return False
        return len(self._items) >= self._max_items or self._queued_bytes + item.nbytes > self._max_bytes

    def _raise_if_unusable(self) -> None:
        if self._closing:
            raise StorageError(f"{self.path}: the database is closed; nothing more can be queued")
        if self._writer_failure is not None:
            raise StorageError(f"{self.path}: the writer thread failed: {self._writer_failure}")

    def _reader_conn(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = sqlite3.connect(_ro_uri(self.path), uri=True, check_same_thread=False)
        return self._reader

    def _pages_for(self, max_db_mb: float | None) -> int:
        if max_db_mb is None:
            return _MAX_PAGES
        if max_db_mb <= 0:
            raise StorageError(f"database options: max_db_mb: expected a size > 0 or None, got {max_db_mb}")
        return max(1, math.ceil(max_db_mb * 2**20 / self._page_size))

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _at_exit(self) -> None:
        try:
            self.close(timeout=3.0 if self.failing else 10.0)
        except StorageError as exc:
            log.error("%s", exc)

    # ------------------------------------------------------------ writer thread

    def _run(self) -> None:
        try:
            while True:
                batch = self._take()
                if batch is None:
                    return
                self._write_with_retry(batch)
                if self._abort.is_set():
                    return
        except BaseException as exc:  # a bug: make it visible to every producer instead of hanging them
            log.exception("%s: the database writer thread failed", self.path)
            with self._lock:
                self._writer_failure = f"{type(exc).__name__}: {exc}"
                self._resolved.notify_all()
                self._not_full.notify_all()

    def _take(self) -> list[_Item] | None:
        """Wait for work, then up to batch_size items or until the oldest has waited flush_interval_s."""
        with self._lock:
            while not self._items:
                if self._closing:
                    return None
                self._not_empty.wait()
            deadline = self._items[0].queued_at + self._flush_interval
            while len(self._items) < self._batch_size and not self._closing and self._urgent == 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._not_empty.wait(remaining)
            batch = []
            while self._items and len(batch) < self._batch_size:
                if self._items[0].between and batch:
                    break  # it runs alone, after this batch is committed
                batch.append(self._items.popleft())
                if batch[0].between:
                    break
            self._queued_bytes -= sum(item.nbytes for item in batch)
            self._inflight = len(batch)
            self._not_full.notify_all()
            return batch

    def _write_with_retry(self, batch: list[_Item]) -> None:
        delay = self._backoff[0]
        failures = 0
        while batch and not self._abort.is_set():
            try:
                self._apply_size_cap()
                self._commit(batch)
            except Exception as exc:
                if not _is_transient(exc):
                    raise
                self._rollback()
                failures += 1
                self._failures = failures
                self.write_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                full = is_disk_full(exc, self.path)
                released = self.reserve.release() if full and self.reserve is not None else 0
                if full and not self.disk_full.is_set():
                    self.disk_full.set()  # after the release: whoever sees the flag sees the reserve gone
                log.log(
                    logging.ERROR if failures == 1 or failures % 20 == 0 else logging.DEBUG,
                    "%s: write failed (%d rows kept, retry %d in %.1f s): %s",
                    self.path,
                    len(batch),
                    failures,
                    0.0 if released else delay,
                    self.last_error,
                )
                if released:
                    continue  # room again at once: the batch goes in now
                self._abort.wait(delay)
                delay = min(delay * 2, self._backoff[1])
        self._failures = 0
        if failures and not batch:
            log.warning("%s: writes recovered after %d failed attempts", self.path, failures)

    def _apply_size_cap(self) -> None:
        wanted = self._max_pages_wanted
        if wanted != self._max_pages_set:
            self._conn.execute(f"PRAGMA max_page_count = {int(wanted)}")
            self._max_pages_set = wanted

    def _apply(self, item: _Item) -> Any:
        if item.call is not None:
            return item.call(self._conn)
        if item.crop_rel is not None:
            assert self.crops is not None
            if item.jpeg is None:
                assert item.crop is not None
                item.jpeg = self.crops.encode(item.crop)
                item.crop = None  # keep only the (smaller) JPEG across retries
            self.crops.write_bytes(item.crop_rel, item.jpeg)
        self._conn.execute(item.sql, item.params)
        return None

    def _commit(self, batch: list[_Item]) -> None:
        """Commit the batch in one transaction; resolved items leave `batch`. Transient errors propagate."""
        conn = self._conn
        if batch[0].between:  # alone in its batch (see _take): no transaction, no retry
            item = batch[0]
            try:
                result = item.call(conn) if item.call is not None else None
            except Exception as exc:
                if conn.in_transaction:
                    self._rollback()
                self._resolve(batch, [None], failed=exc)
            else:
                self._resolve(batch, [result])
            batch.clear()
            return
        results: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        for item in batch:
            try:
                results.append(self._apply(item))
            except Exception as exc:
                if _is_transient(exc):
                    raise
                self._rollback()
                self._commit_one_by_one(batch)
                return
        conn.execute("COMMIT")
        self.transactions += 1
        self._resolve(batch, results)
        batch.clear()

    def _commit_one_by_one(self, batch: list[_Item]) -> None:
        """After a permanent failure: isolate the bad item, so the good ones around it are kept."""
        while batch:
            item = batch[0]
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = self._apply(item)
            except Exception as exc:
                if _is_transient(exc):
                    raise
                self._rollback()
                self._reject(item, exc)
                self._resolve([item], [None], failed=exc)
                batch.pop(0)
                continue
            self._conn.execute("COMMIT")
            self.transactions += 1
            self._resolve([item], [result])
            batch.pop(0)

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                log.debug("%s: rollback failed: %s", self.path, exc)

    def _resolve(self, items: list[_Item], results: list[Any], failed: BaseException | None = None) -> None:
        for item, result in zip(items, results, strict=True):
            if item.future is not None:
                if failed is not None:
                    item.future.set_exception(failed)
                else:
                    item.future.set_result(result)
        n = len(items)
        if failed is None:
            self.rows_written += sum(1 for item in items if item.call is None)
        with self._lock:
            self._resolved_seq = items[-1].seq
            self._inflight -= n
            self._resolved.notify_all()

    def _reject(self, item: _Item, exc: BaseException) -> None:
        """A row the database refuses (a bug upstream): logged loudly and kept in <db>.rejected.jsonl."""
        if item.call is not None:  # the caller of run_sync gets the exception
            log.warning("%s: a synchronous call failed: %s", self.path, exc)
            return
        self.rejected += 1
        self.last_error = f"rejected: {type(exc).__name__}: {exc}"
        record = {"utc": utc_iso(utc_now()), "error": str(exc), "sql": item.sql, "params": list(item.params)}
        log.error(
            "%s: row rejected (%s); kept in %s: %s", self.path, exc, self._rejected_path, record["params"]
        )
        try:
            with open(self._rejected_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, default=str) + "\n")
        except OSError as err:
            log.error("%s: cannot append to %s: %s", self.path, self._rejected_path, err)


# ---------------------------------------------------------------- readers


def connect_reader(path: str | Path, timeout_s: float = 5.0) -> sqlite3.Connection:
    """A read-only connection (export, reports, tests): it can never change the file."""
    path = Path(path)
    if not path.is_file():
        raise StorageError(f"{path}: database not found")
    try:
        conn = sqlite3.connect(_ro_uri(path), uri=True, timeout=timeout_s, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: cannot open for reading: {exc}") from None
    conn.row_factory = sqlite3.Row
    return conn


def count_rows(conn: sqlite3.Connection, table: str, where: str = "", params: Sequence[Any] = ()) -> int:
    """Rows in a table, optionally filtered (`where` is SQL with ? placeholders)."""
    tables = user_tables(conn)
    if table not in tables:
        raise StorageError(f"count_rows: no table {table!r}; expected one of {', '.join(tables)}")
    sql = f'SELECT COUNT(*) FROM "{table}"' + (f" WHERE {where}" if where else "")
    return int(conn.execute(sql, tuple(params)).fetchone()[0])


def schema_version(path: str | Path) -> int:
    """The schema version of a database file (read-only)."""
    conn = connect_reader(path)
    try:
        return get_version(conn)
    finally:
        conn.close()


__all__ = [
    "LATEST_VERSION",
    "Database",
    "DetectionRow",
    "RunInfo",
    "TrackRow",
    "connect_reader",
    "count_rows",
    "schema_version",
]
