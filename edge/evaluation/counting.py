"""Counting evaluation: did the tracker count every insect once?

The product reports counts per night, so the headline figures are about counts, not boxes:
how many distinct insects were there (ground truth), how many confirmed tracks were counted,
which insects were counted twice (a split track), which never, and which tracks match no
insect. MOTA, IDF1 and id switches (the usual tracking scores) come from `motmetrics`,
imported only when asked for, so this module stays cheap to import on the device.

Matching: in every frame, ground-truth boxes and the boxes of confirmed tracks are paired by
the Hungarian algorithm on IoU (pairs below `iou_threshold` never match). Each confirmed
track then maps to the ground-truth insect it was paired with in most frames.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.detect.base import Box
from edge.errors import TrapcamError
from edge.evaluation.metrics import iou_matrix, match_boxes

# frame index -> [(ground-truth insect id, species or None, box)]
GroundTruthFrames = Mapping[int, Sequence[tuple[int, str | None, Box]]]
# frame index -> [(track id, box)]; tracks that never confirmed may be included, they are ignored
TrackFrames = Mapping[int, Sequence[tuple[int, Box]]]


class EvaluationError(TrapcamError):
    """The ground truth or the tracker output handed to the evaluation is inconsistent."""


@dataclass(frozen=True)
class SpeciesCount:
    """Counts for one species: truth, confirmed tracks labelled with it, and of those the correct ones."""

    species: str
    true: int
    counted: int
    correct: int


@dataclass(frozen=True)
class CountReport:
    """What the tracker's counts are worth against ground truth.

    true_count: distinct ground-truth insects seen in any frame.
    counted: confirmed tracks (what the trap reports).
    count_error: (counted - true_count) / true_count, signed (0.0 when both are 0).
    double_counted: insects that two or more confirmed tracks map to; extra_tracks: how many
        tracks beyond one per insect that makes.
    missed: insects no confirmed track maps to. false_tracks: confirmed tracks matching no insect.
    id_switches / mota / idf1: CLEAR-MOT and identity scores (None when not computed).
    track_to_gt: confirmed track id -> insect id (None for a false track).
    gt_to_tracks: insect id -> confirmed track ids mapped to it.
    per_species: by ground-truth species, when species and track labels are given.
    """

    true_count: int
    counted: int
    count_error: float
    double_counted: int
    extra_tracks: int
    missed: int
    false_tracks: int
    id_switches: int | None
    mota: float | None
    idf1: float | None
    frames: int
    track_to_gt: dict[int, int | None] = field(default_factory=dict)
    gt_to_tracks: dict[int, list[int]] = field(default_factory=dict)
    per_species: dict[str, SpeciesCount] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        mot = (
            f", MOTA {self.mota:.3f}, IDF1 {self.idf1:.3f}, id switches {self.id_switches}"
            if self.mota is not None and self.idf1 is not None
            else ""
        )
        return (
            f"{self.counted} counted / {self.true_count} true (error {self.count_error:+.1%}); "
            f"double-counted {self.double_counted} (+{self.extra_tracks} tracks), missed {self.missed}, "
            f"false tracks {self.false_tracks}{mot}"
        )


def _check_unique(frame: int, ids: Sequence[int], what: str) -> None:
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise EvaluationError(
            f"frame {frame}: {what} id(s) {duplicates} appear more than once; expected one box each"
        )


def _mot_scores(
    frames: Sequence[int],
    ground_truth: GroundTruthFrames,
    tracks: Mapping[int, list[tuple[int, Box]]],
    threshold: float,
) -> tuple[int, float, float]:
    """(id switches, MOTA, IDF1) from motmetrics, with IoU distances computed here.

    motmetrics 1.4's own `iou_matrix` uses `np.asfarray`, removed in NumPy 2, so the
    distance matrix (1 - IoU, NaN below the threshold) is built here; its accumulator and
    metrics work with NumPy 2.
    """
    try:
        import motmetrics as mm
    except ImportError:
        raise EvaluationError(
            "MOTA/IDF1 need the motmetrics package (pip install 'trapcam[evaluate]'), "
            "or call evaluate_counts(..., mot_metrics=False)"
        ) from None
    acc = mm.MOTAccumulator(auto_id=False)
    for frame in frames:
        gt = ground_truth.get(frame, ())
        hyp = tracks.get(frame, [])
        iou = iou_matrix([g[2] for g in gt], [h[1] for h in hyp])
        dist = np.where(iou >= threshold, 1.0 - iou, np.nan)
        acc.update([g[0] for g in gt], [h[0] for h in hyp], dist, frameid=frame)
    summary = mm.metrics.create().compute(acc, metrics=["num_switches", "mota", "idf1"], name="run")
    row = summary.loc["run"]
    return int(row["num_switches"]), float(row["mota"]), float(row["idf1"])


def _relative_error(counted: int, true: int) -> float:
    """(counted - true) / true; 0 when both are 0, infinite when insects were counted from nothing."""
    if true == 0:
        return 0.0 if counted == 0 else float("inf")
    return (counted - true) / true


def evaluate_counts(
    ground_truth: GroundTruthFrames,
    tracks: TrackFrames,
    confirmed: Collection[int],
    labels: Mapping[int, str | None] | None = None,
    iou_threshold: float = 0.3,
    mot_metrics: bool = True,
) -> CountReport:
    """Compare confirmed tracks with ground truth; see `CountReport` for the figures.

    labels: the vote's label per confirmed track id, for per-species counts (optional).
    mot_metrics: also compute MOTA, IDF1 and id switches (needs motmetrics).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise EvaluationError(f"iou_threshold: got {iou_threshold!r}; expected a number in (0, 1]")
    confirmed_ids = set(confirmed)
    species_of: dict[int, str | None] = {}
    for frame, objects in ground_truth.items():
        _check_unique(frame, [o[0] for o in objects], "ground-truth insect")
        for gt_id, species, _box in objects:
            if gt_id in species_of and species_of[gt_id] != species:
                raise EvaluationError(
                    f"frame {frame}: ground-truth insect {gt_id} is {species!r} here but "
                    f"{species_of[gt_id]!r} in an earlier frame; expected one species per insect"
                )
            species_of[gt_id] = species
    # Only confirmed tracks count; tentative ones are noise the trap never reports.
    kept: dict[int, list[tuple[int, Box]]] = {}
    seen_tracks: set[int] = set()
    for frame, items in tracks.items():
        _check_unique(frame, [t[0] for t in items], "track")
        kept[frame] = [(tid, box) for tid, box in items if tid in confirmed_ids]
        seen_tracks.update(tid for tid, _ in kept[frame])
    absent = sorted(confirmed_ids - seen_tracks)
    if absent:
        raise EvaluationError(
            f"confirmed track(s) {absent[:10]} have no box in the tracker output; "
            "expected every confirmed track to appear in at least one frame"
        )

    frames = sorted(set(ground_truth) | set(kept))
    matched_frames: dict[tuple[int, int], list[float]] = {}  # (track, gt) -> [frames, summed IoU]
    for frame in frames:
        gt = ground_truth.get(frame, ())
        hyp = kept.get(frame, [])
        gt_boxes, hyp_boxes = [g[2] for g in gt], [h[1] for h in hyp]
        for gi, hi, iou in match_boxes(gt_boxes, hyp_boxes, iou_threshold):
            tally = matched_frames.setdefault((hyp[hi][0], gt[gi][0]), [0.0, 0.0])
            tally[0] += 1
            tally[1] += iou

    track_to_gt: dict[int, int | None] = {}
    for tid in sorted(confirmed_ids):
        options = [(v[0], v[1], -gid) for (t, gid), v in matched_frames.items() if t == tid]
        track_to_gt[tid] = -max(options)[2] if options else None
    gt_to_tracks: dict[int, list[int]] = {gid: [] for gid in sorted(species_of)}
    for tid, gid in track_to_gt.items():
        if gid is not None:
            gt_to_tracks[gid].append(tid)

    true_count = len(species_of)
    counted = len(confirmed_ids)
    count_error = _relative_error(counted, true_count)
    doubles = [tids for tids in gt_to_tracks.values() if len(tids) >= 2]

    per_species: dict[str, SpeciesCount] = {}
    if labels is not None:
        names = sorted(
            {s for s in species_of.values() if s is not None} | {lab for lab in labels.values() if lab}
        )
        for name in names:
            true = sum(1 for s in species_of.values() if s == name)
            tids = [t for t in confirmed_ids if labels.get(t) == name]
            correct = sum(
                1 for t in tids if track_to_gt[t] is not None and species_of[track_to_gt[t]] == name
            )
            per_species[name] = SpeciesCount(name, true, len(tids), correct)

    switches, mota, idf1 = (
        _mot_scores(frames, ground_truth, kept, iou_threshold) if mot_metrics else (None, None, None)
    )
    return CountReport(
        true_count=true_count,
        counted=counted,
        count_error=count_error,
        double_counted=len(doubles),
        extra_tracks=sum(len(t) - 1 for t in doubles),
        missed=sum(1 for tids in gt_to_tracks.values() if not tids),
        false_tracks=sum(1 for gid in track_to_gt.values() if gid is None),
        id_switches=switches,
        mota=mota,
        idf1=idf1,
        frames=len(frames),
        track_to_gt=track_to_gt,
        gt_to_tracks=gt_to_tracks,
        per_species=per_species,
    )
