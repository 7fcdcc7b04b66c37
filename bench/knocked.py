"""A knocked camera on real frames: detections per frame, still against knocked, with and without following.

A camera knocked mid-night (someone checks the trap, wind on the stand) moves the whole view. This
replays a real sequence through the detector its example config sets up, three ways in one run:
the camera still; knocked at frame `--at` with the detector as it is (`static_screen` moves its
background with the view, `motion` rebuilds it); and knocked with that switched off (what the
detectors did before). The camera's view is a window cut `MARGIN` px inside each real frame, moved
by the knock, so nothing wraps round and the newly seen strip is real.

    python -m bench.knocked --shared ../shared
    python -m bench.knocked --shared ../shared --set flower-pi --knock 30,18

Prints, per set, the detections in each frame after the knock for the three runs, their totals,
and the detector's rebuilds and view moves. A missing ../shared is one line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
MARGIN = 64  # full-resolution px cut from every side: room for the knock


@dataclass(frozen=True)
class KnockSet:
    name: str
    images: Path  # relative to the shared folder
    example: str  # the example config whose detector settings the camera runs with
    knocks: tuple[tuple[int, int], ...]  # (dx, dy) full-resolution px
    at: int  # the first knocked frame


SETS = (
    KnockSet(
        "ami-sequential", Path("data/ami-trap-frames/sequential"), "light-trap.yaml", ((10, 6), (50, 30)), 2
    ),
    KnockSet("flower-pi", Path("data/flower-pi-frames"), "flower-camera.yaml", ((5, 3), (30, 18)), 15),
)


def _detector_settings(example: str) -> dict[str, Any]:
    settings = yaml.safe_load((REPO / "examples" / example).read_text())["detector"]
    settings.pop("sheet_reference", None)  # no lamp-on frame in these sets
    return settings


@contextlib.contextmanager
def _not_following() -> Iterator[None]:
    """The detectors as before: no view shift is ever seen, so nothing follows a knock."""
    from edge.detect import motion, static_screen

    saved = (static_screen.StaticScreenDetector._follow_view, motion.view_shift)
    static_screen.StaticScreenDetector._follow_view = lambda self, small: False  # type: ignore[method-assign]
    motion.view_shift = lambda reference, frame: (0.0, 0.0)
    try:
        yield
    finally:
        static_screen.StaticScreenDetector._follow_view, motion.view_shift = saved


def _run(settings: dict[str, Any], frames: list[np.ndarray]) -> tuple[list[int], int, int]:
    """Detections per frame, rebuilds, view moves."""
    from edge.config import DetectorConfig
    from edge.detect.factory import make_detector

    detector = make_detector(DetectorConfig(**settings))
    found = [len(detector.detect(frame)) for frame in frames]
    return found, getattr(detector, "reinits", 0), getattr(detector, "view_moves", 0)


def _views(images: list[np.ndarray], knock: tuple[int, int], at: int) -> list[np.ndarray]:
    out = []
    for i, image in enumerate(images):
        dx, dy = knock if i >= at else (0, 0)
        h, w = image.shape[:2]
        x, y = MARGIN + dx, MARGIN + dy
        out.append(np.ascontiguousarray(image[y : y + h - 2 * MARGIN, x : x + w - 2 * MARGIN]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--set", choices=[s.name for s in SETS], help="one set (default: all)")
    parser.add_argument("--knock", help="dx,dy in full-resolution px (default: each set's two knocks)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    for kset in SETS:
        if args.set and kset.name != args.set:
            continue
        folder = args.shared / kset.images
        paths = sorted(folder.glob("*.jpg"))
        if not paths:
            print(f"bench.knocked: no frames in {folder} (give --shared, the folder beside the repository)")
            return 2
        images = [cv2.imread(str(p)) for p in paths]
        settings = _detector_settings(kset.example)
        knocks = [tuple(int(v) for v in args.knock.split(","))] if args.knock else list(kset.knocks)
        still, _, _ = _run(settings, _views(images, (0, 0), kset.at))
        kind = settings["kind"]
        print(f"{kset.name}: {len(images)} frames, {kind} ({kset.example}), knocked from frame {kset.at}")
        for knock in knocks:
            views = _views(images, knock, kset.at)  # type: ignore[arg-type]
            followed, rebuilds, moves = _run(settings, views)
            with _not_following():
                before, old_rebuilds, _ = _run(settings, views)
            after = slice(kset.at, None)
            print(f"  knock {knock[0]:+d}, {knock[1]:+d} px")
            print(f"    still        {sum(still[after]):5d}  per frame {still[after]}")
            for name, row, extra in (
                ("followed", followed, f"rebuilds {rebuilds}, view moves {moves}"),
                ("not followed", before, f"rebuilds {old_rebuilds}"),
            ):
                print(f"    {name:12s} {sum(row[after]):5d}  per frame {row[after]}  {extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
