"""Marks on the sheet are not insects: the empty lit sheet is the evidence (`detector.sheet_reference`).

On the real AMI frames six of seven false tracks were sheet marks (a stain, dark specks, a
rectangle) identical in every frame; no pixel statistic over a night told them from sitting moths.
What does is the sheet before any insect came. Drawn nights (JPEG files replayed through the real
pipeline into a real SQLite file): the same marks with and without the empty sheet, a moth that
lands later and sits to the end (still one count), the lamp-on frame stored for the night and
read again by a restart, and the errors for a sheet from another camera.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import query
from test_detect import Camera, draw_insect, render_sheet

from edge.config import parse_config
from edge.errors import ConfigError
from edge.pipeline import Pipeline

W, H = 640, 360
START = datetime(2026, 7, 1, 20, 0, tzinfo=timezone.utc)  # the lamp goes on at 20:00 UTC
MOTH = (420, 200)


def _marked_sheet() -> np.ndarray:
    """The lit sheet with what stays on it all season: a stain, two dark specks, a rectangle."""
    sheet = render_sheet(W, H, seed=12)
    cv2.ellipse(sheet, (120, 90), (16, 10), 30, 0, 360, (95, 100, 110), -1)  # a grey stain
    cv2.ellipse(sheet, (120, 90), (7, 4), 30, 0, 360, (60, 62, 70), -1)
    cv2.circle(sheet, (250, 280), 6, (50, 40, 120), -1)  # dark-red specks
    cv2.circle(sheet, (540, 80), 7, (45, 45, 60), -1)
    cv2.rectangle(sheet, (200, 150), (226, 162), (80, 70, 75), 3)  # a mark drawn on the sheet
    return sheet


def _night(folder: Path, frames: int = 12, first: int = 0, step_s: float = 60.0) -> None:
    """Frames `first`.. of a night a minute apart from START; the moth lands in frame 3 and stays."""
    folder.mkdir(parents=True)
    sheet = _marked_sheet()
    camera = Camera(folder, seed=5, start=START + timedelta(seconds=step_s * first), step_s=step_s)
    for n in range(first, first + frames):
        scene = sheet.copy()
        if n >= 3:
            draw_insect(scene, *MOTH, 60, 20)
        camera.shoot(scene)


def _config(tmp_path: Path, frames: Path, data: str, detector: str = "", extra: str = "") -> str:
    return (
        f"data_dir: {tmp_path / data}\n"
        f"source: {{kind: folder, path: {frames}, timestamps: filename, filename_format: '%Y%m%d-%H%M%S'}}\n"
        f"detector: {{min_area_px: 60{detector}}}\n"
        "tracker: {max_gap_s: 200}\nstorage: {save_crops: false}\n" + extra
    )


def _counted(db: Path) -> list[tuple[int, int, int, int, int]]:
    return query(db, "SELECT track_id, x0, y0, x1, y1 FROM tracks WHERE status = 'ended' ORDER BY x0")


def _is_moth(row: tuple[int, int, int, int, int]) -> bool:
    _, x0, y0, x1, y1 = row
    return x0 <= MOTH[0] <= x1 and y0 <= MOTH[1] <= y1


def test_with_a_photo_of_the_empty_sheet_marks_never_count_and_a_sitting_moth_counts_once(
    tmp_path: Path,
) -> None:
    frames = tmp_path / "frames"
    _night(frames)
    # without the empty sheet the marks in the first frame are taken for sitting insects
    Pipeline(parse_config(_config(tmp_path, frames, "plain"), "t.yaml")).run()
    plain = _counted(tmp_path / "plain" / "trapcam.db")
    assert len([r for r in plain if not _is_moth(r)]) >= 3, plain  # else this test would test nothing
    # a photo of the empty lit sheet, taken with the camera before the night
    photo = tmp_path / "empty-sheet.jpg"
    (tmp_path / "photo").mkdir()
    shot = Camera(tmp_path / "photo", seed=99).shoot(_marked_sheet())
    assert cv2.imwrite(str(photo), shot)
    Pipeline(parse_config(_config(tmp_path, frames, "ref", f", sheet_reference: {photo}"), "t.yaml")).run()
    counted = _counted(tmp_path / "ref" / "trapcam.db")
    assert len(counted) == 1 and _is_moth(counted[0]), counted
    # the moth sat from frame 3 to the end: one track holding all of its frames
    hits = query(tmp_path / "ref" / "trapcam.db", "SELECT hits FROM tracks WHERE status = 'ended'")
    assert hits == [(9,)]


def test_lamp_on_stores_the_nights_empty_sheet_and_a_restart_that_night_uses_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    schedule = "schedule: {windows: [{start: '20:00', end: '04:00'}]}\n"
    lamp_on = ", sheet_reference: lamp_on"
    first = tmp_path / "first"
    _night(first, frames=6)
    season = tmp_path / "data" / "sheet"  # a season's empty sheets: kept for the last 30 nights
    season.mkdir(parents=True)
    for day in range(1, 32):
        (season / f"2026-05-{day:02d}.jpg").write_bytes(b"")
    Pipeline(parse_config(_config(tmp_path, first, "data", lamp_on, schedule), "t.yaml")).run()
    stored = tmp_path / "data" / "sheet" / "2026-07-01.jpg"  # the night's export day (noon to noon)
    assert stored.is_file()
    kept = sorted(p.name for p in season.glob("2026-05-*.jpg"))
    assert len(kept) == 29 and kept[0] == "2026-05-03.jpg", kept
    counted = _counted(tmp_path / "data" / "trapcam.db")
    assert len(counted) == 1 and _is_moth(counted[0]), counted
    # a restart later that night: the moth already sits in its first frame; the stored sheet
    # knows the marks, and the moth (not on the sheet at lamp-on) still counts
    later = tmp_path / "later"
    _night(later, frames=5, first=30)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edge.sheet"):
        Pipeline(parse_config(_config(tmp_path, later, "data", lamp_on, schedule), "t.yaml")).run()
    assert any("stored when the lamp went on" in r.getMessage() for r in caplog.records)
    runs = query(
        tmp_path / "data" / "trapcam.db",
        "SELECT track_id, x0, y0, x1, y1 FROM tracks WHERE status = 'ended' AND run_id = 2",
    )
    assert len(runs) == 1 and _is_moth(runs[0]), runs
    # a first run that starts half an hour after lamp-on cannot know the empty sheet: it says so
    # and starts as without one (the sitting moth still counts; the marks may too)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.sheet"):
        Pipeline(parse_config(_config(tmp_path, later, "late", lamp_on, schedule), "t.yaml")).run()
    assert any("no empty sheet stored" in r.getMessage() for r in caplog.records)
    assert not list((tmp_path / "late" / "sheet").glob("*.jpg"))  # no empty sheet (only its own background)
    assert any(_is_moth(r) for r in _counted(tmp_path / "late" / "trapcam.db"))


def test_a_sheet_from_another_camera_or_no_schedule_is_one_clear_error(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    _night(frames, frames=3)
    small = tmp_path / "small.jpg"
    assert cv2.imwrite(str(small), np.full((100, 200, 3), 220, np.uint8))
    pipeline = Pipeline(parse_config(_config(tmp_path, frames, "d", f", sheet_reference: {small}"), "t.yaml"))
    with pytest.raises(ConfigError, match=r"sheet_reference: the empty-sheet image is 200x100, .* 640x360"):
        pipeline.run()
    missing = tmp_path / "nowhere.jpg"
    with pytest.raises(ConfigError, match=r"nowhere\.jpg: not a readable image"):
        Pipeline(parse_config(_config(tmp_path, frames, "e", f", sheet_reference: {missing}"), "t.yaml"))
    with pytest.raises(ConfigError, match=r"lamp_on' needs schedule\.windows"):
        parse_config(_config(tmp_path, frames, "f", ", sheet_reference: lamp_on"), "t.yaml")
    with pytest.raises(ConfigError, match="sheet_reference is for kind 'static_screen'"):
        parse_config(_config(tmp_path, frames, "g", f", kind: motion, sheet_reference: {small}"), "t.yaml")


def _walking_night(folder: Path, shift: tuple[int, int] = (0, 0)) -> None:
    """14 frames a minute apart on the plain sheet: the moth lands in frame 3, sits, and from frame
    11 walks off 70 px a frame. `shift` moves the whole view (a knocked camera)."""
    folder.mkdir(parents=True)
    sheet = render_sheet(W, H, seed=12)
    camera = Camera(folder, seed=5, start=START, step_s=60.0)
    for n in range(14):
        scene = sheet.copy()
        if n >= 3:
            draw_insect(scene, MOTH[0] - 70 * max(0, n - 10), MOTH[1], 60, 20)
        matrix = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
        camera.shoot(cv2.warpAffine(scene, matrix, (W, H), borderMode=cv2.BORDER_REFLECT))


def test_a_restart_without_sheet_reference_continues_from_the_previous_runs_background(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The moth sits through a stop; the restarted detector must see it in its first frame.

    init_insect_px 16 makes the first-frame painting miss a 60 px moth (as a small, faint or
    oddly shaped real one is missed): a detector built from the restart's first frame takes it for
    sheet, and when it walks off it is a second track. Kept from the first run, the background has
    no moth in it: one track across the stop.
    """
    frames = tmp_path / "frames"
    _walking_night(frames)
    detector = ", init_insect_px: 16"

    def night(data: str) -> Path:
        cfg = parse_config(_config(tmp_path, frames, data, detector), "t.yaml")
        Pipeline(cfg).run(max_frames=7)  # a stop while the moth sits (frames 0-6)
        Pipeline(cfg).run()  # the restart resumes at frame 7
        return tmp_path / data / "trapcam.db"

    with caplog.at_level(logging.INFO, logger="trapcam.loop"):
        db = night("kept")
    assert (tmp_path / "kept" / "sheet").is_dir()
    assert any(
        "continuing from the background the previous run kept" in r.getMessage() for r in caplog.records
    )
    tracks = query(db, "SELECT track_id, hits FROM tracks WHERE status = 'ended'")
    assert len(tracks) == 1 and tracks[0][1] >= 10, tracks  # frames 3-13 (or all but the edge exit)

    from edge.sheet import CarriedBackground

    monkeypatch.setattr(CarriedBackground, "load", lambda self, moment: None)
    two = query(night("lost"), "SELECT track_id FROM tracks WHERE status = 'ended'")
    assert len(two) == 2, two  # what this test guards against: the same moth counted twice


