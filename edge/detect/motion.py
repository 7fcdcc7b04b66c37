"""Motion detector for natural scenes (a flower camera) where moving pollinators matter.

Flowers, leaves and shadows make a textured, swaying background that a fixed reference
cannot hold, so this detector uses OpenCV's MOG2 mixture model: each pixel keeps a few
Gaussian modes, and swaying that repeats becomes one of them. Shadows are not modelled
(detectShadows off: a shadow is not an insect, and the grey "shadow" label would only have
to be thrown away). MOG2 learns at 1/history per frame, so an insect that stops moving
fades into the background after a while: this detector is for visits, not for sitters
(use `static_screen` for a sheet or board).

Runs at `detect_width` like the static detector and shares its morphology and filters; every
score is 1.0 (MOG2 gives no contrast figure). The first `warmup_frames` frames only teach the
model and return no detections.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from edge.config import DetectorConfig
from edge.detect.base import Detection
from edge.detect.crop import check_frame
from edge.detect.static_screen import clean_mask, downscale, extract_detections

log = logging.getLogger(__name__)


class MotionDetector:
    """MOG2 background subtraction at reduced resolution with the static detector's filters.

    `foreground_mask` is the last frame's cleaned foreground at detection resolution (0/255).
    """

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        """Start a fresh model (the next `warmup_frames` frames only teach it)."""
        self._mog = cv2.createBackgroundSubtractorMOG2(
            history=self.cfg.mog2_history, varThreshold=self.cfg.mog2_var_threshold, detectShadows=False
        )
        self._seen = 0
        self._full_size: tuple[int, int] | None = None
        self.foreground_mask: np.ndarray | None = None

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Return the moving insects in `image` (H x W x 3 uint8 BGR), full-resolution boxes."""
        check_frame(image, "motion detector")
        full_size = (image.shape[1], image.shape[0])
        if self._full_size is not None and full_size != self._full_size:
            log.warning(
                "frame size changed from %dx%d to %dx%d: restarting the motion model",
                *self._full_size,
                *full_size,
            )
            self.reset()
        self._full_size = full_size
        small, scale = downscale(image, self.cfg.detect_width)
        small = cv2.GaussianBlur(small, (3, 3), 0)
        raw = self._mog.apply(small)
        self._seen += 1
        mask = clean_mask(raw)
        self.foreground_mask = mask
        if self._seen <= self.cfg.warmup_frames:
            return []
        detections, _ = extract_detections(mask, scale, full_size, self.cfg)
        return detections
