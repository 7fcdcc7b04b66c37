"""Frames through OpenCV: a USB camera, an RTSP/HTTP stream, or a recorded video file.

Cameras and streams are live: a frame's time is the wall clock at grab, and a failed grab
raises SourceError so the capture thread closes and reopens the device with backoff (a
USB cable that is re-plugged or a Wi-Fi camera that reboots comes back by itself).

A video file is a replay: a frame's time is the recording's start plus the frame's position
in the file, so a recorded night keeps its real times. The start is given in the config or
taken as the file's modification time minus its duration (the file is written to the end).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np

from edge.config import OpenCVSource
from edge.errors import SourceError
from edge.frames import Frame
from edge.sources.base import EndOfStream

log = logging.getLogger(__name__)


def _describe(device: int | str) -> str:
    if isinstance(device, int):
        return f"USB camera {device}"
    if "://" in device:
        # Never log credentials embedded in a stream URL (rtsp://user:password@host/...).
        scheme, rest = device.split("://", 1)
        if "@" in rest.split("/", 1)[0]:
            rest = "***@" + rest.split("@", 1)[1]
        return f"stream {scheme}://{rest}"
    return f"video file {device}"


class OpenCVFrameSource:
    """One cv2.VideoCapture: live for cameras and URLs, a finite replay for video files."""

    def __init__(self, cfg: OpenCVSource) -> None:
        self.cfg = cfg
        device = cfg.device
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        self.device: int | str = device
        self.is_url = isinstance(device, str) and "://" in device
        self.is_file = isinstance(device, str) and not self.is_url and not device.startswith("/dev/")
        self.live = not self.is_file
        self.name = _describe(device)
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._start: datetime | None = None
        self._frame_count = 0

    # ------------------------------------------------------------ FrameSource

    def open(self) -> None:
        if self.is_file:
            path = Path(str(self.device))
            if not path.is_file():
                raise SourceError(f"{self.name} not found (source.device)")
        cap = self._create_capture()
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.name} (source.device={self._safe_device()})")
        self._cap = cap
        self._apply_settings(cap)
        if self.is_file:
            self._prepare_file(cap)

    def read(self) -> Frame | None:
        cap = self._cap
        if cap is None:
            raise SourceError(f"{self.name} is not open")
        grabbed_at = datetime.now(timezone.utc)
        ok, image = cap.read()
        if not ok or image is None:
            if self.is_file:
                self._end_of_file(cap)
            raise SourceError(f"{self.name}: grab failed (camera unplugged or stream dropped)")
        image = self._as_bgr(image)
        if self.is_file:
            assert self._start is not None
            stamp = self._start + timedelta(milliseconds=float(cap.get(cv2.CAP_PROP_POS_MSEC)))
            clock = "video"
        else:
            stamp, clock = grabbed_at, "capture"
        frame = Frame(image=image, timestamp=stamp, clock_source=clock, index=self._index, name=self.name)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    # ------------------------------------------------------------ helpers

    def _safe_device(self) -> str:
        return self.name.split(" ", 1)[1] if self.is_url else str(self.device)

    def _create_capture(self) -> cv2.VideoCapture:
        """Open with timeouts for network streams, so a dead camera fails in seconds, not minutes."""
        if self.is_url:
            ms = int(self.cfg.timeout_s * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            return cv2.VideoCapture(str(self.device), cv2.CAP_ANY, params)
        return cv2.VideoCapture(self.device)

    def _apply_settings(self, cap: cv2.VideoCapture) -> None:
        """Ask the camera for the configured size and rate; warn when it picks something else."""
        wanted = {
            cv2.CAP_PROP_FRAME_WIDTH: self.cfg.width,
            cv2.CAP_PROP_FRAME_HEIGHT: self.cfg.height,
            cv2.CAP_PROP_FPS: self.cfg.fps,
        }
        if self.is_file:
            if any(v is not None for v in wanted.values()):
                log.warning("%s: width/height/fps apply to cameras only; a file plays as recorded", self.name)
            return
        for prop, value in wanted.items():
            if value is not None:
                cap.set(prop, float(value))
        if self.cfg.width is not None and self.cfg.height is not None:
            got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            if got != (self.cfg.width, self.cfg.height):
                log.warning(
                    "%s delivers %dx%d, not the configured %dx%d",
                    self.name,
                    got[0],
                    got[1],
                    self.cfg.width,
                    self.cfg.height,
                )

    def _prepare_file(self, cap: cv2.VideoCapture) -> None:
        self._frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if self.cfg.start is not None:
            self._start = self.cfg.start.astimezone(timezone.utc)
            return
        fps = cap.get(cv2.CAP_PROP_FPS)
        duration = self._frame_count / fps if fps > 0 and self._frame_count > 0 else 0.0
        mtime = Path(str(self.device)).stat().st_mtime
        self._start = datetime.fromtimestamp(mtime, timezone.utc) - timedelta(seconds=duration)

    def _end_of_file(self, cap: cv2.VideoCapture) -> None:
        """A video file that stops delivering has ended; say so when it ended early."""
        if self._frame_count > 0 and self._index < self._frame_count - 1:  # counts can be off by one
            log.warning(
                "%s ended after %d of %d frames (damaged or still being written)",
                self.name,
                self._index,
                self._frame_count,
            )
        raise EndOfStream(self.name)

    @staticmethod
    def _as_bgr(image: np.ndarray) -> np.ndarray:
        """Some backends hand out grey or BGRA frames; the pipeline wants H x W x 3 BGR."""
        if image.ndim == 2:
            return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if image.shape[2] == 4:
            return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        return image
