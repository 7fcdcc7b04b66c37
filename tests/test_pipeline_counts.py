"""The product's promise on synthetic nights with ground truth: each insect counted once.

Whole device loop, real parts: rendered frames, the static-screen detector, the tracker and a
real SQLite database. Nights have long stationary periods and overlaps (checked below, so the
test cannot pass on an easy night).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import query, synthetic_config

from edge.pipeline import Pipeline
from edge.summary import synthetic_count_report

SEEDS = (1, 2, 3)
FRAMES = 300
INSECTS = 16


def _night_character(night) -> tuple[int, int, dict[int, float]]:
    """(longest still stretch in frames, frames with overlapping insects, still share per insect)."""
    longest, overlaps = 0, 0
    still: dict[int, list[bool]] = {}
    run: dict[int, int] = {}
    for i in range(len(night)):
        objects = night.ground_truth(i)
        for o in objects:
            still.setdefault(o.insect_id, []).append(not o.moving)
            run[o.insect_id] = run.get(o.insect_id, 0) + 1 if not o.moving else 0
            longest = max(longest, run[o.insect_id])
        boxes = [o.box for o in objects]
        if any(a.iou(b) > 0 for k, a in enumerate(boxes) for b in boxes[k + 1 :]):
            overlaps += 1
    return longest, overlaps, {k: sum(v) / len(v) for k, v in still.items()}


@pytest.mark.parametrize("seed", SEEDS)
def test_synthetic_night_counts_each_insect_once(seed: int, tmp_path: Path) -> None:
    cfg = synthetic_config(tmp_path, seed=seed, frames=FRAMES, insects=INSECTS)
    pipeline = Pipeline(cfg, record_tracks=True)
    result = pipeline.run()
    night = pipeline.source.night  # type: ignore[attr-defined]

    longest_still, overlap_frames, still_share = _night_character(night)
    assert longest_still >= 100 and overlap_frames >= 5, "the night must be a hard one"

    report = synthetic_count_report(pipeline, result)
    assert report is not None
    print(f"seed {seed}: {report.summary()}")
    assert report.true_count >= 12
    assert abs(report.count_error) <= 0.05, report.summary()
    sitters_counted_twice = [
        gt for gt, tracks in report.gt_to_tracks.items() if len(tracks) > 1 and still_share[gt] >= 0.5
    ]
    assert sitters_counted_twice == [], report.summary()
    assert report.mota is not None and report.mota >= 0.8
    assert report.idf1 is not None and report.idf1 >= 0.8

    # What the trap reports is what is in the database, not only in memory.
    db = cfg.database_path
    ended = query(db, "SELECT COUNT(*) FROM tracks WHERE status = 'ended'")[0][0]
    assert ended == report.counted == len(result.confirmed_tracks)
    assert query(db, "SELECT COUNT(*) FROM detections")[0][0] == result.detections
    assert query(db, "SELECT COUNT(*) FROM tracks WHERE status IN ('tentative', 'confirmed')")[0][0] == 0
    run = query(db, "SELECT exit_reason, frames_processed, tracks_confirmed FROM runs")
    assert run == [("end-of-source", FRAMES, report.counted)]
    assert query(db, "PRAGMA integrity_check") == [("ok",)]


def test_replayed_video_counts_like_the_frames(tmp_path: Path) -> None:
    """The same kind of night as an MJPG video through the OpenCV source (video-file path)."""
    from edge.synth.scene import SceneParams, SyntheticNight
    from edge.synth.writer import read_ground_truth, write_video

    cfg = synthetic_config(tmp_path, seed=4, frames=160, insects=10)
    start = cfg.source.start  # type: ignore[union-attr]
    from datetime import datetime

    params = SceneParams(
        scene="sheet",
        width=1280,
        height=720,
        frames=160,
        frame_interval_s=5.0,
        insects=10,
        seed=4,
        start=datetime.fromisoformat(start),
    )
    video = write_video(SyntheticNight(params), tmp_path / "night.avi", fps=10.0)
    from edge.config import OpenCVSource

    cfg.source = OpenCVSource(kind="opencv", device=str(video))
    pipeline = Pipeline(cfg, record_tracks=True)
    result = pipeline.run()
    assert result.frames == 160 and result.exit_reason == "end-of-source"

    from edge.evaluation.counting import evaluate_counts

    truth: dict[int, list] = {}
    for row in read_ground_truth(video.with_suffix(".csv")):
        truth.setdefault(row.frame, []).append((row.insect_id, row.species, row.box))
    report = evaluate_counts(truth, result.track_boxes, {t.track_id for t in result.confirmed_tracks})
    print(f"video: {report.summary()}")
    assert abs(report.count_error) <= 0.1 and report.double_counted == 0, report.summary()
