"""Cropping insects out of full-resolution frames: square, centred, shifted at edges, resized."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import CropConfig
from edge.detect.base import Box
from edge.detect.crop import FrameError, crop_batch, crop_detection, crop_window
from edge.errors import TrapcamError

SHEET = (225, 228, 232)


def _frame_with_squares(tmp_path: Path, w: int, h: int, squares: list[tuple[Box, tuple[int, int, int]]]):
    """A sheet-coloured frame with solid coloured boxes, written as PNG and read back."""
    img = np.full((h, w, 3), SHEET, np.uint8)
    rng = np.random.default_rng(3)
    img = np.clip(img.astype(np.int16) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
    for box, colour in squares:
        img[box.y0 : box.y1, box.x0 : box.x1] = colour
    path = tmp_path / "frame.png"
    assert cv2.imwrite(str(path), img)
    return cv2.imread(str(path))


def _contains(outer: Box, inner: Box) -> bool:
    return outer.x0 <= inner.x0 and outer.y0 <= inner.y0 and outer.x1 >= inner.x1 and outer.y1 >= inner.y1


def test_crop_is_square_padded_and_centred(tmp_path: Path) -> None:
    box = Box(500, 300, 580, 340)  # 80 x 40 insect
    frame = _frame_with_squares(tmp_path, 1280, 720, [(box, (30, 60, 200))])
    crop, win = crop_detection(frame, box, padding=0.25, square=True, min_size_px=32)
    assert crop.shape == (120, 120, 3)  # 80 * (1 + 2 * 0.25) on both sides
    assert (win.width, win.height) == (120, 120)
    assert _contains(win, box)
    assert abs(win.center[0] - box.center[0]) <= 0.5 and abs(win.center[1] - box.center[1]) <= 0.5
    # the crop holds the insect in its middle and screen around it
    assert tuple(crop[60, 60]) == (30, 60, 200)
    assert np.abs(crop[2, 2].astype(int) - SHEET).max() <= 3
    np.testing.assert_array_equal(crop, frame[win.y0 : win.y1, win.x0 : win.x1])


@pytest.mark.parametrize(
    "box",
    [Box(0, 0, 30, 20), Box(1250, 700, 1280, 720), Box(0, 400, 25, 460), Box(600, 0, 660, 10)],
    ids=["top-left", "bottom-right", "left", "top"],
)
def test_crop_at_frame_edge_is_shifted_not_shrunk(tmp_path: Path, box: Box) -> None:
    frame = _frame_with_squares(tmp_path, 1280, 720, [(box, (20, 200, 20))])
    crop, win = crop_detection(frame, box, padding=0.5, square=True, min_size_px=32, out_size=None)
    side = max(32, round(max(box.width, box.height) * 2.0))
    assert crop.shape == (side, side, 3)
    assert win.x0 >= 0 and win.y0 >= 0 and win.x1 <= 1280 and win.y1 <= 720
    assert _contains(win, box)
    np.testing.assert_array_equal(crop, frame[win.y0 : win.y1, win.x0 : win.x1])


def test_window_larger_than_frame_is_padded_by_replication(tmp_path: Path) -> None:
    box = Box(10, 30, 90, 50)
    frame = _frame_with_squares(tmp_path, 200, 60, [(box, (200, 20, 20))])
    crop, win = crop_detection(frame, box, padding=0.2, square=True, min_size_px=32)
    side = round(80 * 1.4)
    assert crop.shape == (side, side, 3)
    assert win.width == side and win.height == side
    assert win.x0 >= 0 and win.x1 <= 200  # fits horizontally: shifted into the frame
    assert win.y0 < 0 and win.y1 > 60  # too tall for the frame: centred, padded
    top_rows = crop[: -win.y0]
    np.testing.assert_array_equal(top_rows, np.repeat(frame[:1, win.x0 : win.x1], -win.y0, axis=0))


def test_tiny_box_gets_min_size_and_non_square_mode_keeps_shape(tmp_path: Path) -> None:
    tiny = Box(400, 300, 404, 303)
    wide = Box(100, 100, 300, 150)
    frame = _frame_with_squares(tmp_path, 640, 480, [(tiny, (0, 0, 0)), (wide, (0, 0, 255))])
    crop, _ = crop_detection(frame, tiny, padding=0.15, square=True, min_size_px=40)
    assert crop.shape == (40, 40, 3)
    assert tuple(crop[20, 20]) == (0, 0, 0)
    crop, win = crop_detection(frame, wide, padding=0.0, square=False, min_size_px=32)
    assert crop.shape == (50, 200, 3)
    assert win == wide


@pytest.mark.parametrize("out_size", [64, 224])
def test_resize_to_out_size(tmp_path: Path, out_size: int) -> None:
    box = Box(200, 200, 300, 300)  # 100 px insect, a 130 px crop: 64 shrinks, 224 enlarges
    frame = _frame_with_squares(tmp_path, 640, 480, [(box, (10, 120, 240))])
    crop, win = crop_detection(frame, box, padding=0.15, square=True, min_size_px=32, out_size=out_size)
    assert crop.shape == (out_size, out_size, 3) and crop.dtype == np.uint8
    assert win.width == 115 or win.width == 116 or win.width == 130  # padded window, before resizing
    mid = out_size // 2
    assert tuple(crop[mid, mid]) == (10, 120, 240)
    assert np.abs(crop[1, 1].astype(int) - SHEET).max() <= 6


def test_shrinking_uses_area_averaging(tmp_path: Path) -> None:
    """A one-pixel checkerboard must shrink to its mean grey, not alias to black or white."""
    img = np.indices((200, 200)).sum(axis=0) % 2 * 255
    frame = np.repeat(img[:, :, None], 3, axis=2).astype(np.uint8)
    path = tmp_path / "checker.png"
    cv2.imwrite(str(path), frame)
    frame = cv2.imread(str(path))
    crop, _ = crop_detection(
        frame, Box(50, 50, 150, 150), padding=0.0, square=True, min_size_px=1, out_size=25
    )
    assert np.abs(crop.astype(int) - 127).max() <= 2


def test_crop_batch_keeps_order_and_shape(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    boxes = [Box(50, 50, 90, 80), Box(600, 400, 640, 480), Box(300, 200, 420, 260)]
    frame = _frame_with_squares(tmp_path, 640, 480, list(zip(boxes, colours, strict=True)))
    batch = crop_batch(frame, boxes, CropConfig(padding=0.1), out_size=96)
    assert batch.shape == (3, 96, 96, 3) and batch.dtype == np.uint8
    for crop, colour, box in zip(batch, colours, boxes, strict=True):
        win = crop_window(640, 480, box, 0.1, True, 32)  # the corner box's window is shifted
        cx = int((box.center[0] - win.x0) * 96 / win.width)
        cy = int((box.center[1] - win.y0) * 96 / win.height)
        assert tuple(crop[cy, cx]) == colour
    assert crop_batch(frame, [], CropConfig(), out_size=96).shape == (0, 96, 96, 3)


@pytest.mark.parametrize(
    ("image", "box", "message"),
    [
        (np.zeros((100, 100), np.uint8), Box(0, 0, 10, 10), "H x W x 3"),
        (np.zeros((100, 100, 3), np.float32), Box(0, 0, 10, 10), "uint8"),
        ("frame.jpg", Box(0, 0, 10, 10), "numpy array"),
        (np.zeros((100, 100, 3), np.uint8), Box(10, 10, 10, 30), "empty"),
        (np.zeros((100, 100, 3), np.uint8), Box(120, 10, 140, 30), "outside"),
    ],
)
def test_bad_input_raises_clear_error(image: object, box: Box, message: str) -> None:
    with pytest.raises(FrameError, match=message) as info:
        crop_detection(image, box)  # type: ignore[arg-type]
    assert isinstance(info.value, TrapcamError)
    assert "\n" not in str(info.value)


def test_window_never_smaller_than_padded_box() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        x0, y0 = int(rng.integers(0, 1900)), int(rng.integers(0, 1060))
        box = Box(
            x0, y0, min(1920, x0 + int(rng.integers(1, 300))), min(1080, y0 + int(rng.integers(1, 300)))
        )
        win = crop_window(1920, 1080, box, 0.15, True, 32)
        assert win.width == win.height >= max(32, box.width, box.height)
        assert _contains(win, box)
        assert win.x0 >= 0 and win.x1 <= 1920 and win.y0 >= 0 and win.y1 <= 1080