def test_a_kept_background_is_refused_for_another_view_night_or_a_later_frame(tmp_path: Path) -> None:
    from edge.detect.static_screen import StaticScreenDetector
    from edge.sheet import CarriedBackground

    frames = tmp_path / "frames"
    _walking_night(frames)
    moved = tmp_path / "moved"
    _walking_night(moved, shift=(6, 3))
    cfg = parse_config(_config(tmp_path, frames, "d"), "t.yaml")
    files = sorted(frames.glob("*.jpg"))
    first = cv2.imread(str(files[0]))
    detector = StaticScreenDetector(cfg.detector)
    detector.detect(first)
    assert detector.background is not None
    kept = CarriedBackground(cfg, "folder:frames")
    kept.save(detector.background, detector.background_version, START)
    assert kept.load(START + timedelta(hours=3)) is not None  # later that night
    assert kept.load(START - timedelta(minutes=1)) is None  # an older frame: not evidence
    assert kept.load(START + timedelta(days=1)) is None  # the next night
    assert CarriedBackground(cfg, "folder:other").load(START) is None  # another source
    background = kept.load(START + timedelta(minutes=5))
    assert background is not None
    fresh = StaticScreenDetector(cfg.detector)
    reason = fresh.continue_from(background, cv2.imread(str(sorted(moved.glob("*.jpg"))[5])))
    assert reason is not None and "view moved by" in reason
    assert fresh.background is None  # refused: built from the first frame as usual
    reason = fresh.continue_from(background, cv2.resize(first, (320, 180)))
    assert reason is not None and "frames give 320x180" in reason
    assert fresh.continue_from(background, cv2.imread(str(files[5]))) is None  # the moth is no shift
    assert fresh.background is not None


def test_the_kept_background_is_saved_at_once_then_when_changed_at_most_once_a_minute(tmp_path: Path) -> None:
    """Each save is a file on an SD card: a crowded sheet that repairs ghosts every few frames must not
    write one every few frames, while the first background is kept at once (a kill a minute in)."""
    from edge.sheet import CarriedBackground

    cfg = parse_config(f"data_dir: {tmp_path}\nsource: {{kind: synthetic}}\n", "t.yaml")
    kept = CarriedBackground(cfg, "synthetic")
    assert kept.due(1, START)
    kept.save(np.full((9, 16, 3), 200.0, np.float32), 1, START)
    assert not kept.due(1, START + timedelta(seconds=59))
    assert not kept.due(2, START + timedelta(seconds=59))  # repaired, but saved a moment ago
    assert kept.due(2, START + timedelta(seconds=60))
    assert not kept.due(1, START + timedelta(seconds=299))
    assert kept.due(1, START + timedelta(seconds=300))  # the light drifts: saved anyway
