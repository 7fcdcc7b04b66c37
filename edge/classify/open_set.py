"""Open set: is a crop one of the model's taxa at all, or an insect it does not know?

A softmax always names one of its classes: a 12-species model called every insect of a foreign
night one of its 12, at scores down to 0.18 (issue 25). The model's penultimate features (its
embedding, already computed for the time-lapse tracker) say more: crops of one class lie close
together, and an insect of another species lies far from the class the softmax picked.

The rule (DESIGN.md's `unknown` outcome): a crop is unknown when the cosine distance of its
embedding to the centroid of the class chosen at the deepest level exceeds that class's
`max_distance`. `fit_open_set` sets each class's limit to mean + k * spread of its own training
crops' distances (the spread pooled with the other classes' where a class has few crops), and
chooses one k for all classes: the smallest that flags at most `target` of the validation crops
(known taxa), so the share of known insects called unknown is measured, not assumed.

Numpy only: the trap runs the rule; `trapcam convert` fits it with the bundle's own model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# k is searched on this grid (spreads above the class's mean distance).
K_GRID = tuple(float(k) for k in np.arange(1.0, 12.01, 0.25))
# Below this many reference crops a class's own spread is not trusted alone: pooled with the rest.
MIN_OWN_CROPS = 8


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


@dataclass(frozen=True)
class OpenSetRule:
    """Centroids (K x D unit vectors) and per-class limits; `distances` and `unknown` per crop."""

    centroids: np.ndarray
    max_distance: np.ndarray

    @classmethod
    def from_spec(cls, centroids: Sequence[Sequence[float]], max_distance: Sequence[float]) -> OpenSetRule:
        return cls(_unit_rows(np.asarray(centroids)), np.asarray(max_distance, dtype=np.float32))

    def distance(self, embedding: np.ndarray, class_index: int) -> float:
        """Cosine distance of a unit embedding to the centroid of `class_index`."""
        return float(1.0 - np.dot(self.centroids[class_index], embedding))

    def unknown(self, embedding: np.ndarray, class_index: int) -> tuple[bool, float]:
        distance = self.distance(embedding, class_index)
        return distance > float(self.max_distance[class_index]), distance


def _distances(embeddings: np.ndarray, centroids: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return 1.0 - np.einsum("nd,nd->n", _unit_rows(embeddings), centroids[classes])


def fit_open_set(
    embeddings: np.ndarray,
    classes: np.ndarray,
    n_classes: int,
    validation_embeddings: np.ndarray,
    validation_chosen: np.ndarray,
    target: float = 0.01,
) -> tuple[OpenSetRule, dict[str, Any]]:
    """Fit the rule on reference crops (their true classes) and calibrate it on validation crops.

    validation_chosen: the class the model chose for each validation crop (the trap measures the
    distance to the chosen class's centroid, so the calibration does too). A class without
    reference crops has no centroid worth the name: its limit is 2.0, the largest cosine
    distance, so it never flags. Returns the rule and its calibration figures.
    """
    embeddings = _unit_rows(embeddings)
    classes = np.asarray(classes, dtype=np.int64)
    dims = embeddings.shape[1]
    centroids = np.zeros((n_classes, dims), dtype=np.float32)
    present = np.zeros(n_classes, dtype=bool)
    for c in range(n_classes):
        rows = embeddings[classes == c]
        if len(rows):
            centroids[c] = rows.mean(axis=0)
            present[c] = True
    centroids = _unit_rows(centroids)
    own = _distances(embeddings, centroids, classes)
    pooled_spread = float(np.std(own)) if len(own) > 1 else 0.0
    means = np.zeros(n_classes, dtype=np.float32)
    spreads = np.full(n_classes, pooled_spread, dtype=np.float32)
    for c in np.flatnonzero(present):
        d = own[classes == c]
        means[c] = float(d.mean())
        if len(d) >= MIN_OWN_CROPS:
            spreads[c] = max(float(d.std()), pooled_spread / 2)  # one tight class must not flag everything
    chosen = np.asarray(validation_chosen, dtype=np.int64)
    val_d = _distances(validation_embeddings, centroids, chosen)
    k_used, flagged = K_GRID[-1], 1.0
    for k in K_GRID:
        limits = np.where(present, means + k * spreads, 2.0)
        flagged = float(np.mean(val_d > limits[chosen])) if len(val_d) else 0.0
        if flagged <= target:
            k_used = k
            break
    limits = np.where(present, means + k_used * spreads, 2.0).astype(np.float32)
    calibration = {
        "rule": "cosine distance to the chosen class's centroid > mean + k * spread of its reference crops",
        "k": k_used,
        "target": target,
        "reference_crops": len(embeddings),
        "classes_without_reference": int((~present).sum()),
        "validation_crops": len(val_d),
        "validation_unknown": round(float(np.mean(val_d > limits[chosen])) if len(val_d) else 0.0, 4),
    }
    return OpenSetRule(centroids, limits), calibration


def unknown_share(rule: OpenSetRule, embeddings: np.ndarray, chosen: np.ndarray) -> float:
    """The share of crops the rule calls unknown (e.g. a held-out test split of known taxa)."""
    if len(embeddings) == 0:
        return 0.0
    d = _distances(embeddings, rule.centroids, np.asarray(chosen, dtype=np.int64))
    return float(np.mean(d > rule.max_distance[np.asarray(chosen, dtype=np.int64)]))
