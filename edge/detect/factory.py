"""Choosing the detector named in the configuration."""

from __future__ import annotations

from pathlib import Path

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
        if isinstance(cfg.sheet_reference, Path):
            from edge.sheet import read_sheet

            return StaticScreenDetector(cfg, read_sheet(cfg.sheet_reference))
        return StaticScreenDetector(cfg)  # 'lamp_on': the pipeline hands it the night's sheet
    if cfg.kind == "motion":
        return MotionDetector(cfg)
    if cfg.kind == "tflite":
        return LearnedDetector(cfg)
    raise ConfigError(f"detector.kind: got {cfg.kind!r}; expected one of 'static_screen', 'motion', 'tflite'")
