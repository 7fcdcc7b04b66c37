"""Is the camera still seeing? A dark, blurred, fogged or covered view is a health flag, not zero counts.

A dead lamp, dew or frost on the lens, a focus that drifted or a leaf over the sheet give a trap
that runs, reports "ok" and counts nothing: exactly the trap that silently stopped counting. So
while the trap is active, every `health.view.every_s` of frame time one frame is measured on a
small grey copy (about 320 px wide, so it costs a millisecond):

- brightness: mean grey level. A lit sheet is bright; `view-dark` below `dark_fraction` of the
  baseline (lamp off or failed, lens capped).
- sharpness: variance of the Laplacian, divided by the mean brightness squared so that a dimmer
  lamp does not read as blur. `view-blurred` below `blur_fraction` of the baseline (focus drift,
  a smeared lens) while the contrast holds.
- contrast: standard deviation of grey over its mean. Fog and frost wash the whole image towards
  one grey: `view-fogged` below `fog_fraction` of the baseline (it takes the sharpness with it, so
  a fogged view is not called blurred too).
- coverage: the view as 16 x 9 blocks of mean colour; blocks more than 60 grey levels from the
  baseline's are covered. `view-covered` when more than `cover_fraction` of the frame is (a leaf, the
  sheet fallen down). An insect is far smaller than a block; a crowd of them shifts block means
  much less than a leaf does.

The baseline is the median of the run's first `baseline_readings` readings while active (a trap
that starts blind cannot know it is; the flags say "worse than at the start", which is what
changes over a month alone). A flag is raised, and cleared, only after `hold` readings in a row
agree, so one bright moth over the lens or a flash does not flip it. The measured values go into
every health sample (and so into MQTT), next to the flags.
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import cv2
import numpy as np

from edge.config import ViewConfig

_WIDTH = 320  # the grey copy measured
_GRID = (16, 9)  # blocks across and down for coverage
_BLOCK_DIFF = 60.0  # grey levels: a block this far from its baseline colour is covered


@dataclass(frozen=True)
class ViewReading:
    """What one frame showed: see the module docstring."""

    brightness: float
    sharpness: float
    contrast: float
    blocks: np.ndarray  # 9 x 16 x 3 mean colour per block


def read_view(image: np.ndarray) -> ViewReading:
    """Measure one BGR frame."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (_WIDTH, max(2, round(h * _WIDTH / w))), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
    mean = float(grey.mean())
    scale = max(mean, 1.0)
    sharp = float(cv2.Laplacian(grey, cv2.CV_32F).var()) / (scale * scale)
    contrast = float(grey.std()) / scale
    blocks = cv2.resize(small, _GRID, interpolation=cv2.INTER_AREA).astype(np.float32)
    return ViewReading(mean, sharp, contrast, blocks)


class ViewMonitor:
    """Readings of the view, the run's baseline, and the flags they give (thread-safe: the capture
    thread observes, the health sampler reads)."""

    def __init__(self, cfg: ViewConfig) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._next: datetime | None = None
        self._first: list[ViewReading] = []
        self.baseline: ViewReading | None = None
        self.last: ViewReading | None = None
        self._streak: dict[str, int] = {}
        self._flags: list[str] = []
        self._covered = 0.0

    def observe(self, image: np.ndarray, moment: datetime) -> None:
        """Measure this frame if `every_s` of frame time has passed since the last reading."""
        if not self.cfg.enabled or (self._next is not None and moment < self._next):
            return
        self._next = moment + timedelta(seconds=self.cfg.every_s)
        reading = read_view(image)
        with self._lock:
            self.last = reading
            if self.baseline is None:
                self._first.append(reading)
                if len(self._first) >= self.cfg.baseline_readings:
                    self.baseline = _median(self._first)
                return
            self._judge(reading, self.baseline)

    def flags(self) -> list[str]:
        with self._lock:
            return list(self._flags)

    def values(self) -> dict[str, Any]:
        """The last reading against the baseline, for the health sample (None before any)."""
        with self._lock:
            last, base = self.last, self.baseline
            if last is None:
                return {}
            out: dict[str, Any] = {
                "view_brightness": round(last.brightness, 1),
                "view_sharpness": round(last.sharpness, 5),
                "view_contrast": round(last.contrast, 4),
            }
            if base is not None:
                out.update(
                    view_brightness_ratio=round(last.brightness / max(base.brightness, 1e-6), 3),
                    view_sharpness_ratio=round(last.sharpness / max(base.sharpness, 1e-9), 3),
                    view_contrast_ratio=round(last.contrast / max(base.contrast, 1e-9), 3),
                    view_covered=round(self._covered, 3),
                )
            return out

    def _judge(self, now: ViewReading, base: ViewReading) -> None:
        diff = np.abs(now.blocks - base.blocks).max(axis=2)
        self._covered = float((diff > _BLOCK_DIFF).mean())
        fogged = now.contrast < self.cfg.fog_fraction * base.contrast
        states = {
            "view-dark": now.brightness < self.cfg.dark_fraction * base.brightness,
            "view-fogged": fogged,
            "view-blurred": not fogged and now.sharpness < self.cfg.blur_fraction * base.sharpness,
            "view-covered": self._covered > self.cfg.cover_fraction,
        }
        if states["view-dark"]:  # a dark frame is unsharp and flat too: say what the cause is
            states["view-fogged"] = states["view-blurred"] = states["view-covered"] = False
        for flag, bad in states.items():
            raised = flag in self._flags
            streak = self._streak.get(flag, 0) + 1 if bad != raised else 0
            self._streak[flag] = streak
            if streak >= self.cfg.hold:
                self._streak[flag] = 0
                if bad:
                    self._flags.append(flag)
                else:
                    self._flags.remove(flag)


def _median(readings: list[ViewReading]) -> ViewReading:
    return ViewReading(
        statistics.median(r.brightness for r in readings),
        statistics.median(r.sharpness for r in readings),
        statistics.median(r.contrast for r in readings),
        np.median(np.stack([r.blocks for r in readings]), axis=0),
    )
