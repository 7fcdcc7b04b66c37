"""static_screen on a natural scene says so (issue 23): the default detector on 35 real flower frames gave
11,432 detections and 541 "insects" without a word. Drawn frames, replayed through the real pipeline."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import query
from test_detect import Camera, render_sheet

from edge.config import parse_config
from edge.detect.static_screen import SCREEN_TEXTURE_MAX, scene_texture
from edge.pipeline import Pipeline

W, H = 640, 360
START = datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc)


def _meadow(seed: int) -> np.ndarray:
    """Leaves and petals everywhere: sharp-edged green and yellow shapes on dark soil."""
    rng = np.random.default_rng(seed)
    scene = np.full((H, W, 3), (40, 55, 60), np.float32)
    for _ in range(900):
        colour = (40, 170, 60) if rng.random() < 0.7 else (30, 210, 235)
        centre = (int(rng.integers(0, W)), int(rng.integers(0, H)))
        axes = (int(rng.integers(4, 18)), int(rng.integers(2, 7)))
        cv2.ellipse(scene, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return scene


def _run(tmp_path: Path, name: str, scenes: list[np.ndarray]) -> tuple[Path, list[str]]:
    frames = tmp_path / name
    frames.mkdir()
    camera = Camera(frames, seed=3, start=START, step_s=2.0)
    for scene in scenes:
        camera.shoot(scene)
    cfg = parse_config(
        f"data_dir: {tmp_path / name / 'data'}\n"
        f"source: {{kind: folder, path: {frames}, timestamps: filename, filename_format: '%Y%m%d-%H%M%S'}}\n"
        "storage: {save_crops: false}\n",
        "t.yaml",
    )
    Pipeline(cfg).run()
    statuses = [s for (s,) in query(tmp_path / name / "data" / "trapcam.db", "SELECT status FROM health")]
    return frames, statuses


def test_static_screen_on_a_natural_scene_says_so_and_flags_health(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    meadow = [_meadow(seed) for seed in range(3)]  # the wind moved everything
    sheet = render_sheet(W, H, seed=4)
    assert scene_texture(meadow[0]) > SCREEN_TEXTURE_MAX > 3 * scene_texture(sheet)
    with caplog.at_level(logging.WARNING, logger="trapcam.loop"):
        _, statuses = _run(tmp_path, "meadow", meadow)
    said = [r.getMessage() for r in caplog.records if "textured like a natural background" in r.getMessage()]
    assert len(said) == 1 and "detector.kind: motion" in said[0]
    assert statuses and "scene-not-a-screen" in statuses[-1], statuses  # from the first frame on
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trapcam.loop"):
        _, statuses = _run(tmp_path, "sheet", [sheet, sheet, sheet])
    assert not any("textured" in r.getMessage() for r in caplog.records)
    assert statuses and not any("scene-not-a-screen" in s for s in statuses), statuses
