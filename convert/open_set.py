"""Fit the bundle's open-set statistics with the bundle's own model (edge/classify/open_set.py).

Why here and with the device's classifier: the trap measures distances on the int8 model's
embedding, which is not the Keras model's; statistics taken from Keras would flag known insects
that int8 rounding moved. So the reference crops (training split, up to REFERENCE_PER_CLASS per
class), the calibration (validation split) and the check (test split: the quantization check's
own run, reused) all go through `convert.check.run_on_edge`, the device's Classifier on the
bundle being written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from convert.check import EdgeRun, run_on_edge, truth_indices
from convert.tflite import RunFolder, split_images
from edge.classify.bundle import OpenSetSpec
from edge.classify.open_set import fit_open_set, unknown_share

REFERENCE_PER_CLASS = 60  # training crops per class the centroids and spreads are taken from
TARGET_UNKNOWN = 0.01  # share of validation crops (known taxa) the calibration allows to be flagged
BAR_UNKNOWN = 0.02  # issue 25: held-out crops of the model's own taxa turn unknown at most this often


def fit_bundle_open_set(
    bundle_dir: Path,
    run: RunFolder,
    test_run: EdgeRun,
    num_threads: int = 1,
    echo: Callable[[str], None] | None = None,
) -> OpenSetSpec | None:
    """Open-set statistics of the bundle in `bundle_dir` at its deepest level; None without an embedding.

    test_run: the quantization check's run of this bundle on the test split (reused, not run again).
    """
    if test_run.embeddings is None:
        return None
    level = run.levels[-1]
    labels = run.labels[level]
    reference, samples = split_images(run, "train", limit=REFERENCE_PER_CLASS * len(labels))
    ref = run_on_edge(bundle_dir, reference, num_threads=num_threads)
    validation, _ = split_images(run, "validation")
    val = run_on_edge(bundle_dir, validation, num_threads=num_threads)
    assert ref.embeddings is not None and val.embeddings is not None  # the same bundle as test_run
    rule, calibration = fit_open_set(
        ref.embeddings,
        truth_indices(samples, {level: labels})[level],
        len(labels),
        val.embeddings,
        np.argmax(val.probs[level], axis=1),
        target=TARGET_UNKNOWN,
    )
    calibration["test_crops"] = len(test_run.embeddings)
    test_chosen = np.argmax(test_run.probs[level], axis=1)
    calibration["test_unknown"] = round(unknown_share(rule, test_run.embeddings, test_chosen), 4)
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
