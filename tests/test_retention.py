"""Retention on a real SQLite file and real JPEG crops: free space injected at the disk boundary
(computed from the real crop folder, so deleting files really frees "disk"), oldest crops first,
best crops last, rows never touched except crop_deleted_utc; days-left estimate; WAL checkpoint and
vacuum through the writer thread."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from helpers import query

from edge.config import RetentionConfig
from edge.retention import Retention
from edge.store import Database, DetectionRow, RunInfo, TrackRow, utc_iso

GB = 1024**3
T_START = datetime(2026, 6, 30, 14, tzinfo=timezone.utc)  # detection i is at T_START + i hours
NOW = datetime(2026, 7, 5, 12, tzinfo=timezone.utc)
BEST = {12, 14, 25}  # track 1's best is on day 2; track 2's best is its oldest detection
TRACKS = {1: range(6, 14), 2: range(14, 20), 3: range(20, 26)}  # detections 1-5 are untracked
FAST = {"retry_backoff_s": (0.01, 0.05)}


def noise_crop(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (48 + i % 5 * 8, 48, 3), dtype=np.uint8)


def det(i: int, run_id: int, track_id: int | None, ts: datetime | None = None, **kw: object) -> DetectionRow:
    return DetectionRow(
        detection_id=i,
        run_id=run_id,
        track_id=track_id,
        frame_index=i,
        ts_utc=ts or T_START + timedelta(hours=i),
        x0=i,
        y0=2 * i,
        x1=i + 40,
        y1=2 * i + 30,
        area_px=900 + i,
        det_score=0.5 + i / 100,
        level="species",
        label=f"sp{i % 3}",
        score=0.75,
        predictions_json={"species": [[f"sp{i % 3}", 0.75]]},
        **kw,  # type: ignore[arg-type]
    )


def crops_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def dump(db_path: Path) -> dict[str, list[tuple]]:
    """Every row of every table; detections without crop_deleted_utc (the one column retention sets)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = {}
        for table in tables:
            cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})") if r[1] != "crop_deleted_utc"]
            out[table] = con.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY rowid").fetchall()
        return out
    finally:
        con.close()


@dataclass
class Trap:
    db: Database
    db_path: Path
    crops: Path
    data: Path
    run_id: int
    outside: Path
    secret: Path

    def size(self, ids: Iterator[int] | range | list[int]) -> int:
        paths = dict(query(self.db_path, "SELECT detection_id, crop_path FROM detections"))
        return sum((self.crops / paths[i]).stat().st_size for i in ids)

    def deleted(self) -> dict[int, str]:
        """Detections marked as deleted (retention queues its marks: flushed first)."""
        assert self.db.flush()
        return dict(
            query(
                self.db_path,
                "SELECT detection_id, crop_deleted_utc FROM detections WHERE crop_deleted_utc IS NOT NULL",
            )
        )

    def retention(self, free: Callable[[Path], int], **cfg: object) -> Retention:
        return Retention(RetentionConfig(**cfg), self.db, self.crops, self.data, free_bytes=free)


@pytest.fixture
def trap(tmp_path: Path) -> Iterator[Trap]:
    """Two nights of crops: day 1 (2026-06-30) untracked + track 1; day 2 tracks 1-3; plus rows whose
    crop_path points outside the crops folder (a '..' path and a symlink), which must never be touched."""
    data = tmp_path / "data"
    crops = data / "crops"
    db_path = data / "trapcam.db"
    db = Database(db_path, crops_root=crops, **FAST)
    run_id = db.start_run(RunInfo(device_id="t", software_version="0", config_json="{}", source="x"))
    owner = {i: tid for tid, ids in TRACKS.items() for i in ids}
    for i in range(1, 26):
        db.add_detection(det(i, run_id, owner.get(i)), noise_crop(i))
    for tid, ids in TRACKS.items():
        best = (BEST & set(ids)).pop()
        db.upsert_track(
            TrackRow(
                track_id=tid,
                run_id=run_id,
                status="ended",
                first_utc=T_START + timedelta(hours=ids[0]),
                last_utc=T_START + timedelta(hours=ids[-1]),
                hits=len(ids),
                x0=1,
                y0=2,
                x1=30,
                y1=40,
                label="sp1",
                score=0.9,
                best_detection_id=best,
            )
        )
    db.add_detection(det(26, run_id, None))  # no crop at all
    outside = data / "outside.jpg"
    outside.write_bytes(b"not a crop: must survive")
    db.add_detection(det(27, run_id, None, ts=T_START - timedelta(days=2), crop_path="../outside.jpg"))
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"secret")
    (crops / "2026-06-28").mkdir(parents=True)
    (crops / "2026-06-28" / "link.jpg").symlink_to(secret)
    db.add_detection(det(28, run_id, None, ts=T_START - timedelta(days=2), crop_path="2026-06-28/link.jpg"))
    assert db.flush()
    yield Trap(db, db_path, crops, data, run_id, outside, secret)
    db.close()


