"""A trained TFLite object detector as the trap's detector (`detector.kind: tflite`).

The detectors are built and converted here (`modelkit.box_detector`): hand-set weights that find
dark squares on a pale ground, with SSD-style post-processed outputs or one YOLO-style raw output,
float or int8. Where a square is drawn decides which anchor fires, so each test knows the boxes the
trap must report in full-resolution frame coordinates: through stretching or letterboxing, tiles,
suppression, masks, area limits, and through the whole pipeline into SQLite.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import modelkit as mk
import numpy as np
import pytest
from helpers import query

from edge.config import DetectorConfig, parse_config
from edge.detect.base import Box
from edge.detect.factory import make_detector
from edge.detect.learned import LearnedDetector, tile_grid
from edge.errors import ConfigError, ModelError
from edge.pipeline import Pipeline

PALE, DARK = 225, 25


def _model(tmp_path: Path, layout: str, **kwargs: str) -> Path:
    path = tmp_path / f"{layout}-{'-'.join(kwargs.values()) or 'float'}.tflite"
    path.write_bytes(mk.box_detector(layout, **kwargs))  # type: ignore[arg-type]
    return path


def _frame(width: int, height: int, squares: list[tuple[int, int, int]]) -> np.ndarray:
    """A pale BGR frame with dark squares (centre x, centre y, side)."""
    frame = np.full((height, width, 3), PALE, np.uint8)
    for cx, cy, side in squares:
        frame[cy - side // 2 : cy + side // 2, cx - side // 2 : cx + side // 2] = DARK
    return frame


def _detector(model: Path, **tflite: object) -> LearnedDetector:
    cfg = DetectorConfig(kind="tflite", min_area_px=16, tflite={"model": model, **tflite})
    detector = make_detector(cfg)
    assert isinstance(detector, LearnedDetector)
    return detector


def _near(box: Box, expected: tuple[int, int, int, int], tolerance: int = 1) -> bool:
    return all(
        abs(a - b) <= tolerance for a, b in zip((box.x0, box.y0, box.x1, box.y1), expected, strict=True)
    )


@pytest.mark.parametrize(("quant", "io"), [("float", "float32"), ("int8", "uint8")])
def test_ssd_outputs_become_boxes_in_frame_pixels(tmp_path: Path, quant: str, io: str) -> None:
    """A 128 px frame into the 64 px input: anchor (8..40) is frame (16..80); one box per square."""
    model = _model(tmp_path, "ssd", quant=quant, io=io)
    extra = {"input_range": (0.0, 1.0)} if io == "float32" else {}
    detector = _detector(model, score_threshold=0.45, **extra)
    assert detector.format == "ssd"
    detections = detector.detect(_frame(128, 128, [(48, 48, 48)]))
    assert len(detections) == 1, detections
    (found,) = detections
    assert _near(found.box, (16, 16, 80, 80)), found
    assert 0.5 < found.score < 0.62 and not found.at_edge
    assert found.area_px == found.box.area
    # nothing dark: nothing found; the threshold is the config's
    assert detector.detect(_frame(128, 128, [])) == []
    assert _detector(model, score_threshold=0.6, **extra).detect(_frame(128, 128, [(48, 48, 48)])) == []


def test_tiles_find_small_insects_in_a_wide_frame_and_the_overlap_counts_once(tmp_path: Path) -> None:
    model = _model(tmp_path, "ssd", quant="int8", io="uint8")
    # 2 x 1 tiles of 128 x 128 without overlap: a square in each tile, each mapped back to the frame
    detector = _detector(model, score_threshold=0.45, tiles=(2, 1), tile_overlap=0.0)
    frame = _frame(256, 128, [(48, 48, 48), (128 + 80, 80, 48)])
    boxes = sorted((d.box for d in detector.detect(frame)), key=lambda b: b.x0)
    assert len(boxes) == 2, boxes
    assert _near(boxes[0], (16, 16, 80, 80)) and _near(boxes[1], (176, 48, 240, 112)), boxes
    assert detector.invokes == 2
    # the whole frame squeezed into one input: the squares shrink below what the model finds
    assert _detector(model, score_threshold=0.45).detect(_frame(512, 256, [(96, 96, 48)])) == []
    assert (
        len(
            _detector(model, score_threshold=0.45, tiles=(4, 2), tile_overlap=0.0).detect(
                _frame(512, 256, [(96, 96, 48)])
            )
        )
        == 1
    )
    # overlapping tiles: a square inside the overlap is seen by both tiles and reported once
    grid = tile_grid(192, 128, 2, 1, 0.5)
    assert grid == [(0, 0, 128, 128), (64, 0, 192, 128)]
    detector = _detector(model, score_threshold=0.45, tiles=(2, 1), tile_overlap=0.5)
    found = detector.detect(_frame(192, 128, [(96, 64, 48)]))
    assert len(found) == 1 and _near(found[0].box, (64, 32, 128, 96), tolerance=2), found


@pytest.mark.parametrize("units", ["normalized", "pixels"])
def test_yolo_raw_output_with_letterbox_and_suppression(tmp_path: Path, units: str) -> None:
    """A 256 x 128 frame letterboxed into 64 x 64 (scale 1/4, 16 px bars above and below)."""
    model = _model(tmp_path, "yolo", units=units)
    detector = _detector(model, input_range=(0.0, 1.0), resize="letterbox", score_threshold=0.45)
    assert detector.format == "yolo"
    # a 96 px square centred at (96, 64) is the input's 24 px square on the anchor centred (24, 32)
    found = detector.detect(_frame(256, 128, [(96, 64, 96)]))
    assert len(found) == 1, found
    assert _near(found[0].box, (32, 0, 160, 128), tolerance=2), found
    assert found[0].at_edge  # the box reaches the top and bottom border
    # suppression: with a low threshold the neighbouring anchors fire too, and only the best is kept
    loose = _detector(model, input_range=(0.0, 1.0), resize="letterbox", score_threshold=0.3, nms_iou=0.3)
    assert len(loose.detect(_frame(256, 128, [(96, 64, 96)]))) == 1
    # only the configured classes count: class 1 scores a fifth of class 0
    assert (
        _detector(model, input_range=(0.0, 1.0), resize="letterbox", score_threshold=0.3, classes=[1]).detect(
            _frame(256, 128, [(96, 64, 96)])
        )
        == []
    )


def test_masks_and_area_limits_apply_to_learned_boxes(tmp_path: Path) -> None:
    model = _model(tmp_path, "ssd", quant="int8", io="uint8")
    frame = _frame(128, 128, [(48, 48, 48)])
    masked = DetectorConfig(
        kind="tflite",
        min_area_px=16,
        tflite={"model": model, "score_threshold": 0.45},
        mask=[{"name": "overlay", "rect": [40, 40, 60, 60]}],
    )
    assert make_detector(masked).detect(frame) == []  # the box's centre (48, 48) is masked
    too_big = DetectorConfig(
        kind="tflite", min_area_px=16, max_area_px=4000, tflite={"model": model, "score_threshold": 0.45}
    )
    assert make_detector(too_big).detect(frame) == []  # 64 x 64 = 4096 px


def test_bad_detector_setups_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind 'tflite' needs a tflite section"):
        DetectorConfig(kind="tflite")
    with pytest.raises(ValueError, match="the tflite section is for kind 'tflite'"):
        DetectorConfig(kind="motion", tflite={"model": tmp_path / "x.tflite"})
    with pytest.raises(ModelError, match=r"x\.tflite: file not found"):
        _detector(tmp_path / "x.tflite")
    float_model = _model(tmp_path, "ssd")
    with pytest.raises(ModelError, match=r"a float detector needs detector\.tflite\.input_range"):
        _detector(float_model)
    classifier = tmp_path / "classifier.tflite"
    classifier.write_bytes(mk.flat_model(size=32).tflite)
    with pytest.raises(ModelError) as info:
        _detector(classifier, input_range=(0.0, 1.0))
    message = str(info.value)
    assert "classifier.tflite: outputs [[1, 6]] are not SSD outputs" in message and "\n" not in message
    with pytest.raises(ModelError, match=r"outputs \[\[1, 6, 25\]\] are not SSD outputs"):
        _detector(_model(tmp_path, "yolo"), input_range=(0.0, 1.0), format="ssd")
    with pytest.raises(ConfigError, match=r"detector\.tflite\.tiles"):
        parse_config(
            f"detector: {{kind: tflite, tflite: {{model: {float_model}, tiles: [0, 1]}}}}\n", "trap.yaml"
        )


def test_the_pipeline_counts_what_a_learned_detector_finds(tmp_path: Path) -> None:
    """The same boxes contract: crops, tracks and the database need nothing else (JPEG files replayed)."""
    model = _model(tmp_path, "ssd", quant="int8", io="uint8")
    frames = tmp_path / "frames"
    frames.mkdir()
    start = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)
    for n in range(8):
        squares = [(48, 48, 48)] + ([(208, 80, 48)] if n >= 3 else [])  # a second insect arrives
        name = f"{(start + timedelta(seconds=10 * n)):%Y%m%d-%H%M%S}.jpg"
        assert cv2.imwrite(str(frames / name), _frame(256, 128, squares))
    config = (
        f"data_dir: {tmp_path / 'data'}\n"
        f"source: {{kind: folder, path: {frames}, timestamps: filename, filename_format: '%Y%m%d-%H%M%S'}}\n"
        f"detector: {{kind: tflite, min_area_px: 16, tflite: {{model: {model}, score_threshold: 0.45, "
        "tiles: [2, 1], tile_overlap: 0.0}}\n"
        "storage: {save_crops: false}\n"
    )
    result = Pipeline(parse_config(config, "trap.yaml")).run()
    assert result.frames == 8
    rows = query(
        tmp_path / "data" / "trapcam.db",
        "SELECT hits, x0, y0, x1, y1 FROM tracks WHERE status = 'ended' ORDER BY x0",
    )
    assert [r[0] for r in rows] == [8, 5], rows
    assert all(abs(a - b) <= 2 for a, b in zip(rows[0][1:], (16, 16, 80, 80), strict=True)), rows
    assert query(tmp_path / "data" / "trapcam.db", "SELECT COUNT(*) FROM detections")[0][0] == 13
