"""Body length per track and size classes (config `size`): stored, exported, published.

Drawn moths of known sizes (tests/test_detect.py's renderer, JPEG files replayed from a folder
through the real pipeline into a real SQLite file); the lengths are checked against the boxes the
renderer reports, not against numbers copied from the code.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from helpers import query
from test_detect import Camera, draw_insect, render_sheet

from edge.config import SizeConfig, parse_config
from edge.errors import ConfigError
from edge.mqtt.messages import track_message
from edge.pipeline import Pipeline

W, H = 640, 360
START = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)
MM_PER_PX = 0.12


def test_default_classes_are_pixels_with_large_from_100() -> None:
    size = SizeConfig()
    assert size.measure(99.0) == (None, "small")
    assert size.measure(100.0) == (None, "large")
    mm = SizeConfig(mm_per_px=0.1, unit="mm", classes=[("small", 0), ("medium", 5), ("large", 10)])
    assert mm.measure(49.0) == (pytest.approx(4.9), "small")
    assert mm.measure(50.0) == (pytest.approx(5.0), "medium")
    assert mm.measure(150.0) == (pytest.approx(15.0), "large")


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("{unit: mm}", "unit mm needs mm_per_px"),
        ("{classes: [[small, 5], [large, 10]]}", "expected the first 0"),
        ("{classes: [[small, 0], [large, 10], [huge, 10]]}", "each larger than the one before"),
        ("{classes: [[small, 0], [small, 10]]}", "distinct, non-empty names"),
        ("{mm_per_px: 0}", "size.mm_per_px"),
    ],
)
def test_bad_size_settings_are_one_line_errors(size: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"data_dir: /tmp/x\nsource: {{kind: folder, path: /tmp/x}}\nsize: {size}\n", "trap.yaml")
    assert "\n" not in str(info.value) and "trap.yaml:3" in str(info.value) and expected in str(info.value)


def test_tracks_carry_their_length_and_class_into_the_database_csv_and_mqtt(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    sheet = render_sheet(W, H, seed=31)
    camera = Camera(frames, seed=32)
    truth = {}
    for n in range(10):
        scene = sheet.copy()
        if n >= 2:
            truth["big"] = draw_insect(scene, 200, 180, 90, 0)  # about 90 px long
            truth["small"] = draw_insect(scene, 480, 160, 34, 90)  # about 34 px, upright
        camera.shoot(scene)
        (frames / f"frame_{n:05d}.jpg").rename(
            frames / f"{(START + timedelta(seconds=5 * n)):%Y%m%d-%H%M%S}.jpg"
        )
    config = (
        f"data_dir: {tmp_path / 'data'}\n"
        f"source: {{kind: folder, path: {frames}, timestamps: filename, filename_format: '%Y%m%d-%H%M%S'}}\n"
        "detector: {detect_width: 640}\n"
        f"size: {{mm_per_px: {MM_PER_PX}, unit: mm, classes: [[small, 0], [medium, 6], [large, 9]]}}\n"
    )
    Pipeline(parse_config(config, "size.yaml")).run()
    db = tmp_path / "data" / "trapcam.db"
    rows = query(
        db, "SELECT track_id, x0, length_px, length_mm, size_class FROM tracks WHERE status = 'ended'"
    )
    assert len(rows) == 2, rows
    by_place = {("big" if r[1] < 400 else "small"): r for r in rows}
    for name, expected_class in (("big", "large"), ("small", "small")):
        _, _, length_px, length_mm, size_class = by_place[name]
        box = truth[name]
        assert abs(length_px - max(box.width, box.height)) <= 4, (name, length_px, box)
        assert length_mm == pytest.approx(length_px * MM_PER_PX, abs=0.01)
        assert size_class == expected_class

    # the MQTT track message carries the same figures
    names = (
        "track_id",
        "run_id",
        "status",
        "first_utc",
        "last_utc",
        "hits",
        "length_px",
        "length_mm",
        "size_class",
    )
    row = dict(
        zip(
            names,
            query(db, f"SELECT {', '.join(names)} FROM tracks WHERE size_class = 'large'")[0],
            strict=True,
        )
    )
    body = track_message("trapcam", "t", row).payload
    assert (body["length_px"], body["length_mm"], body["size_class"]) == (
        row["length_px"],
        row["length_mm"],
        "large",
    )
