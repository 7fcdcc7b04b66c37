"""Is the camera still seeing? A lamp that went off, a blurred or fogged lens, a leaf over the sheet.

Each of these gave "ok" health and zero counts: a trap that silently stopped counting. Here the
same drawn sheet (moths on it, sensor noise, JPEG files) is seen clear, then spoiled in each way;
the view monitor must raise that flag (and only that one) within two readings, clear it again
when the view comes back, and raise nothing on a clear night with insects coming and going. The
last test runs a night whose lamp fails through the real pipeline and reads the flag and the
measured values from the health rows in the SQLite file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import query
from test_detect import Camera, draw_insect, render_sheet

from edge.config import ViewConfig, parse_config
from edge.pipeline import Pipeline
from edge.view import ViewMonitor

W, H = 1280, 720
START = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)


def _scene(n: int) -> np.ndarray:
    """The lit sheet with a few moths that come and go (frame n)."""
    scene = render_sheet(W, H, seed=7)
    rng = np.random.default_rng(n // 3)
    for _ in range(3 + n % 4):
        draw_insect(
            scene,
            rng.uniform(100, W - 100),
            rng.uniform(100, H - 100),
            rng.uniform(40, 90),
            rng.uniform(0, 180),
        )
    return scene


def lamp_off(img: np.ndarray) -> np.ndarray:
    return img * 0.15


def blurred(img: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), 10)


def fogged(img: np.ndarray) -> np.ndarray:
    return 0.3 * img + 0.7 * 205.0


def half_covered(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    cv2.ellipse(out, (W // 4, H // 2), (W // 3, H // 2), 10, 0, 360, (35, 85, 40), -1)  # a leaf
    return out


def _monitor(
    tmp_path: Path, spoil: Callable[[np.ndarray], np.ndarray] | None, frames: int = 10
) -> ViewMonitor:
    """Readings 1 minute apart: 3 clear (the baseline), then `frames - 3` spoiled (or clear)."""
    monitor = ViewMonitor(ViewConfig(every_s=60))
    tmp_path.mkdir(parents=True, exist_ok=True)
    camera = Camera(tmp_path, seed=3)
    for n in range(frames):
        scene = _scene(n)
        if spoil is not None and n >= 3:
            scene = spoil(scene)
        monitor.observe(camera.shoot(scene), START + timedelta(minutes=n))
    return monitor


@pytest.mark.parametrize(
    ("spoil", "flag"),
    [
        (lamp_off, "view-dark"),
        (blurred, "view-blurred"),
        (fogged, "view-fogged"),
        (half_covered, "view-covered"),
    ],
)
def test_each_way_of_going_blind_raises_its_own_flag(
    tmp_path: Path, spoil: Callable[[np.ndarray], np.ndarray], flag: str
) -> None:
    monitor = _monitor(tmp_path, spoil, frames=5)  # 3 baseline readings, 2 spoiled: hold is 2
    assert monitor.flags() == [flag], monitor.values()
    values = monitor.values()
    assert {
        "view_brightness_ratio",
        "view_sharpness_ratio",
        "view_contrast_ratio",
        "view_covered",
    } <= values.keys()


def test_one_spoiled_reading_is_not_enough_and_a_flag_clears_when_the_view_comes_back(tmp_path: Path) -> None:
    assert _monitor(tmp_path / "a", lamp_off, frames=4).flags() == []  # a single dark reading: a shadow
    monitor = _monitor(tmp_path / "b", lamp_off, frames=6)
    assert monitor.flags() == ["view-dark"]
    camera = Camera(tmp_path / "b", seed=4)
    for n in range(6, 8):  # the lamp is back
        monitor.observe(camera.shoot(_scene(n)), START + timedelta(minutes=n))
    assert monitor.flags() == []


def test_a_clear_night_with_insects_coming_and_going_raises_nothing(tmp_path: Path) -> None:
    monitor = _monitor(tmp_path, None, frames=20)
    assert monitor.flags() == [], monitor.values()
    assert 0.8 < monitor.values()["view_brightness_ratio"] < 1.2


def test_a_lamp_that_fails_mid_night_reaches_health_through_the_real_pipeline(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    camera = Camera(frames, seed=5, start=START, step_s=60)
    for n in range(10):
        camera.shoot(_scene(n) if n < 5 else lamp_off(_scene(n)))
    config = (
        f"data_dir: {tmp_path / 'data'}\n"
        f"source: {{kind: folder, path: {frames}, timestamps: filename, filename_format: '%Y%m%d-%H%M%S'}}\n"
        "tracker: {max_gap_s: 200}\nstorage: {save_crops: false}\n"
    )
    Pipeline(parse_config(config, "t.yaml")).run()
    rows = query(
        tmp_path / "data" / "trapcam.db", "SELECT status, payload_json FROM health ORDER BY health_id"
    )
    status, payload = rows[-1][0], json.loads(rows[-1][1])
    assert "view-dark" in payload["flags"] and status.startswith("degraded") and "view-dark" in status
    assert payload["view_brightness_ratio"] < 0.4
