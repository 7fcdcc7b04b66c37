"""`detector.mask`: regions of the frame that are never searched for insects.

Real light-trap cameras burn a timestamp into the bottom-right corner of every frame, and a
static-screen detector sees it change every frame (a count per frame on the real AMI frames).
Frames here are drawn sheets written as JPEG files (tests/test_detect.py) with a changing
"timestamp" block of text and moth shapes; the config errors are checked as a user meets them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import query, synthetic_config
from test_detect import Camera, draw_insect, render_sheet
from test_run_cli import trapcam

from edge.config import DetectorConfig, MaskRegion, parse_config
from edge.detect.base import Box, Detection
from edge.detect.factory import make_detector
from edge.detect.mask import DetectionMask, check_mask
from edge.errors import ConfigError
from edge.pipeline import Pipeline

W, H = 640, 360
# the overlay's place, full-resolution pixels (bottom-right, like the AMI trap's camera), and the
# mask a user would draw over it: the corner, with a few pixels for the JPEG halo around the text
STAMP = (470, 326, 636, 356)
CORNER = (466, 322, 640, 360)
# the lamp housing at the top-left, masked as a polygon, and the box it covers
LAMP_POLYGON = [(20, 15), (125, 15), (125, 85), (20, 85)]
LAMP = (20, 15, 126, 86)


def stamp(img: np.ndarray, n: int) -> None:
    """A camera's time overlay: white text on a black band that changes every frame."""
    x0, y0, x1, y1 = STAMP
    band = np.full((y1 - y0, x1 - x0, 3), 20, np.uint8)
    text = f"23:{n // 60:02d}:{n % 60:02d} {n * 7 % 97:02d}C"
    cv2.putText(band, text, (4, y1 - y0 - 9), 0, 0.55, (235, 235, 235), 1)
    img[y0:y1, x0:x1] = band


def inside(box: Box, rect: tuple[int, int, int, int], slack: int = 0) -> bool:
    """Does `box` overlap `rect` (grown by slack pixels)?"""
    x0, y0, x1, y1 = rect
    return box.x0 < x1 + slack and box.x1 > x0 - slack and box.y0 < y1 + slack and box.y1 > y0 - slack


def night(tmp_path: Path, kind: str, mask: list[MaskRegion], half_in: bool = False) -> list[list[Detection]]:
    """12 frames of a sheet with the changing overlay; from frame 6 a moth in the open (200, 150)
    and one on the lamp housing (LAMP), or with half_in one half under the overlay's corner.
    Detections per frame."""
    detector = make_detector(DetectorConfig(kind=kind, detect_width=320, mask=mask))  # type: ignore[arg-type]
    tmp_path.mkdir(parents=True, exist_ok=True)
    camera = Camera(tmp_path, seed=3)
    sheet = render_sheet(W, H, seed=1)
    out = []
    for n in range(12):
        scene = sheet.copy()
        if n >= 6:
            draw_insect(scene, 200, 150, 60, 20)
            if half_in:
                draw_insect(scene, 550, 300, 70, 90)  # wings within the mask's columns, lower half under it
            else:
                draw_insect(scene, 70, 50, 50, 0)  # sitting on the lamp housing
        stamp(scene, n)
        out.append(detector.detect(camera.shoot(scene)))
    return out


@pytest.mark.parametrize("kind", ["static_screen", "motion"])
def test_nothing_is_detected_in_a_masked_region(tmp_path: Path, kind: str) -> None:
    """The lamp housing and the overlay's corner are masked: a moth on the housing is not counted,
    the overlay is not either (the static screen sees it change every frame; the motion detector
    learns it as flicker on its own), and the moth in the open still is."""
    unmasked = night(tmp_path / "a", kind, [])
    # the premise: without a mask the moth on the lamp is found, and the static screen sees the overlay
    assert sum(any(inside(d.box, LAMP) for d in frame) for frame in unmasked[7:]) >= 4
    if kind == "static_screen":
        assert sum(any(inside(d.box, STAMP) for d in frame) for frame in unmasked) >= 4
    regions = [MaskRegion(name="timestamp", rect=CORNER), MaskRegion(name="lamp", polygon=LAMP_POLYGON)]
    masked = night(tmp_path / "b", kind, regions)
    assert [d.box for frame in masked for d in frame if inside(d.box, CORNER) or inside(d.box, LAMP)] == []
    moth = draw_insect(render_sheet(W, H, seed=1), 200, 150, 60, 20)  # the open moth's true box
    found = [max((d.box.iou(moth) for d in frame), default=0.0) for frame in masked[7:]]
    assert min(found) >= 0.5, found


