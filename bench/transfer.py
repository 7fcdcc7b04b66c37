"""How many images per class a first model needs, from scratch and from a pretrained backbone file.

Issue 25's question, measured on the CPU without ImageNet (which this machine cannot download):
a backbone is first trained on a larger set of *other* species (the pretraining run), and its
`backbone.weights.h5` (every run writes one) starts the small runs through `model.weights`, the
same two-stage path a user takes with ImageNet weights: stage 1 trains the heads on frozen
features, stage 2 fine-tunes everything at a small rate. The same small runs also start from
random weights (`model.weights: none`). Printed: test accuracy per level for each size and start.

    python -m bench.transfer                       # small_cnn at 64 px, 8/16/32 images per class, ~6 min
    python -m bench.transfer --sizes 8 16 --keep /tmp/transfer

Synthetic crops are easier than photos, so the figures say how the two starts compare and how
fast each improves with data, not what a real dataset of that size reaches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from train.presets import synthetic_run_config

REPO = Path(__file__).resolve().parent.parent
# Pretraining species and the small set's species do not overlap: the backbone has never seen the
# species it is fine-tuned on (as ImageNet has not seen most insects).
PRETRAIN_SPECIES = (
    "Noctua pronuba",
    "Agrotis exclamationis",
    "Opisthograptis luteolata",
    "Pterostichus melanarius",
    "Episyrphus balteatus",
    "Bombus terrestris",
)
SMALL_SPECIES = (
    "Autographa gamma",
    "Cabera pusaria",
    "Smerinthus ocellata",
    "Coccinella septempunctata",
    "Melolontha melolontha",
)
TEST_FRACTION = 0.3
VALIDATION_FRACTION = 0.15
TEST_CROPS_PER_CLASS = 12  # the small runs' test split stays this size whatever the training size


def _run(config_text: str, work: Path, name: str) -> dict:
    """Train one run with `trapcam train` in its own process; its report.json."""
    config = work / f"{name}.yaml"
    config.write_text(config_text, encoding="utf-8")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "edge", "train", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"{name}: trapcam train exited {done.returncode}: {done.stderr.strip()[-800:]}")
    report = json.loads((work / name / "report.json").read_text(encoding="utf-8"))
    report["wall_s"] = time.perf_counter() - started
    return report


# Every run of the bench: the demo's small CNN, reproducible, with a steady final rate.
RECIPE: dict[str, Any] = {"backbone": "small_cnn", "deterministic": True, "lr_schedule": "cosine"}


def pretrain_config(work: Path, size: int, per_class: int, epochs: int) -> str:
    return synthetic_run_config(
        work / "pretrain", PRETRAIN_SPECIES, image_size=size, per_class=per_class, epochs=epochs, **RECIPE
    )


def small_config(work: Path, name: str, size: int, train_per_class: int, weights: str, epochs: int) -> str:
    """A small run: `train_per_class` training images per species, a fixed-size test split."""
    share = 1.0 - TEST_FRACTION - VALIDATION_FRACTION
    per_class = max(math.ceil(train_per_class / share), math.ceil(TEST_CROPS_PER_CLASS / TEST_FRACTION))
    test = TEST_CROPS_PER_CLASS / per_class
    validation = min(0.45, max(0.05, 1.0 - test - train_per_class / per_class))
    text = synthetic_run_config(
        work / name,
        SMALL_SPECIES,
        image_size=size,
        per_class=per_class,
        epochs=epochs,
        test_fraction=round(test, 4),
        validation_fraction=round(validation, 4),
        **RECIPE,
    )
    if weights == "none":
        return text
    # From a trained backbone: stage 1 trains the heads on its frozen features, stage 2 fine-tunes
    # at a tenth of the rate (the two-stage recipe of the README).
    text = text.replace("  weights: none\n", f"  weights: {weights}\n")
    text = text.replace("  stage1: {epochs: 0}\n", f"  stage1: {{epochs: {epochs}, learning_rate: 0.003}}\n")
    return text.replace("learning_rate: 0.001,", "learning_rate: 0.0003,")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32], help="training images per class")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--pretrain-per-class", type=int, default=150)
    p.add_argument("--epochs", type=int, default=20, help="epochs of each stage")
    p.add_argument("--keep", type=Path, help="work here and keep the run folders")
    args = p.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="trapcam-transfer-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"pretraining small_cnn on {len(PRETRAIN_SPECIES)} other species,"
        f" {args.pretrain_per_class} crops each ...",
        file=sys.stderr,
    )
    pre = _run(pretrain_config(work, args.image_size, args.pretrain_per_class, args.epochs), work, "pretrain")
    backbone = work / "pretrain" / "backbone.weights.h5"
    rows = []
    for k in args.sizes:
        for start, weights in (("random", "none"), ("pretrained", str(backbone))):
            name = f"small-{k}-{start}"
            print(f"{name} ...", file=sys.stderr)
            report = _run(small_config(work, name, args.image_size, k, weights, args.epochs), work, name)
            rows.append((k, start, report))
    levels = ("order", "family", "species")
    print(f"transfer bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(
        f"pretraining: {len(PRETRAIN_SPECIES)} species x {args.pretrain_per_class} crops,"
        f" {args.image_size} px,"
        f" species accuracy {pre['metrics']['species']['accuracy']:.3f} ({pre['wall_s']:.0f} s)"
    )
    print(
        f"small runs: {len(SMALL_SPECIES)} other species,"
        f" test split {TEST_CROPS_PER_CLASS} crops per species;"
        f" {args.epochs} epochs per stage"
    )
    print(f"{'train/class':>11s}  {'start':10s}  " + "  ".join(f"{lv:>8s}" for lv in levels) + "   seconds")
    for _, start, report in rows:
        acc = "  ".join(f"{report['metrics'][lv]['accuracy']:8.3f}" for lv in levels)
        per_class = report["dataset"]["train"] / len(SMALL_SPECIES)  # as split, not as asked
        print(f"{per_class:11.0f}  {start:10s}  {acc}   {report['wall_s']:7.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
