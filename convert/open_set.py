"""Fit the bundle's open-set statistics with the bundle's own model (edge/classify/open_set.py).

Why here and with the device's classifier: the trap measures distances on the int8 model's
embedding, which is not the Keras model's; statistics taken from Keras would flag known insects
that int8 rounding moved. So the reference crops (training split, up to REFERENCE_PER_CLASS per
class), the calibration (validation split) and the check (test split) all run through
`edge.classify.classifier.Classifier` on the bundle being written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from convert.check import truth_indices
from convert.tflite import RunFolder, split_images
from edge.classify.bundle import OpenSetSpec, load_bundle
from edge.classify.classifier import Classifier
from edge.classify.open_set import fit_open_set, unknown_share

REFERENCE_PER_CLASS = 60  # training crops per class the centroids and spreads are taken from
TARGET_UNKNOWN = 0.01  # share of validation crops (known taxa) the calibration allows to be flagged
BAR_UNKNOWN = 0.02  # issue 25: held-out crops of the model's own taxa turn unknown at most this often


def _embed(classifier: Classifier, images_rgb: np.ndarray, level: str) -> tuple[np.ndarray, np.ndarray]:
    """(unit embeddings N x D, class chosen at `level`) of RGB crops, one crop per call as on the trap."""
    crops = np.ascontiguousarray(images_rgb[..., ::-1])  # the device's crops are BGR
    vectors, chosen = [], []
    for crop in crops:
        (result,) = classifier.classify(crop[None])
        assert result.embedding is not None
        vectors.append(result.embedding)
        chosen.append(int(np.argmax(result.probs[level])))
    return np.stack(vectors), np.asarray(chosen, dtype=np.int64)


def fit_bundle_open_set(
    bundle_dir: Path,
    run: RunFolder,
    test_images: np.ndarray,
    num_threads: int = 1,
    echo: Callable[[str], None] | None = None,
) -> OpenSetSpec | None:
    """Open-set statistics of the bundle in `bundle_dir` at its deepest level; None without an embedding."""
    classifier = Classifier(load_bundle(bundle_dir), num_threads=num_threads)
    if not classifier.has_embedding:
        return None
    level = run.levels[-1]
    labels = run.labels[level]
    reference, samples = split_images(run, "train", limit=REFERENCE_PER_CLASS * len(labels))
    ref_embeddings, _ = _embed(classifier, reference, level)
    ref_classes = truth_indices(samples, {level: labels})[level]
    validation, _ = split_images(run, "validation")
    val_embeddings, val_chosen = _embed(classifier, validation, level)
    rule, calibration = fit_open_set(
        ref_embeddings, ref_classes, len(labels), val_embeddings, val_chosen, target=TARGET_UNKNOWN
    )
    test_embeddings, test_chosen = _embed(classifier, test_images, level)
    calibration["test_crops"] = len(test_images)
    calibration["test_unknown"] = round(unknown_share(rule, test_embeddings, test_chosen), 4)
    if echo:
        echo(
            f"open set ({level}): a crop farther from its class than mean + {calibration['k']:g} spreads is"
            f" unknown; known crops called unknown: validation {calibration['validation_unknown']:.1%}"
            f" of {calibration['validation_crops']}, test {calibration['test_unknown']:.1%} of"
            f" {calibration['test_crops']} (bar {BAR_UNKNOWN:.0%})"
        )
    return OpenSetSpec(
        level=level,
        centroids=np.round(rule.centroids, 6).tolist(),
        max_distance=[round(float(d), 6) for d in rule.max_distance],
        calibration=calibration,
    )


def open_set_figures(spec: OpenSetSpec | None) -> dict[str, Any] | None:
    """The calibration figures for the check's JSON (None without an open set)."""
    return None if spec is None else dict(spec.calibration, level=spec.level)
