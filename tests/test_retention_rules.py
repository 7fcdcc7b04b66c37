"""Retention's rules at their edges, on a real database and real files (issue 26): the watermark
and the need met exactly, the recent stretch the growth rate is measured over, what each line
says, paths it must not touch, an image it cannot delete, and a WAL checkpoint a reader holds up."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge.config import RetentionConfig
from edge.errors import StorageError
from edge.retention import GB, Retention, _disk_free, _message, _tree_bytes, make_room_to_open
from edge.store import Database, DetectionRow, RunInfo
from edge.store.db import connect_reader
from edge.store.reserve import Reserve

NOW = datetime(2026, 7, 5, 12, tzinfo=timezone.utc)
T0 = datetime(2026, 7, 1, 22, tzinfo=timezone.utc)
MIN_FREE = 0.001  # GB: the watermark
WATERMARK = int(MIN_FREE * GB)


class Trap:
    """A database with detections whose crops are files of known sizes, and a settable free space."""

    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.crops = self.data / "crops"
        self.crops.mkdir(parents=True)
        self.db = Database(self.data / "trapcam.db", crops_root=self.crops)
        self.run = self.db.start_run(
            RunInfo(device_id="t", software_version="0", config_json="{}", source="x")
        )
        self.free = 100 * GB
        self.asked: set[Path] = set()  # the folders whose free space was read
        self.next_id = 1

    def free_bytes(self, path: Path) -> int:
        self.asked.add(path)
        return self.free

    def crop(self, rel: str, size: int | None = 1000) -> int:
        """A detection row naming `rel`; a file of `size` bytes there (None: no file)."""
        i = self.next_id
        self.next_id += 1
        if size is not None:
            (self.crops / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.crops / rel).write_bytes(b"x" * size)
        row = DetectionRow(
            i, self.run, None, i, T0 + timedelta(minutes=i), 0, 0, 10, 10, 100, 0.9, crop_path=rel
        )
        self.db.add_detection(row)
        assert self.db.flush()
        return i

    def retention(self, **cfg: object) -> Retention:
        settings = {"min_free_gb": MIN_FREE, **cfg}
        return Retention(
            RetentionConfig(**settings), self.db, self.crops, self.data, free_bytes=self.free_bytes
        )

    def deleted(self) -> list[int]:
        assert self.db.flush()
        conn = connect_reader(self.db.path)
        try:
            rows = conn.execute("SELECT detection_id FROM detections WHERE crop_deleted_utc IS NOT NULL")
            return sorted(int(r[0]) for r in rows)
        finally:
            conn.close()


@pytest.fixture
def trap(tmp_path: Path) -> Iterator[Trap]:
    t = Trap(tmp_path)
    yield t
    t.db.close()


def test_free_space_exactly_at_the_watermark_is_enough_and_the_reserve_raises_it(trap: Trap) -> None:
    for n in range(3):
        trap.crop(f"2026-07-01/{n}.jpg")
    trap.free = WATERMARK
    report = trap.retention().check(NOW)
    assert (report.deleted_files, report.over_budget_after, report.message) == (0, False, None)
    report = trap.retention().check(NOW, extra_bytes=2000)  # room for the reserve file on top
    assert (report.deleted_files, report.deleted_bytes) == (2, 2000)
    assert trap.deleted() == [1, 2]


def test_deletion_stops_as_soon_as_the_need_is_met(trap: Trap) -> None:
    for n in range(4):
        trap.crop(f"2026-07-01/{n}.jpg")
    trap.free = WATERMARK - 2000  # exactly two crops short
    report = trap.retention().check(NOW)
    assert (report.deleted_files, report.deleted_bytes) == (2, 2000)
    assert trap.deleted() == [1, 2]


def test_the_crops_folder_stays_when_everything_in_it_went(
    trap: Trap, caplog: pytest.LogCaptureFixture
) -> None:
    trap.crop("2026-07-01/5/a.jpg")
    trap.crop("2026-07-01/5/b.jpg")
    trap.free = 0
    with caplog.at_level(logging.INFO, logger="edge.retention"):
        report = trap.retention().check(NOW)
    assert report.deleted_files == 2 and report.over_budget_after
    assert trap.crops.is_dir() and list(trap.crops.iterdir()) == []  # emptied day and track folders went
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "retention: deleted 2 oldest images (0.0 MB); "
            "still short of 0.001 GB free after deleting what may go",
        )
    ]
    assert trap.asked == {trap.data}  # the disk holding the data folder is the one measured


def test_a_check_is_due_at_first_and_again_after_its_interval(trap: Trap) -> None:
    retention = trap.retention(check_interval_s=600)
    assert retention.due(NOW)
    retention.check(NOW)
    assert not retention.due(NOW + timedelta(seconds=599))
    assert retention.due(NOW + timedelta(seconds=600))


def test_every_deletion_is_added_back_to_the_growth_rate(trap: Trap) -> None:
    """Two checks that each delete 1000 bytes: the rate sees both, whatever the first one left."""
    for n in range(4):
        trap.crop(f"2026-07-01/{n}.jpg")
    retention = trap.retention()
    trap.free = WATERMARK - 1000
    first = retention.check(NOW)
    second = retention.check(NOW + timedelta(hours=1))
    assert (first.deleted_bytes, second.deleted_bytes) == (1000, 1000)
    assert retention._deleted_total == 2000
    rates = trap.retention()
    rates._deleted_total = 5000  # deleted before the first reading
    rates._days_left(NOW, 10_000, 10_000)
    rates._deleted_total = 8000  # 3000 more deleted by the next one
    assert rates._days_left(NOW + timedelta(days=1), 9_000, 10_000) == pytest.approx(5.0)  # 2000 a day


def test_images_outside_the_crops_folder_are_left_alone_with_one_warning_each(
    trap: Trap, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "data" / "keep.jpg"
    outside.write_bytes(b"k" * 1000)
    absolute = tmp_path / "absolute.jpg"
    absolute.write_bytes(b"a" * 1000)
    (trap.crops / "2026-07-01").mkdir()
    (trap.crops / "2026-07-01" / "link.jpg").symlink_to(outside)
    (trap.crops / "2026-07-02").symlink_to(tmp_path / "data", target_is_directory=True)
    trap.crop("../keep.jpg", None)
    trap.crop(str(absolute), None)
    trap.crop("2026-07-01/link.jpg", None)
    trap.crop("2026-07-02/keep.jpg", None)  # through a linked folder
    trap.db.add_snapshot(trap.run, T0, 1, 0, "{}")
    assert trap.db.flush()
    con = sqlite3.connect(trap.db.path)
    con.execute("UPDATE snapshots SET image_path = '../keep.jpg'")
    con.commit()
    con.close()
    trap.free = 0
    retention = trap.retention()
    with caplog.at_level(logging.WARNING, logger="edge.retention"):
        retention.check(NOW)
        retention.check(NOW + timedelta(minutes=10))
    left_alone = [r.getMessage() for r in caplog.records if "left alone" in r.getMessage()]
    assert left_alone == [
        f"retention: snapshot 1: image path '../keep.jpg' is not inside {trap.crops}; left alone",
        f"retention: detection 1: image path '../keep.jpg' is not inside {trap.crops}; left alone",
        f"retention: detection 2: image path '{absolute}' is not inside {trap.crops}; left alone",
        f"retention: detection 3: image path '2026-07-01/link.jpg' is not inside {trap.crops}; left alone",
        f"retention: detection 4: image path '2026-07-02/keep.jpg' is not inside {trap.crops}; left alone",
    ]  # once each, not at every check
    assert outside.read_bytes() == b"k" * 1000 and absolute.exists() and trap.deleted() == []


def test_an_image_that_cannot_be_deleted_is_named_and_the_next_one_goes(
    trap: Trap, caplog: pytest.LogCaptureFixture
) -> None:
    trap.crop("2026-07-01/stuck.jpg", None)
    (trap.crops / "2026-07-01" / "stuck.jpg").mkdir(parents=True)  # a folder where a file should be
    trap.crop("2026-07-01/b.jpg")
    trap.free = WATERMARK - 1000
    with caplog.at_level(logging.WARNING, logger="edge.retention"):
        report = trap.retention().check(NOW)
    assert report.deleted_files == 1 and trap.deleted() == [2]
    stuck = trap.crops / "2026-07-01" / "stuck.jpg"
    assert [r.getMessage() for r in caplog.records if "cannot delete" in r.getMessage()] == [
        f"retention: cannot delete {stuck}: Is a directory"
    ]


def test_free_space_that_cannot_be_read_is_a_storage_error_naming_the_folder(trap: Trap) -> None:
    def broken(path: Path) -> int:
        raise OSError(errno.EIO, "Input/output error")

    retention = Retention(RetentionConfig(), trap.db, trap.crops, trap.data, free_bytes=broken)
    with pytest.raises(StorageError) as raised:
        retention.check(NOW)
    assert str(raised.value) == f"{trap.data}: cannot read the free disk space: Input/output error"


def test_days_left_is_measured_over_the_last_three_days(trap: Trap) -> None:
    """(checks at day 0, 1 and exactly 4: the stretch starts at day 1, the rate is 1000 bytes a day)."""
    retention = trap.retention()
    day = timedelta(days=1)
    assert retention._days_left(NOW, 0, 10_000) is None  # one reading: no rate
    assert retention._days_left(NOW + day, 0, 10_000) is None  # nothing grew
    assert retention._days_left(NOW + 4 * day, 3000, 10_000) == pytest.approx(10.0)
    assert retention._days_left(NOW + 5 * day, 4000, -5) == 0.0  # already below the watermark
    slow = trap.retention()
    slow._days_left(NOW, 100, 1000)
    assert slow._days_left(NOW + 2 * day, 101, 1000) == pytest.approx(2000.0)  # half a byte a day
    assert slow._days_left(NOW + 3 * day, 50, 1000) is None  # shrinking: no estimate


def test_each_line_says_what_was_done_and_what_is_still_short() -> None:
    cfg = RetentionConfig(min_free_gb=5, max_crops_gb=0.5)
    assert _message(3, int(1.5 * 2**20), True, 2.3, True, cfg) == (
        "deleted 3 oldest images (1.5 MB); still short of 5 GB free and crops under 0.5 GB after deleting "
        "what may go; about 2.3 days of disk room left at the current rate"
    )
    assert _message(0, 0, True, None, True, RetentionConfig(min_free_gb=2)) == (
        "still short of 2 GB free after deleting what may go"
    )
    assert _message(0, 0, False, 6.0, True, cfg) == "about 6.0 days of disk room left at the current rate"
    assert _message(0, 0, False, 60.0, False, cfg) is None


def test_tree_bytes_counts_files_below_and_follows_no_link(tmp_path: Path) -> None:
    root = tmp_path / "crops"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "one.jpg").write_bytes(b"1" * 100)
    (root / "a" / "b" / "two.jpg").write_bytes(b"2" * 250)
    (root / "three.jpg").write_bytes(b"3" * 7)
    big = tmp_path / "big"
    big.mkdir()
    (big / "x.bin").write_bytes(b"x" * 10_000)
    (root / "linked-dir").symlink_to(big)
    (root / "linked-file.jpg").symlink_to(big / "x.bin")
    assert _tree_bytes(root) == 357
    assert _tree_bytes(tmp_path / "not-yet") == 0


def test_a_checkpoint_a_reader_holds_up_is_retried_later(
    trap: Trap, caplog: pytest.LogCaptureFixture
) -> None:
    trap.crop("2026-07-01/a.jpg")
    reader = connect_reader(trap.db.path)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM detections").fetchall()  # holds a snapshot of the WAL
        trap.crop("2026-07-01/b.jpg")
        with caplog.at_level(logging.INFO, logger="edge.retention"):
            assert trap.retention().checkpoint() == (1, -1, -1)
    finally:
        reader.close()
    assert [r.getMessage() for r in caplog.records] == [
        "retention: WAL checkpoint could not finish (a reader is busy); it is retried later"
    ]
    busy, wal_pages, done = trap.retention().checkpoint()
    assert busy == 0 and wal_pages == done >= 0


# ---------------------------------------------------------------- before the database opens


KB = 1024


def full_disk(data: Path, capacity: int):
    """Free bytes of a disk of `capacity` that holds only the data folder: deleting frees space."""

    def free(_path: Path) -> int:
        return capacity - sum(p.stat().st_size for p in data.rglob("*") if p.is_file())

    return free


def image(path: Path, size: int, age_s: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"i" * size)
    stamp = NOW.timestamp() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_room_to_open_gives_up_the_reserve_first_and_touches_no_image(tmp_path: Path) -> None:
    data = tmp_path / "data"
    crop = image(data / "crops" / "2026-07-01" / "a.jpg", 300 * KB, 100)
    reserve = Reserve(data, size_mb=2)
    assert reserve.ensure(10 * GB)
    free = full_disk(data, capacity=reserve.size + 300 * KB + 200 * KB)  # 200 KB free
    assert make_room_to_open(data, data / "crops", reserve, free) == reserve.size
    assert crop.exists() and reserve.held == 0


def test_room_to_open_deletes_kept_snapshots_then_crops_oldest_first_until_enough(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, crops = tmp_path / "data", tmp_path / "data" / "crops"
    old_crop = image(crops / "2026-06-30" / "1" / "a.jpg", 400 * KB, 900)
    new_crop = image(crops / "2026-07-01" / "2" / "b.jpg", 400 * KB, 100)
    snapshot = image(crops / "snapshots" / "2026-07-01" / "s.jpg", 500 * KB, 50)  # newest, still first
    free = full_disk(data, capacity=1300 * KB + 300 * KB)  # 300 KB free: 724 KB short of 1 MB
    with caplog.at_level(logging.WARNING, logger="edge.retention"):
        freed = make_room_to_open(data, crops, Reserve(data, size_mb=0), free)
    assert freed == 900 * KB
    assert not snapshot.exists() and not old_crop.exists() and new_crop.exists()
    assert [r.getMessage() for r in caplog.records] == [
        "retention: the disk was full and there was no reserve: deleted the oldest images (0.9 MB) so the "
        "database can open"
    ]


def test_room_to_open_with_room_or_no_reading_does_nothing_and_without_enough_deletes_every_image(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, crops = tmp_path / "data", tmp_path / "data" / "crops"
    crop = image(crops / "2026-07-01" / "a.jpg", 100 * KB, 10)
    reserve = Reserve(data, size_mb=1)
    assert reserve.ensure(10 * GB)
    assert make_room_to_open(data, crops, reserve, lambda _p: 1024 * KB) == 0  # exactly the room needed

    def unreadable(_path: Path) -> int:
        raise OSError(errno.EIO, "Input/output error")

    assert make_room_to_open(data, crops, reserve, unreadable) == 0
    assert crop.exists() and reserve.held == reserve.size
    with caplog.at_level(logging.WARNING, logger="edge.retention"):
        freed = make_room_to_open(data, crops, reserve, lambda _p: 0)  # nothing frees the disk
    assert freed == reserve.size + 100 * KB and not crop.exists()
    assert [r.getMessage() for r in caplog.records if "oldest images" in r.getMessage()] == []


def test_the_free_space_of_a_folder_not_made_yet_is_its_disks(tmp_path: Path) -> None:
    measured = _disk_free(tmp_path / "not" / "made" / "yet")
    assert isinstance(measured, int) and abs(measured - shutil.disk_usage(tmp_path).free) < 64 * 2**20


def test_the_database_s_own_bytes_count_its_wal_and_shared_memory_files(trap: Trap) -> None:
    """What the trap writes besides the crops (the growth rate's other part)."""
    trap.crop("2026-07-01/a.jpg")
    path = trap.db.path
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    assert all(p.exists() for p in files)
    assert trap.retention()._db_bytes() == sum(p.stat().st_size for p in files)
