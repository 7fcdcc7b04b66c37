"""A detector stuck rebuilding its background detects nothing: health says `detector-rebuilding`.

A loose camera swinging in the wind makes the motion detector see a new scene again and again; each
time it rebuilds its background and spends its warm-up frames blind. Drawn frames replayed through
the real pipeline, and the watch's own rules on their own.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from helpers import query
from test_detect import Camera
from test_flower_counts import _meadow

from edge.config import parse_config
from edge.detect.rebuild_watch import FLAG, REBUILD_LIMIT, REBUILD_WINDOW_S, RebuildWatch
from edge.pipeline import Pipeline

START = datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc)


def test_the_flag_rises_at_the_limit_within_the_window_and_clears_after_it() -> None:
    watch = RebuildWatch()
    at = [START + timedelta(seconds=s) for s in (0, 100, 200, 300)]
    assert watch.observe(0, at[0]) is None and watch.flags() == []
    assert watch.observe(1, at[0]) is None  # one rebuild: a bumped camera, rightly rebuilt
    assert watch.observe(REBUILD_LIMIT - 1, at[1]) is None and watch.flags() == []
    assert watch.observe(REBUILD_LIMIT, at[2]) is True and watch.flags() == [FLAG]  # rises once
    assert watch.observe(REBUILD_LIMIT, at[3]) is None and watch.flags() == [FLAG]
    assert watch.recent == REBUILD_LIMIT and watch.total == REBUILD_LIMIT
    # the window moves on with the frames: the first rebuilds fall out of it
    later = at[0] + timedelta(seconds=REBUILD_WINDOW_S + 1)
    assert watch.observe(REBUILD_LIMIT, later) is False and watch.flags() == []  # clears once
    assert watch.observe(REBUILD_LIMIT, later + timedelta(seconds=1)) is None
    assert watch.total == REBUILD_LIMIT  # the run's count stays


def test_rebuilds_spread_wider_than_the_window_never_raise_it() -> None:
    watch = RebuildWatch()
    step = timedelta(seconds=REBUILD_WINDOW_S / (REBUILD_LIMIT - 1) + 1)
    changes = [watch.observe(k + 1, START + k * step) for k in range(10)]
    assert changes == [None] * 10 and watch.flags() == [] and watch.total == 10


def test_view_moves_count_towards_the_limit_and_are_reported_apart() -> None:
    """A light-trap detector follows a knocked view instead of rebuilding; a camera that keeps moving
    is a loose mount all the same."""
    watch = RebuildWatch()
    assert watch.observe(1, START) is None  # a lamp switched on: one rebuild
    assert watch.observe(1, START + timedelta(seconds=60), moves=1) is None  # one knock
    assert watch.observe(1, START + timedelta(seconds=120), moves=2) is True and watch.flags() == [FLAG]
    assert (watch.total, watch.moves, watch.recent) == (1, 2, REBUILD_LIMIT)


def _replay(tmp_path: Path, scenes: list[np.ndarray]) -> tuple[list[str], dict]:
    frames = tmp_path / "frames"
    frames.mkdir()
    camera = Camera(frames, seed=3, start=START, step_s=2.0)
    for scene in scenes:
        camera.shoot(scene.astype(np.float32))
    cfg = parse_config(
        f"data_dir: {tmp_path / 'data'}\n"
        f"source: {{kind: folder, path: {frames}, timestamps: filename, filename_format: '%Y%m%d-%H%M%S'}}\n"
        "detector: {kind: motion, detect_width: 640, min_area_px: 200}\n"
        "storage: {save_crops: false}\n",
        "t.yaml",
    )
    Pipeline(cfg).run()
    rows = query(tmp_path / "data" / "trapcam.db", "SELECT status, payload_json FROM health ORDER BY rowid")
    return [status for status, _ in rows], json.loads(rows[-1][1])


def test_a_swinging_camera_that_keeps_rebuilding_is_flagged_in_health_and_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    views = [_meadow(seed=seed) for seed in range(5)]  # the camera swings to another patch every 8 frames
    with caplog.at_level(logging.WARNING, logger="trapcam.loop"):
        statuses, last = _replay(tmp_path, [views[i // 8] for i in range(40)])
    said = [r for r in caplog.records if "background was rebuilt" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.ERROR, [r.getMessage() for r in caplog.records]
    assert FLAG in statuses[-1], statuses
    assert last["detector_rebuilds"] >= REBUILD_LIMIT


def test_one_bump_rebuilds_once_and_raises_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="trapcam.loop"):
        statuses, last = _replay(tmp_path, [_meadow(seed=0)] * 15 + [_meadow(seed=1)] * 15)
    assert last["detector_rebuilds"] == 1  # the bump was seen and rebuilt
    assert not any(FLAG in s for s in statuses), statuses
    assert not any("background was rebuilt" in r.getMessage() for r in caplog.records)
