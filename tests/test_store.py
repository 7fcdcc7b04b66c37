"""Storage on real SQLite files and real JPEG crops: schema, batching, flush, migrations, refusals."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import StorageError, TrapcamError
from edge.store import (
    LATEST_VERSION,
    MIGRATIONS,
    CropStore,
    Database,
    DetectionRow,
    Migration,
    RunInfo,
    TrackRow,
    connect_reader,
    count_rows,
    migrate,
    parse_utc,
    schema_version,
    utc_iso,
)

T0 = datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc)
FAST = {"retry_backoff_s": (0.01, 0.05)}


def run_info() -> RunInfo:
    return RunInfo(device_id="trap-01", software_version="0.1.0", config_json='{"a": 1}', source="synthetic")


def det(
    i: int, run_id: int, track_id: int | None = None, ts: datetime | None = None, **kw: object
) -> DetectionRow:
    """A detection whose values follow from its id, so a read-back can be checked field by field."""
    fields: dict[str, object] = dict(
        detection_id=i,
        run_id=run_id,
        track_id=track_id,
        frame_index=i,
        ts_utc=ts or T0 + timedelta(seconds=i),
        x0=i % 100,
        y0=2 * (i % 50),
        x1=i % 100 + 40,
        y1=2 * (i % 50) + 30,
        area_px=900 + i,
        det_score=0.5,
        level="species",
        label=f"sp{i % 7}",
        score=0.75,
        predictions_json={"species": [(f"sp{i % 7}", 0.75), ("other", 0.2)]},
    )
    fields.update(kw)
    return DetectionRow(**fields)  # type: ignore[arg-type]


def track(tid: int, run_id: int, status: str = "confirmed", hits: int = 3, **kw: object) -> TrackRow:
    fields: dict[str, object] = dict(
        track_id=tid,
        run_id=run_id,
        status=status,
        first_utc=T0,
        last_utc=T0 + timedelta(seconds=hits),
        hits=hits,
        x0=1,
        y0=2,
        x1=30,
        y1=40,
        level="species",
        label="sp1",
        score=0.8,
        votes_json={"species": {"sp1": 2.4, "sp2": 0.3}},
        best_detection_id=None,
        moved_px=12.5,
    )
    fields.update(kw)
    return TrackRow(**fields)  # type: ignore[arg-type]


def solid_crop(value: int, size: int = 64) -> np.ndarray:
    img = np.full((size, size, 3), value, np.uint8)
    img[: size // 4, : size // 4] = (value + 128) % 256  # a corner, so orientation is checked too
    return img


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "trapcam.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[Database]:
    database = Database(db_path, crops_root=db_path.parent / "crops", **FAST)
    yield database
    database.close()


def wait_until(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# ---------------------------------------------------------------- schema


def test_new_database_has_schema_version_wal_and_indexes(db: Database, db_path: Path) -> None:
    assert db_path.parent.is_dir()  # parent folders created
    conn = connect_reader(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "detections", "tracks"} <= tables
    indexed = {
        (r[0], col[2])
        for r in conn.execute(
            "SELECT tbl_name, name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
        )
        for col in conn.execute(f"PRAGMA index_info('{r[1]}')")
    }
    assert {("detections", "ts_utc"), ("detections", "track_id"), ("detections", "label")} <= indexed
    assert ("tracks", "label") in indexed
    cols = [r[1] for r in conn.execute("PRAGMA table_info(detections)")]
    assert cols[:5] == ["detection_id", "run_id", "track_id", "frame_index", "ts_utc"]
    assert "predictions_json" in cols and "crop_path" in cols
    conn.close()
    assert schema_version(db_path) == LATEST_VERSION


def test_rows_round_trip_with_utc_timestamps(db: Database, db_path: Path) -> None:
    run_id = db.start_run(run_info())
    local = datetime(2026, 7, 2, 0, 15, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    db.add_detection(det(1, run_id, track_id=1, ts=local))
    db.upsert_track(track(1, run_id, best_detection_id=1))
    assert db.flush(10)
    conn = connect_reader(db_path)
    row = conn.execute("SELECT * FROM detections").fetchone()
    assert row["ts_utc"] == "2026-07-01T22:15:00.123456Z"
    assert parse_utc(row["ts_utc"]) == local
    assert (row["x0"], row["y0"], row["x1"], row["y1"], row["area_px"]) == (1, 2, 41, 32, 901)
    assert row["predictions_json"] == '{"species":[["sp1",0.75],["other",0.2]]}'
    trk = conn.execute("SELECT * FROM tracks").fetchone()
    assert (trk["status"], trk["hits"], trk["best_detection_id"], trk["moved_px"]) == (
        "confirmed",
        3,
        1,
        12.5,
    )
    assert trk["votes_json"] == '{"species":{"sp1":2.4,"sp2":0.3}}'
    run = conn.execute("SELECT * FROM runs").fetchone()
    assert run["started_utc"].endswith("Z") and run["config_json"] == '{"a": 1}' and run["ended_utc"] is None


# ---------------------------------------------------------------- batching and flushing


def test_many_rows_are_written_in_few_transactions(db_path: Path) -> None:
    with Database(db_path, batch_size=100, flush_interval_s=5.0) as db:
        run_id = db.start_run(run_info())
        before = db.transactions
        for i in range(1, 1001):
            db.add_detection(det(i, run_id))
        assert db.flush(30)
        used = db.transactions - before
        assert db.rows_written == 1000
    # 1000 rows in batches of at most 100: 10 full batches (+1 for a partial one cut by flush)
    assert 10 <= used <= 11, used
    conn = connect_reader(db_path)
    assert count_rows(conn, "detections") == 1000
    assert count_rows(conn, "detections", "label = ?", ("sp3",)) == len(
        [i for i in range(1, 1001) if i % 7 == 3]
    )


def test_flush_waits_for_commit_and_interval_flushes_by_itself(db_path: Path) -> None:
    with Database(db_path, batch_size=200, flush_interval_s=30.0) as db:
        run_id = db.start_run(run_info())
        for i in range(1, 6):
            db.add_detection(det(i, run_id))
        reader = connect_reader(db_path)
        time.sleep(0.2)
        assert count_rows(reader, "detections") == 0  # held for the batch, not yet committed
        assert db.pending() == 5
        assert db.flush(10) is True
        assert db.pending() == 0
        assert count_rows(reader, "detections") == 5
    with Database(db_path, batch_size=200, flush_interval_s=0.1) as db:
        run_id = db.start_run(run_info())
        db.add_detection(det(6, run_id))
        assert wait_until(lambda: count_rows(reader, "detections") == 6, 5.0)  # no flush() call


def test_close_is_idempotent_and_refuses_later_writes(db_path: Path) -> None:
    db = Database(db_path)
    run_id = db.start_run(run_info())
    db.add_detection(det(1, run_id))
    db.close()
    db.close()
    assert db.closed
    with pytest.raises(StorageError, match="closed"):
        db.add_detection(det(2, run_id))
    assert count_rows(connect_reader(db_path), "detections") == 1  # close flushed
    assert not Path(str(db_path) + "-wal").exists() or Path(str(db_path) + "-wal").stat().st_size == 0


def test_reopen_continues_ids_runs_and_counters(db_path: Path) -> None:
    with Database(db_path) as db:
        assert db.next_ids() == (1, 1)
        run1 = db.start_run(run_info())
        for i in range(1, 11):
            db.add_detection(det(i, run1, track_id=7 if i > 5 else 2))
        db.upsert_track(track(3, run1))
        assert db.next_ids() == (8, 11)  # ids queued but not yet written count too
        db.update_run(run1, frames_processed=10, detections=10)
        db.end_run(run1, "end of stream", tracks_confirmed=1)
    with Database(db_path) as db:
        # track 7 only appears on detections (never upserted): still not reused
        assert db.next_ids() == (8, 11)
        run2 = db.start_run(run_info())
        assert run2 == run1 + 1
    conn = connect_reader(db_path)
    r = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run1,)).fetchone()
    assert (r["frames_processed"], r["detections"], r["tracks_confirmed"]) == (10, 10, 1)
    assert r["exit_reason"] == "end of stream" and parse_utc(r["ended_utc"]) >= parse_utc(r["started_utc"])


def test_upsert_track_updates_in_place(db: Database, db_path: Path) -> None:
    run_id = db.start_run(run_info())
    db.upsert_track(track(5, run_id, status="tentative", hits=1))
    db.upsert_track(track(5, run_id, status="confirmed", hits=4, label="sp2", x1=99))
    db.upsert_track(track(5, run_id, status="ended", hits=6, label="sp2", x1=99))
    assert db.flush(10)
    rows = connect_reader(db_path).execute("SELECT status, hits, label, x1 FROM tracks").fetchall()
    assert [tuple(r) for r in rows] == [("ended", 6, "sp2", 99)]


def test_run_sync_sees_queued_rows_and_submit_checks_sql(db: Database) -> None:
    run_id = db.start_run(run_info())
    for i in range(1, 4):
        db.add_detection(det(i, run_id))
    n = db.run_sync(lambda c: c.execute("SELECT COUNT(*) FROM detections").fetchone()[0])
    assert n == 3
    with pytest.raises(StorageError, match=r"bad statement.*no such table"):
        db.submit("INSERT INTO nowhere VALUES (?)", (1,))
    db.submit("UPDATE runs SET host = ? WHERE run_id = ?", ("elsewhere", run_id))
    assert db.run_sync(lambda c: c.execute("SELECT host FROM runs").fetchone()[0]) == "elsewhere"


def test_second_writer_on_same_file_is_refused(db: Database, db_path: Path) -> None:
    with pytest.raises(StorageError, match="in use by another trapcam process"):
        Database(db_path)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: det(1, r, ts=datetime(2026, 7, 1, 21, 30)), "naive"),
        (lambda r: det(1, r, x1=0), r"DetectionRow: box \(1, 2, 0, 32\): expected x1 > x0"),
        (lambda r: det(1, r + 5), "run_id 6 is not a run of this database"),
        (lambda r: det(0, r), r"DetectionRow.detection_id: expected an integer >= 1, got 0"),
        (lambda r: det(1, r, det_score=float("nan")), "DetectionRow.det_score: expected a finite number"),
        (
            lambda r: det(1, r, predictions_json={"species": [("a", object())]}),
            "DetectionRow.predictions_json: cannot",
        ),
        (lambda r: track(1, r, status="gone"), "TrackRow.status: expected one of"),
        (
            lambda r: track(1, r, last_utc=T0 - timedelta(seconds=1)),
            "TrackRow.last_utc: .* is before first_utc",
        ),
    ],
)
def test_bad_rows_raise_a_clear_storage_error(db: Database, make, message: str) -> None:  # type: ignore[no-untyped-def]
    run_id = db.start_run(run_info())
    row = make(run_id)
    with pytest.raises(StorageError, match=message):
        if isinstance(row, TrackRow):
            db.upsert_track(row)
        else:
            db.add_detection(row)
    assert db.pending() == 0


def test_bad_crops_counters_and_run_info_are_refused(db: Database, db_path: Path) -> None:
    run_id = db.start_run(run_info())
    with pytest.raises(StorageError, match="crop: expected dtype uint8, got float32"):
        db.add_detection(det(1, run_id), np.zeros((8, 8, 3), np.float32))
    with pytest.raises(StorageError, match="expected 3 colour channels"):
        db.add_detection(det(1, run_id), np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(StorageError, match="run counter 'frames': unknown"):
        db.update_run(run_id, frames=3)
    with pytest.raises(StorageError, match="run counter detections: expected an integer >= 0"):
        db.update_run(run_id, detections=-1)
    with pytest.raises(StorageError, match=r"RunInfo\.config_json: expected a JSON document"):
        db.start_run(RunInfo("t", "0", "{not json", "synthetic"))
    with Database(db_path.with_name("nocrops.db")) as plain:
        r = plain.start_run(run_info())
        with pytest.raises(StorageError, match="opened without crops_root"):
            plain.add_detection(det(1, r), solid_crop(10))
    assert issubclass(StorageError, TrapcamError)


def test_a_refused_row_is_isolated_and_kept_aside(db_path: Path) -> None:
    """A row SQLite refuses (duplicate id: a bug upstream) must not take its batch down, nor vanish."""
    with Database(db_path, batch_size=50, flush_interval_s=5.0) as db:
        run_id = db.start_run(run_info())
        for i in range(1, 21):
            db.add_detection(det(i, run_id))
        db.add_detection(det(7, run_id, label="duplicate"))
        for i in range(21, 31):
            db.add_detection(det(i, run_id))
        assert db.flush(10)
        assert db.rejected == 1 and "UNIQUE constraint failed" in (db.last_error or "")
    conn = connect_reader(db_path)
    assert [r[0] for r in conn.execute("SELECT detection_id FROM detections ORDER BY 1")] == list(
        range(1, 31)
    )
    assert conn.execute("SELECT label FROM detections WHERE detection_id = 7").fetchone()[0] == "sp0"
    kept = Path(str(db_path) + ".rejected.jsonl").read_text().splitlines()
    assert len(kept) == 1 and '"duplicate"' in kept[0]


# ---------------------------------------------------------------- migrations and refusals


def test_migration_backs_up_first_then_adds_the_table(db_path: Path) -> None:
    with Database(db_path, migrations=MIGRATIONS[:1]) as db:
        run_id = db.start_run(run_info())
        for i in range(1, 51):
            db.add_detection(det(i, run_id))

    def backfill(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE notes ADD COLUMN n_detections INTEGER")
        conn.execute("UPDATE notes SET n_detections = (SELECT COUNT(*) FROM detections)")

    extra = (
        *MIGRATIONS[:1],
        Migration(
            2,
            "notes",
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);\nINSERT INTO notes VALUES (1, 'x');",
        ),
        Migration(3, "count detections into notes", backfill),
    )
    with Database(db_path, migrations=extra) as db:
        assert db.backup_path is not None
        backup = db.backup_path
    assert backup.name.startswith("trapcam.db.v1.bak-")
    assert list(db_path.parent.glob("trapcam.db.v1.bak-*")) == [backup]
    old = sqlite3.connect(backup)
    assert old.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert old.execute("PRAGMA user_version").fetchone()[0] == 1
    assert old.execute("SELECT COUNT(*) FROM detections").fetchone()[0] == 50
    assert "notes" not in {r[0] for r in old.execute("SELECT name FROM sqlite_master")}
    old.close()
    conn = connect_reader(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert conn.execute("SELECT n_detections FROM notes").fetchone()[0] == 50
    # software knowing only schema 1 must now refuse the migrated file
    conn.close()
    with pytest.raises(StorageError, match="newer trapcam"):
        Database(db_path, migrations=MIGRATIONS[:1])


def test_a_schema_1_database_from_the_field_migrates_to_the_latest(db_path: Path) -> None:
    with Database(db_path, migrations=MIGRATIONS[:1]) as db:
        run_id = db.start_run(run_info())
        for i in range(1, 21):
            db.add_detection(det(i, run_id))
    with Database(db_path) as db:
        assert db.backup_path is not None and db.backup_path.name.startswith("trapcam.db.v1.bak-")
    conn = connect_reader(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    assert count_rows(conn, "detections") == 20
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"outbox", "counters", "summaries", "health"} <= tables
    assert "lineage_json" in [r[1] for r in conn.execute("PRAGMA table_info(tracks)")]
    assert "crop_deleted_utc" in [r[1] for r in conn.execute("PRAGMA table_info(detections)")]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_a_failing_migration_leaves_the_last_good_version(db_path: Path) -> None:
    with Database(db_path, migrations=MIGRATIONS[:1]) as db:
        db.start_run(run_info())
    bad = (*MIGRATIONS[:1], Migration(2, "broken", "CREATE TABLE a (x);\nCREATE TABLE runs (y);"))
    with pytest.raises(
        StorageError, match=r"migration 2 \(broken\) failed: .*stays at schema 1; the backup is"
    ):
        Database(db_path, migrations=bad)
    conn = connect_reader(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "a" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}  # rolled back whole
    assert count_rows(conn, "runs") == 1


def test_newer_database_is_refused_and_left_byte_identical(db_path: Path) -> None:
    with Database(db_path) as db:
        db.start_run(run_info())
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA journal_mode = DELETE")
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    before = db_path.read_bytes()
    with pytest.raises(StorageError) as err:
        Database(db_path)
    msg = str(err.value)
    assert f"newer trapcam (schema 99, this version knows {LATEST_VERSION}); upgrade trapcam" in msg
    assert str(db_path) in msg
    assert db_path.read_bytes() == before
    assert not Path(str(db_path) + "-wal").exists()
    conn = sqlite3.connect(db_path, isolation_level=None)
    with pytest.raises(StorageError, match="schema 99"):
        migrate(conn, db_path)
    conn.close()
    assert db_path.read_bytes() == before and not list(db_path.parent.glob("*.bak-*"))


def test_corrupt_database_is_refused_and_left_untouched(db_path: Path) -> None:
    with Database(db_path) as db:
        run_id = db.start_run(run_info())
        for i in range(1, 3001):
            db.add_detection(det(i, run_id))
    data = bytearray(db_path.read_bytes())
    page = sqlite3.connect(db_path).execute("PRAGMA page_size").fetchone()[0]
    assert len(data) > 12 * page
    rng = np.random.default_rng(1)
    for p in (4, 7, 10):  # garbage over whole b-tree pages in the middle of the file
        data[p * page : (p + 1) * page] = rng.integers(0, 256, page, dtype=np.uint8).tobytes()
    db_path.write_bytes(bytes(data))
    with pytest.raises(StorageError) as err:
        Database(db_path)
    msg = str(err.value)
    assert str(db_path) in msg and "left untouched" in msg
    assert "integrity check" in msg or "malformed" in msg
    assert "\n" not in msg
    assert db_path.read_bytes() == bytes(data)


def test_not_a_database_and_foreign_database_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("these are my field notes, not a database\n" * 100)
    before = text.read_bytes()
    with pytest.raises(StorageError, match="cannot be read as an SQLite database"):
        Database(text)
    assert text.read_bytes() == before
    foreign = tmp_path / "other.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE birds (name TEXT)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    with pytest.raises(StorageError, match=r"without a trapcam schema version \(tables: birds\)"):
        Database(foreign)
    assert foreign.read_bytes() == before


# ---------------------------------------------------------------- crops


def test_crops_saved_in_dated_folders_and_readable(db: Database, db_path: Path) -> None:
    run_id = db.start_run(run_info())
    crops_root = db_path.parent / "crops"
    before_midnight = datetime(2026, 7, 1, 23, 59, 59, tzinfo=timezone.utc)
    after_midnight = datetime(2026, 7, 2, 1, 0, 1, tzinfo=timezone(timedelta(hours=2)))  # 23:00 UTC, 1 July
    next_day = datetime(2026, 7, 2, 0, 0, 1, tzinfo=timezone.utc)
    db.add_detection(det(1, run_id, track_id=4, ts=before_midnight), solid_crop(40))
    db.add_detection(det(2, run_id, track_id=4, ts=after_midnight), solid_crop(90))
    db.add_detection(det(3, run_id, track_id=5, ts=next_day), solid_crop(200, size=128))
    db.add_detection(det(4, run_id, ts=next_day), solid_crop(120))
    db.add_detection(det(5, run_id, track_id=5, ts=next_day))  # no crop
    assert db.flush(10)
    rows = (
        connect_reader(db_path)
        .execute("SELECT detection_id, crop_path FROM detections ORDER BY 1")
        .fetchall()
    )
    paths = [r["crop_path"] for r in rows]
    assert paths == [
        "2026-07-01/4/1.jpg",
        "2026-07-01/4/2.jpg",
        "2026-07-02/5/3.jpg",
        "2026-07-02/untracked/4.jpg",
        None,
    ]
    for value, rel in zip((40, 90, 200, 120), paths, strict=False):
        img = cv2.imread(str(crops_root / rel))
        assert img is not None, rel
        assert abs(int(img[-1, -1, 0]) - value) <= 2 and abs(int(img[0, 0, 0]) - (value + 128) % 256) <= 3
    assert cv2.imread(str(crops_root / paths[2])).shape == (128, 128, 3)
    assert not list(crops_root.rglob("*.tmp"))


def test_crop_store_writes_atomically_and_refuses_escaping_paths(tmp_path: Path) -> None:
    store = CropStore(tmp_path / "crops", jpeg_quality=80)
    rel = store.path_for(T0, 12, 345)
    assert rel == "2026-07-01/12/345.jpg"
    n = store.save(rel, solid_crop(50))
    assert n == (tmp_path / "crops" / rel).stat().st_size > 0
    assert store.save(rel, solid_crop(60)) > 0  # replaced in place
    assert abs(int(cv2.imread(str(tmp_path / "crops" / rel))[-1, -1, 0]) - 60) <= 2
    assert sorted(p.name for p in (tmp_path / "crops" / "2026-07-01" / "12").iterdir()) == ["345.jpg"]
    for bad in ("../x.jpg", "/etc/x.jpg"):
        with pytest.raises(StorageError, match="expected a relative path inside"):
            store.save(bad, solid_crop(1))
    with pytest.raises(StorageError, match="jpeg_quality"):
        CropStore(tmp_path, jpeg_quality=0)


# ---------------------------------------------------------------- failures: nothing is dropped


def test_writer_keeps_rows_while_crop_folder_is_blocked(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crops_root = db_path.parent / "crops"
    crops_root.mkdir(parents=True)
    blocker = crops_root / "2026-07-01"
    blocker.write_text("a file where the dated folder must go")
    with Database(db_path, batch_size=10, flush_interval_s=0.05, crops_root=crops_root, **FAST) as db:
        run_id = db.start_run(run_info())
        for i in range(1, 26):
            db.add_detection(det(i, run_id, track_id=1), solid_crop(i * 9))
        assert wait_until(lambda: db.write_errors >= 3)
        assert db.flush(timeout=0.2) is False
        assert db.pending() == 25
        assert "2026-07-01" in (db.last_error or "") and "CropWriteError" in (db.last_error or "")
        assert count_rows(connect_reader(db_path), "detections") == 0
        blocker.unlink()  # the "disk" comes back
        assert db.flush(timeout=10) is True
        assert db.pending() == 0 and db.rejected == 0
    conn = connect_reader(db_path)
    paths = [r[0] for r in conn.execute("SELECT crop_path FROM detections ORDER BY detection_id")]
    assert len(paths) == 25
    for i, rel in enumerate(paths, start=1):
        assert abs(int(cv2.imread(str(crops_root / rel))[-1, -1, 0]) - i * 9) <= 2
    assert any("write failed (10 rows kept" in r.message for r in caplog.records)


def test_full_database_keeps_rows_until_there_is_room(db_path: Path) -> None:
    """A size cap that is reached behaves like a full disk: SQLite's real SQLITE_FULL, then recovery."""
    with Database(db_path, batch_size=100, flush_interval_s=0.05, max_db_mb=0.15, **FAST) as db:
        run_id = db.start_run(run_info())
        for i in range(1, 3001):
            db.add_detection(det(i, run_id))
        assert wait_until(lambda: db.write_errors >= 2)
        assert "full" in (db.last_error or "")
        assert db.pending() > 0
        written = count_rows(connect_reader(db_path), "detections")
        assert 0 < written < 3000
        db.set_max_db_mb(None)  # room again
        assert db.flush(timeout=20)
    conn = connect_reader(db_path)
    assert [r[0] for r in conn.execute("SELECT detection_id FROM detections ORDER BY 1")] == list(
        range(1, 3001)
    )
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_bounded_queue_blocks_the_producer_then_drains(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    crops_root = db_path.parent / "crops"
    crops_root.mkdir(parents=True)
    blocker = crops_root / "2026-07-01"
    blocker.write_text("x")
    caplog.set_level(logging.WARNING, logger="edge.store.db")
    db = Database(
        db_path, batch_size=5, flush_interval_s=0.01, crops_root=crops_root, max_queue_items=20, **FAST
    )
    run_id = db.start_run(run_info())
    done = threading.Event()

    def producer() -> None:
        for i in range(1, 101):
            db.add_detection(det(i, run_id), solid_crop(i))
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert wait_until(lambda: db.producer_waits >= 1)
    time.sleep(0.3)
    assert not done.is_set()  # blocked, not dropping and not growing
    assert db.pending() <= 20 + 5
    assert any("write queue full" in r.message for r in caplog.records)
    blocker.unlink()
    thread.join(20)
    assert done.is_set()
    db.close()
    assert count_rows(connect_reader(db_path), "detections") == 100


def test_close_with_rows_that_cannot_be_written_is_loud(db_path: Path) -> None:
    crops_root = db_path.parent / "crops"
    crops_root.mkdir(parents=True)
    (crops_root / "2026-07-01").write_text("x")
    db = Database(db_path, flush_interval_s=0.01, crops_root=crops_root, **FAST)
    run_id = db.start_run(run_info())
    db.add_detection(det(1, run_id), solid_crop(1))
    with pytest.raises(StorageError, match=r"closed with 1 queued rows not written.*CropWriteError"):
        db.close(timeout=0.3)
    db.close()  # idempotent even after the loud one
    assert count_rows(connect_reader(db_path), "detections") == 0


def test_timestamps_sort_as_text() -> None:
    a = utc_iso(datetime(2026, 7, 1, 23, 59, 59, 999999, tzinfo=timezone.utc))
    b = utc_iso(datetime(2026, 7, 2, 1, 0, 0, tzinfo=timezone(timedelta(hours=1))))
    assert a < b and a.endswith("Z") and len(a) == len(b) == 27
    with pytest.raises(StorageError, match="expected UTC ISO-8601"):
        parse_utc("2026-07-01 21:30")


def test_rows_from_pipeline_records_and_from_config(tmp_path: Path) -> None:
    from edge.classify.types import Classification, LevelPrediction
    from edge.config import parse_config
    from edge.detect.base import Box, Detection
    from edge.frames import Frame

    config = parse_config(
        f"data_dir: {tmp_path / 'd'}\nsource: {{kind: synthetic}}\n"
        "storage: {batch_size: 7, max_db_mb: 50, startup_check: quick}\n"
    )
    frame = Frame(np.zeros((200, 300, 3), np.uint8), T0, "synthetic", 42, "synthetic-42")
    found = Detection(Box(10, 20, 60, 90), area_px=2100, score=0.66)
    species = LevelPrediction("species", None, "Aglais io", 0.41, (("Aglais io", 0.41), ("Vanessa", 0.3)))
    order = LevelPrediction("order", "Lepidoptera", "Lepidoptera", 0.97, (("Lepidoptera", 0.97),))
    cls = Classification({"order": order, "species": species}, "order", "Lepidoptera", 0.97)
    with Database.from_config(config) as db:
        assert db.path == tmp_path / "d" / "trapcam.db" and db.crops is not None
        run_id = db.start_run(run_info())
        db.add_detection(DetectionRow.from_parts(1, run_id, 3, frame, found, cls), frame.image[20:90, 10:60])
        db.add_detection(DetectionRow.from_parts(2, run_id, None, frame, found))
        foreign = dataclasses.replace(cls, unknown=True, open_set_distance=1.75)  # the open set's answer
        db.add_detection(DetectionRow.from_parts(3, run_id, 4, frame, found, foreign))
    row = connect_reader(tmp_path / "d" / "trapcam.db").execute("SELECT * FROM detections").fetchall()
    assert [(r["unknown"], r["open_set_distance"]) for r in row] == [(0, None), (0, None), (1, 1.75)]
    assert row[2]["label"] == "Lepidoptera"  # what the model said stays; the flag says it is no answer
    assert tuple(row[0])[:12] == (1, run_id, 3, 42, utc_iso(T0), 10, 20, 60, 90, 2100, 0.66, "order")
    assert (row[0]["label"], row[0]["score"], row[0]["crop_path"]) == (
        "Lepidoptera",
        0.97,
        "2026-07-01/3/1.jpg",
    )
    assert '"species":[["Aglais io",0.41],["Vanessa",0.3]]' in row[0]["predictions_json"]
    assert (row[1]["level"], row[1]["label"], row[1]["predictions_json"]) == (None, None, None)
    assert cv2.imread(str(tmp_path / "d" / "crops" / row[0]["crop_path"])).shape == (70, 50, 3)


def test_the_open_set_flag_of_a_detection_is_true_or_false() -> None:
    assert det(1, 1, unknown=np.bool_(True)).params()[-2:] == (1, None)
    with pytest.raises(StorageError, match=r"DetectionRow\.unknown: expected true or false, got 'yes'"):
        det(1, 1, unknown="yes").params()
    with pytest.raises(StorageError, match=r"DetectionRow\.open_set_distance: expected a finite number"):
        det(1, 1, unknown=True, open_set_distance=float("nan")).params()


def test_a_new_database_is_one_line_and_an_upgrade_names_each_step(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new user's first run printed eight 'migrated to schema N' lines for a file that had no
    history; an upgraded file still says what changed in it, step by step."""
    with caplog.at_level(logging.INFO, logger="edge.store.schema"):
        Database(db_path, migrations=MIGRATIONS[:1]).close()
    assert [r.getMessage() for r in caplog.records] == [f"{db_path}: new database (schema 1)"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edge.store.schema"):
        Database(db_path).close()
    steps = [r.getMessage() for r in caplog.records if "migrated to schema" in r.getMessage()]
    assert [int(m.split("schema ")[1].split()[0]) for m in steps] == list(range(2, LATEST_VERSION + 1))
    assert not any("new database" in r.getMessage() for r in caplog.records)
