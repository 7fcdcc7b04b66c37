"""The figures of `trapcam evaluate`: detection, counts per taxon and classification per level.

Detection: in every processed frame the detector's boxes and the annotated boxes are paired by
the Hungarian algorithm on IoU (scipy's linear_sum_assignment); pairs at or above the IoU
threshold are true positives, the other boxes false positives (detections) or false negatives
(annotations). One insect cut into two boxes is one TP and one FP; two touching insects found
as one box are one TP and one FN: that is what the trap's detector did, so it is kept.

Classification: accuracy counts abstentions ("unsure") as wrong; F1 per class with numpy, macro
F1 as the mean over the classes in the ground truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edge.classify.types import UNSURE
from edge.detect.base import Box

NOT_ANNOTATED = "(not annotated)"  # insects whose annotation stops above this level


@dataclass(frozen=True)
class DetectionScores:
    """Box-level figures over the processed frames (precision None without detections)."""

    frames: int
    truth_boxes: int
    detections: int
    tp: int
    fp: int
    fn: int
    precision: float | None
    recall: float | None
    f1: float | None
    mean_iou: float | None


@dataclass(frozen=True)
class TaxonCount:
    """Counts for one label at one level.

    true: distinct annotated insects with this label; counted: counted tracks whose label at
    this level is this one; correct: of those, the ones mapped to a true insect of this label
    (None for the "unsure" row); count_error: (counted - true) / true (None when true is 0).
    """

    label: str
    true: int
    counted: int
    correct: int | None
    count_error: float | None


@dataclass(frozen=True)
class ClassScores:
    """One class: support (truth), predicted (times the model said it), correct, P/R/F1."""

    label: str
    support: int
    predicted: int
    correct: int
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class LevelScores:
    """One level, one view (crops or tracks): abstentions count as wrong answers."""

    n: int
    correct: int
    abstained: int
    accuracy: float | None
    abstained_share: float | None
    macro_f1: float | None
    per_class: tuple[ClassScores, ...]


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> np.ndarray:
    """IoU of every box in `a` with every box in `b` (vectorised)."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    pa = np.array([(x.x0, x.y0, x.x1, x.y1) for x in a], dtype=np.float64)
    pb = np.array([(x.x0, x.y0, x.x1, x.y1) for x in b], dtype=np.float64)
    ix = np.clip(
        np.minimum(pa[:, None, 2], pb[None, :, 2]) - np.maximum(pa[:, None, 0], pb[None, :, 0]), 0, None
    )
    iy = np.clip(
        np.minimum(pa[:, None, 3], pb[None, :, 3]) - np.maximum(pa[:, None, 1], pb[None, :, 1]), 0, None
    )
    inter = ix * iy
    area_a = np.clip(pa[:, 2] - pa[:, 0], 0, None) * np.clip(pa[:, 3] - pa[:, 1], 0, None)
    area_b = np.clip(pb[:, 2] - pb[:, 0], 0, None) * np.clip(pb[:, 3] - pb[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_boxes(truth: Sequence[Box], found: Sequence[Box], threshold: float) -> list[tuple[int, int, float]]:
    """Hungarian pairs (truth index, found index, IoU) with IoU >= threshold."""
    iou = iou_matrix(truth, found)
    if iou.size == 0:
        return []
    from edge.track.assignment import linear_sum_assignment

    rows, cols = linear_sum_assignment(-iou)
    return [
        (int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= threshold
    ]


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def f1_of(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def detection_scores(
    frames: int, truth_boxes: int, detections: int, ious: Sequence[float]
) -> DetectionScores:
    """Totals over frames -> TP/FP/FN, precision, recall, F1 and mean IoU of the matches."""
    tp = len(ious)
    precision, recall = _ratio(tp, detections), _ratio(tp, truth_boxes)
    return DetectionScores(
        frames=frames,
        truth_boxes=truth_boxes,
        detections=detections,
        tp=tp,
        fp=detections - tp,
        fn=truth_boxes - tp,
        precision=precision,
        recall=recall,
        f1=f1_of(precision, recall),
        mean_iou=float(np.mean(ious)) if tp else None,
    )


def classification_scores(pairs: Iterable[tuple[str, str | None]]) -> LevelScores:
    """(true label, predicted label or None = abstained) pairs -> accuracy, abstentions, F1.

    Per class (every label in the truth): precision = correct / predicted (0 when never
    predicted), recall = correct / support, F1 their harmonic mean (0 when both are 0).
    Predictions of labels absent from the truth are wrong answers for their true class.
    """
    items = list(pairs)
    n = len(items)
    if n == 0:
        return LevelScores(0, 0, 0, None, None, None, ())
    classes = sorted({t for t, _ in items})
    index = {label: i for i, label in enumerate(classes)}
    true = np.array([index[t] for t, _ in items])
    # -1: abstained or a label outside the truth's classes (never counted as any class's TP or FP)
    pred = np.array([index.get(p, -1) if p is not None else -1 for _, p in items])
    hit = true == pred
    k = len(classes)
    support = np.bincount(true, minlength=k)
    predicted = np.bincount(pred[pred >= 0], minlength=k)
    correct = np.bincount(true[hit], minlength=k)
    precision = np.divide(correct, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros(k), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    abstained = sum(1 for _, p in items if p is None)
    per_class = tuple(
        ClassScores(
            label,
            int(support[i]),
            int(predicted[i]),
            int(correct[i]),
            float(precision[i]),
            float(recall[i]),
            float(f1[i]),
        )
        for i, label in enumerate(classes)
    )
    return LevelScores(
        n=n,
        correct=int(hit.sum()),
        abstained=abstained,
        accuracy=float(hit.sum()) / n,
        abstained_share=abstained / n,
        macro_f1=float(f1.mean()),
        per_class=per_class,
    )


def taxon_counts(
    level: str,
    insects: Mapping[int, Mapping[str, str]],
    track_labels: Mapping[int, str | None],
    track_to_insect: Mapping[int, int | None],
) -> list[TaxonCount]:
    """Per label at `level`: true insects, counted tracks, correct ones, count error; then "unsure".

    insects: insect id -> its taxa; track_labels: counted track id -> its label at this level
    (None: abstained there); track_to_insect: track id -> the insect it was matched to.
    """
    true: dict[str, int] = {}
    for taxa in insects.values():
        label = taxa.get(level)
        if label is not None:
            true[label] = true.get(label, 0) + 1
    counted: dict[str, int] = {}
    correct: dict[str, int] = {}
    unsure = 0
    for tid, label in track_labels.items():
        if label is None:
            unsure += 1
            continue
        counted[label] = counted.get(label, 0) + 1
        insect = track_to_insect.get(tid)
        if insect is not None and insects.get(insect, {}).get(level) == label:
            correct[label] = correct.get(label, 0) + 1
    rows = []
    for label in sorted(set(true) | set(counted), key=lambda x: (-true.get(x, 0), x)):
        t, c = true.get(label, 0), counted.get(label, 0)
        rows.append(TaxonCount(label, t, c, correct.get(label, 0), (c - t) / t if t else None))
    unlabelled = sum(1 for taxa in insects.values() if level not in taxa)
    if unlabelled:
        rows.append(TaxonCount(NOT_ANNOTATED, unlabelled, 0, None, None))
    rows.append(TaxonCount(UNSURE, 0, unsure, None, None))
    return rows