def disk(trap: Trap, free_now: int) -> Callable[[Path], int]:
    """A disk whose free space is what is left after the crops: deleting a crop frees its bytes."""
    capacity = free_now + crops_size(trap.crops)
    return lambda path: capacity - crops_size(trap.crops)


def test_disk_nearly_full_deletes_oldest_crops_keeps_best_and_rows(trap: Trap) -> None:
    cfg = {"min_free_gb": 0.001}
    watermark = int(0.001 * GB)
    need = trap.size(range(1, 11)) + 1  # just over the ten oldest: the eleventh goes too, then it stops
    eleven = trap.size(range(1, 12))
    before = dump(trap.db_path)
    retention = trap.retention(disk(trap, watermark - need), **cfg)
    report = retention.check(NOW)

    assert set(trap.deleted()) == set(range(1, 12))
    assert set(trap.deleted().values()) == {utc_iso(NOW)}
    assert report.deleted_files == 11 and report.deleted_bytes == eleven >= need
    assert not report.over_budget_after and report.free_bytes >= watermark
    assert dump(trap.db_path) == before  # row count and every other column unchanged
    paths = dict(query(trap.db_path, "SELECT detection_id, crop_path FROM detections"))
    for i in range(1, 26):
        assert (trap.crops / paths[i]).exists() == (i >= 12), i
    assert not (trap.crops / "2026-06-30").exists()  # the emptied day folder is gone
    assert (trap.crops / "2026-07-01" / "1").is_dir()  # track 1 still has crops 12 (best) and 13
    assert trap.outside.read_bytes() == b"not a crop: must survive"
    assert trap.secret.read_bytes() == b"secret" and (trap.crops / "2026-06-28" / "link.jpg").is_symlink()


def test_best_crops_go_last_when_nothing_else_remains(trap: Trap) -> None:
    before = dump(trap.db_path)
    retention = trap.retention(disk(trap, 0), min_free_gb=10.0)  # impossible: everything may go
    report = retention.check(NOW)
    assert set(trap.deleted()) == set(range(1, 26))
    assert report.deleted_files == 25 and report.over_budget_after and report.near_full
    assert report.message is not None and "still short of 10 GB free" in report.message
    assert dump(trap.db_path) == before
    assert [p for p in trap.crops.rglob("*") if p.is_file() and not p.is_symlink()] == []
    assert trap.outside.exists() and trap.secret.exists()
    # Rows that point outside were neither deleted nor marked.
    assert query(trap.db_path, "SELECT crop_deleted_utc FROM detections WHERE detection_id IN (27, 28)") == [
        (None,),
        (None,),
    ]


def test_order_of_deletion_keeps_best_until_the_rest_is_gone(trap: Trap) -> None:
    """Delete all but a little: every non-best crop goes before the first best one."""
    non_best = [i for i in range(1, 26) if i not in BEST]
    need = trap.size(non_best) + 1  # one byte more than all non-best crops: the oldest best one goes
    trap.retention(disk(trap, int(0.001 * GB) - need), min_free_gb=0.001).check(NOW)
    assert set(trap.deleted()) == {*non_best, 12}


def test_without_keep_best_crop_strict_age_order(trap: Trap) -> None:
    need = trap.size(range(1, 13)) + 1
    trap.retention(disk(trap, int(0.001 * GB) - need), min_free_gb=0.001, keep_best_crop=False).check(NOW)
    assert set(trap.deleted()) == set(range(1, 14))  # best crop 12 went with its neighbours


