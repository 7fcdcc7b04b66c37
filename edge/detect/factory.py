"""Choosing the detector named in the configuration."""

from __future__ import annotations

from edge.config import DetectorConfig
from edge.detect.base import Detector
from edge.detect.learned import LearnedDetector
from edge.detect.motion import MotionDetector
from edge.detect.static_screen import StaticScreenDetector
from edge.errors import ConfigError


def make_detector(cfg: DetectorConfig) -> Detector:
    """Build the detector for `cfg.kind`: a sheet/board background model, motion for natural scenes, or
    a trained TFLite object detector."""
    if cfg.kind == "static_screen":
        return StaticScreenDetector(cfg)
    if cfg.kind == "motion":
        return MotionDetector(cfg)
    if cfg.kind == "tflite":
        return LearnedDetector(cfg)
    raise ConfigError(f"detector.kind: got {cfg.kind!r}; expected one of 'static_screen', 'motion', 'tflite'")
