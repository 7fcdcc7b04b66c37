"""Multi-object tracker: each insect becomes one track, and each confirmed track one count.

Per frame, detections are assigned to open tracks with the Hungarian algorithm
(`scipy.optimize.linear_sum_assignment`) on a cost that mixes overlap (1 - IoU), centre
distance (in box diagonals, relative to `max_distance`), size change and colour
(`appearance.py`). Pairs beyond `max_distance` or costlier than `max_cost` are gated out and
never matched.

Why each part exists (each one keeps a count from being split or doubled):

- Two hypotheses per track: its last box, and a damped constant-velocity prediction. A pair
  costs the cheaper of the two, so a crawling insect is found where it is heading while a
  resting one is found where it sits; the prediction can never drag a resting insect away.
  Velocities are in px/s, so video (many frames a second) and time-lapse (a frame every few
  seconds) share one model; the prediction decays with every frame without a detection.
- Lifecycle: tentative -> confirmed after `confirm_hits` hits. A noise blob that shows up
  once is discarded after `tentative_max_misses` misses and never counts. A confirmed track
  survives detector flicker up to `max_misses - 1` missed frames in a row (or `max_gap_s`
  seconds unseen, for time-lapse) and is then *lost*.
- Occlusion: when two insects touch, the detector returns one box for both. The track left
  without a detection whose box lies mostly (`occlusion_overlap`) inside another detection
  is *occluded*: its misses count only `occluded_miss_weight` each, so it survives the
  merge. A merged detection moves neither track's size, velocity, appearance nor vote;
  both follow their prediction, kept inside the merged box, until they separate.
- Re-identification: a lost confirmed track is held for `reid_window_s`. A new detection
  at (nearly) its place (`reid_max_distance` diagonals) with a similar size and colour
  revives it, so a moth that the detector missed for a minute is still one count. The pool
  is bounded by time and by `reid_max_tracks`.
- Hops: an insect that flies to another spot vanishes from one place and appears at
  another. A new track that appears within `hop_wait_frames` of a counted track vanishing,
  with a similar size and colour within `hop_max_distance` diagonals, and is the only such
  candidate both ways, waits instead of confirming; once the old place has stayed empty
  for `hop_wait_frames` frames the old track continues with the new detections (the new
  track is discarded, so the insect is still counted once). If the old insect shows up at
  its place again it was only missed, and the new track confirms as a new insect. The
  first detections after a hop keep the discarded track's id.
- Pieces: the detector sometimes cuts one insect into blobs (pale wing tips apart from the
  body). A detection inside a matched track's box, or touching a detection of similar colours
  that is no smaller, joins that insect's track, also in the frame where the insect first
  shows (`Tracker._fragments`, `Tracker._new_insects`).
- Only when the window has passed is the track reported in `TrackUpdate.ended` (status
  "ended"); `ended` is final, so a consumer may count it at once. With `reid_window_s: 0`
  tracks end as soon as they are lost.
- Restarts: `carry_over` hands the tracker, before its first frame, the tracks the previous run
  left open (with `resume_state`'s memory, see resume.py). They go on by the rules above: a
  detection that matches one continues it (reported in `revived`), one unseen too long is lost
  and ends, so an insect sitting through a restart is one track, not two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

import numpy as np

from edge.classify.taxonomy import Taxonomy
from edge.classify.types import Classification
from edge.config import TrackerConfig
from edge.detect.base import Box, Detection
from edge.track import TrackingError
from edge.track.appearance import appearance_distances
from edge.track.assignment import linear_sum_assignment
from edge.track.resume import ResumeState
from edge.track.vote import TaxonVote

TrackStatus = Literal["tentative", "confirmed", "ended", "discarded"]

# Cost of a gated (impossible) pair; finite so linear_sum_assignment always has a solution.
_GATED = 1e6
# Added to tentative tracks' costs so an established track wins a detection they both want.
_TENTATIVE_PENALTY = 0.05
# Weight of a new crop's histogram in a track's running appearance.
_APPEARANCE_RATE = 0.3
# Boxes "touch" (a piece of the same insect, see Tracker._touched_piece_of) when the gap between
# them is at most this share of the larger box's diagonal, or _TOUCH_MIN_PX.
_TOUCH = 0.02
_TOUCH_MIN_PX = 2


@dataclass(frozen=True, slots=True)
class TrackInput:
    """One detection handed to the tracker.

    detection_id: the id the detection is stored under (kept as a track's best detection).
    classification: the classifier's answer for its crop, None when no classifier runs.
    appearance: `appearance_descriptor(crop)`, or None to match on geometry alone.
    embedding: the classifier's penultimate features for the crop (`Classification.embedding`);
        in time-lapse mode they decide whether two snapshots show the same insect, where both
        sides have them (the colour histogram elsewhere).
    """

    detection: Detection
    detection_id: int
    classification: Classification | None = None
    appearance: np.ndarray | None = None
    embedding: np.ndarray | None = None


@dataclass
class TrackState:
    """A snapshot of one track (the tracker hands out copies, never its own objects).

    status: "tentative" (not counted yet), "confirmed" (counts), "ended" (confirmed and
        finished: final), "discarded" (never confirmed: noise, not counted).
    first_seen / last_seen: times of its first and latest own detection.
    hits: frames with a detection; misses: consecutive frames without one.
    edge_hits: of those, detections whose box touched the frame's border (a sliver of an insect
        outside the frame, when every hit is one).
    box: latest box (during a merge, its predicted place inside the merged box).
    best_detection_id: detection with the highest classification score, else the largest;
        best_box: its box (what the insect's size is measured on).
    level / label / score / votes: the confidence-weighted vote (see vote.py).
    moved_px: path length of the box centre.
    occluded: hidden inside another insect's detection in the latest frame.
    revivals: how often re-identification brought it back.
    hops: how often it was followed across a jump (see `Tracker._hops`).
    ended_at: when it was ended or discarded.
    """

    track_id: int
    status: TrackStatus
    first_seen: datetime
    last_seen: datetime
    hits: int
    misses: int
    box: Box
    best_detection_id: int
    level: str | None = None
    label: str | None = None
    score: float = 0.0
    votes: dict[str, dict[str, float]] = field(default_factory=dict)
    moved_px: float = 0.0
    occluded: bool = False
    revivals: int = 0
    hops: int = 0
    ended_at: datetime | None = None
    edge_hits: int = 0
    best_box: Box | None = None


@dataclass
class TrackUpdate:
    """What one frame changed.

    assignments: a track id for every input, in input order.
    confirmed: tracks that became confirmed in this frame (each is reported once).
    ended: tracks finished in this frame: "discarded" (never confirmed) or "ended" (final).
    active: every open track (tentative and confirmed) after this frame.
    revived: lost confirmed tracks that re-identification brought back in this frame.
    """

    assignments: list[int]
    confirmed: list[TrackState]
    ended: list[TrackState]
    active: list[TrackState]
    revived: list[TrackState] = field(default_factory=list)


class _Track:
    """The tracker's own record of a track: the public state plus motion and vote memory."""

    def __init__(self, state: TrackState, vote: TaxonVote, appearance: np.ndarray | None) -> None:
        self.state = state
        self.vote = vote
        self.appearance = appearance
        self.embedding: np.ndarray | None = None  # running mean of its crops' embeddings (unit length)
        # The last box seen on its own (not merged) and when: the origin of every prediction.
        self.anchor_box = state.box
        self.first_box = state.box
        self.first_frame = self.last_frame = 0  # frame numbers (Tracker counts its updates)
        self.anchor_time = state.first_seen
        # Real misses since then: the prediction decays with each. Frames hidden in a merged
        # box do not count, the insect is known to be there and keeps moving as it did.
        self.missed_since_anchor = 0
        self.velocity = (0.0, 0.0)  # px/s, smoothed
        self.miss_weight = 0.0  # misses, counting occluded frames at a fraction
        self.last_evidence = state.first_seen  # seen, or hidden inside a merged detection
        self.best_key: tuple[float, float, float] = (-1.0, -1.0, -1.0)
        self.carried = False  # left open by the previous run and not seen again in this one yet

    def predicted_box(self, timestamp: datetime, max_shift: float, decay: float) -> Box:
        """Anchor box moved at the velocity, damped by `decay` per missed frame.

        The shift is capped at `max_shift` px, so a bad velocity cannot throw the track away.
        """
        vx, vy = self.velocity
        if vx == 0.0 and vy == 0.0:
            return self.anchor_box
        dt = (timestamp - self.anchor_time).total_seconds()
        damping = decay**self.missed_since_anchor
        dx, dy = vx * dt * damping, vy * dt * damping
        length = math.hypot(dx, dy)
        if length > max_shift > 0:
            dx, dy = dx * max_shift / length, dy * max_shift / length
        return _shift(self.anchor_box, dx, dy)


def _shift(box: Box, dx: float, dy: float) -> Box:
    ix, iy = round(dx), round(dy)
    return Box(box.x0 + ix, box.y0 + iy, box.x1 + ix, box.y1 + iy)


def _diagonal(box: Box) -> float:
    return max(1.0, math.hypot(box.width, box.height))


def _union(main: Detection, pieces: Sequence[Detection]) -> Detection:
    """One detection covering `main` and the fragments cut from the same insect."""
    boxes = [main.box, *(p.box for p in pieces)]
    return Detection(
        box=Box(
            min(b.x0 for b in boxes),
            min(b.y0 for b in boxes),
            max(b.x1 for b in boxes),
            max(b.y1 for b in boxes),
        ),
        area_px=main.area_px + sum(p.area_px for p in pieces),
        score=max(main.score, *(p.score for p in pieces)),
    )


def _gap(a: Box, b: Box) -> float:
    """Shortest distance between two boxes (0 when they overlap or touch)."""
    dx = max(0, max(a.x0, b.x0) - min(a.x1, b.x1))
    dy = max(0, max(a.y0, b.y0) - min(a.y1, b.y1))
    return math.hypot(dx, dy)


def _coverage(inner: Box, outer: Box) -> float:
    """Share of `inner`'s area that lies inside `outer`."""
    ix = max(0, min(inner.x1, outer.x1) - max(inner.x0, outer.x0))
    iy = max(0, min(inner.y1, outer.y1) - max(inner.y0, outer.y0))
    return ix * iy / inner.area if inner.area > 0 else 0.0


def _clip_inside(box: Box, outer: Box) -> Box:
    """Shift `box` the least so it lies inside `outer` (centred where it is larger)."""

    def axis(lo: int, hi: int, olo: int, ohi: int) -> int:
        if hi - lo >= ohi - olo:
            return round((olo + ohi - (hi - lo)) / 2) - lo
        if lo < olo:
            return olo - lo
        if hi > ohi:
            return ohi - hi
        return 0

    return _shift(box, axis(box.x0, box.x1, outer.x0, outer.x1), axis(box.y0, box.y1, outer.y0, outer.y1))


def _boxes(boxes: Sequence[Box]) -> np.ndarray:
    return np.array([(b.x0, b.y0, b.x1, b.y1) for b in boxes], dtype=np.float64).reshape(-1, 4)


def _geometry(tracks: np.ndarray, dets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IoU, centre distance, size cost = 1 - smaller area / larger area), each T x D."""
    tx0, ty0, tx1, ty1 = (tracks[:, i : i + 1] for i in range(4))
    dx0, dy0, dx1, dy1 = (dets[None, :, i] for i in range(4))
    iw = np.clip(np.minimum(tx1, dx1) - np.maximum(tx0, dx0), 0, None)
    ih = np.clip(np.minimum(ty1, dy1) - np.maximum(ty0, dy0), 0, None)
    inter = iw * ih
    area_t = (tx1 - tx0) * (ty1 - ty0)
    area_d = (dx1 - dx0) * (dy1 - dy0)
    union = area_t + area_d - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
    dist = np.hypot((tx0 + tx1) / 2 - (dx0 + dx1) / 2, (ty0 + ty1) / 2 - (dy0 + dy1) / 2)
    size = 1.0 - np.minimum(area_t, area_d) / np.maximum(np.maximum(area_t, area_d), 1e-9)
    return iou, dist, size


class Tracker:
    """Assigns detections to tracks frame by frame; see the module docstring for the rules.

    first_track_id: the first id handed out (the pipeline passes the database's next id, so
        ids stay unique across restarts). Ids of discarded tentative tracks are not reused.
    """

    def __init__(self, cfg: TrackerConfig, taxonomy: Taxonomy | None = None, first_track_id: int = 1) -> None:
        if not isinstance(cfg, TrackerConfig):
            raise TrackingError(f"Tracker: expected a TrackerConfig, got {type(cfg).__name__}")
        if cfg.weight_iou + cfg.weight_distance + cfg.weight_size <= 0:
            raise TrackingError(
                "tracker: weight_iou, weight_distance and weight_size are all 0; "
                "expected at least one positive geometric weight"
            )
        if first_track_id < 1:
            raise TrackingError(f"Tracker: first_track_id must be >= 1, got {first_track_id}")
        self.cfg = cfg.effective()  # time-lapse: the mode's defaults where the config sets nothing
        self.timelapse = cfg.mode == "timelapse"
        self.taxonomy = taxonomy
        self._next_id = first_track_id
        self._active: list[_Track] = []
        self._lost: list[_Track] = []  # confirmed, waiting for re-identification
        self._last_time: datetime | None = None
        self._descriptor_size: int | None = None
        self._embedding_size: int | None = None
        self._embeddings: list[np.ndarray | None] = []  # this frame's, by input position
        self._frame = 0
        self._carrying = False  # some carried track has not been seen again yet (see _fit_carried)

    # ------------------------------------------------------------ public API

    def active_tracks(self) -> list[TrackState]:
        """Snapshots of every open (tentative or confirmed) track."""
        return [_snapshot(t) for t in self._active]

    def lost_tracks(self) -> list[TrackState]:
        """Snapshots of confirmed tracks waiting to be re-identified (not yet ended)."""
        return [_snapshot(t) for t in self._lost]

    def carry_over(self, tracks: Sequence[tuple[TrackState, ResumeState]]) -> None:
        """Before the first frame: continue the confirmed tracks a previous run left open.

        Each comes back as it was saved (last box and time, hits, votes, colours, embedding),
        open or waiting for re-identification; the first frames decide by the usual rules
        whether the insect is still there. Ids above the carried ones are handed out next.
        """
        if self._frame:
            raise TrackingError("tracker: carry_over after the first frame; expected it before any update")
        for saved, resume in tracks:
            if saved.status not in ("confirmed", "ended"):
                raise TrackingError(
                    f"tracker: carried track {saved.track_id} is {saved.status!r}; expected a counted one"
                )
            state = replace(
                saved,
                status="confirmed",
                misses=0,
                occluded=False,
                ended_at=None,
                votes={level: dict(w) for level, w in saved.votes.items()},
            )
            track = _Track(state, TaxonVote(self.taxonomy, self.cfg.vote_min_share), resume.appearance)
            track.vote.restore(resume.vote)
            track.embedding = resume.embedding
            track.best_key = resume.best_key
            if resume.best_box is not None:
                state.best_box = Box(*resume.best_box)
            track.anchor_time = track.last_evidence = state.last_seen
            track.velocity = resume.velocity  # from its last box: a walker is looked for further on
            track.carried = True
            self._carrying = True
            (self._lost if resume.lost and self.cfg.reid_window_s > 0 else self._active).append(track)
            self._next_id = max(self._next_id, state.track_id + 1)

    def resume_state(self, track_id: int, counted: bool = False) -> ResumeState | None:
        """What a restarted tracker needs to continue this open or lost track (None: not held)."""
        for lost, pool in ((False, self._active), (True, self._lost)):
            for track in pool:
                if track.state.track_id == track_id:
                    return ResumeState(
                        appearance=track.appearance,
                        embedding=track.embedding,
                        vote=track.vote.state(),
                        best_key=track.best_key,
                        best_box=None if (b := track.state.best_box) is None else (b.x0, b.y0, b.x1, b.y1),
                        velocity=track.velocity,
                        lost=lost,
                        counted=counted,
                    )
        return None

    def update(self, timestamp: datetime, inputs: Sequence[TrackInput]) -> TrackUpdate:
        """Assign this frame's detections to tracks and advance every track's lifecycle."""
        self._check_time(timestamp)
        appearances = self._check_inputs(inputs)
        self._embeddings = self._check_embeddings(inputs)
        self._fit_carried(timestamp)
        self._frame += 1
        confirmed: list[_Track] = []
        ended: list[_Track] = []
        revived: list[_Track] = []

        # Tracks unseen for longer than max_gap_s (time-lapse gaps, a stalled camera) are lost first.
        for track in list(self._active):
            if (timestamp - track.last_evidence).total_seconds() > self.cfg.max_gap_s:
                self._lose(track, timestamp, ended)

        tracks = list(self._active)
        matches = self._assign(tracks, inputs, appearances, timestamp)
        det_owner: dict[int, _Track] = {d: tracks[t] for t, d in matches.items()}
        unmatched_tracks = [tracks[t] for t in range(len(tracks)) if t not in matches]

        # Occlusion: an unmatched track that lies mostly inside a detection is hidden by (or
        # merged into) it. If that detection found no track, it is this track's, as a merge.
        merged: set[int] = set()
        occluded: dict[_Track, Box] = {}
        unmatched_tracks.sort(key=lambda tr: (tr.state.status != "confirmed", -tr.state.hits))
        for track in unmatched_tracks:
            det = self._covering_detection(track, inputs, timestamp)
            if det is None:
                continue
            if det in det_owner:
                merged.add(det)
                occluded[track] = inputs[det].detection.box
            elif not self._unlike_features(track, det):
                det_owner[det] = track

        fragments = self._fragments(det_owner, merged, inputs, appearances)
        for det, track in det_owner.items():
            item = inputs[det]
            pieces = [inputs[f].detection for f, owner in fragments.items() if owner is track]
            if pieces:
                item = replace(item, detection=_union(item.detection, pieces))
            self._hit(track, item, appearances[det], self._embeddings[det], timestamp, merged=det in merged)
        det_owner.update(fragments)
        owners = {id(track) for track in det_owner.values()}
        for track, cover in occluded.items():
            self._occlude(track, cover, timestamp, ended)
        for track in unmatched_tracks:
            if id(track) not in owners and track not in occluded:
                self._miss(track, timestamp, ended)

        # Re-identification of lost tracks, then new tentative tracks for what is left; either
        # way the pieces of one insect cut in two by the detector go with it.
        free = [d for d in range(len(inputs)) if d not in det_owner]
        groups = self._new_insects(free, inputs, appearances)

        def whole(det: int) -> TrackInput:
            pieces = [inputs[p].detection for p in groups[det]]
            item = inputs[det]
            return replace(item, detection=_union(item.detection, pieces)) if pieces else item

        for det, track in self._reidentify(list(groups), inputs, appearances, timestamp).items():
            self._lost.remove(track)
            self._active.append(track)
            track.state.revivals += 1
            track.velocity = (0.0, 0.0)  # it sat still (or was missed) meanwhile
            self._hit(track, whole(det), appearances[det], self._embeddings[det], timestamp, merged=False)
            det_owner[det] = track
            revived.append(track)
        for det, pieces in groups.items():
            if det not in det_owner:
                det_owner[det] = self._new_track(
                    whole(det), appearances[det], self._embeddings[det], timestamp
                )
            det_owner.update((piece, det_owner[det]) for piece in pieces)

        # Tentative tracks with enough hits confirm, unless they may be a counted insect that hopped.
        ready = [
            t for t in self._active if t.state.status == "tentative" and t.state.hits >= self.cfg.confirm_hits
        ]
        hops = self._hops(ready)
        for new in ready:
            old = hops.get(new)
            if old is None:
                new.state.status = "confirmed"
                confirmed.append(new)
            elif old in self._lost or old.state.misses >= self.cfg.hop_wait_frames:
                self._absorb(old, new, timestamp)
                ended.append(new)
                if old in self._lost:
                    self._lost.remove(old)
                    self._active.append(old)
                    revived.append(old)
                for det, track in det_owner.items():
                    if track is new:
                        det_owner[det] = old
            # else: wait; if the old insect shows up at its place again, this one is new

        self._expire_lost(timestamp, ended)
        for track in set(det_owner.values()):  # a carried track seen again: this run's from now on
            if track.carried:
                track.carried = False
                if track not in revived:
                    revived.append(track)
        return TrackUpdate(
            assignments=[det_owner[d].state.track_id for d in range(len(inputs))],
            confirmed=[_snapshot(t) for t in confirmed],
            ended=[_snapshot(t) for t in ended],
            active=[_snapshot(t) for t in self._active],
            revived=[_snapshot(t) for t in revived],
        )

    def finish(self, timestamp: datetime) -> list[TrackState]:
        """End every open and lost track (graceful shutdown); returns them, ended or discarded."""
        self._check_time(timestamp)
        out: list[_Track] = []
        for track in [*self._active, *self._lost]:
            self._end(track, timestamp)
            out.append(track)
        self._active.clear()
        self._lost.clear()
        return [_snapshot(t) for t in out]

    # ------------------------------------------------------------ validation

    def _check_time(self, timestamp: datetime) -> None:
        if not isinstance(timestamp, datetime):
            raise TrackingError(f"tracker: timestamp must be a datetime, got {type(timestamp).__name__}")
        previous = self._last_time
        if previous is not None:
            if (timestamp.tzinfo is None) != (previous.tzinfo is None):
                raise TrackingError(
                    f"tracker: timestamp {timestamp.isoformat()} mixes timezone-aware and naive times "
                    f"(previous frame: {previous.isoformat()}); expected UTC-aware times throughout"
                )
            if timestamp < previous:
                raise TrackingError(
                    f"tracker: timestamp {timestamp.isoformat()} is earlier than the previous frame's "
                    f"{previous.isoformat()}; expected frames in time order"
                )
        self._last_time = timestamp

    def _unlike_features(self, track: _Track, det: int) -> bool:
        """Time-lapse: do the model's features say this detection is another insect than `track`?"""
        embedding = self._embeddings[det]
        if not self.timelapse or track.embedding is None or embedding is None:
            return False
        return float(1.0 - track.embedding @ embedding) > self.cfg.link_max_embedding

    def _check_embeddings(self, inputs: Sequence[TrackInput]) -> list[np.ndarray | None]:
        """Unit-length float64 embeddings (None where a detection has none); one size per run."""
        out: list[np.ndarray | None] = []
        for item in inputs:
            if item.embedding is None:
                out.append(None)
                continue
            vector = np.asarray(item.embedding, dtype=np.float64).reshape(-1)
            if vector.size == 0 or not np.all(np.isfinite(vector)):
                raise TrackingError(
                    f"tracker: detection {item.detection_id} embedding must be a non-empty vector of finite "
                    f"numbers, got shape {np.shape(item.embedding)}"
                )
            if self._embedding_size is None:
                self._embedding_size = vector.size
            if vector.size != self._embedding_size:
                raise TrackingError(
                    f"tracker: detection {item.detection_id} embedding has {vector.size} values; "
                    f"earlier detections had {self._embedding_size}"
                )
            norm = float(np.linalg.norm(vector))
            out.append(vector / norm if norm > 0 else None)
        return out

    def _check_inputs(self, inputs: Sequence[TrackInput]) -> list[np.ndarray | None]:
        """Validate boxes and descriptors; return L1-normalised float64 descriptors."""
        out: list[np.ndarray | None] = []
        for item in inputs:
            if not isinstance(item, TrackInput):
                raise TrackingError(f"tracker: expected TrackInput items, got {type(item).__name__}")
            box = item.detection.box
            if box.width <= 0 or box.height <= 0:
                raise TrackingError(
                    f"tracker: detection {item.detection_id} has an empty box {box}; "
                    "expected x1 > x0 and y1 > y0"
                )
            if item.appearance is None:
                out.append(None)
                continue
            hist = np.asarray(item.appearance, dtype=np.float64)
            if hist.ndim != 1 or hist.size == 0 or not np.all(np.isfinite(hist)) or np.any(hist < 0):
                raise TrackingError(
                    f"tracker: detection {item.detection_id} appearance must be a 1-D histogram of "
                    f"non-negative numbers, got shape {hist.shape}"
                )
            if self._descriptor_size is None:
                self._descriptor_size = hist.size
            if hist.size != self._descriptor_size:
                raise TrackingError(
                    f"tracker: detection {item.detection_id} appearance has {hist.size} bins; "
                    f"earlier detections had {self._descriptor_size}"
                )
            total = hist.sum()
            out.append(hist / total if total > 0 else None)
        return out

    def _fit_carried(self, timestamp: datetime) -> None:
        """Drop carried tracks seen after this frame (frames replayed from an earlier time are not
        their continuation), and forget a carried track's colours or embedding when this run's are
        of another size (another software version or model): it is then matched by place and size.
        Nothing to do (and no list rebuilt per frame) once no carried track waits any more."""
        if not self._carrying:
            return
        self._active = [t for t in self._active if not (t.carried and t.state.last_seen > timestamp)]
        self._lost = [t for t in self._lost if not (t.carried and t.state.last_seen > timestamp)]
        carried = [t for t in [*self._active, *self._lost] if t.carried]
        self._carrying = bool(carried)
        for track in carried:
            size, embedding_size = self._descriptor_size, self._embedding_size
            if track.appearance is not None and size is not None and track.appearance.size != size:
                track.appearance = None
            if (
                track.embedding is not None
                and embedding_size is not None
                and track.embedding.size != embedding_size
            ):
                track.embedding = None

    # ------------------------------------------------------------ assignment

    def _max_shift(self, track: _Track) -> float:
        return self.cfg.max_distance * _diagonal(track.anchor_box)

    def _reference_box(self, track: _Track, timestamp: datetime) -> Box:
        return track.predicted_box(timestamp, self._max_shift(track), self.cfg.velocity_decay)

    def _cost_terms(
        self,
        hyps: np.ndarray,
        radius: np.ndarray,
        det_boxes: np.ndarray,
        app_cost: np.ndarray,
        app_mask: np.ndarray,
    ) -> np.ndarray:
        """Weighted, normalised cost (T x D) against one box hypothesis per track; gated pairs = _GATED."""
        cfg = self.cfg
        iou, dist, size = _geometry(hyps, det_boxes)
        dnorm = dist / radius[:, None]
        weight = cfg.weight_iou + cfg.weight_distance + cfg.weight_size + cfg.weight_appearance * app_mask
        cost = (
            cfg.weight_iou * (1.0 - iou)
            + cfg.weight_distance * np.minimum(dnorm, 1.0)
            + cfg.weight_size * size
            + cfg.weight_appearance * app_cost * app_mask
        ) / weight
        return np.where(dnorm > 1.0, _GATED, cost)

    def _gate_unlike(
        self, cost: np.ndarray, app_cost: np.ndarray, app_mask: np.ndarray, limit: np.ndarray
    ) -> np.ndarray:
        """Forbid linking across a gap (re-identification, hops) when the colours differ.

        Frame-to-frame matching may lean on geometry, but a link across a gap asserts that a
        *lost* insect is back; an insect of another colour at that spot is a new count.
        """
        unlike = (app_mask > 0) & (app_cost > limit)
        return np.where(unlike, _GATED, cost)

    def _appearance_cost(
        self,
        tracks: Sequence[_Track],
        appearances: Sequence[np.ndarray | None],
        embeddings: Sequence[np.ndarray | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(distance, mask, limit, embedded) T x D; mask is 1 where both sides have a descriptor,
        embedded True where the distance is the embeddings'.

        Colour histograms give the Bhattacharyya distance, gated at `link_max_appearance`. In
        time-lapse mode, where both sides have the classifier's embedding, the cosine distance
        (1 - cos, at most 1) replaces it, gated at `link_max_embedding`.
        """
        cost = np.zeros((len(tracks), len(appearances)))
        mask = np.zeros_like(cost)
        limit = np.full_like(cost, self.cfg.link_max_appearance)
        embedded = np.zeros(cost.shape, dtype=bool)
        t_idx = [i for i, t in enumerate(tracks) if t.appearance is not None]
        d_idx = [j for j, a in enumerate(appearances) if a is not None]
        if t_idx and d_idx:
            ta = np.stack([tracks[i].appearance for i in t_idx])  # type: ignore[misc]
            da = np.stack([appearances[j] for j in d_idx])  # type: ignore[misc]
            cost[np.ix_(t_idx, d_idx)] = appearance_distances(ta, da)
            mask[np.ix_(t_idx, d_idx)] = 1.0
        if self.timelapse and embeddings is not None:
            t_idx = [i for i, t in enumerate(tracks) if t.embedding is not None]
            d_idx = [j for j, e in enumerate(embeddings) if e is not None]
            if t_idx and d_idx:
                te = np.stack([tracks[i].embedding for i in t_idx])  # type: ignore[misc]
                de = np.stack([embeddings[j] for j in d_idx])  # type: ignore[misc]
                cost[np.ix_(t_idx, d_idx)] = np.clip(1.0 - te @ de.T, 0.0, 1.0)
                mask[np.ix_(t_idx, d_idx)] = 1.0
                limit[np.ix_(t_idx, d_idx)] = self.cfg.link_max_embedding
                embedded[np.ix_(t_idx, d_idx)] = True
        return cost, mask, limit, embedded

    def _assign(
        self,
        tracks: Sequence[_Track],
        inputs: Sequence[TrackInput],
        appearances: Sequence[np.ndarray | None],
        timestamp: datetime,
    ) -> dict[int, int]:
        """Hungarian assignment: {track index: detection index} for the pairs under the gates."""
        if not tracks or not inputs:
            return {}
        det_boxes = _boxes([i.detection.box for i in inputs])
        last = _boxes([t.state.box for t in tracks])
        predicted = _boxes([self._reference_box(t, timestamp) for t in tracks])
        # The gate widens slowly with missed frames: an unseen insect may have moved further.
        # Capped at max_misses: a track hidden under another insect for many frames must not
        # end up claiming an arrival anywhere on the screen.
        radius = np.array(
            [
                self.cfg.max_distance
                * _diagonal(t.state.box)
                * math.sqrt(1.0 + min(t.state.misses, self.cfg.max_misses))
                for t in tracks
            ]
        )
        app_cost, app_mask, limit, embedded = self._appearance_cost(tracks, appearances, self._embeddings)
        cost = np.minimum(
            self._cost_terms(last, radius, det_boxes, app_cost, app_mask),
            self._cost_terms(predicted, radius, det_boxes, app_cost, app_mask),
        )
        cost = np.where(cost > self.cfg.max_cost, _GATED, cost)
        # A jump (no overlap with where the track was or was heading) or a match after two or
        # more missed frames links across a gap: then the colours must agree, because an insect
        # leaving as another lands nearby is common on a busy sheet.
        iou_last, _, _ = _geometry(last, det_boxes)
        iou_predicted, _, _ = _geometry(predicted, det_boxes)
        unseen = np.array([t.state.misses >= 2 for t in tracks])
        across_gap = unseen[:, None] | (np.maximum(iou_last, iou_predicted) <= 0.0)
        # Snapshots minutes apart: every link is across a gap in time. Where the model's features
        # are there to judge it, a different insect in the same place must not pass for this one.
        across_gap |= embedded
        cost = np.where(across_gap, self._gate_unlike(cost, app_cost, app_mask, limit), cost)
        tentative = np.array([t.state.status == "tentative" for t in tracks])
        cost = np.where(tentative[:, None] & (cost < _GATED), cost + _TENTATIVE_PENALTY, cost)
        rows, cols = linear_sum_assignment(cost)
        return {int(r): int(c) for r, c in zip(rows, cols, strict=True) if cost[r, c] < _GATED}

    def _fragments(
        self,
        det_owner: dict[int, _Track],
        merged: set[int],
        inputs: Sequence[TrackInput],
        appearances: Sequence[np.ndarray | None],
    ) -> dict[int, _Track]:
        """Unclaimed detections that are pieces of an insect whose track matched this frame.

        A detector sometimes cuts one insect in two (a beetle at its waist, a moth across a
        pale band). A free detection lying mostly (`fragment_overlap`) inside the previous box
        of a track that matched another detection is such a piece: it joins that track (its
        box widens the track's box) and never starts a count of its own. So is a free detection
        that touches the track's detection and has its colours (`_touched_piece_of`). Returns
        {det: track}. A small insect landing on a large one is therefore counted once it steps
        off it.
        """
        if self.cfg.fragment_overlap >= 1.0:
            return {}
        matched = [(track, det) for det, track in det_owner.items() if det not in merged]
        out: dict[int, _Track] = {}
        for det in range(len(inputs)):
            if det in det_owner:
                continue
            box = inputs[det].detection.box
            best, best_cover = None, self.cfg.fragment_overlap
            for track, _ in matched:
                cover = _coverage(box, track.state.box)
                if cover >= best_cover:
                    best, best_cover = track, cover
            if best is None:  # not inside a track's box: maybe touching one of its detections
                owner = self._touched_piece_of(det, [d for _, d in matched], inputs, appearances)
                best = None if owner is None else det_owner[owner]
            if best is not None:
                out[det] = best
        return out

    def _touched_piece_of(
        self,
        det: int,
        candidates: Sequence[int],
        inputs: Sequence[TrackInput],
        appearances: Sequence[np.ndarray | None],
    ) -> int | None:
        """The detection that `det` is a cut-off piece of: touching it, no larger, of its colours.

        The detector cuts an insect into blobs that sit edge to edge (a mantisfly's pale wing
        tips apart from its body, a moth's pale band between its head and its wings; real
        light-trap frames, bench/real/METHOD.md): their boxes touch or overlap, and their colour
        histograms are as close as one insect's crops are (Bhattacharyya 0.19-0.33 measured
        there), while a different insect beside it differed by 0.73. So a piece needs a box
        within `_TOUCH` of the other's, an area no larger, and a colour distance under
        `link_max_appearance`; without a colour descriptor geometry alone never merges.
        Returns the candidate detection, or None.
        """
        if self.cfg.fragment_overlap >= 1.0 or appearances[det] is None:
            return None
        box = inputs[det].detection.box
        best, best_distance = None, self.cfg.link_max_appearance
        for other in candidates:
            other_box, other_app = inputs[other].detection.box, appearances[other]
            if other == det or other_app is None or other_box.area < box.area:
                continue
            if _gap(box, other_box) > max(_TOUCH_MIN_PX, _TOUCH * _diagonal(other_box)):
                continue
            distance = float(appearance_distances(other_app[None, :], appearances[det][None, :])[0, 0])
            if distance < best_distance:
                best, best_distance = other, distance
        return best

    def _new_insects(
        self, free: Sequence[int], inputs: Sequence[TrackInput], appearances: Sequence[np.ndarray | None]
    ) -> dict[int, list[int]]:
        """Group the detections that start tracks in this frame: {main detection: its pieces}.

        Largest first, each free detection is either a piece of a larger one already kept
        (`_touched_piece_of`: the detector cut one insect in two) or a new insect. So an insect
        whose first frame shows it in two blobs starts one track, not two.
        """
        groups: dict[int, list[int]] = {}
        for det in sorted(free, key=lambda d: -inputs[d].detection.box.area):
            owner = self._touched_piece_of(det, list(groups), inputs, appearances)
            if owner is None:
                groups[det] = []
            else:
                groups[owner].append(det)
        return groups

    def _covering_detection(
        self, track: _Track, inputs: Sequence[TrackInput], timestamp: datetime
    ) -> int | None:
        """The detection that holds most of the track's (last or predicted) box, if enough."""
        best, best_cover = None, self.cfg.occlusion_overlap
        refs = (track.state.box, self._reference_box(track, timestamp))
        for j, item in enumerate(inputs):
            cover = max(_coverage(ref, item.detection.box) for ref in refs)
            if cover >= best_cover:
                best, best_cover = j, cover
        return best

    def _reidentify(
        self,
        free: Sequence[int],
        inputs: Sequence[TrackInput],
        appearances: Sequence[np.ndarray | None],
        timestamp: datetime,
    ) -> dict[int, _Track]:
        """Match unclaimed detections to lost tracks at (nearly) the same place: {det: track}."""
        if not free or not self._lost or self.cfg.reid_window_s <= 0:
            return {}
        candidates = [
            t for t in self._lost if (timestamp - t.state.last_seen).total_seconds() <= self.cfg.reid_window_s
        ]
        if not candidates:
            return {}
        det_boxes = _boxes([inputs[d].detection.box for d in free])
        anchors = _boxes([t.state.box for t in candidates])  # last known place (inside a merge: predicted)
        radius = np.array([self.cfg.reid_max_distance * _diagonal(t.state.box) for t in candidates])
        app_cost, app_mask, limit, _ = self._appearance_cost(
            candidates, [appearances[d] for d in free], [self._embeddings[d] for d in free]
        )
        cost = self._cost_terms(anchors, radius, det_boxes, app_cost, app_mask)
        cost = np.where(cost > self.cfg.max_cost, _GATED, cost)
        cost = self._gate_unlike(cost, app_cost, app_mask, limit)
        rows, cols = linear_sum_assignment(cost)
        return {
            free[int(c)]: candidates[int(r)] for r, c in zip(rows, cols, strict=True) if cost[r, c] < _GATED
        }

    def _hops(self, ready: Sequence[_Track]) -> dict[_Track, _Track]:
        """Pair tentative tracks ready to confirm with counted tracks that vanished as they appeared.

        An insect that hops or flies to another spot on the sheet vanishes from one place and
        appears at another between two frames. The old track must have vanished at most
        `hop_wait_frames` frames before the new one appeared; the caller links them only once
        the old one has also stayed unseen for `hop_wait_frames` frames, so detector flicker
        (an insect missed for a frame or two while another one arrives) is not taken for a
        hop. A pair is linked only when it is the only good candidate both ways (size, colour,
        within `hop_max_distance`), so two insects that come and go at once are left apart.
        Returns {new track: old track}.
        """
        if not ready or self.cfg.hop_max_distance <= 0:
            return {}
        olds = [
            t for t in [*self._active, *self._lost] if t.state.status == "confirmed" and not t.state.occluded
        ]
        if not olds:
            return {}
        news = list(ready)
        anchors = _boxes([t.anchor_box for t in olds])
        firsts = _boxes([t.first_box for t in news])
        radius = np.array([self.cfg.hop_max_distance * _diagonal(t.anchor_box) for t in olds])
        app_cost, app_mask, limit, _ = self._appearance_cost(
            olds, [t.appearance for t in news], [t.embedding for t in news]
        )
        cost = self._cost_terms(anchors, radius, firsts, app_cost, app_mask)
        cost = self._gate_unlike(cost, app_cost, app_mask, limit)
        for i, old in enumerate(olds):
            for j, new in enumerate(news):
                frames = new.first_frame - old.last_frame
                if not 0 < frames <= self.cfg.hop_wait_frames + 1:
                    cost[i, j] = _GATED
        good = cost <= self.cfg.max_cost
        pairs: dict[_Track, _Track] = {}
        for i, j in zip(*np.nonzero(good), strict=True):
            if good[i].sum() == 1 and good[:, j].sum() == 1:
                pairs[news[int(j)]] = olds[int(i)]
        return pairs

    # ------------------------------------------------------------ lifecycle

    def _absorb(self, old: _Track, new: _Track, timestamp: datetime) -> None:
        """Continue `old` (already counted) with `new`'s detections; `new` is discarded."""
        o, n = old.state, new.state
        (ox, oy), (fx, fy) = o.box.center, new.first_box.center
        o.moved_px += math.hypot(fx - ox, fy - oy) + n.moved_px
        o.hits += n.hits
        o.edge_hits += n.edge_hits
        old.last_frame = new.last_frame
        o.box, o.misses, o.occluded, o.last_seen = n.box, 0, False, n.last_seen
        o.hops += 1
        old.anchor_box, old.anchor_time, old.missed_since_anchor = new.anchor_box, new.anchor_time, 0
        old.velocity, old.miss_weight, old.last_evidence = new.velocity, 0.0, new.last_evidence
        if new.appearance is not None:
            old.appearance = new.appearance
        old.vote.merge(new.vote)
        result = old.vote.result()
        o.level, o.label, o.score, o.votes = result.level, result.label, result.score, result.votes
        if new.best_key > old.best_key:
            old.best_key, o.best_detection_id, o.best_box = new.best_key, n.best_detection_id, n.best_box
        self._active.remove(new)
        n.status, n.ended_at = "discarded", timestamp

    def _new_track(
        self,
        item: TrackInput,
        appearance: np.ndarray | None,
        embedding: np.ndarray | None,
        timestamp: datetime,
    ) -> _Track:
        box = item.detection.box
        state = TrackState(
            track_id=self._next_id,
            status="tentative",
            first_seen=timestamp,
            last_seen=timestamp,
            hits=0,
            misses=0,
            box=box,
            best_detection_id=item.detection_id,
        )
        self._next_id += 1
        track = _Track(state, TaxonVote(self.taxonomy, self.cfg.vote_min_share), None)
        track.first_frame = self._frame
        self._active.append(track)
        self._hit(track, item, appearance, embedding, timestamp, merged=False)
        return track

    def _hit(
        self,
        track: _Track,
        item: TrackInput,
        appearance: np.ndarray | None,
        embedding: np.ndarray | None,
        timestamp: datetime,
        merged: bool,
    ) -> None:
        """Record a detection for `track` (confirmation is decided at the end of the frame).

        appearance / embedding: the detection's checked descriptors (`_check_inputs`,
        `_check_embeddings`), not the raw ones on `item`.
        """
        state = track.state
        box = item.detection.box
        if merged:
            # One box for several insects: keep this track's own size and motion, place its
            # prediction inside the merged box, and let the crop vote for nobody.
            new_box = _clip_inside(self._reference_box(track, timestamp), box)
        else:
            new_box = box
            dt = (timestamp - track.anchor_time).total_seconds()
            if state.hits > 0 and dt > 0 and not self.timelapse:  # snapshots: no motion to predict
                (ax, ay), (bx, by) = track.anchor_box.center, box.center
                rate = self.cfg.velocity_smoothing
                vx, vy = track.velocity
                track.velocity = (
                    rate * (bx - ax) / dt + (1 - rate) * vx,
                    rate * (by - ay) / dt + (1 - rate) * vy,
                )
            track.anchor_box, track.anchor_time, track.missed_since_anchor = box, timestamp, 0
            if appearance is not None:
                if track.appearance is None:
                    track.appearance = appearance
                else:
                    mixed = (1 - _APPEARANCE_RATE) * track.appearance + _APPEARANCE_RATE * appearance
                    track.appearance = mixed / mixed.sum()
            if embedding is not None:  # unit length (_check_embeddings): a mean of unit vectors
                if track.embedding is None:
                    track.embedding = embedding
                else:
                    mixed = (1 - _APPEARANCE_RATE) * track.embedding + _APPEARANCE_RATE * embedding
                    norm = float(np.linalg.norm(mixed))
                    if norm > 0:
                        track.embedding = mixed / norm
            self._record_classification(track, item)
        if state.hits > 0:
            (ox, oy), (nx, ny) = state.box.center, new_box.center
            state.moved_px += math.hypot(nx - ox, ny - oy)
        state.box = new_box
        state.hits += 1
        state.edge_hits += int(item.detection.at_edge)
        state.misses = 0
        state.occluded = False
        state.last_seen = timestamp
        track.miss_weight = 0.0
        track.last_evidence = timestamp
        track.last_frame = self._frame

    def _record_classification(self, track: _Track, item: TrackInput) -> None:
        """Vote with the crop's classification and keep the best detection for the track's crop."""
        c = item.classification
        area = float(item.detection.box.area)
        key = (1.0, float(c.score), area) if c is not None else (0.0, area, 0.0)
        if key > track.best_key:
            track.best_key = key
            track.state.best_detection_id = item.detection_id
            track.state.best_box = item.detection.box
        if c is None:
            return
        track.vote.add(c)
        result = track.vote.result()
        state = track.state
        state.level, state.label, state.score, state.votes = (
            result.level,
            result.label,
            result.score,
            result.votes,
        )

    def _occlude(self, track: _Track, cover: Box, timestamp: datetime, ended: list[_Track]) -> None:
        """Hidden inside another insect's detection `cover`: the miss counts only a fraction."""
        state = track.state
        new_box = _clip_inside(self._reference_box(track, timestamp), cover)
        (ox, oy), (nx, ny) = state.box.center, new_box.center
        state.moved_px += math.hypot(nx - ox, ny - oy)
        state.box = new_box
        state.misses += 1
        state.occluded = True
        track.miss_weight += self.cfg.occluded_miss_weight
        track.last_evidence = timestamp
        if track.miss_weight >= self._miss_limit(track):
            self._lose(track, timestamp, ended)

    def _miss(self, track: _Track, timestamp: datetime, ended: list[_Track]) -> None:
        track.state.misses += 1
        track.state.occluded = False
        track.missed_since_anchor += 1
        track.miss_weight += 1.0
        if track.miss_weight >= self._miss_limit(track) - 1e-9:
            self._lose(track, timestamp, ended)

    def _miss_limit(self, track: _Track) -> int:
        if track.state.status == "tentative":
            return self.cfg.tentative_max_misses
        return self.cfg.max_misses

    def _lose(self, track: _Track, timestamp: datetime, ended: list[_Track]) -> None:
        """Close an open track: discard a tentative one, hold a confirmed one for re-identification."""
        self._active.remove(track)
        if track.state.status == "confirmed" and self.cfg.reid_window_s > 0:
            track.state.occluded = False
            self._lost.append(track)
            return
        self._end(track, timestamp)
        ended.append(track)

    def _expire_lost(self, timestamp: datetime, ended: list[_Track]) -> None:
        """End lost tracks past the re-identification window, and the oldest beyond the memory cap."""
        keep: list[_Track] = []
        for track in self._lost:
            if (timestamp - track.state.last_seen).total_seconds() > self.cfg.reid_window_s:
                self._end(track, timestamp)
                ended.append(track)
            else:
                keep.append(track)
        keep.sort(key=lambda t: t.state.last_seen)
        while len(keep) > self.cfg.reid_max_tracks:
            track = keep.pop(0)
            self._end(track, timestamp)
            ended.append(track)
        self._lost = keep

    @staticmethod
    def _end(track: _Track, timestamp: datetime) -> None:
        state = track.state
        state.status = "ended" if state.status == "confirmed" else "discarded"
        state.ended_at = timestamp


def _snapshot(track: _Track) -> TrackState:
    """A copy the caller may keep: later frames do not change it."""
    state = track.state
    return replace(state, votes={level: dict(w) for level, w in state.votes.items()})
