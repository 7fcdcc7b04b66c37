"""The tracker's memory across a restart, and the box geometry it rests on (issue 26: each stated).

`resume_state` must hand a restarted trap everything the tracker knew of a track (colours,
embedding, vote, best crop, motion, lost or not), and `carry_over` must take it back exactly, so
the insect that sat through the restart stays one track. The geometry helpers decide every match."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from edge.classify.types import Classification, LevelPrediction
from edge.config import TrackerConfig
from edge.detect.base import Box, Detection
from edge.track import TrackingError
from edge.track.tracker import (
    _APPEARANCE_RATE,
    Tracker,
    TrackInput,
    TrackState,
    _clip_inside,
    _coverage,
    _gap,
    _geometry,
    _Track,
    _union,
)
from edge.track.vote import TaxonVote

T0 = datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc)


def moth_crop(score: float) -> Classification:
    prediction = LevelPrediction(
        "species", "Noctua pronuba", "Noctua pronuba", score, (("Noctua pronuba", score),)
    )
    return Classification({"species": prediction}, "species", "Noctua pronuba", score)


def walker_inputs(frame: int, det_id: int) -> list[TrackInput]:
    """A moth walking 10 px/s to the right, seen once a second, the same colours and embedding."""
    x = 100 + 10 * frame
    box = Box(x, 200, x + 40, 230)
    histogram = np.zeros(96, np.float32)
    histogram[[5, 17]] = (0.75, 0.25)
    embedding = np.array([0.6, 0.8, 0.0], np.float32)
    return [
        TrackInput(Detection(box, box.area, 0.9), det_id, moth_crop(0.5 + frame / 20), histogram, embedding)
    ]


def followed(frames: int = 6) -> tuple[Tracker, int]:
    tracker = Tracker(TrackerConfig())
    for frame in range(frames):
        update = tracker.update(T0 + timedelta(seconds=frame), walker_inputs(frame, frame + 1))
    return tracker, update.assignments[0]


def test_resume_state_holds_everything_the_tracker_knew_of_the_track() -> None:
    tracker, tid = followed()
    saved = tracker.resume_state(tid, counted=True)
    assert saved is not None and tracker.resume_state(tid + 100) is None
    assert (saved.lost, saved.counted, saved.revision) == (False, True, 1)
    assert saved.appearance is not None and saved.appearance[5] == pytest.approx(0.75)
    assert saved.embedding is not None and saved.embedding.tolist() == pytest.approx([0.6, 0.8, 0.0])
    assert saved.vote["weights"] == {
        "species": pytest.approx({"Noctua pronuba": sum(0.5 + f / 20 for f in range(6))})
    }
    assert saved.best_key == (1.0, 0.75, 1200.0) and saved.best_box == (150, 200, 190, 230)  # the surest crop
    vx, vy = saved.velocity
    assert 9.0 < vx < 10.0 and vy == 0.0  # smoothed towards the walk's 10 px/s
    assert tracker.resume_state(tid, counted=False).counted is False  # type: ignore[union-attr]


def test_a_track_waiting_for_reidentification_is_saved_as_lost_and_comes_back_so() -> None:
    tracker, tid = followed()
    when = T0 + timedelta(seconds=6)
    for frame in range(8):  # gone: missed until it is lost (waiting for re-identification)
        tracker.update(when + timedelta(seconds=frame), [])
    assert [t.track_id for t in tracker.lost_tracks()] == [tid]
    saved = tracker.resume_state(tid)
    assert saved is not None and saved.lost
    state = tracker.lost_tracks()[0]
    again = Tracker(TrackerConfig())
    again.carry_over([(state, saved)])
    assert [t.track_id for t in again.lost_tracks()] == [tid] and again.active_tracks() == []
    no_reid = Tracker(TrackerConfig(reid_window_s=0))  # nothing waits: it comes back open
    no_reid.carry_over([(state, saved)])
    assert [t.track_id for t in no_reid.active_tracks()] == [tid]


def test_carry_over_takes_the_saved_memory_back_exactly_and_the_walk_goes_on() -> None:
    tracker, tid = followed()
    saved = tracker.resume_state(tid, counted=True)
    assert saved is not None
    (state,) = tracker.active_tracks()
    restarted = Tracker(TrackerConfig())
    restarted.carry_over([(state, saved)])
    again = restarted.resume_state(tid, counted=True)
    assert again is not None
    assert again.appearance is not None and saved.appearance is not None
    np.testing.assert_array_equal(again.appearance, saved.appearance)
    np.testing.assert_array_equal(again.embedding, saved.embedding)  # type: ignore[arg-type]
    assert (again.vote, again.best_key, again.best_box, again.velocity, again.lost) == (
        saved.vote,
        saved.best_key,
        saved.best_box,
        saved.velocity,
        False,
    )
    (carried,) = restarted.active_tracks()
    assert (carried.status, carried.hits, carried.label) == ("confirmed", state.hits, "Noctua pronuba")
    assert carried.best_box == Box(150, 200, 190, 230)
    # three seconds later, 30 px further: the same track, and a newcomer gets the next id
    later = T0 + timedelta(seconds=8)
    inputs = walker_inputs(8, 50)
    far = Box(900, 600, 940, 630)
    inputs.append(TrackInput(Detection(far, far.area, 0.9), 51))
    update = restarted.update(later, inputs)
    assert update.assignments == [tid, tid + 1]


def test_carry_over_refuses_what_it_cannot_continue() -> None:
    tracker, tid = followed()
    saved = tracker.resume_state(tid)
    assert saved is not None
    (state,) = tracker.active_tracks()
    started = Tracker(TrackerConfig())
    started.update(T0, [])
    with pytest.raises(TrackingError) as raised:
        started.carry_over([(state, saved)])
    assert str(raised.value) == "tracker: carry_over after the first frame; expected it before any update"
    tentative = TrackState(7, "tentative", T0, T0, 1, 0, Box(0, 0, 10, 10), 1)
    with pytest.raises(TrackingError) as raised:
        Tracker(TrackerConfig()).carry_over([(tentative, saved)])
    assert str(raised.value) == "tracker: carried track 7 is 'tentative'; expected a counted one"


# ---------------------------------------------------------------- geometry


def test_a_prediction_moves_the_anchor_at_its_velocity_damped_per_miss_and_capped() -> None:
    state = TrackState(1, "confirmed", T0, T0, 3, 0, Box(100, 100, 140, 130), 1)
    track = _Track(state, TaxonVote(), None)
    assert track.predicted_box(T0 + timedelta(seconds=5), 500, 0.5) == Box(100, 100, 140, 130)  # standing
    track.velocity = (10.0, -4.0)
    assert track.predicted_box(T0 + timedelta(seconds=2), 500, 0.5) == Box(120, 92, 160, 122)
    track.missed_since_anchor = 2  # each miss halves the step: a quarter of it
    assert track.predicted_box(T0 + timedelta(seconds=2), 500, 0.5) == Box(105, 98, 145, 128)
    track.missed_since_anchor = 0
    track.velocity = (30.0, 40.0)  # 50 px/s for 2 s, capped at 25 px along the same direction
    assert track.predicted_box(T0 + timedelta(seconds=2), 25, 0.5) == Box(115, 120, 155, 150)


def test_clip_inside_shifts_the_least_and_centres_what_does_not_fit() -> None:
    outer = Box(100, 100, 200, 160)
    assert _clip_inside(Box(120, 110, 150, 140), outer) == Box(120, 110, 150, 140)  # inside: unchanged
    assert _clip_inside(Box(80, 90, 110, 120), outer) == Box(100, 100, 130, 130)  # left and above
    assert _clip_inside(Box(190, 150, 220, 170), outer) == Box(170, 140, 200, 160)  # right and below
    assert _clip_inside(Box(0, 0, 120, 80), outer) == Box(90, 90, 210, 170)  # larger: centred on both


def test_coverage_gap_and_union() -> None:
    assert _coverage(Box(10, 10, 20, 20), Box(0, 0, 100, 100)) == 1.0
    assert _coverage(Box(10, 10, 20, 20), Box(15, 0, 100, 100)) == 0.5
    assert _coverage(Box(10, 10, 10, 20), Box(0, 0, 100, 100)) == 0.0  # no area
    assert _coverage(Box(0, 0, 10, 10), Box(50, 50, 60, 60)) == 0.0
    assert _gap(Box(0, 0, 10, 10), Box(5, 5, 20, 20)) == 0.0
    assert _gap(Box(0, 0, 10, 10), Box(10, 0, 20, 10)) == 0.0  # touching
    assert _gap(Box(0, 0, 10, 10), Box(13, 14, 20, 20)) == 5.0
    assert _gap(Box(13, 14, 20, 20), Box(0, 0, 10, 10)) == 5.0
    main = Detection(Box(10, 10, 30, 30), 300, 0.6)
    pieces = [Detection(Box(25, 5, 40, 20), 100, 0.9), Detection(Box(0, 28, 12, 50), 50, 0.4)]
    assert _union(main, pieces) == Detection(Box(0, 5, 40, 50), 450, 0.9)


def test_geometry_gives_overlap_centre_distance_and_size_difference() -> None:
    tracks = np.array([[0, 0, 10, 10], [100, 100, 120, 110]], dtype=np.float64)
    dets = np.array(
        [[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 110], [40, 40, 40, 40]], dtype=np.float64
    )
    iou, dist, size = _geometry(tracks, dets)
    assert iou[0].tolist() == pytest.approx([1.0, 50 / 150, 0.0, 0.0])
    assert dist[0].tolist() == pytest.approx([0.0, 5.0, np.hypot(100, 100), np.hypot(35, 35)])
    assert size[0].tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0])
    assert iou[1].tolist() == pytest.approx([0.0, 0.0, 0.5, 0.0])
    assert dist[1, 2] == pytest.approx(5.0)
    assert size[1].tolist() == pytest.approx([0.5, 0.5, 0.5, 1.0])


def test_appearance_cost_uses_colours_where_both_have_them_and_embeddings_in_time_lapse() -> None:
    """The rule table of the appearance term: a pair is compared only where both sides carry a
    descriptor; in time-lapse mode the model's embedding (cosine distance, its own limit) replaces
    the colours where both have one; video mode never looks at embeddings."""
    brown, green = np.zeros(96, np.float32), np.zeros(96, np.float32)
    brown[5], green[40] = 1.0, 1.0
    east, north = np.array([1.0, 0.0]), np.array([0.6, 0.8])

    def track(appearance: np.ndarray | None, embedding: np.ndarray | None) -> _Track:
        t = _Track(TrackState(1, "confirmed", T0, T0, 3, 0, Box(0, 0, 10, 10), 1), TaxonVote(), appearance)
        t.embedding = embedding
        return t

    tracks = [track(brown, east), track(None, north), track(green, None)]
    appearances = [brown, green, None]
    embeddings = [north, None, east]
    for mode, embedded_pairs in (("video", set()), ("timelapse", {(0, 0), (0, 2), (1, 0), (1, 2)})):
        cfg = TrackerConfig(mode=mode, link_max_appearance=0.4, link_max_embedding=0.2)
        cost, mask, limit, embedded = Tracker(cfg)._appearance_cost(tracks, appearances, embeddings)
        colour_pairs = {(0, 0), (0, 1), (2, 0), (2, 1)}
        both = colour_pairs | embedded_pairs
        assert {(i, j) for i, j in zip(*np.nonzero(mask), strict=True)} == both, mode
        assert {(i, j) for i, j in zip(*np.nonzero(embedded), strict=True)} == embedded_pairs, mode
        for i, j in both:
            if (i, j) in embedded_pairs:
                assert cost[i, j] == pytest.approx(1.0 - float(np.dot(tracks[i].embedding, embeddings[j])))
                assert limit[i, j] == 0.2
            else:
                assert cost[i, j] == pytest.approx(0.0 if (i, j) in {(0, 0), (2, 1)} else 1.0, abs=1e-6)
                assert limit[i, j] == 0.4
        if mode == "video":
            assert cost[1, 2] == 0.0 and mask[1, 2] == 0.0  # nothing to compare: no term


def test_a_hop_continues_the_counted_track_with_everything_the_new_one_saw() -> None:
    """`_absorb`: the insect that hopped is the old track, one count; its path, hits, box, motion,
    colours, vote and best crop take in what the short-lived new track saw, which is discarded."""
    tracker = Tracker(TrackerConfig())
    old_state = TrackState(3, "confirmed", T0, T0 + timedelta(seconds=5), 6, 2, Box(100, 100, 140, 130), 11)
    old_state.moved_px, old_state.edge_hits, old_state.best_box = 20.0, 1, Box(90, 100, 130, 130)
    old = _Track(old_state, TaxonVote(), None)
    old.vote.add(moth_crop(0.5))
    old.best_key = (1.0, 0.5, 1200.0)
    old.miss_weight = 2.0
    later = T0 + timedelta(seconds=9)
    new_state = TrackState(
        8, "tentative", T0 + timedelta(seconds=8), later, 2, 0, Box(400, 300, 440, 330), 21
    )
    new_state.moved_px, new_state.edge_hits, new_state.best_box = 5.0, 2, Box(395, 300, 435, 330)
    histogram = np.zeros(96, np.float32)
    histogram[7] = 1.0
    new = _Track(new_state, TaxonVote(), histogram)
    new.first_box = Box(390, 300, 430, 330)
    new.anchor_box, new.anchor_time, new.velocity, new.last_frame = new_state.box, later, (4.0, -1.0), 9
    new.last_evidence = later
    new.vote.add(moth_crop(0.75))
    new.vote.add(moth_crop(0.75))
    new.best_key = (1.0, 0.75, 1200.0)
    tracker._active = [old, new]
    tracker._absorb(old, new, later)
    o = old.state
    assert tracker._active == [old]
    assert (new.state.status, new.state.ended_at) == ("discarded", later)
    assert o.moved_px == pytest.approx(20.0 + np.hypot(410 - 120, 315 - 115) + 5.0)
    assert (o.hits, o.edge_hits, o.hops, o.misses, o.occluded) == (8, 3, 1, 0, False)
    assert (o.box, o.last_seen, old.last_frame) == (Box(400, 300, 440, 330), later, 9)
    assert (old.anchor_box, old.anchor_time, old.missed_since_anchor) == (Box(400, 300, 440, 330), later, 0)
    assert (old.velocity, old.miss_weight, old.last_evidence) == ((4.0, -1.0), 0.0, later)
    assert old.appearance is histogram
    assert (o.label, o.score) == ("Noctua pronuba", pytest.approx(2 / 3))
    assert o.votes == {"species": pytest.approx({"Noctua pronuba": 2.0})}
    assert (old.best_key, o.best_detection_id, o.best_box) == (
        (1.0, 0.75, 1200.0),
        21,
        Box(395, 300, 435, 330),
    )
    # a new track with a worse best crop and no colours leaves the old one's
    worse = _Track(TrackState(9, "tentative", later, later, 1, 0, Box(0, 0, 10, 10), 31), TaxonVote(), None)
    worse.best_key = (0.0, 100.0, 0.0)
    tracker._active.append(worse)
    tracker._absorb(old, worse, later)
    assert (o.best_detection_id, old.appearance is histogram, o.hops) == (21, True, 2)


SITTING = Box(100, 100, 140, 130)


def open_track(tracker: Tracker, status: str = "confirmed", box: Box = SITTING) -> _Track:
    track = _Track(TrackState(4, status, T0, T0, 5, 0, box, 1), TaxonVote(), None)  # type: ignore[arg-type]
    tracker._active.append(track)
    return track


def test_misses_lose_a_counted_track_at_max_misses_and_discard_a_tentative_one_at_once() -> None:
    tracker = Tracker(TrackerConfig(max_misses=3, tentative_max_misses=1))
    track, ended = open_track(tracker), []
    track.state.occluded = True
    for n in (1, 2):
        tracker._miss(track, T0 + timedelta(seconds=n), ended)
        assert tracker._active == [track] and track.state.misses == n and not track.state.occluded
    assert (track.missed_since_anchor, track.miss_weight) == (2, 2.0)
    tracker._miss(track, T0 + timedelta(seconds=3), ended)
    assert tracker._active == [] and tracker._lost == [track] and ended == []  # waits for re-identification
    assert track.state.status == "confirmed"
    tentative = open_track(tracker, "tentative")
    tracker._miss(tentative, T0 + timedelta(seconds=4), ended)
    assert ended == [tentative] and (tentative.state.status, tentative.state.ended_at) == (
        "discarded",
        T0 + timedelta(seconds=4),
    )
    no_reid = Tracker(TrackerConfig(max_misses=1, reid_window_s=0))
    gone, ended = open_track(no_reid), []
    no_reid._miss(gone, T0 + timedelta(seconds=5), ended)
    assert ended == [gone] and no_reid._lost == [] and gone.state.status == "ended"


def test_an_occluded_track_is_placed_inside_the_cover_and_its_misses_count_a_fraction() -> None:
    tracker = Tracker(TrackerConfig(max_misses=2, occluded_miss_weight=0.5))
    track, ended = open_track(tracker), []
    cover = Box(130, 90, 260, 200)  # a larger insect's detection overlapping it
    when = T0 + timedelta(seconds=1)
    tracker._occlude(track, cover, when, ended)
    state = track.state
    assert state.box == Box(130, 100, 170, 130)  # shifted the least to lie inside the cover
    assert state.moved_px == pytest.approx(30.0)
    assert (state.misses, state.occluded, track.miss_weight, track.last_evidence) == (1, True, 0.5, when)
    tracker._occlude(track, cover, when + timedelta(seconds=1), ended)
    tracker._occlude(track, cover, when + timedelta(seconds=2), ended)
    assert tracker._active == [track] and state.misses == 3  # 1.5 of a miss so far: still open
    tracker._occlude(track, cover, when + timedelta(seconds=3), ended)
    assert tracker._active == [] and tracker._lost == [track] and not state.occluded  # 2.0: lost


def one(box: Box, det_id: int = 1, appearance: object = None, embedding: object = None) -> TrackInput:
    return TrackInput(Detection(box, max(box.area, 1), 0.9), det_id, None, appearance, embedding)  # type: ignore[arg-type]


EMPTY = "expected x1 > x0 and y1 > y0"
HISTOGRAM = "appearance must be a 1-D histogram of non-negative numbers, got shape"
VECTOR = "embedding must be a non-empty vector of finite numbers, got shape"
SQUARE = Box(0, 0, 10, 10)
BESIDE = Box(50, 0, 60, 10)
THIN, FLAT = Box(10, 10, 10, 20), Box(10, 10, 20, 10)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([object()], "tracker: expected TrackInput items, got object"),
        (
            [one(Box(10, 10, 10, 20), 3)],
            f"tracker: detection 3 has an empty box {Box(10, 10, 10, 20)}; {EMPTY}",
        ),
        (
            [one(Box(10, 10, 20, 10), 4)],
            f"tracker: detection 4 has an empty box {Box(10, 10, 20, 10)}; {EMPTY}",
        ),
        ([one(SQUARE, 5, np.ones((2, 2)))], f"tracker: detection 5 {HISTOGRAM} (2, 2)"),
        ([one(SQUARE, 6, np.array([1.0, -0.5]))], f"tracker: detection 6 {HISTOGRAM} (2,)"),
        ([one(SQUARE, 7, np.array([1.0, np.inf]))], f"tracker: detection 7 {HISTOGRAM} (2,)"),
        ([one(SQUARE, 8, np.zeros(0))], f"tracker: detection 8 {HISTOGRAM} (0,)"),
        (
            [one(SQUARE, 9, np.ones(4)), one(BESIDE, 10, np.ones(5))],
            "tracker: detection 10 appearance has 5 bins; earlier detections had 4",
        ),
        ([one(SQUARE, 11, None, np.array([1.0, np.nan]))], f"tracker: detection 11 {VECTOR} (2,)"),
        ([one(SQUARE, 12, None, np.zeros(0))], f"tracker: detection 12 {VECTOR} (0,)"),
        (
            [one(SQUARE, 13, None, np.ones(3)), one(BESIDE, 14, None, np.ones(4))],
            "tracker: detection 14 embedding has 4 values; earlier detections had 3",
        ),
    ],
)
def test_inputs_the_tracker_cannot_use_are_refused_naming_the_detection(
    inputs: list[TrackInput], message: str
) -> None:
    with pytest.raises(TrackingError) as raised:
        Tracker(TrackerConfig()).update(T0, inputs)
    assert str(raised.value) == message


def test_descriptors_are_normalised_and_an_all_zero_one_is_no_descriptor() -> None:
    tracker = Tracker(TrackerConfig())
    inputs = [
        one(Box(0, 0, 10, 10), 1, np.array([2.0, 6.0]), np.array([3.0, 4.0])),
        one(Box(50, 0, 60, 10), 2, np.zeros(2), np.zeros(2)),
    ]
    assert [None if a is None else a.tolist() for a in tracker._check_inputs(inputs)] == [[0.25, 0.75], None]
    embeddings = tracker._check_embeddings(inputs)
    assert embeddings[0] is not None and embeddings[0].tolist() == pytest.approx([0.6, 0.8])
    assert embeddings[0].dtype == np.float64 and embeddings[1] is None


def test_a_tracker_without_geometry_or_with_a_bad_first_id_is_refused() -> None:
    with pytest.raises(TrackingError) as raised:
        Tracker(TrackerConfig(weight_iou=0, weight_distance=0, weight_size=0))
    assert str(raised.value) == (
        "tracker: weight_iou, weight_distance and weight_size are all 0; "
        "expected at least one positive geometric weight"
    )
    with pytest.raises(TrackingError) as raised:
        Tracker(TrackerConfig(), first_track_id=0)
    assert str(raised.value) == "Tracker: first_track_id must be >= 1, got 0"
    with pytest.raises(TrackingError) as raised:
        Tracker({"max_misses": 3})  # type: ignore[arg-type]
    assert str(raised.value) == "Tracker: expected a TrackerConfig, got dict"
    assert Tracker(TrackerConfig(weight_iou=0, weight_distance=0, weight_size=0.1)).cfg.weight_size == 0.1


def test_a_carried_track_seen_after_this_frame_is_dropped_and_old_descriptors_of_another_size_forgotten() -> (
    None
):
    """A replay from an earlier time is not the continuation of a track saved later; colours or an
    embedding of another size (another version or model) are forgotten, place and size still match."""
    tracker, tid = followed()
    saved = tracker.resume_state(tid)
    assert saved is not None
    (state,) = tracker.active_tracks()
    earlier = Tracker(TrackerConfig())
    earlier.carry_over([(state, saved)])
    earlier.update(state.last_seen - timedelta(seconds=1), [])
    assert earlier.active_tracks() == [] and earlier.lost_tracks() == []
    other = Tracker(TrackerConfig())
    other.carry_over([(state, saved)])
    box = Box(160, 200, 200, 230)
    update = other.update(state.last_seen + timedelta(seconds=1), [one(box, 99, np.ones(8), np.ones(5))])
    assert update.assignments == [tid]  # matched by place and size
    again = other.resume_state(tid)
    assert again is not None and again.appearance is not None and again.appearance.size == 8
    assert again.embedding is not None and again.embedding.size == 5
    same = Tracker(TrackerConfig())
    same.carry_over([(state, saved)])
    same.update(
        state.last_seen + timedelta(seconds=1), [one(Box(600, 600, 640, 630), 98, np.ones(96), np.ones(3))]
    )
    kept = same.resume_state(tid)
    assert kept is not None and kept.appearance is not None and saved.appearance is not None
    np.testing.assert_array_equal(kept.appearance, saved.appearance)  # same sizes: kept as saved
    np.testing.assert_array_equal(kept.embedding, saved.embedding)  # type: ignore[arg-type]


def test_a_track_keeps_running_means_of_its_motion_colours_and_embedding() -> None:
    """Each own detection moves the velocity halfway (velocity_smoothing 0.5) towards its step, and
    the colours and the embedding a step of _APPEARANCE_RATE towards its own (renormalised)."""
    tracker = Tracker(TrackerConfig())
    a, b = np.zeros(8), np.zeros(8)
    a[1], b[6] = 1.0, 1.0
    steps = [(Box(100, 100, 140, 130), a, [1.0, 0.0]), (Box(110, 96, 150, 126), b, [0.0, 1.0])]
    steps.append((Box(130, 96, 170, 126), b, [0.0, 1.0]))
    for n, (box, histogram, embedding) in enumerate(steps):
        update = tracker.update(T0 + timedelta(seconds=n), [one(box, n + 1, histogram, np.array(embedding))])
        saved = tracker.resume_state(update.assignments[0])
        assert saved is not None and saved.appearance is not None and saved.embedding is not None
        if n == 0:
            assert saved.velocity == (0.0, 0.0)  # one sighting: no motion yet
            assert saved.appearance.tolist() == a.tolist() and saved.embedding.tolist() == [1.0, 0.0]
        if n == 1:
            assert saved.velocity == pytest.approx((5.0, -2.0))
            mixed = (1 - _APPEARANCE_RATE) * a + _APPEARANCE_RATE * b
            assert saved.appearance.tolist() == pytest.approx((mixed / mixed.sum()).tolist())
            direction = np.array([1 - _APPEARANCE_RATE, _APPEARANCE_RATE])
            assert saved.embedding.tolist() == pytest.approx((direction / np.linalg.norm(direction)).tolist())
    assert saved.velocity == pytest.approx((12.5, -1.0))  # half of 20 px/s and half of 5
    (state,) = tracker.active_tracks()
    assert state.moved_px == pytest.approx(np.hypot(10, 4) + 20) and state.hits == 3
    assert state.track_id == 1  # ids start at 1
    assert Tracker(TrackerConfig(mode="timelapse")).timelapse and not tracker.timelapse


def test_each_revival_is_counted_and_starts_the_motion_afresh() -> None:
    tracker = Tracker(TrackerConfig(max_misses=2, tentative_max_misses=1))
    sitting = Box(300, 300, 340, 330)
    when = T0
    tid = None
    for revival in (1, 2):
        for _ in range(4):  # seen (moving a little), confirmed
            when += timedelta(seconds=1)
            update = tracker.update(when, [one(Box(sitting.x0 + 4, sitting.y0, sitting.x1 + 4, sitting.y1))])
            sitting = Box(sitting.x0 + 4, sitting.y0, sitting.x1 + 4, sitting.y1)
            tid = tid or update.assignments[0]
            assert update.assignments == [tid]
        for _ in range(3):  # gone long enough to be lost
            when += timedelta(seconds=1)
            tracker.update(when, [])
        assert [t.track_id for t in tracker.lost_tracks()] == [tid]
        when += timedelta(seconds=1)
        update = tracker.update(when, [one(sitting)])
        assert update.assignments == [tid] and [t.track_id for t in update.revived] == [tid]
        assert update.revived[0].revivals == revival
        saved = tracker.resume_state(tid)  # type: ignore[arg-type]
        assert saved is not None and saved.velocity == (0.0, 0.0)  # it sat still, or was missed, meanwhile


def test_the_cost_of_a_pair_is_its_weighted_terms_and_a_pair_beyond_the_radius_is_gated() -> None:
    cfg = TrackerConfig(weight_iou=1.0, weight_distance=1.0, weight_size=1.0, weight_appearance=1.0)
    tracker = Tracker(cfg)
    hyp = np.array([[0, 0, 10, 10]], dtype=np.float64)
    dets = np.array([[5, 0, 15, 10], [10, 0, 20, 10], [16, 0, 26, 10]], dtype=np.float64)
    radius = np.array([10.0])
    app_cost = np.array([[0.4, 0.4, 0.4]])
    with_colours = tracker._cost_terms(hyp, radius, dets, app_cost, np.ones((1, 3)))
    without = tracker._cost_terms(hyp, radius, dets, app_cost, np.zeros((1, 3)))
    assert with_colours[0, 0] == pytest.approx(((1 - 1 / 3) + 0.5 + 0.0 + 0.4) / 4)
    assert without[0, 0] == pytest.approx(((1 - 1 / 3) + 0.5 + 0.0) / 3)
    assert with_colours[0, 1] == pytest.approx((1.0 + 1.0 + 0.0 + 0.4) / 4)  # exactly at the radius: kept
    assert with_colours[0, 2] == 1e6 and without[0, 2] == 1e6  # beyond it: gated


def test_a_link_across_a_gap_is_gated_when_the_colours_differ_beyond_the_limit() -> None:
    tracker = Tracker(TrackerConfig())
    cost = np.array([[0.2, 0.3, 0.4]])
    app_cost = np.array([[0.5, 0.5, 0.9]])
    mask = np.array([[1.0, 1.0, 0.0]])
    limit = np.array([[0.5, 0.4, 0.4]])
    assert tracker._gate_unlike(cost, app_cost, mask, limit).tolist() == [[0.2, 1e6, 0.4]]


def test_the_best_crop_is_the_surest_classified_one_else_the_largest_and_ties_keep_the_first() -> None:
    tracker = Tracker(TrackerConfig())
    track = _Track(TrackState(1, "confirmed", T0, T0, 1, 0, Box(0, 0, 10, 10), 1), TaxonVote(), None)
    for det_id, box, crop in (
        (1, Box(0, 0, 20, 20), None),
        (2, Box(0, 0, 30, 30), None),  # larger, unclassified: better
        (3, Box(0, 0, 10, 10), moth_crop(0.6)),  # any classified crop beats every unclassified one
        (4, Box(0, 0, 40, 40), moth_crop(0.6)),  # the same score, larger: better
        (5, Box(0, 0, 40, 40), moth_crop(0.6)),  # a tie: the first stays
        (6, Box(0, 0, 90, 90), moth_crop(0.5)),  # less sure, however large: not better
    ):
        tracker._record_classification(track, TrackInput(Detection(box, box.area, 0.9), det_id, crop))
        if det_id == 2:
            assert (track.state.best_detection_id, track.best_key) == (2, (0.0, 900.0, 0.0))
    assert (track.state.best_detection_id, track.state.best_box) == (4, Box(0, 0, 40, 40))
    assert track.best_key == (1.0, 0.6, 1600.0)


def test_lost_tracks_end_after_the_window_and_the_oldest_beyond_the_memory_cap() -> None:
    tracker = Tracker(TrackerConfig(reid_window_s=60, reid_max_tracks=2))
    lost = []
    for n, age in enumerate((60, 61, 10, 20, 30)):
        track = _Track(
            TrackState(n + 1, "confirmed", T0, T0 - timedelta(seconds=age), 5, 3, SITTING, 1),
            TaxonVote(),
            None,
        )
        lost.append(track)
    tracker._lost = list(lost)
    ended: list[_Track] = []
    tracker._expire_lost(T0, ended)
    # 2 is past the window (1 is exactly at it: kept); then the oldest over the cap, 1 and 5
    assert [t.state.track_id for t in ended] == [2, 1, 5]
    assert all((t.state.status, t.state.ended_at) == ("ended", T0) for t in ended)
    assert [t.state.track_id for t in tracker._lost] == [4, 3]  # kept oldest first
