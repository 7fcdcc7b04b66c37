"""Timing a backend on real crops, through the whole classify path (`trapcam doctor --config`).

It sits above both the classifier and the backends: a benchmark needs a Classifier running on a
given backend, and the backends must not import the classifier that uses them.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import cv2
import numpy as np

from edge.classify.backends import Backend
from edge.classify.classifier import Classifier
from edge.errors import ModelError


def benchmark(backend: Backend, crops: np.ndarray, repeats: int = 20) -> dict[str, Any]:
    """Median milliseconds per crop of the whole classify path (prepare, invoke, heads) on `backend`.

    crops: N x h x w x 3 uint8 BGR, resized to the model's input here. The first call (warm-up,
    lazy allocations) is not timed.
    """
    if repeats < 1:
        raise ModelError(f"benchmark: repeats must be at least 1, got {repeats}")
    if not isinstance(crops, np.ndarray) or crops.ndim != 4 or crops.shape[-1] != 3 or not len(crops):
        got = getattr(crops, "shape", type(crops).__name__)
        raise ModelError(f"benchmark: crops must be a non-empty N x H x W x 3 uint8 BGR array, got {got}")
    classifier = Classifier(backend.bundle, num_threads=getattr(backend, "num_threads", 1), backend=backend)
    height, width = classifier.input_size
    batch = np.stack(
        [
            c if c.shape[:2] == (height, width) else cv2.resize(c, (width, height))
            for c in crops.astype(np.uint8)
        ]
    )
    classifier.classify(batch)
    classifier.reset_timing()
    per_crop = []
    for _ in range(repeats):
        started = time.perf_counter()
        classifier.classify(batch)
        per_crop.append(1000.0 * (time.perf_counter() - started) / len(batch))
    timing = classifier.timing()
    return {
        "backend": backend.name,
        "model": backend.model_path.name,
        "crops": len(batch),
        "repeats": repeats,
        "median_ms_per_crop": statistics.median(per_crop),
        "min_ms_per_crop": min(per_crop),
        "max_ms_per_crop": max(per_crop),
        "invoke_ms_per_crop": timing["invoke_ms_per_crop"],
    }
