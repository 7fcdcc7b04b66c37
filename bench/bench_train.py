"""Is the input pipeline ever the bottleneck of training? Measured side by side in one run.

    python -m bench.bench_train [--size 96] [--backbone mobilenet_v2] [--alpha 0.35] [--per-class 100]

Prints images/s of: decoding (train.inputs.load_images), the tf.data and the Python batchers
iterated alone, and the model's own training steps (fit on batches already in memory), then
the ratio pipeline / training (goal >= 2x: the accelerator or CPU never waits for data).
Runs on the CPU here; on a GPU machine the same command measures the GPU (Keras picks it).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np


def images_per_s(batches: object, epochs: int = 2) -> float:
    """Iterate a batcher for `epochs` epochs doing nothing with the batches."""
    count, started = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in batches:  # type: ignore[attr-defined]
            count += int(np.asarray(batch[0]).shape[0])
    return count / (time.perf_counter() - started)


@dataclass(frozen=True)
class LoadedData:
    """A training set as the trainer feeds it: decoded images, their targets and sample weights."""

    dataset: Any  # train.dataset.Dataset
    images: np.ndarray
    targets: dict[str, np.ndarray]
    weights: np.ndarray
    num_classes: dict[str, int]
    decode_ips: float  # load_images' decode + resize, images/s


def load_for_training(data_cfg: Any, work: Path, seed: int) -> LoadedData:
    """Load, decode and weight a data set the way `trapcam train` does (this bench and gpu_train).

    Decoding is timed: it runs once per run (data.cache: memory), unlike batching, every epoch.
    """
    from train.dataset import load_dataset
    from train.inputs import load_images, output_targets, sample_weights

    dataset = load_dataset(data_cfg, work, seed)
    started = time.perf_counter()
    images = load_images(dataset.samples, data_cfg.image_size)
    decode_ips = len(images) / (time.perf_counter() - started)
    targets = output_targets(dataset, dataset.samples)
    num_classes = {level: len(dataset.labels[level]) for level in dataset.levels}
    weights = sample_weights(targets, num_classes, "balanced")
    return LoadedData(dataset, images, targets, weights, num_classes, decode_ips)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_train", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--epochs", type=int, default=2, help="training epochs timed (after one warm-up epoch)"
    )
    args = parser.parse_args(argv)

    import keras

    from train.config import AugmentConfig, DataConfig, ModelConfig, SyntheticData
    from train.inputs import make_batches
    from train.model import build_model, compile_for_stage

    work = Path(tempfile.mkdtemp(prefix="trapcam-bench-train-"))
    data_cfg = DataConfig(
        kind="synthetic", image_size=args.size, synthetic=SyntheticData(per_class=args.per_class)
    )
    data = load_for_training(data_cfg, work, seed=0)
    dataset, images, targets, weights = data.dataset, data.images, data.targets, data.weights
    levels, num_classes, decode_ips = dataset.levels, data.num_classes, data.decode_ips

    pipelines = {}
    for kind in ("tf.data", "python"):
        batches = make_batches(images, targets, weights, args.batch, shuffle=True, seed=0, pipeline=kind)
        images_per_s(batches, epochs=1)  # warm-up (tf.data traces its graph)
        pipelines[kind] = images_per_s(batches)

    model_cfg = ModelConfig(backbone=args.backbone, weights="none", alpha=args.alpha, hidden_units=64)
    built = build_model(
        model_cfg, AugmentConfig(), args.size, levels, num_classes, dataset.family_of_species()
    )
    compile_for_stage(built, 1e-3, model_cfg, levels)
    train_batches = make_batches(
        images, targets, weights, args.batch, shuffle=True, seed=0, pipeline="tf.data"
    )
    built.model.fit(train_batches, epochs=1, verbose=0, shuffle=False)  # warm-up: compile, first steps
    started = time.perf_counter()
    built.model.fit(train_batches, epochs=args.epochs, verbose=0, shuffle=False)
    train_ips = args.epochs * len(images) / (time.perf_counter() - started)

    device = "GPU" if keras.backend.backend() == "tensorflow" and _gpus() else "CPU"
    print(f"trapcam training input-pipeline benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, training on {device}, "
        f"Keras {keras.__version__} ({keras.backend.backend()})"
    )
    print(
        f"data: {len(images)} synthetic crops, {len(dataset.labels['species'])} species, {args.size} px, "
        f"batch {args.batch}; model: {args.backbone} alpha {args.alpha}, weights none, "
        f"{built.model.count_params():,} parameters"
    )
    print()
    print(f"{'measure':52s} {'images/s':>10s} {'x training':>11s}")
    rows = [
        ("decode + resize (load_images, once per run)", decode_ips),
        ("batches from memory: tf.data (cache, prefetch)", pipelines["tf.data"]),
        ("batches from memory: Python PyDataset (no TF)", pipelines["python"]),
        ("model training step (fit, augmentation inside)", train_ips),
    ]
    for name, value in rows:
        print(f"{name:52s} {value:10.0f} {value / train_ips:10.1f}x")
    slowest = min(pipelines.values())
    verdict = "met" if slowest >= 2 * train_ips else "NOT met"
    print(f"\ngoal: the slower batcher >= 2x training: {slowest / train_ips:.1f}x, {verdict}")
    return 0


def _gpus() -> int:
    try:
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    except ImportError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
