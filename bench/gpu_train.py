"""Desktop GPU training, measured: `trapcam train`'s own two stages under JAX, one prepared run.

    KERAS_BACKEND=jax python -m bench.gpu_train --out /tmp/run --pack $OUT   # a lent GPU machine (issue 24)
    python -m bench.gpu_train --unpack /work/.device/... --out /tmp/gpu-run     # back here: the run folder
    trapcam convert /tmp/gpu-run --out /tmp/gpu-bundle                          # into the trap's format
    KERAS_BACKEND=jax python -m bench.gpu_train --out /tmp/cpu-run --epochs 1 1  # the same model on this CPU

Writes a synthetic crop dataset into the run folder, trains it with the real `train.run.train` (stage 1
heads on a frozen backbone, stage 2 fine-tuning; mixed precision `auto`: on where a GPU is), and prints
what a workstation buyer asks: training images/s per stage, the images/s the Python input pipeline
(the loader JAX uses: no TensorFlow on such a machine) delivers on this machine's cores with the
ratio to training (goal >= 2x: the GPU never waits for data), the GPU's memory and utilisation
(sampled with nvidia-smi while it trains) and the size of the files `trapcam convert` needs (a lent
machine sends back at most 8 files of 16 MiB each). The run folder is complete: `trapcam convert` takes
it. `--pack DIR` puts what convert needs into DIR within those limits (model.keras, and the rest in tar
parts; checkpoints and backups stay behind); `--unpack DIR --out RUN` makes the run folder again.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FILE_LIMIT_MB = 16.0  # what a lent device machine sends back per file
MAX_FILES = 8  # ... and how many files
PART_MB = 15.0  # a tar part's contents: room for tar's headers under FILE_LIMIT_MB
LEFT_BEHIND = ("checkpoints", "backup", "backbone.weights.h5")  # not needed to convert, large


class PackError(Exception):
    """What was trained does not fit what a device machine sends back: said in one line."""


def pack(run_dir: Path, into: Path) -> list[Path]:
    """model.keras, and the run's other files (its crops, splits.csv, run.json, ...) in tar parts."""
    model = run_dir / "model.keras"
    if model.stat().st_size > FILE_LIMIT_MB * 2**20:
        raise PackError(f"{model}: {model.stat().st_size / 2**20:.1f} MiB, over {FILE_LIMIT_MB:.0f} MiB")
    files = sorted(
        p
        for p in run_dir.rglob("*")
        if p.is_file() and p != model and p.relative_to(run_dir).parts[0] not in LEFT_BEHIND
    )
    parts: list[list[Path]] = [[]]
    filled = 0
    for path in files:
        size = path.stat().st_size
        if parts[-1] and filled + size > PART_MB * 2**20:
            parts.append([])
            filled = 0
        parts[-1].append(path)
        filled += size
    if 1 + len(parts) > MAX_FILES:
        raise PackError(
            f"{run_dir}: {1 + len(parts)} files to send back, over {MAX_FILES}: fewer or smaller crops "
            "(--per-class, --crop-size)"
        )
    into.mkdir(parents=True, exist_ok=True)
    written = [Path(shutil.copy2(model, into / "model.keras"))]
    for number, group in enumerate(parts, start=1):
        with tarfile.open(into / f"run-{number}.tar", "w") as tar:
            for path in group:
                tar.add(path, arcname=path.relative_to(run_dir).as_posix())
        written.append(into / f"run-{number}.tar")
    return written


def unpack(packed: Path, run_dir: Path) -> None:
    """The run folder again from what `pack` wrote (its files in place, crops and splits.csv included)."""
    parts = sorted(packed.glob("run-*.tar"))
    if not parts or not (packed / "model.keras").is_file():
        raise PackError(f"{packed}: no model.keras and run-N.tar here (what --pack writes)")
    run_dir.mkdir(parents=True)
    for part in parts:
        with tarfile.open(part) as tar:
            tar.extractall(run_dir, filter="data")
    shutil.copy2(packed / "model.keras", run_dir / "model.keras")


