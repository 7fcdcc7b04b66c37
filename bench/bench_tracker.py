"""Tracker benchmark: what `Tracker.update` costs per frame, against the other per-frame parts.

Why side by side: a tracker update in milliseconds means little on a shared 2-core machine or a
Raspberry Pi, so each frame's update is timed next to the appearance descriptors of the same
frame's detections (work the loop does per detection just before tracking), in the same process,
frame by frame, and against the frame interval of a loop running at `--fps`.

Run:  python -m bench.bench_tracker [--objects 10,30] [--frames 300] [--fps 30] [--miss 0.1]

Scenario (as tests/test_tracker.py's crowded test): N insects with distinct colours moving in
straight lines at ~3 px per frame over a 1200x1200 area, each missed in `--miss` of the frames,
one frame every 0.1 s of trap time.

Columns, per N (medians over the frames; p95 for the update too):
- update: `Tracker.update(timestamp, inputs)` of one frame's detections (with appearance).
- appearance: `appearance_descriptor` of each detection's 64x64 crop in that frame, summed.
- update / appearance: the tracker's cost next to the descriptor work it consumes.
- update / frame: share of one frame interval at `--fps` that the update takes.
- counted: confirmed tracks after `finish()` against the insects (a check that it tracked).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timedelta, timezone

import cv2
import numpy as np

from edge.config import TrackerConfig
from edge.detect.base import Box, Detection
from edge.track.appearance import appearance_descriptor
from edge.track.tracker import Tracker, TrackInput

T0 = datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc)


def _box_at(cx: float, cy: float, w: int = 40, h: int = 30) -> Box:
    x0, y0 = round(cx - w / 2), round(cy - h / 2)
    return Box(x0, y0, x0 + w, y0 + h)


def _crop(k: int, size: int = 64) -> np.ndarray:
    """A BGR crop: an insect-like ellipse of a colour of its own on a pale sheet, with noise."""
    rng = np.random.default_rng(k)
    colour = tuple(int(v) for v in rng.integers(20, 200, 3))
    image = np.full((size, size, 3), (225, 230, 232), np.uint8)
    angle = int(rng.integers(0, 180))
    cv2.ellipse(image, (size // 2, size // 2), (size // 3, size // 5), angle, 0, 360, colour, -1)
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


def run(objects: int, frames: int, miss: float, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    crops = [_crop(k) for k in range(objects)]
    centres = rng.uniform(100, 1100, size=(objects, 2))
    velocity = rng.normal(0, 3, size=(objects, 2))
    tracker = Tracker(TrackerConfig())
    update_s: list[float] = []
    looks_s: list[float] = []
    for i in range(frames):
        seen = [k for k in range(objects) if rng.random() > miss]
        t0 = time.perf_counter()
        looks = [appearance_descriptor(crops[k]) for k in seen]
        t1 = time.perf_counter()
        inputs = [
            TrackInput(
                Detection(_box_at(*(centres[k] + velocity[k] * i)), 1200, 1.0), i * objects + k, None, look
            )
            for k, look in zip(seen, looks, strict=True)
        ]
        t2 = time.perf_counter()
        tracker.update(T0 + timedelta(seconds=i / 10), inputs)
        t3 = time.perf_counter()
        looks_s.append(t1 - t0)
        update_s.append(t3 - t2)
    final = tracker.finish(T0 + timedelta(seconds=frames / 10))
    counted = sum(t.status == "ended" for t in final)
    return {
        "update_ms": 1000 * statistics.median(update_s),
        "update_p95_ms": 1000 * float(np.percentile(update_s, 95)),
        "looks_ms": 1000 * statistics.median(looks_s),
        "ratio_looks": statistics.median(u / a for u, a in zip(update_s, looks_s, strict=True) if a > 0),
        "counted": counted,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_tracker", description=__doc__.splitlines()[0])
    parser.add_argument("--objects", default="10,30", help="comma-separated insect counts (default 10,30)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=30.0, help="loop rate the frame interval is taken from")
    parser.add_argument("--miss", type=float, default=0.1, help="share of frames each insect is missed in")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.objects.split(",") if c.strip()]
    frame_ms = 1000 / args.fps

    print(f"trapcam tracker benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(
        f"{args.frames} frames per run, each insect missed in {args.miss:.0%} of frames; "
        f"frame interval {frame_ms:.1f} ms ({args.fps:g} fps); medians over frames"
    )
    print()
    head = (
        f"{'insects':>7s}  {'update ms':>9s}  {'p95 ms':>7s}  {'appearance ms':>13s}  "
        f"{'update/appearance':>17s}  {'update/frame':>12s}  {'counted':>7s}"
    )
    print(head)
    print("-" * len(head))
    for n in counts:
        r = run(n, args.frames, args.miss)
        print(
            f"{n:7d}  {r['update_ms']:9.3f}  {r['update_p95_ms']:7.3f}  {r['looks_ms']:13.3f}  "
            f"{r['ratio_looks']:17.2f}  {r['update_ms'] / frame_ms:12.3f}  {r['counted']:3d}/{n}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
