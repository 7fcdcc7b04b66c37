"""Feeding the model: decode crops once (in parallel), keep them in memory, batch and prefetch.

Images are decoded, padded to a square and resized to the model's input size once, by a thread
pool (OpenCV releases the GIL while decoding), and kept as one uint8 array: 4x smaller than
float32, and every epoch after the first costs no decoding at all (this is the "cache"; with
`cache_file` the array also survives a restart). Batches are cut from that array by index.

Two batchers yield the same values for the same seed, so a model trains the same way on every
Keras backend:

- ``tf.data`` (TensorFlow backend): a generator of index batches, a parallel gather that casts
  to float32, and prefetching, with the cardinality declared so Keras knows the epoch length.
- ``python``: a `keras.utils.PyDataset` (works with JAX, or without TensorFlow installed), with
  worker threads that prefetch batches.

Both shuffle with numpy's generator seeded by (seed, epoch), reshuffling every epoch. Pass
``shuffle=False`` to ``model.fit``: Keras would otherwise also permute a PyDataset's batch order
with Python's unseeded ``random`` (harmless for training, but not reproducible).

The model takes raw 0-255 RGB (its preprocessing is inside it), so batches are float32 0-255 RGB,
exactly what the exported model will be given on the trap.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from train.dataset import Dataset, DatasetError, Sample

Pipeline = Literal["auto", "tf.data", "python"]


# ---------------------------------------------------------------- decoding


def decode_image(path: Path, size: int) -> np.ndarray:
    """One file as size x size x 3 uint8 RGB: padded to a square (edge pixels replicated), resized.

    Padding instead of stretching keeps the insect's proportions, and edge replication is what the
    trap's cropper does at a frame border; shrinking uses INTER_AREA and enlarging INTER_LINEAR,
    also as the cropper does, so training crops and field crops are resampled alike.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist") from None
    except OSError as exc:
        raise DatasetError(f"image {path}: cannot read: {exc}") from None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None or bgr.ndim != 3 or bgr.shape[0] < 1 or bgr.shape[1] < 1:
        raise DatasetError(f"image {path}: unreadable (not an image OpenCV can decode)")
    h, w = bgr.shape[:2]
    if h != w:
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        bgr = cv2.copyMakeBorder(bgr, top, side - h - top, left, side - w - left, cv2.BORDER_REPLICATE)
    if bgr.shape[0] != size:
        interp = cv2.INTER_AREA if bgr.shape[0] > size else cv2.INTER_LINEAR
        bgr = cv2.resize(bgr, (size, size), interpolation=interp)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _cache_key(samples: Sequence[Sample], size: int) -> str:
    h = hashlib.sha256(f"v1 {size}\n".encode())
    for s in samples:
        st = os.stat(s.path)
        h.update(f"{s.path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def load_images(
    samples: Sequence[Sample], size: int, workers: int = 4, cache_file: Path | None = None
) -> np.ndarray:
    """Decode `samples` into an (N, size, size, 3) uint8 RGB array, in parallel, in sample order.

    Every unreadable file is collected and reported in one DatasetError (naming the first and the
    count), so a user fixes the dataset in one pass. With `cache_file` (.npy) the array is saved
    and reused while the files (path, size, mtime) and `size` are unchanged.
    """
    if size < 1:
        raise DatasetError(f"image size {size}: expected a positive number of pixels")
    key = None
    if cache_file is not None:
        cache_file = Path(cache_file)
        key = _cache_key(samples, size)
        meta = cache_file.with_suffix(".json")
        if cache_file.is_file() and meta.is_file():
            try:
                if json.loads(meta.read_text(encoding="utf-8")).get("key") == key:
                    cached = np.load(cache_file)
                    if cached.shape == (len(samples), size, size, 3) and cached.dtype == np.uint8:
                        return cached
            except (OSError, ValueError):
                pass  # a broken cache is rebuilt
    out = np.empty((len(samples), size, size, 3), dtype=np.uint8)
    errors: list[str] = []

    def work(i: int) -> None:
        try:
            out[i] = decode_image(samples[i].path, size)
        except DatasetError as exc:
            errors.append(str(exc))

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(work, range(len(samples))))
    if errors:
        errors.sort()
        more = f" (and {len(errors) - 1} more unreadable images)" if len(errors) > 1 else ""
        raise DatasetError(errors[0] + more)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(cache_file.stem + ".tmp.npy")
        np.save(tmp, out)
        os.replace(tmp, cache_file)
        cache_file.with_suffix(".json").write_text(json.dumps({"key": key}), encoding="utf-8")
    return out