def test_crop_budget(trap: Trap) -> None:
    total = crops_size(trap.crops)
    three = trap.size(range(1, 4))
    budget_gb = (total - three) / GB
    report = trap.retention(lambda p: 100 * GB, max_crops_gb=budget_gb).check(NOW)
    assert set(trap.deleted()) == {1, 2, 3}
    assert report.crops_bytes == total - three == crops_size(trap.crops)
    assert report.crops_bytes <= int(budget_gb * GB) and not report.over_budget_after


def test_crop_already_gone_is_marked_without_counting(trap: Trap) -> None:
    """A check that crashed between deleting a file and marking its row: the next one marks it."""
    path = trap.crops / query(trap.db_path, "SELECT crop_path FROM detections WHERE detection_id = 1")[0][0]
    path.unlink()
    need = trap.size([2]) + 1
    report = trap.retention(disk(trap, int(0.001 * GB) - need), min_free_gb=0.001).check(NOW)
    assert set(trap.deleted()) == {1, 2, 3}
    assert report.deleted_files == 2


def test_nothing_to_do_when_there_is_room(trap: Trap) -> None:
    before = dump(trap.db_path)
    report = trap.retention(lambda p: 100 * GB).check(NOW)
    assert (report.deleted_files, report.near_full, report.message) == (0, False, None)
    assert trap.deleted() == {} and dump(trap.db_path) == before


def _used(trap: Trap) -> int:
    db_files = [trap.db_path, Path(f"{trap.db_path}-wal"), Path(f"{trap.db_path}-shm")]
    return crops_size(trap.crops) + sum(p.stat().st_size for p in db_files if p.exists())


def _add_night(trap: Trap, first: int, n: int) -> None:
    for i in range(first, first + n):
        trap.db.add_detection(det(i, trap.run_id, None, ts=NOW + timedelta(minutes=i)), noise_crop(i))
    assert trap.db.flush()


def test_days_left_from_two_checks(trap: Trap) -> None:
    free = {"bytes": 50 * GB}
    retention = trap.retention(lambda p: free["bytes"], min_free_gb=1.0, warn_days_left=7.0)
    used1 = _used(trap)
    first = retention.check(NOW)
    assert first.days_left is None and not first.near_full  # one check: no rate yet
    _add_night(trap, 100, 30)
    used2 = _used(trap)
    rate = (used2 - used1) / 0.5  # bytes per day, the second check 12 h later
    assert rate > 0
    free["bytes"] = GB + int(3 * rate)  # three days of room above the watermark
    second = retention.check(NOW + timedelta(hours=12))
    assert second.days_left == pytest.approx((free["bytes"] - GB) / rate, rel=1e-9)
    assert second.days_left == pytest.approx(3.0, rel=1e-6)
    assert second.near_full and "3.0 days" in (second.message or "")
    free["bytes"] = GB + int(30 * rate)
    _add_night(trap, 200, 1)
    assert not retention.check(NOW + timedelta(hours=24)).near_full


def test_days_left_counts_what_retention_deleted(trap: Trap) -> None:
    """The rate is what the trap produces: crops deleted to make room are added back."""
    total = crops_size(trap.crops)
    retention = trap.retention(lambda p: 50 * GB, max_crops_gb=(total + 200_000) / GB)
    used1 = _used(trap)
    assert retention.check(NOW).deleted_files == 0
    _add_night(trap, 100, 60)  # more than the budget's slack: the oldest crops go
    report = retention.check(NOW + timedelta(days=1))
    assert report.deleted_files > 0
    left_on_disk = _used(trap) - used1
    rate = left_on_disk + report.deleted_bytes  # per day
    assert report.days_left == pytest.approx((50 * GB - GB) / rate, rel=1e-9)
    assert report.days_left < (50 * GB - GB) / left_on_disk  # not the rosy net figure


# ---------------------------------------------------------------- database upkeep


def _wal(db_path: Path) -> int:
    return os.path.getsize(f"{db_path}-wal")


