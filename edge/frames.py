"""The frame record that flows from a source through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

# Where a frame's timestamp came from, so an ecologist can tell a trusted time from a guess.
CLOCK_SOURCES = ("capture", "exif", "filename", "mtime", "synthetic", "video")


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured image.

    image: H x W x 3 uint8 in BGR order (OpenCV's); the classifier converts to the model's
        colour order.
    timestamp: timezone-aware UTC time of capture (not of processing).
    clock_source: one of CLOCK_SOURCES.
    index: sequence number assigned by the source, starting at 0.
    name: where it came from (file name, device), for logs and error messages.
    """

    image: np.ndarray
    timestamp: datetime
    clock_source: str
    index: int
    name: str
