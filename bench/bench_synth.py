"""Synthetic-night benchmark: rendering a frame against decoding the same frame from a JPEG.

Why side by side: the synthetic source stands in for a camera or a replayed folder (demo, tests,
bench_loop), so what matters is whether rendering a frame costs more than the folder source's
decode of the same frame. Both are timed in the same run, frame by frame, interleaved.

Run:  python -m bench.bench_synth [--width 1920 --height 1080] [--frames 60] [--insects 10]

Rows (per frame, medians over the frames):
- render, first pass: `SyntheticNight.render(i)` of a fresh night, sprites drawn on first use.
- render, second pass: the same frames again (sprites cached).
- decode: `cv2.imread` of that frame written as a JPEG (quality 92, as `write_night`).
- encode: `cv2.imencode` of the frame as that JPEG (what `write_night` adds per frame).
The ratio column is each row against decode.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2

from edge.synth import SceneParams, SyntheticNight

JPEG_QUALITY = 92  # as edge.synth.writer.write_night


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_synth", description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--insects", type=int, default=10, help="visits over the night")
    parser.add_argument("--scene", default="sheet", choices=("sheet", "flowers"))
    args = parser.parse_args(argv)

    params = SceneParams(
        scene=args.scene,
        width=args.width,
        height=args.height,
        frames=args.frames,
        insects=args.insects,
        seed=1,
    )
    night = SyntheticNight(params)
    first: list[float] = []
    second: list[float] = []
    decode: list[float] = []
    encode: list[float] = []
    visible = 0
    with tempfile.TemporaryDirectory(prefix="trapcam-bench-synth-") as tmp:
        path = Path(tmp) / "frame.jpg"
        for i in range(len(night)):
            t0 = time.perf_counter()
            image, truth = night.render(i)
            t1 = time.perf_counter()
            night.render(i)
            t2 = time.perf_counter()
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            t3 = time.perf_counter()
            assert ok
            path.write_bytes(data.tobytes())
            t4 = time.perf_counter()
            back = cv2.imread(str(path))
            t5 = time.perf_counter()
            assert back is not None and back.shape == image.shape
            first.append(t1 - t0)
            second.append(t2 - t1)
            encode.append(t3 - t2)
            decode.append(t5 - t4)
            visible += len(truth)

    print(f"trapcam synthetic-night benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"OpenCV {cv2.__version__}"
    )
    print(
        f"night: {args.scene}, {args.width}x{args.height}, {len(night)} frames, "
        f"{args.insects} visits, seed 1; "
        f"{visible / len(night):.1f} insects visible per frame on average; medians per frame"
    )
    print()
    dec = statistics.median(decode)
    head = f"{'measure':58s} {'ms/frame':>9s} {'x decode':>9s}"
    print(head)
    print("-" * len(head))
    rows = [
        ("render, first pass (sprites drawn on first use)", statistics.median(first)),
        ("render, second pass (sprites cached)", statistics.median(second)),
        (f"decode: cv2.imread of the same frame as JPEG q{JPEG_QUALITY}", dec),
        (f"encode: cv2.imencode as JPEG q{JPEG_QUALITY}", statistics.median(encode)),
    ]
    for name, seconds in rows:
        print(f"{name:58s} {1000 * seconds:9.1f} {seconds / dec:8.2f}x")
    mean_first = 1000 * sum(first) / len(first)
    print(f"\nrender, first pass, mean (sprite drawing spread over the night): {mean_first:.1f} ms/frame")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
