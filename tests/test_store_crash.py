"""SIGKILL in the middle of writing: every row the writer reported as committed must survive, intact.

A child process (a real Database on a real file, with crops) writes detections and tracks as fast
as it can and prints how far it has flushed after each successful flush. The parent kills it with
SIGKILL at a random moment, three times over the same database, then checks the file.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2

from edge.store import Database, RunInfo, connect_reader, parse_utc

CHILD = textwrap.dedent(
    """
    import json
    import sys
    from datetime import datetime, timedelta, timezone

    import numpy as np

    from edge.store import Database, DetectionRow, RunInfo, TrackRow

    db_path, crops = sys.argv[1], sys.argv[2]
    db = Database(db_path, batch_size=40, flush_interval_s=0.02, crops_root=crops)
    run_id = db.start_run(RunInfo("trap-01", "0.1.0", "{}", "crash-test"))
    track_id, det_id = db.next_ids()
    t0 = datetime(2026, 7, 1, 21, 0, tzinfo=timezone.utc)
    print(f"START {run_id} {track_id} {det_id}", flush=True)
    first_det = det_id
    while True:
        for _ in range(300):
            i = det_id
            ts = t0 + timedelta(milliseconds=i)
            crop = np.full((48, 48, 3), i % 256, np.uint8) if i % 3 == 0 else None
            db.add_detection(
                DetectionRow(i, run_id, track_id, i, ts, i % 500, i % 300, i % 500 + 20, i % 300 + 10,
                             200 + i, 0.5, "species", f"sp{i % 5}", 0.9,
                             json.dumps({"species": [[f"sp{i % 5}", 0.9]]})),
                crop,
            )
            if i % 10 == 9:
                db.upsert_track(TrackRow(track_id, run_id, "confirmed", t0, ts, i - first_det + 1,
                                         i % 500, i % 300, i % 500 + 20, i % 300 + 10, best_detection_id=i))
                track_id += 1
                first_det = i + 1
            det_id += 1
        if db.flush(30):
            print(f"FLUSHED {det_id - 1}", flush=True)
    """
)


def run_and_kill(script: Path, db_path: Path, crops: Path, reports: int) -> tuple[int, int]:
    """Start the child, wait for `reports` flush reports, SIGKILL it; return (first id, last flushed id)."""
    child = subprocess.Popen(
        [sys.executable, str(script), str(db_path), str(crops)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        start = child.stdout.readline().split()
        assert start and start[0] == "START", child.stderr.read() if child.stderr else start
        first_det = int(start[3])
        flushed = first_det - 1
        seen = 0
        deadline = time.monotonic() + 60
        while seen < reports and time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else "child ended"
            if line.startswith("FLUSHED"):
                flushed = int(line.split()[1])
                seen += 1
        time.sleep(random.uniform(0.0, 0.05))  # land somewhere inside the next batch
        os.kill(child.pid, signal.SIGKILL)
        # anything already printed was flushed before the kill
        rest = child.stdout.read()
        for line in rest.splitlines():
            if line.startswith("FLUSHED"):
                flushed = int(line.split()[1])
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    assert seen >= reports
    return first_det, flushed


def test_sigkill_mid_write_loses_nothing_that_was_flushed(tmp_path: Path) -> None:
    db_path = tmp_path / "trap" / "trapcam.db"
    crops = tmp_path / "trap" / "crops"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    random.seed(7)
    rounds = []
    for reports in (3, 6, 10):
        rounds.append(run_and_kill(script, db_path, crops, reports))
        assert Path(str(db_path) + "-wal").exists()  # killed: no clean checkpoint happened

    conn = connect_reader(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = [r[0] for r in conn.execute("SELECT detection_id FROM detections ORDER BY 1")]
    reported = max(flushed for _, flushed in rounds)
    orphans = len(list(crops.rglob("*.jpg"))) - sum(1 for i in ids if i % 3 == 0)
    print(f"rounds (first id, last reported id): {rounds}; rows: {len(ids)}; crops without row: {orphans}")
    # every reported row is there; ids continue across restarts without reuse
    assert ids and ids[-1] >= reported
    for first, flushed in rounds:
        assert set(range(first, flushed + 1)) <= set(ids)
    assert len(ids) == len(set(ids))
    # a round starts right after what the previous one committed (nothing committed was overwritten)
    for _, (next_first, _) in itertools.pairwise(rounds):
        assert next_first - 1 in ids or next_first == 1

    rows = conn.execute("SELECT * FROM detections ORDER BY detection_id").fetchall()
    with_crops = 0
    for row in rows:
        i = row["detection_id"]
        assert (row["frame_index"], row["x0"], row["y0"], row["area_px"]) == (i, i % 500, i % 300, 200 + i)
        assert row["label"] == f"sp{i % 5}"
        assert json.loads(row["predictions_json"]) == {"species": [[f"sp{i % 5}", 0.9]]}
        assert parse_utc(row["ts_utc"]).microsecond == (i % 1000) * 1000
        if i % 3 == 0:
            assert row["crop_path"] is not None
            img = cv2.imread(str(crops / row["crop_path"]))
            assert img is not None and abs(int(img.mean()) - i % 256) <= 1, row["crop_path"]
            with_crops += 1
        else:
            assert row["crop_path"] is None
    assert with_crops > 50

    # tracks are committed after their detections (one writer, in order): their best detection exists
    tracks = conn.execute("SELECT track_id, best_detection_id, hits FROM tracks").fetchall()
    assert len(tracks) > 10
    have = set(ids)
    assert all(t["best_detection_id"] in have for t in tracks)
    conn.close()

    # the next start closes the killed runs and settles their tracks
    with Database(db_path, crops_root=crops) as db:
        assert db.next_ids()[1] == ids[-1] + 1
        db.start_run(RunInfo("trap-01", "0.1.0", "{}", "after-crash"))
    conn = connect_reader(db_path)
    runs = conn.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
    assert len(runs) == 4
    for run in runs[:3]:
        assert run["exit_reason"].startswith("interrupted") and run["ended_utc"] is not None
    assert conn.execute("SELECT COUNT(*) FROM tracks WHERE status = 'confirmed'").fetchone()[0] == 0
