"""Counting evaluation: hand-made cases with known answers, then synthetic nights end to end.

The hand-made cases pin the definitions (a split track is a double count, a missing track a
miss, MOTA and IDF1 of a known sequence). The synthetic nights feed the ground-truth boxes of
the scene generator, roughened like a detector (dropouts, jitter, touching insects merged into
one box), through the tracker and hold it to the product's bar: count error at most 5% and no
insect that sits still counted twice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timezone

import numpy as np
import pytest

from edge.config import TrackerConfig
from edge.detect.base import Box, Detection
from edge.evaluation.counting import CountReport, EvaluationError, evaluate_counts
from edge.track.tracker import Tracker, TrackInput, TrackState


def box(x: int, y: int, w: int = 40, h: int = 30) -> Box:
    return Box(x, y, x + w, y + h)


def gt_frames(*insects: tuple[int, str, range, int, int]) -> dict[int, list[tuple[int, str, Box]]]:
    """Insects (id, species, frames, x, y) sitting still, as frame -> [(id, species, box)]."""
    out: dict[int, list[tuple[int, str, Box]]] = defaultdict(list)
    for gid, species, frames, x, y in insects:
        for f in frames:
            out[f].append((gid, species, box(x, y)))
    return dict(out)


def track_frames(*tracks: tuple[int, range, int, int]) -> dict[int, list[tuple[int, Box]]]:
    out: dict[int, list[tuple[int, Box]]] = defaultdict(list)
    for tid, frames, x, y in tracks:
        for f in frames:
            out[f].append((tid, box(x + 2, y + 1)))  # a little off, like a detector
    return dict(out)


# ---------------------------------------------------------------- hand-made cases


def test_perfect_tracking_gives_mota_and_idf1_of_one() -> None:
    gt = gt_frames((1, "moth", range(20), 100, 100), (2, "beetle", range(5, 15), 300, 100))
    tracks = track_frames((7, range(20), 100, 100), (8, range(5, 15), 300, 100))
    report = evaluate_counts(gt, tracks, confirmed={7, 8}, labels={7: "moth", 8: "beetle"})
    assert (report.true_count, report.counted, report.count_error) == (2, 2, 0.0)
    assert (report.double_counted, report.extra_tracks, report.missed, report.false_tracks) == (0, 0, 0, 0)
    assert report.mota == pytest.approx(1.0) and report.idf1 == pytest.approx(1.0)
    assert report.id_switches == 0
    assert report.track_to_gt == {7: 1, 8: 2} and report.gt_to_tracks == {1: [7], 2: [8]}
    assert report.per_species["moth"].true == 1 and report.per_species["moth"].correct == 1
    assert "2 counted / 2 true" in report.summary()


def test_split_track_is_a_double_count() -> None:
    gt = gt_frames((1, "moth", range(20), 100, 100))
    tracks = track_frames((5, range(10), 100, 100), (6, range(10, 20), 100, 100))
    report = evaluate_counts(gt, tracks, confirmed={5, 6})
    assert (report.true_count, report.counted) == (1, 2)
    assert report.count_error == pytest.approx(1.0)
    assert (report.double_counted, report.extra_tracks, report.missed) == (1, 1, 0)
    assert report.gt_to_tracks == {1: [5, 6]}
    assert report.id_switches == 1
    assert report.idf1 == pytest.approx(0.5)  # best single id covers 10 of 20 frames on both sides
    assert report.mota == pytest.approx(1 - 1 / 20)


def test_three_way_split_makes_two_extra_tracks() -> None:
    gt = gt_frames((1, "moth", range(30), 100, 100), (2, "moth", range(30), 500, 100))
    tracks = track_frames(
        (5, range(10), 100, 100), (6, range(10, 20), 100, 100), (7, range(20, 30), 100, 100)
    )
    tracks_2 = track_frames((9, range(30), 500, 100))
    for f, items in tracks_2.items():
        tracks.setdefault(f, []).extend(items)
    report = evaluate_counts(gt, tracks, confirmed={5, 6, 7, 9}, mot_metrics=False)
    assert (report.double_counted, report.extra_tracks, report.counted) == (1, 2, 4)
    assert report.mota is None and report.idf1 is None and report.id_switches is None


def test_missing_track_is_a_miss_and_false_track_is_counted() -> None:
    gt = gt_frames((1, "moth", range(10), 100, 100), (2, "beetle", range(10), 300, 300))
    tracks = track_frames((4, range(10), 100, 100), (5, range(3), 800, 600))  # 5 matches nothing
    report = evaluate_counts(gt, tracks, confirmed={4, 5})
    assert (report.true_count, report.counted, report.missed, report.false_tracks) == (2, 2, 1, 1)
    assert report.count_error == 0.0  # the count is right for the wrong reasons: the report says so
    assert report.track_to_gt == {4: 1, 5: None}
    # MOTA = 1 - (misses + false positives + switches) / GT boxes = 1 - (10 + 3 + 0) / 20
    assert report.mota == pytest.approx(1 - 13 / 20)
    # IDF1 = 2 IDTP / (2 IDTP + IDFP + IDFN) = 20 / (20 + 3 + 10)
    assert report.idf1 == pytest.approx(20 / 33)


def test_known_mota_and_idf1_with_gaps() -> None:
    gt = gt_frames((1, "moth", range(10), 100, 100))
    tracks = track_frames((3, range(8), 100, 100))  # misses the last 2 frames
    tracks[9] = [(3, box(400, 400))]  # and is somewhere wrong on the last one: a false positive
    report = evaluate_counts(gt, tracks, confirmed={3})
    assert report.mota == pytest.approx(1 - (2 + 1) / 10)
    assert report.idf1 == pytest.approx(2 * 8 / (2 * 8 + 2 + 1))


def test_unconfirmed_tracks_are_ignored_and_iou_threshold_applies() -> None:
    gt = gt_frames((1, "moth", range(10), 100, 100))
    tracks = track_frames((3, range(10), 100, 100), (4, range(2), 100, 100))
    report = evaluate_counts(gt, tracks, confirmed={3})
    assert report.counted == 1 and report.double_counted == 0
    # Shifted by 30 px of 40: IoU 0.14, below the 0.3 threshold, so the track matches nothing.
    far = {f: [(3, box(130, 100))] for f in range(10)}
    report = evaluate_counts(gt, far, confirmed={3})
    assert (report.missed, report.false_tracks) == (1, 1)
    assert evaluate_counts(gt, far, confirmed={3}, iou_threshold=0.1, mot_metrics=False).missed == 0


def test_per_species_counts_by_vote_label() -> None:
    gt = gt_frames(
        (1, "moth", range(10), 100, 100), (2, "moth", range(10), 300, 100), (3, "fly", range(10), 500, 100)
    )
    tracks = track_frames((10, range(10), 100, 100), (11, range(10), 300, 100), (12, range(10), 500, 100))
    labels = {10: "moth", 11: "fly", 12: "fly"}
    report = evaluate_counts(gt, tracks, confirmed={10, 11, 12}, labels=labels, mot_metrics=False)
    moth, fly = report.per_species["moth"], report.per_species["fly"]
    assert (moth.true, moth.counted, moth.correct) == (2, 1, 1)
    assert (fly.true, fly.counted, fly.correct) == (1, 2, 1)


def test_bad_evaluation_input_names_the_problem() -> None:
    gt = gt_frames((1, "moth", range(3), 100, 100))
    tracks = track_frames((3, range(3), 100, 100))
    with pytest.raises(
        EvaluationError, match=r"frame 0: ground-truth insect id\(s\) \[1\] appear more than once"
    ):
        evaluate_counts({0: [(1, "moth", box(0, 0)), (1, "moth", box(50, 50))]}, tracks, {3})
    with pytest.raises(EvaluationError, match=r"frame 2: track id\(s\) \[3\]"):
        evaluate_counts(gt, {2: [(3, box(0, 0)), (3, box(9, 9))]}, {3})
    with pytest.raises(EvaluationError, match="insect 1 is 'fly' here but 'moth'"):
        evaluate_counts({0: [(1, "moth", box(0, 0))], 1: [(1, "fly", box(0, 0))]}, tracks, {3})
    with pytest.raises(EvaluationError, match=r"confirmed track\(s\) \[99\] have no box"):
        evaluate_counts(gt, tracks, {3, 99})
    with pytest.raises(EvaluationError, match="iou_threshold"):
        evaluate_counts(gt, tracks, {3}, iou_threshold=0)


def test_no_insects_and_no_tracks() -> None:
    report = evaluate_counts({}, {}, confirmed=set(), mot_metrics=False)
    assert (report.true_count, report.counted, report.count_error) == (0, 0, 0.0)
    assert math.isinf(evaluate_counts({}, {0: [(1, box(0, 0))]}, {1}, mot_metrics=False).count_error)


# ---------------------------------------------------------------- synthetic nights through the tracker


def _merge_touching(boxes: list[Box]) -> list[Box]:
    """Boxes that touch become one box, as a blob detector sees two insects in contact."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if min(a.x1, b.x1) > max(a.x0, b.x0) and min(a.y1, b.y1) > max(a.y0, b.y0):
                    merged[i] = Box(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1))
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged


def _detector_like(truth: list[Box], rng: np.random.Generator, width: int, height: int) -> list[Box]:
    """Ground truth roughened like a detector: 10% dropouts, +-3 px jitter, merged contacts."""
    kept = [b for b in truth if rng.random() >= 0.10]
    jittered = []
    for b in kept:
        d = rng.integers(-3, 4, size=4)
        x0, y0 = max(0, b.x0 + d[0]), max(0, b.y0 + d[1])
        x1, y1 = min(width, max(x0 + 2, b.x1 + d[2])), min(height, max(y0 + 2, b.y1 + d[3]))
        jittered.append(Box(int(x0), int(y0), int(x1), int(y1)))
    return _merge_touching(jittered)


def _run_night(seed: int) -> tuple[CountReport, dict[int, bool], int]:
    """One synthetic night through the tracker: the report, which insects never moved, merged boxes."""
    from edge.synth.scene import SceneParams, SyntheticNight

    frames, width, height = 300, 1280, 720
    night = SyntheticNight(
        SceneParams(
            scene="sheet",
            width=width,
            height=height,
            frames=frames,
            frame_interval_s=5.0,
            insects=12,
            seed=seed,
            start=datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc),
        )
    )
    rng = np.random.default_rng(seed + 100)
    tracker = Tracker(TrackerConfig())
    gt: dict[int, list[tuple[int, str, Box]]] = {}
    out: dict[int, list[tuple[int, Box]]] = {}
    sitting: dict[int, bool] = {}
    ended: list[TrackState] = []
    detection_id = merged = 0
    for i in range(frames):
        truth = night.ground_truth(i)
        gt[i] = [(o.insect_id, o.species, o.box) for o in truth]
        for o in truth:
            sitting[o.insect_id] = sitting.get(o.insect_id, True) and not o.moving
        inputs = []
        boxes = _detector_like([o.box for o in truth], rng, width, height)
        merged += sum(1 for b in boxes if sum(b.iou(o.box) > 0 for o in truth) > 1)
        for b in boxes:
            inputs.append(TrackInput(Detection(b, b.area, 1.0), detection_id))
            detection_id += 1
        update = tracker.update(night.timestamp(i), inputs)
        ended.extend(update.ended)
        out[i] = [(tid, item.detection.box) for tid, item in zip(update.assignments, inputs, strict=True)]
    ended.extend(tracker.finish(night.timestamp(frames - 1)))
    counted = [t.track_id for t in ended if t.status == "ended"]
    assert len(counted) == len(set(counted)), "a track was reported as ended twice"
    assert sum(night.ground_truth_counts().values()) == len({o[0] for objs in gt.values() for o in objs})
    return evaluate_counts(gt, out, confirmed=set(counted)), sitting, merged


@pytest.mark.slow
def test_synthetic_nights_count_error_within_5_percent() -> None:
    true_total = counted_total = merged_total = 0
    for seed in (1, 2, 3):
        report, sitting, merged = _run_night(seed)
        merged_total += merged
        print(f"\nnight seed {seed}: {report.summary()}; {merged} merged detections")
        doubled = [gid for gid, tids in report.gt_to_tracks.items() if len(tids) > 1]
        assert not [gid for gid in doubled if sitting[gid]], f"seed {seed}: a sitting insect counted twice"
        assert abs(report.count_error) <= 0.05, f"seed {seed}: {report.summary()}"
        true_total += report.true_count
        counted_total += report.counted
    assert abs(counted_total - true_total) / true_total <= 0.05
    assert merged_total > 0  # the nights did exercise touching insects
