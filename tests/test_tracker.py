"""Tracker, appearance cue and per-track vote on synthetic box sequences built here.

Each robustness rule of the tracker (flicker, merges, re-identification, time-lapse hops,
noise) has a scenario with a known number of insects, and where it matters a control run
with the rule switched off, which must fail to count right: so each test can fail.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.classify.taxonomy import Taxonomy
from edge.classify.types import Classification, LevelPrediction
from edge.config import TrackerConfig
from edge.detect.base import Box, Detection
from edge.track import TrackingError
from edge.track.appearance import DESCRIPTOR_SIZE, appearance_descriptor, appearance_distance
from edge.track.tracker import Tracker, TrackInput, TrackState, TrackUpdate
from edge.track.vote import TaxonVote, vote

T0 = datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc)


# ---------------------------------------------------------------- helpers


def box_at(cx: float, cy: float, w: int = 40, h: int = 30) -> Box:
    x0, y0 = round(cx - w / 2), round(cy - h / 2)
    return Box(x0, y0, x0 + w, y0 + h)


def union(a: Box, b: Box) -> Box:
    return Box(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1))


class Run:
    """Feeds frames of boxes to a tracker and remembers which track each labelled box got."""

    def __init__(self, cfg: TrackerConfig | None = None, interval_s: float = 1.0, **kwargs: object) -> None:
        self.tracker = Tracker(cfg or TrackerConfig(), **kwargs)  # type: ignore[arg-type]
        self.interval_s = interval_s
        self.frame = 0
        self.next_detection = 1
        self.ids: dict[str, list[int]] = {}  # insect name -> track id per frame it was detected
        self.updates: list[TrackUpdate] = []
        self.ended: list[TrackState] = []
        self.confirmed: list[TrackState] = []

    def step(
        self,
        boxes: dict[str, Box],
        appearance: dict[str, np.ndarray] | None = None,
        classification: dict[str, Classification] | None = None,
    ) -> TrackUpdate:
        names = list(boxes)
        inputs = []
        for name in names:
            inputs.append(
                TrackInput(
                    detection=Detection(boxes[name], boxes[name].area, 1.0),
                    detection_id=self.next_detection,
                    classification=(classification or {}).get(name),
                    appearance=(appearance or {}).get(name),
                )
            )
            self.next_detection += 1
        update = self.tracker.update(T0 + timedelta(seconds=self.frame * self.interval_s), inputs)
        assert len(update.assignments) == len(inputs)
        for name, track_id in zip(names, update.assignments, strict=True):
            self.ids.setdefault(name, []).append(track_id)
        self.updates.append(update)
        self.ended.extend(update.ended)
        self.confirmed.extend(update.confirmed)
        self.frame += 1
        return update

    def finish(self) -> list[TrackState]:
        final = self.tracker.finish(T0 + timedelta(seconds=self.frame * self.interval_s))
        self.ended.extend(final)
        return final

    def counted(self) -> list[TrackState]:
        """Confirmed tracks that ended (call after finish): what the trap counts."""
        ended = [t for t in self.ended if t.status == "ended"]
        assert len({t.track_id for t in ended}) == len(ended), "a track ended twice"
        return ended


def crop_of(colour: tuple[int, int, int], seed: int, size: int = 64) -> np.ndarray:
    """A BGR crop: an insect-like ellipse of `colour` on a pale sheet, with sensor noise."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), (225, 230, 232), np.uint8)
    cv2.ellipse(
        image, (size // 2, size // 2), (size // 3, size // 5), int(rng.integers(0, 180)), 0, 360, colour, -1
    )
    noise = rng.normal(0, 4, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


BROWN = (40, 70, 120)
GREEN = (60, 150, 70)


# ---------------------------------------------------------------- appearance


def test_appearance_descriptor_from_image_file_tells_colours_apart(tmp_path: Path) -> None:
    sheet = np.full((120, 240, 3), (225, 230, 232), np.uint8)
    sheet[20:100, 10:110] = cv2.resize(crop_of(BROWN, 1), (100, 80))
    sheet[20:100, 130:230] = cv2.resize(crop_of(GREEN, 2), (100, 80))
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), sheet)
    frame = cv2.imread(str(path))
    brown_a = appearance_descriptor(frame[20:100, 10:110])
    green = appearance_descriptor(frame[20:100, 130:230])
    brown_b = appearance_descriptor(crop_of(BROWN, 7))

    assert brown_a.dtype == np.float32 and brown_a.shape == (DESCRIPTOR_SIZE,)
    assert abs(float(brown_a.sum()) - 1.0) < 1e-5
    assert appearance_distance(brown_a, brown_a) < 1e-6
    same, different = appearance_distance(brown_a, brown_b), appearance_distance(brown_a, green)
    assert 0.0 <= same < different <= 1.0
    assert different > 2 * same