def test_checkpoint_truncates_the_wal_with_rows_in_flight(tmp_path: Path) -> None:
    db_path = tmp_path / "trapcam.db"
    db = Database(db_path, **FAST)
    try:
        run_id = db.start_run(RunInfo(device_id="t", software_version="0", config_json="{}", source="x"))
        for i in range(1, 1001):
            db.add_detection(det(i, run_id, None))
        assert db.flush()
        assert _wal(db_path) > 0
        retention = Retention(RetentionConfig(checkpoint_interval_s=60), db, tmp_path / "crops", tmp_path)
        retention.maintain(NOW)
        assert _wal(db_path) == 0
        for i in range(1001, 1101):  # queued, not flushed: they share the writer's batch with maintain
            db.add_detection(det(i, run_id, None))
        retention.maintain(NOW + timedelta(seconds=30))  # not due: nothing happens
        assert db.flush() and _wal(db_path) > 0
        for i in range(1101, 1201):
            db.add_detection(det(i, run_id, None))
        retention.maintain(NOW + timedelta(seconds=61))
        assert _wal(db_path) == 0
        assert db.flush()
        assert query(db_path, "SELECT COUNT(*) FROM detections")[0][0] == 1200
        assert db.rejected == 0 and db.write_errors == 0
        # Rows queued just before the checkpoint (no flush first): committed before it, once, none lost.
        for i in range(1201, 1251):
            db.add_detection(det(i, run_id, None))

        def checkpoint(conn: sqlite3.Connection) -> tuple[bool, int]:
            return conn.in_transaction, conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]

        assert db.run_between_transactions(checkpoint) == (False, 0)
        assert _wal(db_path) == 0
        db.add_detection(det(1251, run_id, None))  # the writer goes on with transactions afterwards
    finally:
        db.close()
    assert query(db_path, "SELECT COUNT(*), MAX(detection_id) FROM detections")[0] == (1251, 1251)
    assert db.rejected == 0 and db.write_errors == 0


