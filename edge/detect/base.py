"""Detector interface and the detection record.

A detector looks at a frame (usually downscaled for speed) and returns boxes in the
coordinates of the full-resolution frame, so the cropper always cuts at full resolution.
A TFLite object detector can implement the same `Detector` protocol later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class Box:
    """Axis-aligned box in full-resolution pixel coordinates; x1/y1 exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Detection:
    """One candidate insect in one frame.

    area_px: foreground pixel count of the blob at full resolution (not the box area).
    score: detector confidence in [0, 1] (contrast for the static screen, 1.0 for motion).
    at_edge: the box touches the frame's border, so part of the insect may be outside the frame.
    """

    box: Box
    area_px: int
    score: float
    at_edge: bool = False


def touches_border(box: Box, width: int, height: int) -> bool:
    """Does `box` (full resolution, clamped to the frame) reach the frame's border?"""
    return box.x0 <= 0 or box.y0 <= 0 or box.x1 >= width or box.y1 >= height


class Detector(Protocol):
    """Anything that turns a BGR frame into detections in full-resolution coordinates."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Return the insects found in `image` (H x W x 3 uint8 BGR)."""
        ...
