"""Cutting detected insects out of the full-resolution frame for the classifier.

Detectors work on a downscaled copy, but the classifier sees pixels cut from the full
frame: small moths lose their wing pattern at detection resolution. Crops are square and
centred on the insect because classifiers are trained on square, centred crops; near the
frame edge the window is shifted (not shrunk) so the insect keeps its size relative to the
crop, and only a frame smaller than the window is padded (edge replication).

This module also owns the frame check shared by the detectors, because cropping is where a
malformed frame would otherwise fail deep inside OpenCV with an unhelpful message.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from edge.config import CropConfig
from edge.detect.base import Box
from edge.errors import TrapcamError


class FrameError(TrapcamError):
    """A frame or box handed to the detector or cropper is unusable (shape, dtype, position)."""


def check_frame(image: object, who: str) -> np.ndarray:
    """Return `image` if it is an H x W x 3 uint8 BGR array; raise FrameError naming the problem."""
    if not isinstance(image, np.ndarray):
        raise FrameError(f"{who}: expected a numpy array (H x W x 3 uint8 BGR), got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise FrameError(f"{who}: expected an H x W x 3 BGR frame, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise FrameError(f"{who}: expected a uint8 frame, got dtype {image.dtype}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise FrameError(f"{who}: frame of shape {image.shape} is too small to use")
    return image


def crop_window(frame_w: int, frame_h: int, box: Box, padding: float, square: bool, min_size_px: int) -> Box:
    """The window to cut for `box`: padded, optionally square, centred, shifted into the frame.

    Padding adds `padding` x the box's width (height) on the left and right (top and bottom).
    The window is never smaller than `min_size_px` on a side. When it is larger than the
    frame in one dimension it stays centred on the box in that dimension and extends past
    the frame (the caller pads); otherwise it is shifted to lie inside the frame.
    """
    if box.width <= 0 or box.height <= 0:
        raise FrameError(f"crop: box {box} is empty (width {box.width}, height {box.height})")
    if box.x1 <= 0 or box.y1 <= 0 or box.x0 >= frame_w or box.y0 >= frame_h:
        raise FrameError(f"crop: box {box} lies outside the {frame_w}x{frame_h} frame")
    if padding < 0:
        raise FrameError(f"crop: padding must be >= 0, got {padding}")
    w = box.width * (1.0 + 2.0 * padding)
    h = box.height * (1.0 + 2.0 * padding)
    if square:
        w = h = max(w, h)
    win_w = max(math.ceil(w - 1e-9), min_size_px)
    win_h = max(math.ceil(h - 1e-9), min_size_px)
    cx, cy = box.center
    x0 = _place(round(cx - win_w / 2.0), win_w, frame_w)
    y0 = _place(round(cy - win_h / 2.0), win_h, frame_h)
    return Box(x0, y0, x0 + win_w, y0 + win_h)


def _place(start: int, size: int, limit: int) -> int:
    """Shift a 1-D window of `size` starting at `start` into [0, limit) where it fits."""
    if size >= limit:
        return start  # cannot fit: stays centred on the box, the frame gets padded
    return min(max(start, 0), limit - size)


def crop_detection(
    image: np.ndarray,
    box: Box,
    padding: float = 0.15,
    square: bool = True,
    min_size_px: int = 32,
    out_size: int | None = None,
) -> tuple[np.ndarray, Box]:
    """Cut the insect in `box` out of the full-resolution `image`.

    Returns the crop (BGR uint8, a copy) and the window it was cut from, in frame
    coordinates (it extends past the frame only when the frame is smaller than the window,
    in which case the missing part is filled by replicating the frame's edge pixels).
    With `out_size` the crop is resized to out_size x out_size: INTER_AREA when shrinking
    (no aliasing of wing patterns), INTER_LINEAR when enlarging.
    """
    check_frame(image, "crop")
    if out_size is not None and out_size < 1:
        raise FrameError(f"crop: out_size must be a positive number of pixels, got {out_size}")
    frame_h, frame_w = image.shape[:2]
    win = crop_window(frame_w, frame_h, box, padding, square, min_size_px)
    sx0, sy0 = max(win.x0, 0), max(win.y0, 0)
    sx1, sy1 = min(win.x1, frame_w), min(win.y1, frame_h)
    crop = image[sy0:sy1, sx0:sx1]
    if (sx0, sy0, sx1, sy1) != (win.x0, win.y0, win.x1, win.y1):
        crop = cv2.copyMakeBorder(
            crop, sy0 - win.y0, win.y1 - sy1, sx0 - win.x0, win.x1 - sx1, cv2.BORDER_REPLICATE
        )
    else:
        crop = crop.copy()
    if out_size is not None and (crop.shape[0] != out_size or crop.shape[1] != out_size):
        shrinking = crop.shape[0] * crop.shape[1] > out_size * out_size
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        crop = cv2.resize(crop, (out_size, out_size), interpolation=interp)
    return crop, win


def crop_batch(image: np.ndarray, boxes: Sequence[Box], cfg: CropConfig, out_size: int) -> np.ndarray:
    """Crops for every box as one (N, out_size, out_size, 3) uint8 BGR batch for the classifier."""
    check_frame(image, "crop")
    if out_size < 1:
        raise FrameError(f"crop: out_size must be a positive number of pixels, got {out_size}")
    batch = np.empty((len(boxes), out_size, out_size, 3), dtype=np.uint8)
    for i, box in enumerate(boxes):
        batch[i], _ = crop_detection(image, box, cfg.padding, cfg.square, cfg.min_size_px, out_size)
    return batch
