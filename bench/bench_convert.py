"""Convert benchmark: what each TFLite variant costs (size, invoke time) and what it keeps (accuracy).

    python -m bench.bench_convert [--run RUN_DIR] [--repeats 200]

Converts a training run folder with all four variants (float32, float16, dynamic, int8) through
`convert.convert_run`, into a temporary bundle, then prints one table: file size, raw `invoke()`
time per crop with 1 and 2 interpreter threads (median over `--repeats` calls after a warm-up, the
same test crop every call, interpreters built by `edge.classify.interpreter.make_interpreter`),
and the test-split accuracy per level and top-1 agreement with Keras, taken from the bundle's
model.json `validation` figures that `convert_run` computed on the edge runtime.

Without --run, a tiny MobileNetV2 run (4 synthetic species, 64 px, MobileNetV2
alpha 0.35 from scratch, 60 epochs) is trained first into a temporary folder (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_loop import cpu_name
from train.presets import synthetic_run_config

VARIANTS = ("float32", "float16", "dynamic", "int8")
THREADS = (1, 2)
WARMUP = 20
# The species of the tiny run (train.presets: converges in about a minute)
SPECIES = ["Noctua pronuba", "Autographa gamma", "Pterostichus melanarius", "Coccinella septempunctata"]


def train_tiny_run(work: Path) -> tuple[Path, float]:
    """Train the tiny MobileNetV2 run into work/run; (run folder, seconds it took)."""
    from train.config import load_train_config
    from train.run import train

    config = work / "train.yaml"
    config.write_text(
        synthetic_run_config(work / "run", SPECIES),
        encoding="utf-8",
    )
    started = time.perf_counter()
    train(load_train_config(config))
    return work / "run", time.perf_counter() - started


def model_input(interpreter: Any, crop: np.ndarray) -> np.ndarray:
    """`crop` (H x W x 3 uint8 RGB) as the model's input tensor: float 0..255 or quantized integers."""
    details = interpreter.get_input_details()[0]
    dtype = np.dtype(details["dtype"])
    batch = crop[np.newaxis].astype(np.float32)
    if dtype == np.float32:
        return batch
    scale, zero_point = details["quantization"]
    info = np.iinfo(dtype)
    quantized = np.round(batch / (scale or 1.0) + zero_point)
    return np.clip(quantized, info.min, info.max).astype(dtype)


def invoke_ms(model_path: Path, crop: np.ndarray, threads: int, repeats: int) -> float:
    """Median ms of one raw invoke() on the same crop, after WARMUP untimed calls."""
    from edge.classify.interpreter import make_interpreter

    interpreter = make_interpreter(model_path, threads)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, model_input(interpreter, crop))
    for _ in range(WARMUP):
        interpreter.invoke()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _version(*distributions: str) -> str:
    for distribution in distributions:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return "n/a"


def _size(n: int) -> str:
    return f"{n / 1024:.0f} kB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MB"


def table(validation: dict[str, Any], files: dict[str, Path], timings: dict[str, dict[int, float]]) -> str:
    levels = list(validation["keras"])
    header = ["variant", "file", "size", *(f"invoke {t}T ms" for t in THREADS)]
    header += [f"acc {level}" for level in levels] + [f"agree {level}" for level in levels]
    rows = [["keras", "model.keras", "", *("" for _ in THREADS)]]
    rows[0] += [f"{100 * validation['keras'][level]['accuracy']:.2f}%" for level in levels]
    rows[0] += ["" for _ in levels]
    for variant in VARIANTS:
        figures = validation["variants"][variant]
        row = [variant, files[variant].name, _size(files[variant].stat().st_size)]
        row += [f"{timings[variant][t]:.3f}" for t in THREADS]
        row += [f"{100 * figures['levels'][level]['accuracy']:.2f}%" for level in levels]
        row += [f"{100 * figures['levels'][level]['agreement']:.2f}%" for level in levels]
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header, ["-" * w for w in widths], *rows]):
        cells = [
            str(cell).ljust(w) if i < 2 or n == 1 else str(cell).rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_convert", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--run", type=Path, help="a training run folder (default: train the tiny test run)")
    parser.add_argument(
        "--repeats", type=int, default=200, help="timed invoke() calls per variant and thread count"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="trapcam-bench-convert-"))
    try:
        return _bench(args.run, args.repeats, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(run_arg: Path | None, repeats: int, work: Path) -> int:
    """Train (without a run folder), convert into `work`, time and print; the caller removes `work`."""
    from convert import convert_run
    from convert.tflite import read_run, split_images

    if run_arg is None:
        run_dir, train_s = train_tiny_run(work)
        origin = f"tiny MobileNetV2 run trained now in {train_s:.0f} s"
    else:
        run_dir, origin = run_arg, str(run_arg)

    started = time.perf_counter()
    result = convert_run(run_dir, work / "bundle", variants=VARIANTS)
    convert_s = time.perf_counter() - started
    out = result.out_dir
    validation = json.loads((out / "model.json").read_text(encoding="utf-8"))["validation"]
    files = {v: out / validation["variants"][v]["file"] for v in VARIANTS}

    run = read_run(run_dir)
    images, _ = split_images(run, "test", limit=1)
    crop = images[0]
    timings = {v: {t: invoke_ms(files[v], crop, t, repeats) for t in THREADS} for v in VARIANTS}

    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    height, width = run.size
    print(f"trapcam convert benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.platform()}, {cpu_name()}, {cpus} CPUs ({usable} usable), "
        f"Python {platform.python_version()}, tensorflow {_version('tensorflow', 'tensorflow-cpu')}, "
        f"keras {_version('keras')}, ai-edge-litert {_version('ai-edge-litert')}"
    )
    print(
        f"run: {origin}; input {height}x{width}, levels "
        + ", ".join(f"{level} {len(labels)}" for level, labels in run.labels.items())
    )
    print(
        f"converted in {convert_s:.0f} s (convert_run, all four variants + its check); int8 io "
        f"{validation.get('io')}, check {'passed' if validation.get('passed') else 'FAILED'}"
    )
    print(
        f"invoke: raw interpreter.invoke() on one test crop, median of {repeats} calls after "
        f"{WARMUP} warm-up; accuracy / agreement: model.json validation, {validation['images']} test crops"
    )
    print()
    print(table(validation, files, timings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
