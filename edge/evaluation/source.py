"""Plays annotated frames to the pipeline like any replay source (see `edge.sources.base`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge.evaluation.ground_truth import GroundTruth
from edge.frames import Frame
from edge.sources.base import EndOfStream
from edge.sources.folder import jpeg_is_truncated

log = logging.getLogger(__name__)


class GroundTruthFrameSource:
    """The frames of a `GroundTruth`, in its order, with its indices and times.

    Not live: the capture thread never drops a frame of a replay. An unreadable or truncated
    image is skipped (read() returns None), counted in `corrupt_frames` and named in a warning.
    `boxes_outside` counts annotated boxes that reach beyond their image (a sign that the
    annotations were made on differently sized images). on_frame(n_read) is called after
    every read, unreadable files included (progress bars).
    """

    live = False

    def __init__(self, truth: GroundTruth, on_frame: Callable[[int], None] | None = None) -> None:
        self.truth = truth
        self.on_frame = on_frame
        self.name = f"ground-truth:{truth.fmt}:{truth.source}"
        self.corrupt_frames = 0
        self.unreadable: list[int] = []  # frame indices that could not be decoded
        self.boxes_outside = 0
        self._position = 0

    def open(self) -> None:
        """Start (again) from the first frame."""
        self._position = 0
        self.corrupt_frames = 0
        self.unreadable = []
        self.boxes_outside = 0

    def read(self) -> Frame | None:
        if self._position >= len(self.truth.frames):
            raise EndOfStream(self.name)
        entry = self.truth.frames[self._position]
        self._position += 1
        try:
            image = self._decode(entry.path)
            if image is None:
                self.corrupt_frames += 1
                self.unreadable.append(entry.index)
                return None
            height, width = image.shape[:2]
            self.boxes_outside += sum(
                1
                for o in entry.objects
                if o.box.x0 < 0 or o.box.y0 < 0 or o.box.x1 > width or o.box.y1 > height
            )
            return Frame(
                image=image,
                timestamp=entry.timestamp,
                clock_source=self.truth.clock,
                index=entry.index,
                name=entry.path.name,
            )
        finally:
            if self.on_frame is not None:
                self.on_frame(self._position)

    def close(self) -> None:
        """Nothing to release: files are read one at a time."""

    @staticmethod
    def _decode(path: Path) -> np.ndarray | None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            log.warning("skipping unreadable image %s: %s", path, exc.strerror or exc)
            return None
        if data.startswith(b"\xff\xd8") and jpeg_is_truncated(data):
            log.warning("skipping truncated JPEG %s (no end-of-image marker)", path)
            return None
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) if data else None
        if image is None:
            log.warning("skipping %s: not a decodable image", path)
        return image
