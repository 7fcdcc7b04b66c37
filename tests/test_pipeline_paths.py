"""Paths of the device loop that a normal night never walks: a failing stage, Ctrl-C, the crop
cadence, the storage switches and the retention clock.

Real parts throughout: synthetic nights through the real pipeline, real SQLite files, a real
`python -m edge run` process for signals and exit codes. Only the failing stage is patched, on one
instance, and only in the test process (or a wrapper script of the test), never in production.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from helpers import query, synthetic_config
from test_run_cli import ROOT, synthetic_yaml, trapcam, write_config

from edge.config import RetentionConfig, TrapConfig
from edge.pipeline import Pipeline
from edge.retention import Retention
from edge.store.db import Database

# A small night with several overlapping visits: about 190 detections, 7 tracks, well under 1 s.
NIGHT = {"width": 640, "height": 360, "frames": 40, "insects": 8, "seed": 3, "frame_interval_s": 5.0}
FAIL_AFTER = 34  # frames that pass before the patched stage breaks (one visit has ended by then)
OPEN_STATUSES = ("tentative", "confirmed")
TRACK_COLUMNS = "track_id, status, first_utc, last_utc, hits, best_detection_id, x0, y0, x1, y1"


def _config(data_dir: Path, extra: str = "", **source: Any) -> TrapConfig:
    return synthetic_config(data_dir, extra, **(NIGHT | source))


def _tracks(db: Path) -> list[tuple[Any, ...]]:
    return query(db, f"SELECT {TRACK_COLUMNS} FROM tracks ORDER BY track_id")


def _assert_closed_cleanly(db: Path) -> None:
    """WAL folded back into the file, integrity ok, and the writer's exclusive lock released.

    Call it before any other read: a read-only reader leaves an empty -wal and -shm behind."""
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0, f"{wal}: {wal.stat().st_size} bytes left behind"
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    fd = os.open(db, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while a writer still holds the file
    finally:
        os.close(fd)


def _fail_after(monkeypatch: pytest.MonkeyPatch, obj: object, name: str, n: int, exc: BaseException) -> None:
    """Let `obj.name` work `n` times, then raise `exc` (a stage breaking mid-run)."""
    real = getattr(obj, name)
    calls = 0

    def broken(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > n:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, name, broken)


def _assert_same_as_clean_stop(broken_db: Path, tmp_path: Path) -> None:
    """What a broken run stored equals a clean run of the same night stopped after FAIL_AFTER frames."""
    clean = _config(tmp_path / "clean")
    result = Pipeline(clean).run(max_frames=FAIL_AFTER)
    assert result.exit_reason == "max-frames"
    expected = _tracks(clean.database_path)
    assert _tracks(broken_db) == expected
    assert query(broken_db, "SELECT COUNT(*) FROM detections") == [(result.detections,)]
    # The scenario must hold both kinds: tracks ended before the failure and tracks open at it.
    last_frame = query(clean.database_path, "SELECT MAX(ts_utc) FROM detections")[0][0]
    assert any(row[3] < last_frame for row in expected) and any(row[3] == last_frame for row in expected)
    assert {row[1] for row in expected} <= {"ended", "discarded"}


# ---------------------------------------------------------------- 1. a stage raises mid-run


BROKEN_DETECTOR = f"""
import sys
import edge.pipeline

real = edge.pipeline.make_detector


def make_detector(cfg):
    detector = real(cfg)
    detect, calls = detector.detect, [0]

    def broken(image):
        calls[0] += 1
        if calls[0] > {FAIL_AFTER}:
            raise RuntimeError("detector broke")
        return detect(image)

    detector.detect = broken
    return detector


edge.pipeline.make_detector = make_detector
from edge.cli import main

sys.exit(main(sys.argv[1:]))
"""


def _assert_error_ending(db: Path, tmp_path: Path) -> None:
    """A run ended by an exception: closed cleanly, 'error: RuntimeError' after FAIL_AFTER frames,
    and the same tracks and detections as a clean stop at that frame."""
    _assert_closed_cleanly(db)
    assert query(db, "SELECT exit_reason, ended_utc IS NOT NULL, frames_processed FROM runs") == [
        ("error: RuntimeError", 1, FAIL_AFTER)
    ]
    _assert_same_as_clean_stop(db, tmp_path)


def test_detector_failing_mid_run_exits_non_zero_and_keeps_what_was_counted(tmp_path: Path) -> None:
    """A bug in a stage must not lose the night: runs says why, tracks so far are stored and ended,
    the file is closed cleanly, and `trapcam run` exits non-zero so systemd restarts it."""
    script = tmp_path / "broken_trapcam.py"
    script.write_text(BROKEN_DETECTOR, encoding="utf-8")
    data = tmp_path / "data"
    cfg = write_config(tmp_path / "c.yaml", synthetic_yaml(data, **NIGHT))
    out = subprocess.run(
        [sys.executable, str(script), "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode != 0, out.stdout
    assert "RuntimeError: detector broke" in out.stderr
    _assert_error_ending(data / "trapcam.db", tmp_path)


def test_tracker_failing_in_the_loop_thread_stores_tracks_and_records_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop thread's own stages (crop, classify, track) failing: the error propagates to the
    caller after the same clean ending as above."""
    cfg = _config(tmp_path / "data")
    pipeline = Pipeline(cfg)
    _fail_after(monkeypatch, pipeline.tracker, "update", FAIL_AFTER, RuntimeError("tracker broke"))
    with pytest.raises(RuntimeError, match="tracker broke"):
        pipeline.run()
    _assert_error_ending(cfg.database_path, tmp_path)


