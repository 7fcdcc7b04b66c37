"""One insect cut into blobs by the detector is one count, also in the frame where it first shows.

On real light-trap frames (bench/real/METHOD.md) a mantisfly's pale wing tips were blobs apart
from its body, a pale moth came apart in two after it turned, and each piece became a track of
its own: their boxes touch the body's box, but lie mostly outside it, so the rule "a detection
inside a track's box is a piece of it" never applied, and at an insect's first frame there was
no track box at all. Here the same shapes are drawn on a sheet (JPEG files replayed through the
real pipeline, detector and SQLite file): an insect with two wing tips apart from its body from
the first frame, a moth whose piece appears later, and a black beetle sitting against a pale
moth, which must stay two insects.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from helpers import query
from test_detect import Camera, render_sheet

from edge.config import parse_config
from edge.pipeline import Pipeline

W, H = 640, 360
START = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)
BROWN = (40, 75, 130)  # BGR: the colour of the mantisfly-like insect's body and of its wing tips
PALE_MOTH = (150, 190, 215)
BLACK = (25, 25, 30)


def _mantisfly(img: np.ndarray, cx: int, cy: int) -> None:
    """A slanted body with two wing tips beyond a pale gap (the wing's clear middle)."""
    cv2.ellipse(img, (cx, cy), (34, 7), 60, 0, 360, BROWN, -1)
    # wing tips: beside the lower end of the body, a few pixels of sheet between them
    cv2.ellipse(img, (cx + 20, cy + 34), (12, 5), 60, 0, 360, BROWN, -1)
    cv2.ellipse(img, (cx - 12, cy + 38), (12, 5), 120, 0, 360, BROWN, -1)


def _split_moth(img: np.ndarray, cx: int, cy: int, piece: bool) -> None:
    """A moth's body; from frame 5 a wing of its colours shows as a second blob beside it."""
    cv2.ellipse(img, (cx, cy), (22, 12), 0, 0, 360, PALE_MOTH, -1)
    cv2.ellipse(img, (cx, cy), (16, 5), 0, 0, 360, (110, 150, 185), -1)
    if piece:
        cv2.ellipse(img, (cx + 28, cy + 12), (10, 9), 0, 0, 360, PALE_MOTH, -1)
        cv2.circle(img, (cx + 28, cy + 12), 4, (110, 150, 185), -1)


def _moth_and_beetle(img: np.ndarray, cx: int, cy: int) -> None:
    """A pale moth and, against its lower right corner, a black beetle: two insects."""
    cv2.ellipse(img, (cx, cy), (24, 14), 0, 0, 360, PALE_MOTH, -1)
    cv2.ellipse(img, (cx, cy), (18, 5), 0, 0, 360, (110, 150, 185), -1)
    cv2.ellipse(img, (cx + 30, cy + 18), (10, 8), 30, 0, 360, BLACK, -1)


def _night(folder: Path) -> None:
    """12 frames, 5 s apart; every insect sits still from frame 2 (the moth's piece from frame 5)."""
    folder.mkdir(parents=True)
    sheet = render_sheet(W, H, seed=8)
    camera = Camera(folder, seed=9, start=START)
    for n in range(12):
        scene = sheet.copy()
        if n >= 2:
            _mantisfly(scene, 140, 150)
            _split_moth(scene, 330, 120, piece=n >= 5)
            _moth_and_beetle(scene, 500, 230)
        camera.shoot(scene)


def test_pieces_of_one_insect_are_one_count_and_a_beetle_beside_a_moth_is_two(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    _night(frames)
    config = (
        f"data_dir: {tmp_path / 'data'}\n"
        f"source: {{kind: folder, path: {frames}, timestamps: filename, filename_format: '%Y%m%d-%H%M%S'}}\n"
        "detector: {min_area_px: 40}\n"
        "storage: {save_crops: false}\n"
    )
    Pipeline(parse_config(config, "edge.yaml")).run()
    db = tmp_path / "data" / "trapcam.db"
    counted = query(db, "SELECT track_id, x0, y0, x1, y1 FROM tracks WHERE status = 'ended' ORDER BY x0")
    # the detector really cut the insects: more than one detection per frame for the mantisfly
    # and, from frame 5, for the moth (else this test would not test the rule)
    pieces = query(
        db,
        "SELECT frame_index, COUNT(*) FROM detections WHERE x1 < 200 GROUP BY frame_index",
    )
    assert pieces and all(n >= 2 for _, n in pieces) and sum(n == 3 for _, n in pieces) >= 8, pieces
    moth_pieces = query(
        db,
        "SELECT frame_index, COUNT(*) FROM detections WHERE x0 > 280 AND x1 < 400 GROUP BY frame_index",
    )
    assert [n for f, n in moth_pieces if f >= 5] and all(n == 2 for f, n in moth_pieces if f >= 5), (
        moth_pieces
    )
    # and yet: one mantisfly, one moth, and the pale moth and the black beetle as two
    mantisfly = [r for r in counted if r[3] < 200]
    moth = [r for r in counted if r[1] > 280 and r[3] < 400]
    right = [r for r in counted if r[1] > 420]
    assert len(mantisfly) == 1 and len(moth) == 1 and len(right) == 2, counted
    assert len(counted) == 4, counted
    # the mantisfly's track box holds its wing tips (the size is the insect's, not its body's)
    _, _, y0, _, y1 = mantisfly[0]
    assert y1 - y0 >= 60, mantisfly
    # every detection of the mantisfly belongs to its one track
    owners = query(db, "SELECT DISTINCT track_id FROM detections WHERE x1 < 200")
    assert owners == [(mantisfly[0][0],)], owners