# ---------------------------------------------------------------- targets and weights


def output_targets(ds: Dataset, samples: Sequence[Sample]) -> dict[str, np.ndarray]:
    """{level: class index per sample} for every level of `ds` (the model's output names)."""
    return {level: ds.indices(level, samples) for level in ds.levels}


def sample_weights(
    targets: Mapping[str, np.ndarray], num_classes: Mapping[str, int], mode: str = "balanced"
) -> dict[str, np.ndarray]:
    """Per-output sample weights (float32) against class imbalance.

    Keras's ``class_weight`` does not work for a model with several outputs, so the weight goes
    on each sample, per head. "balanced": a sample of class c at a level weighs
    N / (K * n_c) with K the classes present, so every class's weights sum to the same N / K and
    the mean weight is 1 (the loss keeps its scale). "none": all ones.
    """
    if mode not in ("balanced", "none"):
        raise DatasetError(f"class_weighting {mode!r}: expected 'balanced' or 'none'")
    out: dict[str, np.ndarray] = {}
    for level, t in targets.items():
        t = np.asarray(t)
        if level not in num_classes:
            raise DatasetError(f"sample_weights: no class count for level {level!r}")
        k = int(num_classes[level])
        if t.size and (t.min() < 0 or t.max() >= k):
            raise DatasetError(f"sample_weights: level {level!r} has class indices outside 0..{k - 1}")
        if mode == "none" or t.size == 0:
            out[level] = np.ones(t.shape, np.float32)
            continue
        counts = np.bincount(t, minlength=k).astype(np.float64)
        present = int((counts > 0).sum())
        per_class = np.zeros(k, np.float64)
        per_class[counts > 0] = t.size / (present * counts[counts > 0])
        out[level] = per_class[t].astype(np.float32)
    return out


# ---------------------------------------------------------------- batching


