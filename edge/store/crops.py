"""Crop images on disk: one JPEG per detection, in dated folders, written atomically.

Paths are built from ids only (never from labels, which change when a model is replaced), so
the row in the database and the file always agree. Each file appears complete or not at all
(temp file + os.replace): a crop that a committed row points to was fully written first.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from edge.errors import StorageError

SNAPSHOT_DIR = "snapshots"  # below the crops folder: kept time-lapse snapshots


class CropWriteError(StorageError):
    """The crop could not be written (disk full, directory missing or blocked): worth retrying.

    errno: the operating system's error number (errno.ENOSPC: the disk is full)."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


def check_crop(image: object) -> np.ndarray:
    """Accept H x W x 3 (BGR) or H x W uint8 arrays; anything else is a programming error, said plainly."""
    if not isinstance(image, np.ndarray):
        raise StorageError(f"crop: expected a numpy array (H x W x 3 uint8 BGR), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise StorageError(f"crop: expected dtype uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] not in (1, 3):
        raise StorageError(f"crop: expected 3 colour channels (BGR), got shape {image.shape}")
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise StorageError(f"crop: expected H x W x 3, got shape {image.shape}")
    return image


def scaled_to_width(image: np.ndarray, width: int) -> np.ndarray:
    """The image scaled down (INTER_AREA) to `width` pixels across, keeping its aspect; never up.

    A kept time-lapse snapshot is a record for people and for Camtrap DP, not for detection: at
    1920 px a 4K sheet stays readable at a quarter of the bytes.
    """
    h, w = image.shape[:2]
    if w <= width:
        return image
    return cv2.resize(image, (int(width), max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


class CropStore:
    """Saves crops under `root` as `YYYY-MM-DD/<track_id>/<detection_id>.jpg` (UTC date)."""

    def __init__(self, root: str | Path, jpeg_quality: int = 90, fsync: bool = False) -> None:
        if not 1 <= int(jpeg_quality) <= 100:
            raise StorageError(f"crops: jpeg_quality: expected 1..100, got {jpeg_quality}")
        self.root = Path(root)
        self.jpeg_quality = int(jpeg_quality)
        # fsync costs a flush per file on an SD card; it only matters for power loss (a killed
        # process loses nothing that os.replace published).
        self.fsync = fsync

    def path_for(self, ts_utc: datetime, track_id: int | None, detection_id: int) -> str:
        """Relative POSIX path (stored in the database, portable when the folder is copied elsewhere)."""
        if ts_utc.tzinfo is None:
            raise StorageError(f"crops: timestamp {ts_utc.isoformat()}: expected timezone-aware UTC time")
        day = ts_utc.astimezone(timezone.utc).strftime("%Y-%m-%d")
        track = "untracked" if track_id is None else str(int(track_id))
        return f"{day}/{track}/{int(detection_id)}.jpg"

    def snapshot_path_for(self, ts_utc: datetime, run_id: int, frame_index: int) -> str:
        """Relative path of a time-lapse snapshot's image: `snapshots/YYYY-MM-DD/HHMMSS_r<run>_f<frame>.jpg`
        (UTC), apart from the per-track crop folders and sortable by time within a day."""
        if ts_utc.tzinfo is None:
            raise StorageError(f"snapshots: timestamp {ts_utc.isoformat()}: expected timezone-aware UTC time")
        utc = ts_utc.astimezone(timezone.utc)
        return f"{SNAPSHOT_DIR}/{utc:%Y-%m-%d}/{utc:%H%M%S}_r{int(run_id)}_f{int(frame_index)}.jpg"

    def resolve(self, rel_path: str) -> Path:
        """Absolute path of a stored crop; refuses paths that would leave the crops folder."""
        rel = PurePosixPath(rel_path)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise StorageError(f"crops: {rel_path!r}: expected a relative path inside {self.root}")
        return self.root.joinpath(*rel.parts)

    def encode(self, bgr: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".jpg", check_crop(bgr), [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise StorageError(f"crop: JPEG encoding failed for shape {bgr.shape}")
        return buf.tobytes()

    def save(self, rel_path: str, bgr: np.ndarray) -> int:
        """Encode and write one crop atomically; returns the bytes written."""
        return self.write_bytes(rel_path, self.encode(bgr))

    def write_bytes(self, rel_path: str, data: bytes) -> int:
        """Write already-encoded JPEG bytes atomically (the writer keeps them across retries)."""
        target = self.resolve(rel_path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise CropWriteError(f"crops: cannot write {target}: {exc.strerror or exc}", exc.errno) from None
        return len(data)
