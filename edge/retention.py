"""Keeping the data disk from filling up: old crop images go, database rows never do.

Why crops and not rows: a season of detections is a few hundred MB of SQLite, the crops are many
GB, and the counts (the science) live in the rows. When the crops exceed `max_crops_gb` or the
disk's free space falls below `min_free_gb`, images are deleted oldest first, in this order: the
kept time-lapse snapshots (`snapshots/` in the crops folder: the largest files, and what they
showed is already counted and cropped), then the crops, and each track's best crop last. A deleted
image leaves its row in place with `crop_deleted_utc` (`image_deleted_utc` for snapshots) set, so
exports can tell "never saved" from "saved, later removed". Only files below `crops_root` named by
a row are ever deleted.

Order of work, so that a crash at any point is harmless: the file is deleted first, then its row
is marked through the database's writer thread. A crash between the two leaves a row whose file
is already gone; the next check finds it again, sees the file missing, and marks it.

`maintain` keeps the SQLite file itself in shape on the writer thread: a periodic
`wal_checkpoint(TRUNCATE)` (the -wal file would otherwise only shrink at a clean shutdown) and a
rare vacuum.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath

from edge.config import RetentionConfig
from edge.errors import StorageError
from edge.store.crops import SNAPSHOT_DIR
from edge.store.db import Database, connect_reader
from edge.store.db import free_bytes as measured_free_bytes
from edge.store.reserve import Reserve
from edge.store.schema import utc_iso

log = logging.getLogger(__name__)

GB = 1024**3
_CHUNK = 500  # rows read and marked per round trip
_HISTORY = timedelta(days=3)  # growth rate is measured over the checks of this recent stretch
_VACUUM_FREE_SHARE = 0.10  # a full VACUUM (without auto_vacuum) only pays off above this freelist share
_VACUUM_COUNTER = "retention_last_vacuum_unix"  # in the counters table, so restarts keep the interval

_CROPS = """
SELECT detection_id AS id, crop_path AS path, ts_utc FROM detections
WHERE crop_path IS NOT NULL AND crop_deleted_utc IS NULL AND (ts_utc, detection_id) > (?, ?)
  AND ({best}) ORDER BY ts_utc, detection_id LIMIT ?