class EpochOrder:
    """Sample order of each epoch: numpy's generator seeded by (seed, epoch), or 0..N-1.

    Both batchers draw from this, which is why they yield the same batches.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch = 0

    def order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n, dtype=np.int64)
        return np.random.default_rng([self.seed & 0xFFFFFFFF, epoch]).permutation(self.n).astype(np.int64)

    @property
    def num_batches(self) -> int:
        return math.ceil(self.n / self.batch_size)


def _check_arrays(
    images: np.ndarray, targets: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray] | None
) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3:
        shape = getattr(images, "shape", None)
        raise DatasetError(f"make_batches: images must be an (N, S, S, 3) array, got shape {shape}")
    if images.shape[0] == 0:
        raise DatasetError("make_batches: no images")
    for name, group in (("targets", targets), ("weights", weights or {})):
        for level, arr in group.items():
            if len(arr) != images.shape[0]:
                raise DatasetError(
                    f"make_batches: {name}[{level!r}] has {len(arr)} entries for {images.shape[0]} images"
                )
    if weights is not None and set(weights) != set(targets):
        raise DatasetError(
            f"make_batches: weights levels {sorted(weights)} differ from targets levels {sorted(targets)}"
        )


def resolve_pipeline(pipeline: str) -> str:
    """ "auto" -> "tf.data" on the TensorFlow backend, "python" elsewhere; checks tf is importable."""
    if pipeline not in ("auto", "tf.data", "python"):
        raise DatasetError(f"data.pipeline {pipeline!r}: expected 'auto', 'tf.data' or 'python'")
    if pipeline == "python":
        return pipeline
    import importlib.util

    import keras

    has_tf = importlib.util.find_spec("tensorflow") is not None
    if pipeline == "auto":
        return "tf.data" if keras.backend.backend() == "tensorflow" and has_tf else "python"
    if not has_tf:
        raise DatasetError("data.pipeline 'tf.data' needs TensorFlow installed; use 'python' or 'auto'")
    return pipeline


def make_batches(
    images: np.ndarray,
    targets: Mapping[str, np.ndarray],
    weights: Mapping[str, np.ndarray] | None,
    batch_size: int,
    shuffle: bool,
    seed: int,
    pipeline: Pipeline = "auto",
    workers: int = 2,
) -> Any:
    """Something ``model.fit`` accepts, yielding (float32 0-255 RGB, {level: int targets}
    [, {level: float32 weights}]), reshuffled each epoch when `shuffle`.

    Returns a ``tf.data.Dataset`` (pipeline "tf.data", or "auto" on the TensorFlow backend) or a
    ``keras.utils.PyDataset`` ("python", or "auto" elsewhere); both give the same values.
    """
    if batch_size < 1:
        raise DatasetError(f"batch_size {batch_size}: expected at least 1")
    _check_arrays(images, targets, weights)
    targets = {k: np.asarray(v, np.int64) for k, v in targets.items()}
    weights = None if weights is None else {k: np.asarray(v, np.float32) for k, v in weights.items()}
    order = EpochOrder(len(images), batch_size, shuffle, seed)
    if resolve_pipeline(pipeline) == "tf.data":
        return _tf_batches(images, targets, weights, order)
    return _python_batches_class()(images, targets, weights, order, workers)


def _tf_batches(
    images: np.ndarray,
    targets: dict[str, np.ndarray],
    weights: dict[str, np.ndarray] | None,
    order: EpochOrder,
) -> Any:
    import tensorflow as tf

    bs = order.batch_size

    def index_batches():  # called once per iteration of the dataset, i.e. once per epoch
        idx = order.order(order.epoch)
        order.epoch += 1
        for start in range(0, order.n, bs):
            yield idx[start : start + bs]

    with tf.device("/cpu:0"):  # the cache stays in host memory; batches go to the GPU
        images_t = tf.constant(images)
        targets_t = {k: tf.constant(v) for k, v in targets.items()}
        weights_t = None if weights is None else {k: tf.constant(v) for k, v in weights.items()}

    def gather(idx):
        x = tf.cast(tf.gather(images_t, idx), tf.float32)
        y = {k: tf.gather(v, idx) for k, v in targets_t.items()}
        if weights_t is None:
            return x, y
        return x, y, {k: tf.gather(v, idx) for k, v in weights_t.items()}

    ds = tf.data.Dataset.from_generator(index_batches, output_signature=tf.TensorSpec([None], tf.int64))
    ds = ds.apply(tf.data.experimental.assert_cardinality(order.num_batches))
    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


_PY_CLASS: type | None = None


def _python_batches_class() -> type:
    """The PyDataset subclass, defined on first use so that decoding needs no Keras import."""
    global _PY_CLASS
    if _PY_CLASS is not None:
        return _PY_CLASS
    import keras

    class ArrayBatches(keras.utils.PyDataset):
        """Batches cut from in-memory arrays; worker threads prefetch them (backend-independent)."""

        def __init__(
            self,
            images: np.ndarray,
            targets: dict[str, np.ndarray],
            weights: dict[str, np.ndarray] | None,
            order: EpochOrder,
            workers: int,
        ) -> None:
            super().__init__(workers=max(1, workers), use_multiprocessing=False, max_queue_size=8)
            self.images, self.targets, self.weights, self.order = images, targets, weights, order
            self._idx = order.order(order.epoch)

        def __len__(self) -> int:
            return self.order.num_batches

        def __getitem__(self, i: int) -> tuple:
            if not 0 <= i < len(self):
                raise IndexError(f"batch {i} out of range 0..{len(self) - 1}")
            idx = self._idx[i * self.order.batch_size : (i + 1) * self.order.batch_size]
            x = self.images[idx].astype(np.float32)
            y = {k: v[idx] for k, v in self.targets.items()}
            if self.weights is None:
                return x, y
            return x, y, {k: v[idx] for k, v in self.weights.items()}

        def on_epoch_end(self) -> None:
            self.order.epoch += 1
            self._idx = self.order.order(self.order.epoch)

    _PY_CLASS = ArrayBatches
    return ArrayBatches