@dataclass
class GpuSampler:
    """nvidia-smi every `interval_s` in a thread: used memory (MiB) and utilisation (%) of GPU 0."""

    interval_s: float = 0.5
    memory_mb: list[float] = field(default_factory=list)
    utilisation: list[float] = field(default_factory=list)
    name: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> GpuSampler:
        if shutil.which("nvidia-smi") is None:
            return self
        self.name = self._query("name")
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _query(self, what: str) -> str | None:
        try:
            out = subprocess.run(
                ["nvidia-smi", f"--query-gpu={what}", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
        return out or None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            reading = self._query("memory.used,utilization.gpu")
            if reading is None:
                continue
            memory, util = (float(v) for v in reading.split(","))
            self.memory_mb.append(memory)
            self.utilisation.append(util)


def train_yaml(args: argparse.Namespace, run_dir: Path) -> str:
    """The run's train config: synthetic crops, random starting weights (a lent machine cannot
    download ImageNet's), Grad-CAM off (it needs the TensorFlow backend)."""
    config: dict[str, Any] = {
        "run_dir": str(run_dir),
        "seed": 0,
        "data": {
            "kind": "synthetic",
            "synthetic": {"per_class": args.per_class, "size": args.crop_size},
            "image_size": args.size,
            "batch_size": args.batch,
        },
        "model": {"backbone": args.backbone, "weights": "none", "alpha": args.alpha},
        "training": {
            "stage1": {"epochs": args.epochs[0]},
            "stage2": {"epochs": args.epochs[1]},
            "mixed_precision": args.mixed_precision,
            "progress": "epoch",
        },
        "evaluation": {"gradcam_samples": 0},
    }
    return yaml.safe_dump(config, sort_keys=False)


def pipeline_images_per_s(cfg: Any, epochs: int = 2) -> tuple[float, float]:
    """(decode + resize, batches from memory) images/s of the Python loader on the run's images:
    what JAX trains from. Decoding runs once per run (data.cache: memory), batching every epoch."""
    from bench.bench_train import images_per_s, load_for_training
    from train.inputs import make_batches

    data = load_for_training(cfg.data, cfg.run_dir, cfg.seed)
    batches = make_batches(
        data.images, data.targets, data.weights, cfg.data.batch_size, shuffle=True, seed=0, pipeline="python"
    )
    return data.decode_ips, images_per_s(batches, epochs)


def stage_rates(run_dir: Path) -> dict[str, float | None]:
    """Training images/s per stage and for the whole run (train.fit.throughput over history.csv)."""
    from train.fit import read_history, throughput

    rows = read_history(run_dir / "history.csv")
    out: dict[str, float | None] = {}
    for stage in (1, 2):
        # an epoch's first steps include XLA's compilation: the stage's later epochs are the rate
        epochs = [r for r in rows if int(r["stage"]) == stage]
        out[f"stage {stage}"] = throughput(epochs[1:] or epochs)[1]
    out["whole run"] = throughput(rows)[1]
    return out


def largest_files(run_dir: Path, n: int = 3) -> list[tuple[Path, float]]:
    sizes = [(p, p.stat().st_size / 2**20) for p in run_dir.rglob("*") if p.is_file()]
    return sorted(sizes, key=lambda s: -s[1])[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the run folder to write (must not exist)")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--per-class", type=int, default=200, help="synthetic crops per species")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, nargs=2, default=(3, 2), metavar=("STAGE1", "STAGE2"))
    parser.add_argument("--mixed-precision", choices=("auto", "on", "off"), default="auto")
    parser.add_argument(
        "--crop-size", type=int, default=None, help="side of the crops on disk (default: --size)"
    )
    parser.add_argument("--pack", metavar="DIR", help="after training, what convert needs into DIR")
    parser.add_argument("--unpack", metavar="DIR", help="no training: the run folder --out from a --pack DIR")
    args = parser.parse_args(argv)
    run_dir = Path(args.out).resolve()
    if run_dir.exists():
        parser.error(f"--out {run_dir}: exists; give a new folder (a run is never overwritten)")
    if args.unpack:
        try:
            unpack(Path(args.unpack), run_dir)
        except PackError as exc:
            parser.exit(2, f"gpu_train: {exc}\n")
        print(f"run folder: {run_dir} (trapcam convert {run_dir} --out BUNDLE)")
        return 0

    import keras

    from train.config import parse_train_config
    from train.fit import visible_gpus
    from train.run import train

    cfg = parse_train_config(train_yaml(args, run_dir), "gpu_train")
    sampler = GpuSampler().start()
    started = time.perf_counter()
    try:
        summary = train(cfg)
    finally:
        sampler.stop()
    wall = time.perf_counter() - started
    rates = stage_rates(run_dir)
    decode, batching = pipeline_images_per_s(cfg)
    pipeline = min(decode, batching)  # the slower of the two sets what the loader can deliver

    gpus = visible_gpus()
    device = f"{gpus} GPU ({sampler.name or 'name unknown'})" if gpus else "CPU"
    print()
    print(f"trapcam GPU training bench: {platform.node()}, {os.cpu_count()} CPUs, training on {device}")
    print(
        f"Keras {keras.__version__} ({keras.backend.backend()}), mixed precision {args.mixed_precision}; "
        f"{args.backbone} alpha {args.alpha} at {args.size} px, batch {args.batch}, epochs {args.epochs[0]}+"
        f"{args.epochs[1]}, {args.per_class} synthetic crops per species; wall {wall:.0f} s"
    )
    print(f"{'measure':48s} {'value':>12s}")
    for name, rate in rates.items():
        shown = f"{rate:.0f} img/s" if rate else "n/a"
        print(f"{'training, ' + name:48s} {shown:>12s}")
    print(f"{'input: decode + resize (once per run)':48s} {decode:8.0f} img/s")
    print(f"{'input: batches from memory (Python loader)':48s} {batching:8.0f} img/s")
    whole = rates["whole run"]
    if whole:
        verdict = "met" if pipeline >= 2 * whole else "NOT met"
        print(f"{'slower input step / training (goal >= 2x)':48s} {pipeline / whole:11.1f}x  {verdict}")
    if sampler.memory_mb:
        print(f"{'GPU memory used, peak':48s} {max(sampler.memory_mb):8.0f} MiB")
        mean = sum(sampler.utilisation) / len(sampler.utilisation)
        print(f"{'GPU utilisation, mean / max':48s} {mean:6.0f} / {max(sampler.utilisation):.0f} %")
    print(f"species accuracy on the test split: {summary.metrics['species']['accuracy']:.3f}")
    for path, size in largest_files(run_dir):
        flag = "" if size < FILE_LIMIT_MB else f"  over the {FILE_LIMIT_MB:.0f} MiB a device sends back"
        print(f"file {path.relative_to(run_dir)}: {size:.1f} MiB{flag}")
    print(f"run folder: {run_dir} (trapcam convert {run_dir} --out BUNDLE)")
    if args.pack:
        try:
            written = pack(run_dir, Path(args.pack))
        except PackError as exc:
            parser.exit(2, f"gpu_train: {exc}\n")
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in written)
        print(f"packed into {args.pack}: {sizes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