"""
_BEST = "SELECT best_detection_id FROM tracks WHERE best_detection_id IS NOT NULL"
_MARK_CROP = "UPDATE detections SET crop_deleted_utc = ? WHERE detection_id = ? AND crop_deleted_utc IS NULL"
_SNAPSHOTS = """
SELECT snapshot_id AS id, image_path AS path, ts_utc FROM snapshots
WHERE image_path IS NOT NULL AND image_deleted_utc IS NULL AND (ts_utc, snapshot_id) > (?, ?)
ORDER BY ts_utc, snapshot_id LIMIT ?
"""
_MARK_SNAPSHOT = (
    "UPDATE snapshots SET image_deleted_utc = ? WHERE snapshot_id = ? AND image_deleted_utc IS NULL"
)


@dataclass(frozen=True)
class _Pass:
    """One kind of image retention may delete: its rows oldest first, and how a deletion is marked."""

    what: str  # for messages: 'snapshot' or 'detection'
    select: str
    mark: str


@dataclass
class RetentionReport:
    """What one check found and did; `message` is one line for logs, health and MQTT (None: all fine)."""

    crops_bytes: int
    free_bytes: int
    deleted_files: int
    deleted_bytes: int
    days_left: float | None
    near_full: bool
    over_budget_after: bool
    message: str | None


class Retention:
    """Checks crop storage and free space (`check`) and keeps the database file tidy (`maintain`).

    The loop calls `check` every `cfg.check_interval_s` (`due(now)` says when) and `maintain` as
    often as it likes: maintain keeps its own intervals.
    """

    def __init__(
        self,
        cfg: RetentionConfig,
        db: Database,
        crops_root: Path,
        data_dir: Path,
        free_bytes: Callable[[Path], int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.db = db
        self.crops_root = Path(crops_root)
        self.data_dir = Path(data_dir)
        self._free_bytes = free_bytes or _disk_free
        # (time, bytes in crops + database, bytes deleted so far): deletions are added back, so the
        # rate is what the trap produces, not what is left after retention made room.
        self._history: deque[tuple[datetime, int, int]] = deque()
        self._deleted_total = 0
        self._last_check: datetime | None = None
        self._last_checkpoint: datetime | None = None
        self._last_vacuum: datetime | None = None
        self._vacuum_loaded = False
        self._warned_outside: set[tuple[str, int]] = set()

    # ------------------------------------------------------------ checking

    def due(self, now: datetime) -> bool:
        """True when check_interval_s has passed since the last check (or none ran yet)."""
        return (
            self._last_check is None or (now - self._last_check).total_seconds() >= self.cfg.check_interval_s
        )

    def check(self, now: datetime, extra_bytes: int = 0) -> RetentionReport:
        """Measure, delete the oldest crops while over a limit, and estimate the days of room left.

        extra_bytes: room wanted above the watermark (the reserve file given up on a full disk, to be
        written again), so the trap regains its margin instead of living on it.
        """
        self._last_check = now
        crops = _tree_bytes(self.crops_root)
        free = self._free(self.data_dir)
        budget = None if self.cfg.max_crops_gb is None else int(self.cfg.max_crops_gb * GB)
        watermark = int(self.cfg.min_free_gb * GB) + max(0, int(extra_bytes))
        need = max(0, crops - budget if budget is not None else 0, watermark - free)
        deleted_files = deleted_bytes = 0
        if need > 0:
            deleted_files, deleted_bytes = self._delete_oldest(need, now)
            self._deleted_total += deleted_bytes
            crops = _tree_bytes(self.crops_root) if deleted_files else crops
            free = self._free(self.data_dir)
        over = (budget is not None and crops > budget) or free < watermark
        days_left = self._days_left(now, crops + self._db_bytes(), free - watermark)
        near_full = over or (days_left is not None and days_left < self.cfg.warn_days_left)
        message = _message(deleted_files, deleted_bytes, over, days_left, near_full, self.cfg)
        report = RetentionReport(
            crops, free, deleted_files, deleted_bytes, days_left, near_full, over, message
        )
        if message is not None:
            log.log(logging.WARNING if near_full else logging.INFO, "retention: %s", message)
        return report

    def _free(self, path: Path) -> int:
        try:
            return int(self._free_bytes(path))
        except OSError as exc:
            raise StorageError(f"{path}: cannot read the free disk space: {exc.strerror or exc}") from None

    def _db_bytes(self) -> int:
        path = self.db.path
        total = 0
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def _days_left(self, now: datetime, used: int, room: int) -> float | None:
        """Days until free space reaches the watermark at the recent production rate (None: unknown)."""
        self._history.append((now, used, self._deleted_total))
        while len(self._history) > 2 and now - self._history[1][0] >= _HISTORY:
            self._history.popleft()
        first_t, first_used, first_deleted = self._history[0]
        span = (now - first_t).total_seconds() / 86400.0
        if span <= 0:
            return None
        rate = ((used + self._deleted_total) - (first_used + first_deleted)) / span
        if rate <= 0:
            return None
        return max(0.0, room) / rate

    def _passes(self) -> list[_Pass]:
        """Snapshot images first, then crops; each track's best crop last when it is kept."""
        crops = (
            [
                _Pass("detection", _CROPS.format(best=f"detection_id NOT IN ({_BEST})"), _MARK_CROP),
                _Pass("detection", _CROPS.format(best=f"detection_id IN ({_BEST})"), _MARK_CROP),
            ]
            if self.cfg.keep_best_crop
            else [_Pass("detection", _CROPS.format(best="1"), _MARK_CROP)]
        )
        return [_Pass("snapshot", _SNAPSHOTS, _MARK_SNAPSHOT), *crops]

    def _delete_oldest(self, need: int, now: datetime) -> tuple[int, int]:
        """Delete image files, oldest first in each pass, until `need` bytes are gone."""
        root = self.crops_root.resolve()
        stamp = utc_iso(now)
        files = freed = 0
        emptied: set[Path] = set()
        for kind in self._passes():
            for chunk in self._candidates(kind.select):
                marked: list[tuple[str, int]] = []
                for row_id, rel in chunk:
                    path = self._inside(root, rel, kind.what, row_id)
                    if path is None:
                        continue
                    try:
                        size = path.stat().st_size
                        path.unlink()
                    except FileNotFoundError:
                        pass  # already gone (an earlier check crashed before marking it): only marked
                    except OSError as exc:
                        log.warning("retention: cannot delete %s: %s", path, exc.strerror or exc)
                        continue
                    else:
                        files += 1
                        freed += size
                        emptied.add(path.parent)
                    marked.append((stamp, row_id))
                    if freed >= need:
                        break
                self._mark(kind.mark, marked)
                if freed >= need:
                    break
            if freed >= need:
                break
        self._remove_empty_dirs(emptied, root)
        return files, freed

    def _candidates(self, sql: str) -> Iterator[list[tuple[int, str]]]:
        """(row id, image path) oldest first, in chunks, on a read-only connection (not the writer's)."""
        last: tuple[str, int] = ("", 0)
        conn = connect_reader(self.db.path)
        try:
            while True:
                try:
                    rows = conn.execute(sql, (*last, _CHUNK)).fetchall()
                except sqlite3.Error as exc:
                    raise StorageError(f"{self.db.path}: cannot read image rows: {exc}") from None
                if not rows:
                    return
                last = (rows[-1]["ts_utc"], rows[-1]["id"])
                yield [(int(r["id"]), str(r["path"])) for r in rows]
        finally:
            conn.close()

    def _inside(self, root: Path, rel: str, what: str, row_id: int) -> Path | None:
        """The image's absolute path if it lies inside crops_root (symlinks resolved), else None (warned)."""
        parts = PurePosixPath(rel)
        path = self.crops_root.joinpath(*parts.parts)
        ok = not parts.is_absolute() and ".." not in parts.parts and bool(parts.parts)
        if ok:
            try:
                path.parent.resolve().relative_to(root)
            except ValueError:
                ok = False
        if ok and path.is_symlink():
            ok = False
        if not ok:
            if (what, row_id) not in self._warned_outside:
                self._warned_outside.add((what, row_id))
                log.warning(
                    "retention: %s %d: image path %r is not inside %s; left alone",
                    what,
                    row_id,
                    rel,
                    self.crops_root,
                )
            return None
        return path

    def _mark(self, sql: str, marked: list[tuple[str, int]]) -> None:
        """Queued, not waited for: on a full disk the writer may be retrying a batch that only the
        room made here lets through (waiting for it stopped the trap). A mark lost with a crash is
        found again: the next check sees the file gone and marks it."""
        if marked:
            self.db.submit_many(sql, marked)

    def _remove_empty_dirs(self, dirs: set[Path], root: Path) -> None:
        """Remove emptied track and day folders (never crops_root itself)."""
        for folder in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            current = folder
            while current.resolve() != root and root in current.resolve().parents:
                try:
                    current.rmdir()
                except OSError:
                    break  # not empty (or the writer just made it again): leave it
                current = current.parent

    # ------------------------------------------------------------ database upkeep

    def maintain(self, now: datetime) -> None:
        """A vacuum every vacuum_interval_days and a WAL checkpoint every checkpoint_interval_s (the
        first call runs one, and so does every vacuum), both on the writer thread through run_sync."""
        vacuumed = False
        if self.cfg.vacuum_interval_days is not None:
            if not self._vacuum_loaded:
                self._vacuum_loaded = True
                self._last_vacuum = self._load_last_vacuum(now)
            assert self._last_vacuum is not None
            if now - self._last_vacuum >= timedelta(days=self.cfg.vacuum_interval_days):
                self._last_vacuum = now
                self.vacuum(now)
                vacuumed = True  # a vacuum writes the whole file through the WAL: empty it now
        if (
            vacuumed
            or self._last_checkpoint is None
            or (now - self._last_checkpoint).total_seconds() >= self.cfg.checkpoint_interval_s
        ):
            self._last_checkpoint = now
            self.checkpoint()

    def checkpoint(self) -> tuple[int, int, int]:
        """PRAGMA wal_checkpoint(TRUNCATE) on the writer thread: (busy, wal pages, pages checkpointed)."""
        self.db.flush()  # so the writer's next transaction usually holds nothing but this

        def run(conn: sqlite3.Connection) -> tuple[int, int, int] | str:
            try:
                row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                return f"{type(exc).__name__}: {exc}"
            return int(row[0]), int(row[1]), int(row[2])

        result = self.db.run_between_transactions(run)
        if isinstance(result, str) or result[0]:
            why = result if isinstance(result, str) else "a reader is busy"
            log.info("retention: WAL checkpoint could not finish (%s); it is retried later", why)
            return (1, -1, -1)
        return result

    def vacuum(self, now: datetime) -> str:
        """Incremental vacuum under auto_vacuum=INCREMENTAL, else a full VACUUM only when >10% is free."""
        self.db.flush()

        def run(conn: sqlite3.Connection) -> str:
            mode = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
            free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
            if mode == 2:
                # Python's execute steps a PRAGMA once (one page); executescript runs it to the end.
                try:
                    conn.executescript("PRAGMA incremental_vacuum;")
                    done = f"incremental vacuum ({free} free pages)"
                except sqlite3.Error as exc:
                    done = f"incremental vacuum failed ({type(exc).__name__}: {exc})"
            elif pages and free / pages > _VACUUM_FREE_SHARE:
                try:
                    conn.execute("VACUUM")
                    done = f"vacuum ({free} of {pages} pages were free)"
                except sqlite3.Error as exc:
                    done = f"vacuum failed ({type(exc).__name__}: {exc}); tried again next interval"
            else:
                done = f"no vacuum needed ({free} of {pages} pages free)"
            conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = "
                "excluded.value",
                (_VACUUM_COUNTER, int(now.timestamp())),
            )
            if conn.in_transaction:  # the counter row: outside the writer's transactions, commit it here
                conn.execute("COMMIT")
            return done

        done = self.db.run_between_transactions(run, timeout=3600.0)
        log.info("retention: %s", done)
        return done

    def _load_last_vacuum(self, now: datetime) -> datetime:
        """When the last vacuum ran (kept across restarts); a new database starts its interval now."""

        def read(conn: sqlite3.Connection) -> int | None:
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (_VACUUM_COUNTER,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO counters (name, value) VALUES (?, ?)",
                    (_VACUUM_COUNTER, int(now.timestamp())),
                )
                return None
            return int(row[0])

        stamp = self.db.run_sync(read)
        return now if stamp is None else datetime.fromtimestamp(stamp, tz=now.tzinfo)