def test_keyboard_interrupt_in_the_loop_is_recorded_as_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C reaching the Python API (no CLI signal handler): the run returns, 'interrupted'."""
    cfg = _config(tmp_path / "data")
    pipeline = Pipeline(cfg)
    _fail_after(monkeypatch, pipeline.tracker, "update", FAIL_AFTER, KeyboardInterrupt())
    result = pipeline.run()
    assert result.exit_reason == "interrupted" and result.frames == FAIL_AFTER
    db = cfg.database_path
    _assert_closed_cleanly(db)
    assert query(db, "SELECT exit_reason, frames_processed FROM runs") == [("interrupted", FAIL_AFTER)]
    _assert_same_as_clean_stop(db, tmp_path)


# ---------------------------------------------------------------- 2. SIGINT to the service


def test_sigint_stops_a_running_trap_gracefully(tmp_path: Path) -> None:
    """README: SIGINT stops like SIGTERM: current frame finished, open tracks ended, exit 0, 'stopped'."""
    data = tmp_path / "data"
    # Visits last about half a night: 600 paced frames (30 s) have insects in view within seconds.
    night = NIGHT | {"frames": 600, "insects": 20, "frame_interval_s": 0.05, "realtime": "true"}
    cfg = write_config(
        tmp_path / "c.yaml", synthetic_yaml(data, "storage: {flush_interval_s: 0.2}\n", **night)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = data / "trapcam.db"
    open_before: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and not open_before:
            time.sleep(0.3)
            if db.exists():
                rows = query(db, "SELECT track_id FROM tracks WHERE status = 'confirmed'")
                open_before = {r[0] for r in rows}
        assert open_before, "no confirmed track within 60 s"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, stderr
    assert "signal SIGINT" in stderr and "KeyboardInterrupt" not in stderr
    _assert_closed_cleanly(db)
    runs = query(db, "SELECT exit_reason, ended_utc IS NOT NULL, frames_processed > 0 FROM runs")
    assert runs == [("stopped", 1, 1)]
    statuses = dict(query(db, "SELECT track_id, status FROM tracks"))
    assert all(statuses[t] == "ended" for t in open_before)  # confirmed at the signal: now ended
    assert not set(statuses.values()) & set(OPEN_STATUSES)
    assert "insects counted" in stdout


# ---------------------------------------------------------------- 3. crop cadence


def _expected_crops(rows: list[tuple[Any, ...]], every_s: float) -> dict[Any, int]:
    """Per track: the first detection's crop, then the next one at least every_s after the last
    saved one (no classifier: every score is 0, so no 'better-scored' crop)."""
    by_track: dict[Any, list[tuple[datetime, int]]] = defaultdict(list)
    for detection_id, track_id, ts, _ in rows:
        by_track[track_id].append((datetime.fromisoformat(ts), detection_id))
    expected: dict[Any, int] = {}
    for track_id, seen in by_track.items():
        last: datetime | None = None
        expected[track_id] = 0
        for ts, _ in sorted(seen):
            if last is None or (ts - last).total_seconds() >= every_s:
                expected[track_id] += 1
                last = ts
    return expected


@pytest.mark.parametrize("every_s", [0.0, 10.0, 22.5])
def test_saved_crops_follow_crop_every_s_per_track(tmp_path: Path, every_s: float) -> None:
    """Crops are most of the disk: the cadence must be exactly what storage.crop_every_s says.
    10 s at 5 s frames sits on the boundary (a crop exactly every_s later is saved)."""
    # Re-identification off: a revived track restarts its cadence, which rows alone cannot show.
    extra = f"storage: {{crop_every_s: {every_s}}}\ntracker: {{reid_window_s: 0, hop_max_distance: 0}}\n"
    cfg = _config(tmp_path / "data", extra)
    Pipeline(cfg).run()
    rows = query(cfg.database_path, "SELECT detection_id, track_id, ts_utc, crop_path FROM detections")
    expected = _expected_crops(rows, every_s)
    saved: dict[Any, int] = defaultdict(int)
    for _, track_id, _, crop_path in rows:
        if crop_path is not None:
            saved[track_id] += 1
            assert (cfg.crops_path / crop_path).is_file()
    assert dict(saved) == {t: n for t, n in expected.items() if n}
    assert len(list(cfg.crops_path.rglob("*.jpg"))) == sum(expected.values())
    if every_s == 0:
        assert sum(expected.values()) == len(rows)
    else:
        assert sum(expected.values()) < len(rows) and max(expected.values()) >= 2


# ---------------------------------------------------------------- 4. storage switches


def test_save_crops_false_writes_no_crop_files(tmp_path: Path) -> None:
    """Traps with little disk switch crops off: rows stay, no file and no crop_path anywhere."""
    cfg = _config(tmp_path / "data", "storage: {save_crops: false}\n")
    result = Pipeline(cfg).run()
    assert result.detections > 0
    assert query(cfg.database_path, "SELECT COUNT(*), COUNT(crop_path) FROM detections") == [
        (result.detections, 0)
    ]
    assert [p for p in tmp_path.rglob("*") if p.suffix in (".jpg", ".tmp")] == []


@pytest.mark.parametrize("fsync", [True, False])
def test_fsync_crops_syncs_every_crop_and_still_writes_jpegs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    """fsync_crops must reach the crop writer (each temp file synced before its rename) and the
    crops must still be complete JPEGs; without it no crop is synced (SD cards are slow)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    cfg = _config(tmp_path / "data", f"storage: {{fsync_crops: {str(fsync).lower()}}}\n")
    Pipeline(cfg).run()
    crops = [
        r[0] for r in query(cfg.database_path, "SELECT crop_path FROM detections WHERE crop_path IS NOT NULL")
    ]
    assert len(crops) > 10
    for rel in crops:
        data = (cfg.crops_path / rel).read_bytes()
        assert data[:3] == b"\xff\xd8\xff"
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 0 and image.shape[2] == 3
    temp_names = {f".{Path(rel).name}.{os.getpid()}.tmp" for rel in crops}
    crops_dir = cfg.crops_path.resolve()
    synced_crops = {  # the kept detector background is always synced: it is not a crop
        Path(p).name for p in synced if Path(p).name.endswith(".tmp") and Path(p).is_relative_to(crops_dir)
    }
    assert synced_crops == (temp_names if fsync else set())