def test_an_insect_half_under_the_mask_keeps_its_visible_half(tmp_path: Path) -> None:
    frames = night(tmp_path, "static_screen", [MaskRegion(rect=CORNER)], half_in=True)
    near = [d.box for d in frames[-1] if d.box.x0 > 400]
    assert len(near) == 1, near
    box = near[0]
    assert box.y1 <= CORNER[1] + 2  # nothing below the mask's top edge (one detection pixel = 2 px)
    assert box.y0 < CORNER[1] - 20  # the part above it is there


def test_polygon_mask_is_drawn_at_detection_resolution() -> None:
    region = MaskRegion(polygon=[(100, 100), (300, 100), (100, 300)])  # a right triangle
    small = DetectionMask([region]).at((640, 480), (320, 240))
    assert small is not None and small.shape == (240, 320)
    assert small[60, 60] == 255 and small[140, 60] == 255 and small[60, 140] == 255  # inside
    assert (
        small[140, 140] == 0 and small[40, 40] == 0 and small[60, 160] == 0
    )  # beyond the hypotenuse / outside
    rect = DetectionMask([MaskRegion(rect=(10, 20, 31, 41))]).at((640, 480), (320, 240))
    ys, xs = np.nonzero(rect)
    # every detection pixel a masked full-resolution pixel falls in: 10..30 -> 5..15, 20..40 -> 10..20
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 15, 10, 20)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("{rect: [10, 10, 5, 20]}", "expected x0, y0, x1, y1 with 0 <= x0 < x1"),
        ("{rect: [10, 10, 20]}", "detector.mask.0.rect"),
        ("{polygon: [[0, 0], [5, 5]]}", "at least 3"),
        ("{polygon: [[0, 0], [5, -5], [9, 9]]}", "expected corners >= 0"),
        ("{name: stamp}", "exactly one of rect"),
        ("{rect: [0, 0, 5, 5], polygon: [[0, 0], [5, 5], [0, 5]]}", "exactly one of rect"),
    ],
)
def test_bad_mask_entries_are_one_line_errors_with_the_line(entry: str, expected: str) -> None:
    text = f"data_dir: /tmp/x\nsource: {{kind: folder, path: /tmp/x}}\ndetector:\n  mask:\n    - {entry}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "trap.yaml")
    message = str(info.value)
    assert "\n" not in message and "trap.yaml:5" in message and expected in message, message


def test_a_mask_outside_a_declared_frame_size_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        synthetic_config(tmp_path, "detector: {mask: [{name: stamp, rect: [1200, 680, 1300, 720]}]}")
    message = str(info.value)
    assert "\n" not in message
    assert "detector.mask[0] (stamp): rect [1200, 680, 1300, 720] reaches x 1300, y 720" in message
    assert "outside the 1280x720 frame" in message
    synthetic_config(
        tmp_path, "detector: {mask: [{rect: [1200, 680, 1280, 720]}]}"
    )  # the edge itself is fine
    with pytest.raises(ConfigError, match=r"reaches x 1280, y 721, outside the 1280x720 frame"):
        check_mask([MaskRegion(polygon=[(0, 0), (1279, 0), (0, 720)])], 1280, 720)


def test_a_folder_replay_with_a_mask_for_another_camera_stops_with_one_line(tmp_path: Path) -> None:
    """A folder's frame size is known only when the first frame arrives: the run stops there,
    names the region and the frame size, and the database says how the run ended."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for n in range(3):
        cv2.imwrite(str(frames / f"20260701-2130{n:02d}.jpg"), np.full((H, W, 3), 200, np.uint8))
    config = tmp_path / "trap.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        f"source: {{kind: folder, path: {frames}, timestamps: filename, filename_format: '%Y%m%d-%H%M%S'}}\n"
        "detector: {mask: [{name: timestamp, rect: [3900, 2100, 4096, 2160]}]}\n",
        encoding="utf-8",
    )
    done = trapcam("run", "--config", str(config))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if "detector.mask" in line]
    assert len(lines) == 1
    assert "detector.mask[0] (timestamp): rect [3900, 2100, 4096, 2160] reaches x 4096, y 2160" in lines[0]
    assert f"outside the {W}x{H} frame" in lines[0]
    (reason,) = query(tmp_path / "data" / "trapcam.db", "SELECT exit_reason FROM runs")[0]
    assert reason == "error: ConfigError"
    # the same config through the API raises the same error
    from edge.config import load_config

    with pytest.raises(ConfigError, match=r"outside the 640x360 frame"):
        Pipeline(load_config(config)).run()