# Room SQLite needs to open a database on a full disk (WAL, shared memory, a first batch).
OPEN_ROOM = 1024 * 1024


def make_room_to_open(
    data_dir: Path, crops_root: Path, reserve: Reserve, free_bytes: Callable[[Path], int] | None = None
) -> int:
    """Before the database opens on a full disk: give up the reserve, else delete the oldest images.

    The database cannot be read to choose images before it opens, so this is the crude way out,
    used only without a reserve: kept snapshots first, then crops, oldest file first, until
    OPEN_ROOM is free. Their rows are marked by the first retention check after the open (it finds
    the files gone). Returns the bytes freed.
    """
    free_of = free_bytes or _disk_free
    try:
        if free_of(data_dir) >= OPEN_ROOM:
            return 0
    except OSError:
        return 0
    freed = reserve.release()
    if free_of(data_dir) >= OPEN_ROOM:
        return freed
    root = Path(crops_root)
    for folder in (root / SNAPSHOT_DIR, root):
        files: list[tuple[float, Path]] = []
        for dirpath, _dirs, names in os.walk(folder):
            if folder == root and Path(dirpath).is_relative_to(root / SNAPSHOT_DIR):
                continue
            for name in names:
                path = Path(dirpath) / name
                with contextlib.suppress(OSError):
                    files.append((path.stat().st_mtime, path))
        for _mtime, path in sorted(files):
            try:
                size = path.stat().st_size
                path.unlink()
            except OSError:
                continue
            freed += size
            if free_of(data_dir) >= OPEN_ROOM:
                log.warning(
                    "retention: the disk was full and there was no reserve: deleted the oldest images "
                    "(%.1f MB) so the database can open",
                    freed / 2**20,
                )
                return freed
    return freed


def _disk_free(path: Path) -> int:
    """Free bytes on the disk holding path (its nearest existing parent, before the folder exists)."""
    free = measured_free_bytes(Path(path))
    if free is None:
        raise OSError(f"no folder of {path} can be measured")
    return free


def _tree_bytes(root: Path) -> int:
    """Bytes of all files below root (0 when it does not exist yet)."""
    total = 0
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def _message(
    files: int, freed: int, over: bool, days_left: float | None, near_full: bool, cfg: RetentionConfig
) -> str | None:
    parts = []
    if files:
        parts.append(f"deleted {files} oldest images ({freed / 2**20:.1f} MB)")
    if over:
        limits = [f"{cfg.min_free_gb:g} GB free"]
        if cfg.max_crops_gb is not None:
            limits.append(f"crops under {cfg.max_crops_gb:g} GB")
        parts.append(f"still short of {' and '.join(limits)} after deleting what may go")
    if days_left is not None and near_full:
        parts.append(f"about {days_left:.1f} days of disk room left at the current rate")
    return "; ".join(parts) if parts else None


__all__ = ["Retention", "RetentionReport"]