def test_appearance_rejects_bad_crops_and_descriptors() -> None:
    with pytest.raises(TrackingError, match="empty"):
        appearance_descriptor(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(TrackingError, match="H x W x 3 uint8"):
        appearance_descriptor(np.zeros((5, 5), np.uint8))
    with pytest.raises(TrackingError, match="differ in size"):
        appearance_distance(np.ones(4), np.ones(8))
    with pytest.raises(TrackingError, match="all zeros"):
        appearance_distance(np.zeros(4), np.ones(4))


# ---------------------------------------------------------------- flicker and lifecycle


def test_stationary_insect_500_frames_with_20pct_misses_is_one_track() -> None:
    rng = np.random.default_rng(4)
    run = Run(TrackerConfig())
    missed = 0
    for _ in range(500):
        if rng.random() < 0.2:
            missed += 1
            run.step({})
            continue
        jitter = rng.integers(-2, 3, size=2)
        run.step({"moth": box_at(300 + jitter[0], 200 + jitter[1])})
    run.finish()
    assert missed > 80
    assert len(set(run.ids["moth"])) == 1
    assert len(run.counted()) == 1
    assert run.counted()[0].hits == 500 - missed
    assert run.counted()[0].moved_px < 5 * (500 - missed)  # jitter only: no drift


def test_flicker_shorter_than_max_misses_keeps_track_longer_gap_splits_it() -> None:
    """Without re-identification, max_misses alone decides: the control case must split."""
    cfg = TrackerConfig(max_misses=4, reid_window_s=0)
    for gap, expected_tracks in ((3, 1), (4, 2)):
        run = Run(cfg)
        for _ in range(5):
            run.step({"moth": box_at(100, 100)})
        for _ in range(gap):
            run.step({})
        for _ in range(5):
            run.step({"moth": box_at(100, 100)})
        run.finish()
        assert len(set(run.ids["moth"])) == expected_tracks, f"gap {gap}"
        assert len(run.counted()) == expected_tracks


def test_lifecycle_confirm_end_and_finish() -> None:
    cfg = TrackerConfig(confirm_hits=3, max_misses=2, reid_window_s=0)
    run = Run(cfg, first_track_id=41)
    u1 = run.step({"a": box_at(50, 50)})
    assert u1.assignments == [41] and u1.active[0].status == "tentative" and not u1.confirmed
    run.step({"a": box_at(51, 50)})
    u3 = run.step({"a": box_at(52, 50)})
    assert [t.track_id for t in u3.confirmed] == [41] and u3.confirmed[0].status == "confirmed"
    assert run.step({"a": box_at(53, 50)}).confirmed == []  # confirmed is reported once
    assert run.step({}).ended == []
    u6 = run.step({})
    assert [(t.track_id, t.status) for t in u6.ended] == [(41, "ended")]
    assert u6.ended[0].last_seen == T0 + timedelta(seconds=3) and u6.active == []
    # A track open at shutdown is ended by finish(); a tentative one is discarded.
    run.step({"b": box_at(400, 400)})
    run.step({"b": box_at(400, 400)})
    run.step({"b": box_at(400, 400)})
    run.step({"b": box_at(400, 400), "c": box_at(600, 100)})
    final = run.finish()
    assert sorted((t.track_id, t.status) for t in final) == [(42, "ended"), (43, "discarded")]
    assert run.tracker.active_tracks() == []


def test_max_gap_seconds_ends_track_in_time_lapse() -> None:
    cfg = TrackerConfig(max_gap_s=30, max_misses=100, reid_window_s=0)
    run = Run(cfg, interval_s=10)
    for _ in range(3):
        run.step({"moth": box_at(200, 200)})
    run.step({})
    run.step({})
    run.step({})
    update = run.step({"moth": box_at(200, 200)})  # 40 s unseen
    assert [t.status for t in update.ended] == ["ended"]
    assert len(set(run.ids["moth"])) == 2


def test_noise_blobs_for_one_frame_are_never_confirmed() -> None:
    rng = np.random.default_rng(11)
    run = Run(TrackerConfig())
    for i in range(200):
        boxes = {"moth": box_at(640, 360)}
        for k in range(int(rng.integers(1, 4))):
            size = int(rng.integers(6, 20))
            boxes[f"noise{i}-{k}"] = box_at(rng.uniform(20, 1260), rng.uniform(20, 700), size, size)
        run.step(boxes)
    run.finish()
    counted = run.counted()
    assert [t.track_id for t in counted] == [run.ids["moth"][0]]
    assert len(set(run.ids["moth"])) == 1
    discarded = [t for t in run.ended if t.status == "discarded"]
    assert len(discarded) > 300 and all(t.hits == 1 for t in discarded)


# ---------------------------------------------------------------- crossing, merging, occlusion


def _crossing(run: Run, appearance: bool, merge: bool = False) -> None:
    looks = {"a": appearance_descriptor(crop_of(BROWN, 1)), "b": appearance_descriptor(crop_of(GREEN, 2))}
    for i in range(60):
        a, b = box_at(100 + 8 * i, 300), box_at(572 - 8 * i, 300 + (i - 30) * 0.5)
        if merge and a.iou(b) > 0.2:
            run.step({"a+b": union(a, b)})
        else:
            run.step({"a": a, "b": b}, looks if appearance else None)
    run.finish()


@pytest.mark.parametrize("appearance", [False, True])
def test_two_insects_crossing_keep_their_ids(appearance: bool) -> None:
    run = Run(TrackerConfig())
    _crossing(run, appearance)
    assert len(set(run.ids["a"])) == 1 and len(set(run.ids["b"])) == 1
    assert run.ids["a"][0] != run.ids["b"][0]
    assert len(run.counted()) == 2


def test_two_insects_crossing_through_a_merged_box_keep_their_ids() -> None:
    run = Run(TrackerConfig())
    _crossing(run, appearance=False, merge=True)
    assert len(run.ids["a+b"]) >= 4  # the detector really merged them for a while
    assert len(set(run.ids["a"])) == 1 and len(set(run.ids["b"])) == 1
    assert run.ids["a"][0] != run.ids["b"][0]
    assert len(run.counted()) == 2


def _merge_scene(run: Run, merged_frames: int) -> None:
    """A resting moth; a beetle walks up, sits against it (one merged box), then walks off."""
    moth = box_at(400, 300, 50, 40)
    path = [box_at(250 + 15 * i, 300, 36, 28) for i in range(10)]  # arrives touching the moth
    for beetle in path:
        run.step({"moth": moth, "beetle": beetle})
    for _ in range(merged_frames):
        run.step({"merged": union(moth, path[-1])})
    for i in range(1, 11):
        run.step({"moth": moth, "beetle": box_at(385 - 15 * i, 300 + 4 * i, 36, 28)})
    run.finish()


def test_merge_for_8_frames_keeps_two_tracks() -> None:
    run = Run(TrackerConfig(reid_window_s=0))  # occlusion alone must carry it
    _merge_scene(run, merged_frames=8)
    assert len(set(run.ids["moth"])) == 1 and len(set(run.ids["beetle"])) == 1
    assert run.ids["moth"][0] != run.ids["beetle"][0]
    assert set(run.ids["merged"]) <= {run.ids["moth"][0], run.ids["beetle"][0]}
    assert len(run.counted()) == 2
    occluded_seen = any(t.occluded for u in run.updates for t in u.active)
    assert occluded_seen


def test_merge_without_occlusion_handling_splits_a_track() -> None:
    """Control: occluded frames counted as full misses (and no re-id) loses one insect's track."""
    run = Run(TrackerConfig(reid_window_s=0, occluded_miss_weight=1.0))
    _merge_scene(run, merged_frames=8)
    assert len(run.counted()) == 3


def test_merge_in_time_lapse_longer_than_max_gap_keeps_two_tracks() -> None:
    """8 merged frames at 10 s are 80 s: more than max_gap_s, but an occluded insect is not unseen."""
    run = Run(TrackerConfig(reid_window_s=0, max_gap_s=60), interval_s=10)
    _merge_scene(run, merged_frames=8)
    assert len(run.counted()) == 2
    assert len(set(run.ids["moth"])) == 1 and len(set(run.ids["beetle"])) == 1


# ---------------------------------------------------------------- re-identification


def test_missed_longer_than_max_misses_then_redetected_is_revived() -> None:
    cfg = TrackerConfig(max_misses=3, reid_window_s=120)
    run = Run(cfg, interval_s=5)
    for _ in range(10):
        run.step({"moth": box_at(300, 300)})
    for _ in range(12):  # 60 s: lost after 3 misses, still inside the 120 s window
        update = run.step({})
        assert update.ended == []
    assert run.tracker.active_tracks() == [] and len(run.tracker.lost_tracks()) == 1
    update = run.step({"moth": box_at(302, 299)})
    assert [t.track_id for t in update.revived] == [run.ids["moth"][0]]
    for _ in range(5):
        run.step({"moth": box_at(301, 300)})
    run.finish()
    assert len(set(run.ids["moth"])) == 1
    assert len(run.counted()) == 1 and run.counted()[0].revivals == 1


def test_reid_only_at_the_same_place_and_only_within_the_window() -> None:
    cfg = TrackerConfig(max_misses=3, reid_window_s=60)
    # Elsewhere (3 box diagonals away): a new insect, not a revival.
    run = Run(cfg, interval_s=5)
    for _ in range(5):
        run.step({"moth": box_at(300, 300)})
    for _ in range(4):
        run.step({})
    run.step({"other": box_at(450, 300)})
    assert run.updates[-1].revived == []
    assert run.ids["other"][0] != run.ids["moth"][0]
    # Same place but after the window: the old track has ended (reported once) and a new one starts.
    run = Run(cfg, interval_s=5)
    for _ in range(5):
        run.step({"moth": box_at(300, 300)})
    ended_at = None
    for i in range(15):
        if run.step({}).ended:
            ended_at = i
    assert ended_at is not None
    run.step({"moth": box_at(300, 300)})
    assert len(set(run.ids["moth"])) == 2


def test_reid_pool_is_bounded() -> None:
    cfg = TrackerConfig(max_misses=1, reid_window_s=1000, reid_max_tracks=3, hop_max_distance=0)
    run = Run(cfg)
    for k in range(8):
        run.step({f"m{k}": box_at(100 + 100 * k, 100)})
        run.step({f"m{k}": box_at(100 + 100 * k, 100)})
        run.step({})  # lost
    assert len(run.tracker.lost_tracks()) == 3
    assert len([t for t in run.ended if t.status == "ended"]) == 5
    kept = {t.track_id for t in run.tracker.lost_tracks()}
    assert kept == {run.ids[f"m{k}"][0] for k in (5, 6, 7)}  # the most recent ones


# ---------------------------------------------------------------- time-lapse and video motion


def test_time_lapse_hop_keeps_track_when_it_is_the_only_candidate() -> None:
    run = Run(TrackerConfig(), interval_s=10)
    diag = float(np.hypot(40, 30))
    for _ in range(5):
        run.step({"moth": box_at(300, 300), "beetle": box_at(900, 500)})
    hop = box_at(300 + 1.3 * diag, 300)  # no overlap with where it sat
    assert hop.iou(box_at(300, 300)) == 0.0
    for _ in range(5):
        run.step({"moth": hop, "beetle": box_at(900, 500)})
    run.finish()
    assert len(set(run.ids["moth"])) == 1 and len(set(run.ids["beetle"])) == 1
    assert len(run.counted()) == 2


def _long_hop(run: Run, missed_frames: int = 0) -> None:
    """A moth sits, then flies 8 diagonals across the sheet; a big beetle sits elsewhere throughout."""
    beetle = box_at(1000, 600, 90, 70)
    for _ in range(6):
        run.step({"moth": box_at(300, 300), "beetle": beetle})
    for _ in range(missed_frames):
        run.step({"beetle": beetle})
    for _ in range(8):
        run.step({"moth": box_at(700, 300, 42, 30), "beetle": beetle})
    run.finish()


def test_long_hop_keeps_track_when_it_is_the_only_candidate() -> None:
    for missed in (0, 1):  # also when the detector missed the moth on the frame it landed
        # A 400 px hop is beyond the default reach (3 diagonals); a trap whose moths fly
        # further between frames raises hop_max_distance.
        run = Run(TrackerConfig(reid_window_s=0, hop_max_distance=10), interval_s=10)
        _long_hop(run, missed)
        assert len(run.counted()) == 2, f"missed {missed}"
        moth = next(t for t in run.counted() if t.track_id == run.ids["moth"][0])
        assert moth.hops == 1 and moth.hits == 14
        assert moth.moved_px == pytest.approx(400, abs=3)
        assert run.ids["moth"][-1] == run.ids["moth"][0]  # after the wait, the old id goes on
        assert {t.status for t in run.ended if t.track_id == run.ids["moth"][6]} == {"discarded"}


def test_long_hop_without_hop_linking_is_two_tracks() -> None:
    """Controls: hop linking off, or a hop beyond its reach (the default 3 diagonals), counts twice."""
    for reach in (0.0, TrackerConfig().hop_max_distance):
        run = Run(TrackerConfig(reid_window_s=0, hop_max_distance=reach), interval_s=10)
        _long_hop(run)
        assert len(run.counted()) == 3, f"hop_max_distance {reach}"


def test_arrival_while_a_sitter_is_missed_is_not_a_hop() -> None:
    """A sitting moth missed for 2 frames while a look-alike lands far away: two insects, two tracks."""
    run = Run(TrackerConfig(reid_window_s=0), interval_s=10)
    for _ in range(6):
        run.step({"sitter": box_at(300, 300)})
    run.step({"newcomer": box_at(900, 300)})
    run.step({"newcomer": box_at(900, 300)})
    for _ in range(6):
        run.step({"sitter": box_at(300, 300), "newcomer": box_at(900, 300)})
    run.finish()
    assert len(set(run.ids["sitter"])) == 1 and len(set(run.ids["newcomer"])) == 1
    assert len(run.counted()) == 2 and all(t.hops == 0 for t in run.counted())


def test_two_vanish_and_two_appear_are_not_linked() -> None:
    """Ambiguous (each newcomer has two candidates): no guessing, four insects are counted."""
    run = Run(TrackerConfig(reid_window_s=0), interval_s=10)
    for _ in range(5):
        run.step({"a": box_at(200, 200), "b": box_at(200, 500)})
    for _ in range(8):
        run.step({"c": box_at(800, 200), "d": box_at(800, 500)})
    run.finish()
    assert len(run.counted()) == 4


def test_time_lapse_jump_beyond_gate_is_a_new_track() -> None:
    """Control for the gate: 3 diagonals with max_distance 1.5 is a different insect."""
    run = Run(TrackerConfig(reid_window_s=0, hop_max_distance=0), interval_s=10)
    for _ in range(5):
        run.step({"moth": box_at(300, 300)})
    for _ in range(5):
        run.step({"moth": box_at(300 + 3 * 50, 300)})
    assert len(set(run.ids["moth"])) == 2


def test_time_lapse_crawl_faster_than_the_gate_is_followed_by_prediction() -> None:
    """After a first step of 1.2 diagonals the beetle speeds up to 1.8 diagonals a frame: beyond
    max_distance (1.5) from its last box, so only the velocity prediction can find it."""
    run = Run(TrackerConfig(), interval_s=5)
    x = 100.0
    for step in [0] + [60] + [90] * 12:
        x += step
        run.step({"beetle": box_at(x, 300)})
    run.finish()
    assert len(set(run.ids["beetle"])) == 1
    assert run.counted()[0].moved_px == pytest.approx(60 + 12 * 90, abs=2)


def test_insect_that_stops_is_found_where_it_stopped_after_misses() -> None:
    """The damped prediction must not carry a resting insect away from where it sits."""
    run = Run(TrackerConfig(reid_window_s=0, max_misses=6), interval_s=1)
    for i in range(10):
        run.step({"moth": box_at(100 + 20 * i, 200)})
    for _ in range(4):
        run.step({})
    for _ in range(5):
        run.step({"moth": box_at(280, 200)})
    run.finish()
    assert len(set(run.ids["moth"])) == 1


def test_video_rate_small_motion_three_insects() -> None:
    rng = np.random.default_rng(3)
    run = Run(TrackerConfig(), interval_s=1 / 30)
    starts = {"a": (100.0, 100.0), "b": (600.0, 400.0), "c": (1000.0, 150.0)}
    speed = {"a": (2.0, 1.0), "b": (-1.5, 2.5), "c": (-3.0, 0.5)}
    for i in range(300):
        boxes = {}
        for name, (x, y) in starts.items():
            if rng.random() < 0.1:
                continue
            vx, vy = speed[name]
            boxes[name] = box_at(x + vx * i + rng.normal(0, 0.7), y + vy * i + rng.normal(0, 0.7))
        run.step(boxes)
    run.finish()
    counted = {t.track_id for t in run.counted()}
    assert len(counted) == 3
    for name in starts:
        ids = run.ids[name]
        (own,) = set(ids) & counted  # exactly one counted track per insect...
        assert set(ids[ids.index(own) :]) == {own}  # ...that never lets go of it


# ---------------------------------------------------------------- classification, best crop, errors


def classification(score: float, label: str = "Noctua pronuba", level: str = "species") -> Classification:
    prediction = LevelPrediction(level, label, label, score, ((label, score),))
    return Classification({level: prediction}, level, label, score)


def test_track_keeps_best_detection_and_votes() -> None:
    run = Run(TrackerConfig())
    scores = [0.55, 0.91, 0.7, 0.62]
    for s in scores:
        run.step({"moth": box_at(200, 200)}, classification={"moth": classification(s)})
    run.step({"moth": box_at(200, 200, 60, 50)}, classification={"moth": classification(0.4, "Other")})
    run.finish()
    (track,) = run.counted()
    assert track.best_detection_id == 2  # the 0.91 crop, not the larger later box
    assert track.label == "Noctua pronuba" and track.level == "species"
    assert track.score == pytest.approx(np.mean(scores))
    assert track.votes["species"] == pytest.approx({"Noctua pronuba": sum(scores), "Other": 0.4})


def test_without_classifier_best_detection_is_the_largest() -> None:
    run = Run(TrackerConfig())
    for w in (40, 48, 44):
        run.step({"moth": box_at(200, 200, w, 30)})
    run.finish()
    (track,) = run.counted()
    assert track.best_detection_id == 2 and track.label is None and track.votes == {}


def test_tracker_rejects_bad_input() -> None:
    tracker = Tracker(TrackerConfig())
    tracker.update(T0, [])
    with pytest.raises(TrackingError, match="earlier than the previous frame"):
        tracker.update(T0 - timedelta(seconds=1), [])
    with pytest.raises(TrackingError, match="timezone-aware and naive"):
        tracker.update(datetime(2026, 7, 2), [])
    with pytest.raises(TrackingError, match="detection 7 has an empty box"):
        tracker.update(T0, [TrackInput(Detection(Box(5, 5, 5, 9), 0, 1.0), 7)])
    ok = TrackInput(Detection(box_at(10, 10), 100, 1.0), 8, appearance=np.ones(8, np.float32))
    tracker.update(T0, [ok])
    bad = TrackInput(Detection(box_at(10, 10), 100, 1.0), 9, appearance=np.ones(16, np.float32))
    with pytest.raises(TrackingError, match="detection 9 appearance has 16 bins; earlier detections had 8"):
        tracker.update(T0, [bad])
    with pytest.raises(TrackingError, match="all 0"):
        Tracker(TrackerConfig(weight_iou=0, weight_distance=0, weight_size=0))


def test_snapshots_do_not_change_after_later_frames() -> None:
    run = Run(TrackerConfig())
    first = run.step({"m": box_at(10, 10)}, classification={"m": classification(0.8)}).active[0]
    run.step({"m": box_at(12, 10)}, classification={"m": classification(0.9)})
    assert first.hits == 1 and first.box == box_at(10, 10)
    assert first.votes["species"]["Noctua pronuba"] == pytest.approx(0.8)


def test_ten_insects_with_missed_detections_are_counted_once_each() -> None:
    """A crowded frame sequence: 10 insects, each missed in ~10% of 300 frames.

    Speed lives in bench/bench_tracker.py (update time per frame against the other per-frame
    parts, side by side); here only a no-hang guard.
    """
    rng = np.random.default_rng(0)
    tracker = Tracker(TrackerConfig())
    looks = [appearance_descriptor(crop_of((40 + 20 * k, 200 - 15 * k, 90), k)) for k in range(10)]
    centres = rng.uniform(100, 1100, size=(10, 2))
    velocity = rng.normal(0, 3, size=(10, 2))
    ids: dict[int, list[int]] = {k: [] for k in range(10)}  # insect -> track id per frame it was seen
    confirmed: list[TrackState] = []
    ended: list[TrackState] = []
    began = time.monotonic()
    for i in range(300):
        seen = [k for k in range(10) if rng.random() > 0.1]
        inputs = [
            TrackInput(
                Detection(box_at(*(centres[k] + velocity[k] * i)), 1200, 1.0), i * 10 + k, None, looks[k]
            )
            for k in seen
        ]
        update = tracker.update(T0 + timedelta(seconds=i / 10), inputs)
        for k, track_id in zip(seen, update.assignments, strict=True):
            ids[k].append(track_id)
        confirmed.extend(update.confirmed)
        ended.extend(update.ended)
    assert time.monotonic() - began < 60  # no-hang guard only (300 updates take ~0.2 s)
    active = sorted(t.track_id for t in tracker.active_tracks())
    final = tracker.finish(T0 + timedelta(seconds=30))

    # From its 10th sighting on, each insect keeps one track, and no two insects share one.
    settled = {k: set(track_ids[10:]) for k, track_ids in ids.items()}
    assert all(len(s) == 1 for s in settled.values()), settled
    owner = {track_id: k for k, s in settled.items() for track_id in s}
    assert len(owner) == 10
    # Each insect is counted exactly once: ten confirmations, and they are the settled tracks.
    assert sorted(t.track_id for t in confirmed) == sorted(owner)
    assert active == sorted(owner)  # all ten still followed at the last frame
    counted = [t for t in [*ended, *final] if t.status == "ended"]
    assert sorted(t.track_id for t in counted) == sorted(owner)
    # What ended during the run were only unconfirmed tracks (a miss right after a first sighting).
    assert all(t.status == "discarded" for t in ended)


# ---------------------------------------------------------------- vote

TAXONOMY = Taxonomy(
    levels=("order", "family", "species"),
    parents={
        "family": {"Noctuidae": "Lepidoptera", "Geometridae": "Lepidoptera", "Carabidae": "Coleoptera"},
        "species": {"Noctua pronuba": "Noctuidae", "Biston betularia": "Geometridae"},
    },
)


def hierarchical(
    order: tuple[str | None, float], family: tuple[str | None, float], species: tuple[str | None, float]
):
    levels = {}
    for level, (label, score) in (("order", order), ("family", family), ("species", species)):
        top = label or "whatever"
        levels[level] = LevelPrediction(level, label, top, score, ((top, score),))
    return Classification(levels, None, None, 0.0)


def test_vote_is_confidence_weighted_not_majority() -> None:
    votes = [classification(0.3, "A"), classification(0.3, "A"), classification(0.3, "A")]
    votes += [classification(0.95, "B"), classification(0.95, "B")]
    result = vote(votes)
    assert (result.level, result.label) == ("species", "B")  # 1.9 against 0.9, though A has 3 votes
    assert result.score == pytest.approx(0.95)
    assert result.votes == {"species": pytest.approx({"A": 0.9, "B": 1.9})}


def test_vote_abstains_without_a_clear_share_and_ignores_abstentions() -> None:
    split = [classification(0.6, "A"), classification(0.6, "B"), classification(0.5, "C")]
    assert vote(split).label is None  # best holds 0.6 / 1.7 < 50%
    assert vote(split, min_share=0.3).label in {"A", "B"}
    abstained = LevelPrediction("species", None, "C", 0.2, (("C", 0.2),))
    quiet = [Classification({"species": abstained}, None, None, 0.2)] * 5 + [classification(0.7, "A")]
    result = vote(quiet)
    assert result.label == "A" and result.votes == {"species": {"A": 0.7}}


def test_vote_respects_the_taxonomy() -> None:
    # The species head likes Noctua pronuba (a Noctuid), but the family votes say Geometridae:
    # the answer falls back to the family, the deepest level consistent with the others.
    crops = [
        hierarchical(("Lepidoptera", 0.9), ("Geometridae", 0.8), ("Noctua pronuba", 0.6)),
        hierarchical(("Lepidoptera", 0.95), ("Geometridae", 0.7), ("Noctua pronuba", 0.7)),
        hierarchical(("Lepidoptera", 0.9), ("Noctuidae", 0.6), (None, 0.3)),
    ]
    result = vote(crops, TAXONOMY)
    assert (result.level, result.label) == ("family", "Geometridae")
    assert result.score == pytest.approx(0.75)
    # Consistent votes go all the way down to the species.
    agreeing = [hierarchical(("Lepidoptera", 0.9), ("Noctuidae", 0.8), ("Noctua pronuba", 0.7))] * 2
    assert vote(agreeing, TAXONOMY).label == "Noctua pronuba"
    # Without a taxonomy the levels are flat and the finest confident one wins.
    assert vote(crops).label == "Noctua pronuba"


def test_a_track_most_of_whose_crops_the_open_set_calls_unknown_is_unknown() -> None:
    """DESIGN.md's `unknown`: more than half of the measured crops unlike every class. One odd view
    does not make a known insect unknown; the tally survives a restart and a merge."""
    from dataclasses import replace

    from edge.classify.types import UNKNOWN

    def measured(score: float, unknown: bool) -> Classification:
        return replace(classification(score), unknown=unknown, open_set_distance=0.4 if unknown else 0.05)

    known = vote([measured(0.9, False), measured(0.8, True), measured(0.9, False)])
    assert (known.level, known.label) == ("species", "Noctua pronuba")
    tally = TaxonVote()
    for c in (measured(0.9, True), measured(0.8, True), measured(0.9, False)):
        tally.add(c)
    result = tally.result()
    assert (result.level, result.label, result.score) == (None, UNKNOWN, pytest.approx(2 / 3))
    assert result.votes["species"] == pytest.approx({"Noctua pronuba": 2.6})  # what the model said, kept
    again = TaxonVote()
    again.restore(tally.state())
    assert again.result().label == UNKNOWN
    older = {k: v for k, v in tally.state().items() if k != "open_set"}  # saved before the open set
    restored = TaxonVote()
    restored.restore(older)
    assert restored.result().label == "Noctua pronuba"
    other = TaxonVote()
    for _ in range(3):
        other.add(measured(0.9, False))
    other.merge(tally)  # 2 unknown of 6 measured: known
    assert other.result().label == "Noctua pronuba"
    assert vote([classification(0.9)] * 3).label == "Noctua pronuba"  # no open set: never unknown


def test_vote_without_classifier_and_bad_input() -> None:
    assert vote([None, None]) == vote([])
    assert vote([None]).label is None and vote([None]).score == 0.0
    with pytest.raises(TrackingError, match="min_share"):
        TaxonVote(min_share=0)
    tally = TaxonVote(Taxonomy(levels=("species",)))
    with pytest.raises(TrackingError, match="level 'family' is not in the taxonomy levels"):
        tally.add(classification(0.9, "X", level="family"))


def test_tracker_votes_with_taxonomy() -> None:
    run = Run(TrackerConfig(), taxonomy=TAXONOMY)
    crops = [
        hierarchical(("Lepidoptera", 0.9), ("Geometridae", 0.8), ("Noctua pronuba", 0.6)),
        hierarchical(("Lepidoptera", 0.95), ("Geometridae", 0.7), ("Noctua pronuba", 0.7)),
    ]
    for c in crops:
        run.step({"m": box_at(100, 100)}, classification={"m": c})
    run.finish()
    (track,) = run.counted()
    assert (track.level, track.label) == ("family", "Geometridae")


def _beetle_cut_at_its_waist(run: Run) -> None:
    """A beetle sits for 20 frames; on every other frame the detector cuts it into two pieces."""
    whole = Box(300, 300, 340, 380)
    front, back = Box(302, 300, 338, 330), Box(300, 334, 340, 380)
    for i in range(20):
        run.step({"whole": whole} if i % 2 == 0 else {"front": front, "back": back})
    run.finish()


def test_a_detection_cut_in_two_stays_one_insect() -> None:
    run = Run(TrackerConfig(reid_window_s=0))
    _beetle_cut_at_its_waist(run)
    assert len(run.counted()) == 1
    track_id = run.ids["whole"][0]
    assert set(run.ids["whole"]) == set(run.ids["front"]) == set(run.ids["back"]) == {track_id}
    # The pieces widen the track's box back to the whole beetle, not to one half of it.
    assert run.counted()[0].box == Box(300, 300, 340, 380)


def test_without_fragment_handling_the_cut_beetle_is_counted_twice() -> None:
    """Control: fragment_overlap 1 turns the rule off and the second piece becomes a second count."""
    run = Run(TrackerConfig(reid_window_s=0, fragment_overlap=1.0))
    _beetle_cut_at_its_waist(run)
    assert len(run.counted()) == 2


# ---------------------------------------------------------------- pieces of one insect


@pytest.mark.parametrize("with_colour", [True, False])
def test_a_touching_piece_of_the_same_colours_joins_the_insect_geometry_alone_never_merges(
    with_colour: bool,
) -> None:
    """A piece touching a larger detection joins it only on colour evidence (tracker._touched_piece_of)."""
    body, tip = box_at(100, 100, 40, 80), box_at(130, 150, 24, 24)  # tip overlaps the body's corner
    assert tip.iou(body) > 0 and tip.area < body.area
    run = Run(TrackerConfig(confirm_hits=2, reid_window_s=0))
    colours = {
        "body": appearance_descriptor(crop_of(BROWN, 1)),
        "tip": appearance_descriptor(crop_of(BROWN, 2)),
    }
    for _ in range(5):
        run.step({"body": body, "tip": tip}, appearance=colours if with_colour else None)
    run.finish()
    if with_colour:  # one insect from its first frame; the track's box holds the tip
        assert run.ids["tip"] == run.ids["body"] and len(set(run.ids["body"])) == 1
        (track,) = run.counted()
        assert track.box == union(body, tip)
    else:  # no colours: two insects side by side are as likely as one cut in two
        assert len(run.counted()) == 2


def test_a_touching_detection_of_other_colours_or_larger_is_an_insect_of_its_own() -> None:
    moth, beetle = box_at(100, 100, 60, 40), box_at(135, 125, 20, 16)
    run = Run(TrackerConfig(confirm_hits=2, reid_window_s=0))
    colours = {
        "moth": appearance_descriptor(crop_of(BROWN, 1)),
        "beetle": appearance_descriptor(crop_of(GREEN, 2)),
    }
    for _ in range(4):
        run.step({"moth": moth, "beetle": beetle}, appearance=colours)
    run.finish()
    assert len(run.counted()) == 2 and run.ids["moth"][0] != run.ids["beetle"][0]
    # the same colours but apart by more than a touch: two insects too
    run = Run(TrackerConfig(confirm_hits=2, reid_window_s=0))
    far = box_at(175, 100, 20, 16)
    same = {"moth": colours["moth"], "beetle": appearance_descriptor(crop_of(BROWN, 3))}
    for _ in range(4):
        run.step({"moth": moth, "beetle": far}, appearance=same)
    run.finish()
    assert len(run.counted()) == 2