def test_database_and_crops_dir_overrides_put_files_exactly_there(tmp_path: Path) -> None:
    """storage.database and storage.crops_dir move the files off data_dir (e.g. crops on a USB disk)."""
    data, db, crops = tmp_path / "data", tmp_path / "ssd" / "night.sqlite", tmp_path / "usb" / "pics"
    cfg = write_config(
        tmp_path / "c.yaml",
        synthetic_yaml(data, f"storage: {{database: {db}, crops_dir: {crops}}}\n", **NIGHT),
    )
    out = trapcam("run", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    _assert_closed_cleanly(db)
    assert query(db, "SELECT exit_reason FROM runs") == [("end-of-source",)]
    rel = [r[0] for r in query(db, "SELECT crop_path FROM detections WHERE crop_path IS NOT NULL")]
    assert rel and all((crops / p).is_file() for p in rel)
    assert sorted(p.relative_to(crops).as_posix() for p in crops.rglob("*.jpg")) == sorted(rel)
    assert not (data / "trapcam.db").exists() and not (data / "crops").exists()


# ---------------------------------------------------------------- 5. retention clock and free space


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A real writer for Retention to read through (it never needs rows here)."""
    db = Database(tmp_path / "data" / "trapcam.db", flush_interval_s=0.05)
    yield db
    db.close()


def test_retention_is_due_only_once_check_interval_s_has_passed(tmp_path: Path, database: Database) -> None:
    """The loop asks `due(now)` every second; a check walks the whole crops tree, so not more often."""
    cfg = RetentionConfig(check_interval_s=600, min_free_gb=0)
    retention = Retention(cfg, database, tmp_path / "data" / "crops", tmp_path / "data")
    t0 = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)
    assert retention.due(t0)  # never checked yet
    retention.check(t0)
    assert not retention.due(t0)
    assert not retention.due(t0 + timedelta(seconds=599.999))
    assert retention.due(t0 + timedelta(seconds=600))
    retention.check(t0 + timedelta(seconds=600))
    assert not retention.due(t0 + timedelta(seconds=1199))
    assert retention.due(t0 + timedelta(seconds=1200))


def _statvfs_free(path: Path) -> int:
    """Bytes an unprivileged process may still write (f_bavail, not f_bfree: root's reserve is not ours)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.mark.parametrize("folder", ["data", "data/not/made/yet"])
def test_real_free_space_probe_matches_statvfs(tmp_path: Path, database: Database, folder: str) -> None:
    """The default probe decides when crops are deleted: it must be the space we can write, measured
    on the data folder (its nearest existing parent before the folder exists)."""
    data_dir = tmp_path / folder
    retention = Retention(RetentionConfig(min_free_gb=0), database, tmp_path / "crops", data_dir)
    before = _statvfs_free(tmp_path)
    free = retention.check(datetime.now(timezone.utc)).free_bytes
    after = _statvfs_free(tmp_path)
    slack = 64 * 2**20  # other work on this disk may write or delete meanwhile
    assert min(before, after) - slack <= free <= max(before, after) + slack
