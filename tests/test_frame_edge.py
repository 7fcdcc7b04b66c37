"""Insects cut by the frame's border: a sliver that never shows its body is `partial`, not a count.

On real light-trap frames, legs and wing tips of moths sitting just outside the frame became
tracks. Here a drawn night (JPEG files replayed from a folder through the real pipeline and a real
SQLite file): one moth sits almost wholly outside the left border (a wing edge shows), one walks in
over the right border and stays, one sits in the middle.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import query
from test_detect import Camera, draw_insect, render_sheet

from edge.config import DetectorConfig, parse_config
from edge.detect.base import Box, Detection, touches_border
from edge.pipeline import Pipeline, is_partial
from edge.store.db import Database
from edge.store.schema import MIGRATIONS, RunInfo, TrackRow
from edge.track.tracker import TrackState

W, H = 640, 360
START = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)


def _night(folder: Path) -> None:
    """14 frames, 5 s apart: the sliver and the middle moth from frame 2, the walker from frame 3."""
    folder.mkdir(parents=True)
    sheet = render_sheet(W, H, seed=5)
    camera = Camera(folder, seed=6, start=START)  # files named by their time, as the trap's are
    for n in range(14):
        scene = sheet.copy()
        if n >= 2:
            draw_insect(scene, -12, 120, 50, 0)  # all but a wing tip outside the left border
            draw_insect(scene, 320, 250, 44, 30)
        if n >= 3:
            x = max(560, W + 8 - 22 * (n - 3))  # enters over the right border, then sits at x 560
            draw_insect(scene, x, 90, 48, 0)
        camera.shoot(scene)


def _config(tmp_path: Path, frames: Path) -> str:
    return (
        f"data_dir: {tmp_path / 'data'}\n"
        f"source: {{kind: folder, path: {frames}, timestamps: filename, filename_format: '%Y%m%d-%H%M%S'}}\n"
        "storage: {save_crops: false}\n"
    )


def test_a_sliver_at_the_border_is_partial_and_a_walker_from_the_border_counts_once(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    _night(frames)
    result = Pipeline(parse_config(_config(tmp_path, frames), "edge.yaml")).run()
    db = tmp_path / "data" / "trapcam.db"
    rows = query(
        db, "SELECT track_id, status, discard_reason, hits, edge_hits, x0, x1 FROM tracks ORDER BY track_id"
    )
    counted = [r for r in rows if r[1] == "ended"]
    partial = [r for r in rows if r[2] == "partial"]
    # the sliver: one track, every detection at the left border, stored but not counted
    assert len(partial) == 1, rows
    (_, status, _, hits, edge_hits, x0, _) = partial[0]
    assert status == "discarded" and hits >= 10 and edge_hits == hits and x0 == 0
    assert result.partial_tracks == 1
    # the walker (cut by the right border while it enters) and the middle moth: one count each
    assert len(counted) == 2, rows
    walker = [r for r in counted if r[5] > 450]
    assert len(walker) == 1
    assert 1 <= walker[0][4] < walker[0][3]  # some detections at the border, not all
    assert next(r for r in counted if r not in walker)[4] == 0  # the middle moth never touched it
    assert len(result.finished_tracks) == 2
    # the detections say which were cut by the border
    at_border = query(db, "SELECT COUNT(*) FROM detections WHERE x0 = 0 OR x1 = ?", (W,))[0][0]
    assert at_border >= partial[0][3] + walker[0][4]


def test_the_rule_needs_every_detection_at_the_border_and_no_name() -> None:
    def state(hits: int, edge_hits: int, label: str | None) -> TrackState:
        box = Box(0, 10, 20, 40)
        return TrackState(1, "ended", START, START, hits, 0, box, 1, label=label, edge_hits=edge_hits)

    assert is_partial(state(5, 5, None))
    assert not is_partial(state(5, 4, None))  # showed itself whole once: an insect
    assert not is_partial(state(5, 5, "Noctua pronuba"))  # the model named what it saw
    assert is_partial(state(5, 5, "background"))  # a third-party model's no-insect class names nothing
    assert not is_partial(state(0, 0, None))
    # an unknown insect half outside the frame is still an insect once it is larger than a sliver
    assert is_partial(state(5, 5, None), sliver_max_px=30) and not is_partial(
        state(5, 5, None), sliver_max_px=29
    )
    assert DetectorConfig(min_area_px=600).sliver_limit_px == pytest.approx(4 * 600**0.5)
    assert DetectorConfig(sliver_max_px=50).sliver_limit_px == 50
    assert touches_border(Box(0, 5, 10, 10), W, H) and touches_border(Box(600, 300, W, 320), W, H)
    assert touches_border(Box(100, 340, 120, H), W, H) and not touches_border(Box(1, 1, W - 1, H - 1), W, H)


def _run(db: Database) -> int:
    return db.start_run(RunInfo("trap-01", "0.1.0", "{}", "edge-test"))


def test_a_killed_run_settles_its_open_tracks_by_the_same_rule(tmp_path: Path) -> None:
    """After a power cut the tracks left open are settled when the trap starts again: a confirmed
    sliver becomes 'partial', a confirmed insect 'ended', a tentative one 'noise'."""
    path = tmp_path / "trapcam.db"
    db = Database(path)
    run_id = _run(db)
    rows = [  # track id, status, hits, edge_hits, label
        (1, "confirmed", 6, 6, None),
        (2, "confirmed", 6, 2, None),
        (3, "confirmed", 6, 6, "Noctua pronuba"),
        (4, "tentative", 1, 0, None),
        (5, "confirmed", 6, 6, "background"),
        (6, "confirmed", 6, 6, None),  # 120 px long: an insect half outside the frame, not a sliver
    ]
    for track_id, status, hits, edge_hits, label in rows:
        x1 = 120 if track_id == 6 else 20
        db.upsert_track(
            TrackRow(
                track_id, run_id, status, START, START, hits, 0, 10, x1, 40, label=label, edge_hits=edge_hits
            )
        )
    db.flush()
    db.close()  # without end_run: to the next start this run was cut short (power loss)
    again = Database(path, sliver_max_px=100)
    _run(again)
    again.close()
    settled = query(path, "SELECT track_id, status, discard_reason FROM tracks ORDER BY track_id")
    assert settled == [
        (1, "discarded", "partial"),
        (2, "ended", None),
        (3, "ended", None),
        (4, "discarded", "noise"),
        (5, "discarded", "partial"),
        (6, "ended", None),
    ]


def test_migration_marks_old_discards_as_noise(tmp_path: Path) -> None:
    path = tmp_path / "trapcam.db"
    with Database(path, migrations=MIGRATIONS[:2]) as db:
        run_id = _run(db)
        db.submit(  # schema 2 knows no edge_hits: the rows by SQL
            "INSERT INTO tracks (track_id, run_id, status, first_utc, last_utc, hits, x0, y0, x1, y1) "
            "VALUES (1, ?, 'discarded', '2026-07-01T22:00:00Z', '2026-07-01T22:00:00Z', 1, 0, 0, 5, 5), "
            "(2, ?, 'ended', '2026-07-01T22:00:00Z', '2026-07-01T22:00:00Z', 9, 0, 0, 5, 5)",
            (run_id, run_id),
        )
    with Database(path):
        pass
    con = sqlite3.connect(path)
    assert con.execute(
        "SELECT track_id, discard_reason, edge_hits FROM tracks ORDER BY track_id"
    ).fetchall() == [
        (1, "noise", 0),
        (2, None, 0),
    ]
    con.close()


@pytest.mark.parametrize("x0", [0, 3])
def test_detections_from_the_detector_say_whether_they_touch_the_border(tmp_path: Path, x0: int) -> None:
    from edge.config import DetectorConfig
    from edge.detect.static_screen import StaticScreenDetector

    sheet = render_sheet(W, H, seed=8)
    camera = Camera(tmp_path, seed=9)
    detector = StaticScreenDetector(DetectorConfig(detect_width=W))
    detector.detect(camera.shoot(sheet))
    scene = sheet.copy()
    truth = draw_insect(scene, x0 + 30, 200, 50, 0) if x0 else draw_insect(scene, -5, 200, 50, 0)
    found: list[Detection] = detector.detect(camera.shoot(scene))
    near = [d for d in found if d.box.iou(Box(max(truth.x0, 0), truth.y0, truth.x1, truth.y1)) > 0.3]
    assert len(near) == 1
    assert near[0].at_edge is (x0 == 0)
