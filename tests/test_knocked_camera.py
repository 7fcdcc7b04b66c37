"""A light-trap camera knocked mid-night (someone checks the trap, wind on the stand): the whole view moves.

static_screen's background is the empty sheet with its marks; with the view moved, every mark
differed from it twice (where it is now and where it was: polarity "both"), blobs the size of
specks and held all night, under `reinit_fraction` so nothing was rebuilt. On the real AMI
sequential frames a 6 x 10 px knock doubled the detections (24-27 a frame to 40-52). The
detector now measures the view's shift when the foreground jumps and moves the background with
it: what it knew (the sheet under sitting moths, the marks of the lamp-on frame) is kept.
The strip the camera sees for the first time is taken from the frame (insects painted out as at
the start), not copied from the old edge: here the trap's dark frame comes into view when the
camera tips down. Drawn: a marked sheet seen through a window of a larger world, moths sitting
on it, the window moved between two frames; JPEG frames with sensor noise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_detect import Camera, draw_insect, render_sheet

from edge.config import DetectorConfig
from edge.detect.base import Box, Detection
from edge.detect.static_screen import StaticScreenDetector, view_shift, whole_view_shift

W, H = 640, 360
MARGIN = 40  # the world around the view: room for the knock
MOTHS = [(180, 150, 46, 20), (430, 230, 40, -60), (520, 110, 36, 0)]  # world x, y, length, angle
KNOCK_AT = 6


def _world() -> np.ndarray:
    """The lit sheet and what stays on it all season: a stain, dark specks, a drawn rectangle."""
    sheet = render_sheet(W + 2 * MARGIN, H + 2 * MARGIN, seed=21)
    cv2.ellipse(sheet, (300, 80), (16, 10), 30, 0, 360, (95, 100, 110), -1)
    cv2.circle(sheet, (300, 330), 6, (50, 40, 120), -1)
    cv2.circle(sheet, (600, 300), 7, (45, 45, 60), -1)
    cv2.circle(sheet, (90, 250), 5, (60, 60, 70), -1)
    cv2.rectangle(sheet, (260, 190), (286, 202), (80, 70, 75), 3)
    # just below the first view: the trap's dark frame, first seen when the camera tips down
    sheet[H + MARGIN + 6 :] = (58, 52, 48)
    return sheet


def _view(world: np.ndarray, at: tuple[int, int]) -> np.ndarray:
    x, y = at
    return world[y : y + H, x : x + W].copy()


def _night(
    tmp_path: Path, knock: tuple[int, int], knock_at: int = KNOCK_AT
) -> tuple[np.ndarray, list[np.ndarray], list[list[Box]]]:
    """(the empty sheet as the camera saw it first, the night's frames, the moths' boxes in each frame).

    The moths sit from frame 1 on; from frame `knock_at` the camera looks `knock` (dx, dy) px further.
    """
    world = _world()
    camera = Camera(tmp_path, seed=4)
    empty = camera.shoot(_view(world, (MARGIN, MARGIN)))
    with_moths = world.copy()
    boxes_world = [draw_insect(with_moths, x, y, length, angle) for x, y, length, angle in MOTHS]
    frames, truth = [], []
    for n in range(1, 16):
        at = (MARGIN, MARGIN) if n < knock_at else (MARGIN + knock[0], MARGIN + knock[1])
        frames.append(camera.shoot(_view(with_moths, at)))
        dx, dy = at[0], at[1]
        truth.append([Box(b.x0 - dx, b.y0 - dy, b.x1 - dx, b.y1 - dy) for b in boxes_world])
    return empty, frames, truth


def _cfg() -> DetectorConfig:
    return DetectorConfig(kind="static_screen", detect_width=W, min_area_px=60, polarity="both")


def _moths_only(found: list[Detection], moths: list[Box]) -> bool:
    """Every detection is one of the moths and every moth is found once."""
    hits = [[d.box.iou(m) >= 0.5 for m in moths] for d in found]
    return (
        len(found) == len(moths)
        and all(sum(row) == 1 for row in hits)
        and all(any(col) for col in zip(*hits, strict=True))
    )


@pytest.mark.parametrize("knock", [(10, 6), (-24, 30)], ids=["small", "large"])
def test_a_knocked_light_trap_camera_moves_its_background_and_counts_no_mark(
    tmp_path: Path, knock: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    empty, frames, truth = _night(tmp_path, knock)
    detector = StaticScreenDetector(_cfg(), sheet=empty)
    with caplog.at_level(logging.WARNING, logger="edge.detect.static_screen"):
        found = [detector.detect(frame) for frame in frames]
    for i, (f, moths) in enumerate(zip(found, truth, strict=True)):
        assert _moths_only(f, moths), f"frame {i + 1}: {f} against {moths}"
    assert detector.view_moves == 1 and detector.reinits == 0
    moved = [r.getMessage() for r in caplog.records if "view moved" in r.getMessage()]
    # The camera looked `knock` px further: the scene moved the other way in the frame.
    assert len(moved) == 1 and f"{-knock[0]:+d}, {-knock[1]:+d} px" in moved[0], moved


def test_a_sheet_photo_taken_before_the_camera_was_knocked_is_moved_at_the_first_frame(
    tmp_path: Path,
) -> None:
    """The empty sheet was photographed, then the camera knocked before the night began (or during a
    stop, with the night's lamp-on frame stored): the first frame against it is checked too."""
    empty, frames, truth = _night(tmp_path, (-12, 8), knock_at=1)
    detector = StaticScreenDetector(_cfg(), sheet=empty)
    found = [detector.detect(frame) for frame in frames]
    for i, (f, moths) in enumerate(zip(found, truth, strict=True)):
        assert _moths_only(f, moths), f"frame {i + 1}: {f} against {moths}"
    assert detector.view_moves == 1


def test_without_following_the_view_every_mark_becomes_a_detection(tmp_path: Path) -> None:
    """What the knock did before: the same night with the background left where it was (the shift
    measurement switched off) finds the marks, so the test above can fail."""
    empty, frames, truth = _night(tmp_path, (10, 6))
    detector = StaticScreenDetector(_cfg(), sheet=empty)
    detector._follow_view = lambda small: False  # type: ignore[method-assign]
    found = [detector.detect(frame) for frame in frames]
    assert all(
        _moths_only(f, moths) for f, moths in zip(found[: KNOCK_AT - 1], truth[: KNOCK_AT - 1], strict=True)
    )
    after = found[KNOCK_AT - 1 :]
    assert all(len(f) > len(truth[-1]) for f in after), [len(f) for f in after]


def test_view_shift_finds_a_moved_view_and_reads_an_unrelated_one_as_still(tmp_path: Path) -> None:
    world = _world()
    here = _view(world, (MARGIN, MARGIN))
    dx, dy = view_shift(here, _view(world, (MARGIN - 10, MARGIN - 6)))  # the camera looked left and up
    assert abs(dx - 10) < 0.5 and abs(dy - 6) < 0.5
    noise = np.random.default_rng(3).integers(0, 256, here.shape, dtype=np.uint8)
    assert view_shift(here, noise) == (0.0, 0.0)


def test_an_insect_that_moved_on_a_plain_sheet_is_not_a_moved_view() -> None:
    """A background that still holds an insect (a painted-out miss) on a plain sheet: when the insect
    walks on, it is the strongest feature of the phase correlation, which reads a move of the whole
    view. Only the quadrants it is in show that move; the rest of the sheet shows none, so the
    detector keeps its background where it is."""
    sheet = render_sheet(W, H, seed=12)
    before, after = sheet.copy(), sheet.copy()
    draw_insect(before, 420, 200, 60, 20)
    draw_insect(after, 350, 200, 60, 20)
    before8, after8 = (np.clip(im, 0, 255).astype(np.uint8) for im in (before, after))
    dx, dy = view_shift(before8, after8)
    assert abs(dx + 70) < 1 and abs(dy) < 1  # the whole frame's peak is the moth's walk
    assert whole_view_shift(before8, after8) == (0.0, 0.0)
    # ... while a knocked view shows in every quadrant
    world = _world()
    moved = whole_view_shift(_view(world, (MARGIN, MARGIN)), _view(world, (MARGIN - 10, MARGIN - 6)))
    assert abs(moved[0] - 10) < 0.5 and abs(moved[1] - 6) < 0.5


def test_a_knocked_night_through_the_pipeline_counts_the_moths_and_no_mark(tmp_path: Path) -> None:
    """The real loop on JPEG files into a real SQLite file: the empty sheet as `sheet_reference`, the
    camera knocked at frame KNOCK_AT. Three moths sat all night: three counts, and health says the
    background moved once (no flag for one knock)."""
    import json

    from helpers import query

    from edge.config import parse_config
    from edge.pipeline import Pipeline

    frames = tmp_path / "frames"
    frames.mkdir()
    empty, _, _ = _night(frames, (10, 6))
    (frames / "frame_00000.jpg").unlink()  # the empty sheet was the camera's first shot: kept apart
    sheet = tmp_path / "empty-sheet.png"
    cv2.imwrite(str(sheet), empty)
    cfg = parse_config(
        f"data_dir: {tmp_path / 'data'}\n"
        f"source: {{kind: folder, path: {frames}}}\n"
        f"detector: {{detect_width: {W}, min_area_px: 60, polarity: both, sheet_reference: {sheet}}}\n"
        "storage: {save_crops: false}\n",
        "t.yaml",
    )
    Pipeline(cfg).run()
    db = tmp_path / "data" / "trapcam.db"
    counted = query(db, "SELECT track_id FROM tracks WHERE status = 'ended' AND discard_reason IS NULL")
    assert len(counted) == len(MOTHS), query(db, "SELECT track_id, status, discard_reason, hits FROM tracks")
    status, payload = query(db, "SELECT status, payload_json FROM health ORDER BY rowid DESC LIMIT 1")[0]
    assert json.loads(payload)["detector_view_moves"] == 1 and "detector-rebuilding" not in status, payload