def _junk(db: Database, rows: int = 3000) -> None:
    """Fill and drop a scratch table through the writer, leaving free pages behind."""

    def run(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE junk (b BLOB)")
        conn.executemany("INSERT INTO junk VALUES (?)", ((os.urandom(1000),) for _ in range(rows)))
        conn.execute("DROP TABLE junk")

    db.run_sync(run)


def _pages(db: Database) -> tuple[int, int]:
    return db.run_sync(
        lambda c: (
            c.execute("PRAGMA freelist_count").fetchone()[0],
            c.execute("PRAGMA page_count").fetchone()[0],
        )
    )


def test_vacuum_when_free_pages_pile_up_and_interval_survives_restart(tmp_path: Path) -> None:
    db_path = tmp_path / "trapcam.db"
    cfg = RetentionConfig(vacuum_interval_days=30)
    with Database(db_path, **FAST) as db:
        _junk(db)
        free, pages = _pages(db)
        assert free / pages > 0.5
        retention = Retention(cfg, db, tmp_path / "crops", tmp_path)
        retention.maintain(NOW)  # the first call starts the interval, no vacuum at start-up
        assert _pages(db)[0] == free
        retention.maintain(NOW + timedelta(days=29))
        assert _pages(db)[0] == free
        retention.maintain(NOW + timedelta(days=30))
        free_after, pages_after = _pages(db)
        assert free_after == 0 and pages_after < pages
    with Database(db_path, **FAST) as db:  # a restart: the last vacuum time comes from the database
        _junk(db)
        retention = Retention(cfg, db, tmp_path / "crops", tmp_path)
        retention.maintain(NOW + timedelta(days=31))
        assert _pages(db)[0] > 0
        retention.maintain(NOW + timedelta(days=60))
        assert _pages(db)[0] == 0


def test_no_full_vacuum_for_few_free_pages_and_never_when_off(tmp_path: Path) -> None:
    with Database(tmp_path / "trapcam.db", **FAST) as db:
        run_id = db.start_run(RunInfo(device_id="t", software_version="0", config_json="{}", source="x"))
        for i in range(1, 3001):
            db.add_detection(det(i, run_id, None))
        _junk(db, rows=40)
        free, pages = _pages(db)
        assert 0 < free / pages < 0.1
        retention = Retention(RetentionConfig(vacuum_interval_days=1), db, tmp_path / "crops", tmp_path)
        retention.maintain(NOW)
        assert "no vacuum needed" in retention.vacuum(NOW)
        assert _pages(db)[0] == free
        _junk(db)
        off = Retention(RetentionConfig(vacuum_interval_days=None), db, tmp_path / "crops", tmp_path)
        off.maintain(NOW)
        off.maintain(NOW + timedelta(days=400))
        assert _pages(db)[0] > free


def test_a_vacuum_says_what_it_did_and_remembers_when(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Database(tmp_path / "trapcam.db", **FAST) as db:
        _junk(db)
        free, pages = _pages(db)
        retention = Retention(RetentionConfig(vacuum_interval_days=1), db, tmp_path / "crops", tmp_path)
        with caplog.at_level(logging.INFO, logger="edge.retention"):
            done = retention.vacuum(NOW)
        assert done == f"vacuum ({free} of {pages} pages were free)"
        assert [r.getMessage() for r in caplog.records] == [f"retention: {done}"]
        free_after, pages_after = _pages(db)
        assert retention.vacuum(NOW) == f"no vacuum needed ({free_after} of {pages_after} pages free)"
        later = Retention(RetentionConfig(vacuum_interval_days=1), db, tmp_path / "crops", tmp_path)
        assert later._load_last_vacuum(NOW + timedelta(days=5)) == NOW  # kept in the database


def test_maintain_checkpoints_at_its_interval_and_after_every_vacuum(tmp_path: Path) -> None:
    with Database(tmp_path / "trapcam.db", **FAST) as db:
        for interval_s, vacuum_days, steps in (
            (600.0, None, [(0, 1), (599, 1), (600, 2), (1199, 2), (1200, 3)]),
            (1e9, 30.0, [(0, 1), (86400 * 30 - 1, 1), (86400 * 30, 2), (86400 * 30 + 1, 2)]),
        ):
            cfg = RetentionConfig(checkpoint_interval_s=interval_s, vacuum_interval_days=vacuum_days)
            retention = Retention(cfg, db, tmp_path / "crops", tmp_path)
            calls: list[int] = []
            real = retention.checkpoint

            def counted(real: object = real, calls: list[int] = calls) -> tuple[int, int, int]:
                calls.append(1)
                return real()  # type: ignore[operator]

            retention.checkpoint = counted  # type: ignore[method-assign]
            start = NOW + timedelta(days=100 if vacuum_days else 0)
            for seconds, expected in steps:
                retention.maintain(start + timedelta(seconds=seconds))
                assert len(calls) == expected, (interval_s, seconds)


def test_incremental_vacuum_under_auto_vacuum_incremental(tmp_path: Path) -> None:
    with Database(tmp_path / "trapcam.db", **FAST) as db:

        def incremental(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            conn.execute("VACUUM")

        db.run_between_transactions(incremental)
        assert db.run_sync(lambda c: c.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2
        _junk(db)
        assert _pages(db)[0] > 0
        free = _pages(db)[0]
        retention = Retention(RetentionConfig(vacuum_interval_days=1), db, tmp_path / "crops", tmp_path)
        assert retention.vacuum(NOW) == f"incremental vacuum ({free} free pages)"
        assert _pages(db)[0] == 0


def test_kept_time_lapse_snapshots_go_before_any_crop_and_are_marked(trap: Trap) -> None:
    """A time-lapse trap keeps each snapshot (storage.save_snapshots): the largest files, whose insects
    are already counted and cropped. They go first, even when newer than every crop; rows stay."""
    late = T_START + timedelta(days=4)
    for n in range(2):
        image = np.random.default_rng(100 + n).integers(0, 256, (120, 160, 3), dtype=np.uint8)
        trap.db.add_snapshot(trap.run_id, late + timedelta(minutes=n), n, 0, "{}", image)
    assert trap.db.flush()
    snaps = query(trap.db_path, "SELECT snapshot_id, image_path FROM snapshots ORDER BY snapshot_id")
    assert [p for _, p in snaps] == [
        "snapshots/2026-07-04/140000_r1_f0.jpg",
        "snapshots/2026-07-04/140100_r1_f1.jpg",
    ]
    snap_bytes = sum((trap.crops / p).stat().st_size for _, p in snaps)
    need = snap_bytes + 1  # the two snapshots, then one crop: the oldest
    report = trap.retention(disk(trap, int(0.001 * GB) - need), min_free_gb=0.001).check(NOW)
    assert report.deleted_files == 3 and report.message and "deleted 3 oldest images" in report.message
    assert not any((trap.crops / p).exists() for _, p in snaps)
    assert not (trap.crops / "snapshots").exists()  # emptied folders go, the crops root stays
    assert trap.db.flush()  # the marks are queued, not waited for (a full disk must not block)
    marked = query(trap.db_path, "SELECT image_deleted_utc FROM snapshots")
    assert [m for (m,) in marked] == [utc_iso(NOW)] * 2
    assert set(trap.deleted()) == {1}
