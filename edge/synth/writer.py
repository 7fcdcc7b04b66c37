"""Writing a synthetic night to disk (image folder or video) with its ground truth, and reading it back.

File names carry the frame's UTC time (`YYYYmmdd-HHMMSS-<index>.jpg`) so the folder source can
replay a night with its timestamps (filename_format '%Y%m%d-%H%M%S', timezone UTC). The ground
truth is a plain CSV so that evaluation code, notebooks and people can all read it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2

from edge.detect.base import Box
from edge.errors import TrapcamError
from edge.synth.scene import SyntheticNight

GROUND_TRUTH_NAME = "ground_truth.csv"
COLUMNS = ("frame", "timestamp", "insect_id", "species", "family", "order", "x0", "y0", "x1", "y1", "moving")
_CODECS = {".avi": "MJPG", ".mp4": "mp4v"}


class SyntheticDataError(TrapcamError):
    """A synthetic night or its ground truth cannot be written, or read back."""


@dataclass(frozen=True, slots=True)
class GroundTruthRow:
    """One insect in one frame, as stored in ground_truth.csv."""

    frame: int
    timestamp: datetime
    insect_id: int
    species: str
    family: str
    order: str
    box: Box
    moving: bool


def frame_file_name(night: SyntheticNight, i: int, ext: str) -> str:
    """`YYYYmmdd-HHMMSS-<index:06d>.<ext>`: UTC time to the second, index to keep order within a second."""
    return f"{night.timestamp(i):%Y%m%d-%H%M%S}-{i:06d}.{ext}"


def _write_csv(night: SyntheticNight, path: Path) -> None:
    try:
        with path.open("w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(COLUMNS)
            for i in range(len(night)):
                stamp = night.timestamp(i).isoformat()
                for o in night.ground_truth(i):
                    b = o.box
                    out.writerow(
                        (
                            i,
                            stamp,
                            o.insect_id,
                            o.species,
                            o.family,
                            o.order,
                            b.x0,
                            b.y0,
                            b.x1,
                            b.y1,
                            int(o.moving),
                        )
                    )
    except OSError as exc:
        raise SyntheticDataError(f"{path}: cannot write ground truth: {exc.strerror or exc}") from None


def write_night(
    night: SyntheticNight,
    out_dir: str | Path,
    fmt: str = "jpg",
    jpeg_quality: int = 92,
    on_frame: Callable[[int], None] | None = None,
) -> Path:
    """Write every frame as an image plus ground_truth.csv into `out_dir` (created); return it.

    on_frame(i) is called after frame i is written (progress bars).
    """
    if fmt not in ("jpg", "png"):
        raise SyntheticDataError(f"write_night fmt={fmt!r}: expected 'jpg' or 'png'")
    if not 10 <= jpeg_quality <= 100:
        raise SyntheticDataError(f"write_night jpeg_quality={jpeg_quality!r}: expected 10..100")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SyntheticDataError(f"{out}: cannot create the output folder: {exc.strerror or exc}") from None
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    for i in range(len(night)):
        image, _truth = night.render(i)
        path = out / frame_file_name(night, i, fmt)
        if not cv2.imwrite(str(path), image, params):
            raise SyntheticDataError(
                f"{path}: cannot write frame {i} (is the folder writable and the disk not full?)"
            )
        if on_frame is not None:
            on_frame(i)
    _write_csv(night, out / GROUND_TRUTH_NAME)
    return out


def write_video(night: SyntheticNight, path: str | Path, fps: float = 10.0) -> Path:
    """Write the night as a video (.avi: MJPG, .mp4: mp4v) and `<stem>.csv` ground truth next to it."""
    path = Path(path)
    codec = _CODECS.get(path.suffix.lower())
    if codec is None:
        raise SyntheticDataError(
            f"{path}: unsupported video type {path.suffix!r}; expected one of {sorted(_CODECS)}"
        )
    if not fps > 0:
        raise SyntheticDataError(f"write_video fps={fps!r}: expected frames per second > 0")
    size = (night.params.width, night.params.height)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), size)
    if not writer.isOpened():
        raise SyntheticDataError(f"{path}: OpenCV cannot open a {codec} video writer here (folder writable?)")
    try:
        for i in range(len(night)):
            writer.write(night.render(i)[0])
    finally:
        writer.release()
    _write_csv(night, path.with_suffix(".csv"))
    return path


def _parse_row(path: Path, line: int, row: dict[str, str]) -> GroundTruthRow:
    key = ""
    try:
        key = "frame"
        frame = int(row[key])
        key = "timestamp"
        stamp = datetime.fromisoformat(row[key])
        if stamp.tzinfo is None:
            raise ValueError("no time zone")
        key = "insect_id"
        insect_id = int(row[key])
        coords = []
        for key in ("x0", "y0", "x1", "y1"):
            coords.append(int(row[key]))
        key = "moving"
        if row[key] not in ("0", "1"):
            raise ValueError("not 0 or 1")
        moving = row[key] == "1"
    except ValueError:
        raise SyntheticDataError(f"{path}:{line}: column {key!r}: bad value {row.get(key)!r}") from None
    box = Box(*coords)
    if box.width <= 0 or box.height <= 0:
        raise SyntheticDataError(f"{path}:{line}: empty box {coords}; expected x0 < x1 and y0 < y1")
    return GroundTruthRow(frame, stamp, insect_id, row["species"], row["family"], row["order"], box, moving)


def read_ground_truth(path: str | Path) -> list[GroundTruthRow]:
    """Read a ground_truth.csv (or a folder holding one) back into rows, checking every value."""
    path = Path(path)
    if path.is_dir():
        path = path / GROUND_TRUTH_NAME
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = tuple(reader.fieldnames or ())
            if header != COLUMNS:
                raise SyntheticDataError(f"{path}:1: header {list(header)}; expected columns {list(COLUMNS)}")
            return [_parse_row(path, n, row) for n, row in enumerate(reader, start=2)]
    except FileNotFoundError:
        raise SyntheticDataError(f"{path}: ground truth file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SyntheticDataError(f"{path}: cannot read ground truth: {exc}") from None
