"""Replay a folder of images (a recorded night) as if a camera were taking them.

Each frame's time comes from the image itself (EXIF DateTimeOriginal or a time written in
the file name), so a replayed night gets the same timestamps, tracks and interval counts as
it had live. File modification times are the last resort: copying a card resets them, so
falling back to them is always logged and recorded in `Frame.clock_source`.

Corrupt or truncated files are a fact of life on SD cards that lose power mid-write: such a
file is skipped (read() returns None), counted in `corrupt_frames` and named in a warning,
and the replay goes on with the next file.
"""

from __future__ import annotations

import fnmatch
import io
import logging
import os
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.config import FolderSource
from edge.errors import ConfigError, SourceError
from edge.frames import Frame
from edge.sources.base import EndOfStream

log = logging.getLogger(__name__)

# EXIF tags (numbers from the EXIF 2.32 specification).
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_OFFSET_TIME_ORIGINAL = 36881
_SUBSEC_TIME_ORIGINAL = 37521

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"

# strptime directive -> regex that matches exactly what strptime would accept there.
# Fixed widths keep adjacent fields (e.g. %Y%m%d) from swallowing each other's digits.
_DIRECTIVES: dict[str, str] = {
    "Y": r"\d{4}",
    "y": r"\d{2}",
    "m": r"\d{2}",
    "d": r"\d{2}",
    "H": r"\d{2}",
    "I": r"\d{2}",
    "M": r"\d{2}",
    "S": r"\d{2}",
    "f": r"\d{1,6}",
    "j": r"\d{3}",
    "b": r"[A-Za-z]{3}",
    "B": r"[A-Za-z]{3,9}",
    "p": r"(?:AM|PM|am|pm)",
    "z": r"(?:Z|[+-]\d{2}:?\d{2})",
    "%": "%",
}


def natural_key(text: str) -> list[tuple[int, int | str]]:
    """Sort key that orders 'img2' before 'img10' (digit runs compare as numbers)."""
    parts = re.split(r"(\d+)", text)
    return [(0, int(p)) if p.isdigit() else (1, p.lower()) for p in parts if p]


def strptime_regex(fmt: str) -> re.Pattern[str]:
    """Turn a strptime format into a regex that finds such a time inside a longer name.

    Why: strptime only parses a whole string; camera file names wrap the time in a prefix
    and a counter (`trap_20260701-213000_001.jpg`), so we first locate the time with a regex.
    """
    out: list[str] = []
    i = 0
    while i < len(fmt):
        ch = fmt[i]
        if ch == "%":
            if i + 1 >= len(fmt):
                raise SourceError(f"source.filename_format {fmt!r}: ends with a lone '%'")
            code = fmt[i + 1]
            if code not in _DIRECTIVES:
                raise SourceError(
                    f"source.filename_format {fmt!r}: directive %{code} is not supported; "
                    f"expected only %{' %'.join(k for k in _DIRECTIVES if k != '%')} and %%"
                )
            out.append(_DIRECTIVES[code])
            i += 2
        else:
            out.append(re.escape(ch))
            i += 1
    # A lookahead group lets finditer() try overlapping candidates (e.g. after a counter).
    return re.compile(f"(?=({''.join(out)}))")


def _parse_exif_time(value: object, offset: object, subsec: object) -> tuple[datetime, bool] | None:
    """Parse 'YYYY:MM:DD HH:MM:SS' (+ optional offset, sub-seconds); None when unusable.

    Returns the time and whether it carried its own UTC offset.
    """
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.strptime(value.strip().rstrip("\x00"), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # cameras write "0000:00:00 00:00:00" or blanks when the clock was unset
    if isinstance(subsec, str) and subsec.strip().isdigit():
        digits = subsec.strip()[:6]
        stamp = stamp.replace(microsecond=int(digits.ljust(6, "0")))
    if isinstance(offset, str):
        match = re.fullmatch(r"\s*([+-])(\d{2}):(\d{2})\s*\x00*", offset)
        if match:
            sign = 1 if match.group(1) == "+" else -1
            delta = timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
            return stamp.replace(tzinfo=timezone(sign * delta)), True
    return stamp, False


def read_exif_time(data: bytes) -> tuple[datetime, bool] | None:
    """DateTimeOriginal from an image's EXIF, read with Pillow without decoding pixels.

    Looks in the EXIF sub-IFD (where cameras put it) and then in IFD0 (where some tools do).
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            exif = img.getexif()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    for ifd in (exif.get_ifd(_EXIF_IFD), exif):
        parsed = _parse_exif_time(
            ifd.get(_DATETIME_ORIGINAL), ifd.get(_OFFSET_TIME_ORIGINAL), ifd.get(_SUBSEC_TIME_ORIGINAL)
        )
        if parsed is not None:
            return parsed
    return None


def jpeg_is_truncated(data: bytes) -> bool:
    """True when a JPEG lost its end (power cut mid-write).

    OpenCV decodes a truncated JPEG "successfully", filling the missing part with grey, which
    would feed fake blobs to the detector. A complete JPEG ends with the EOI marker (FFD9),
    possibly followed by zero padding; only when it does not do we pay for a full Pillow
    decode, which also accepts files carrying trailers after EOI (phone MPF data).
    """
    if data.rstrip(b"\x00\r\n ").endswith(_JPEG_EOI):
        return False
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except (OSError, ValueError, SyntaxError):
        return True
    return False


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SourceError(
            f"source.timezone: got {name!r}; expected an IANA zone name such as 'Europe/Berlin' or 'UTC'"
        ) from None


class FolderFrameSource:
    """Frames from image files in a folder, in natural name order.

    Not live: the capture thread never drops its frames, so a whole night is processed.
    `corrupt_frames` counts skipped files; `mtime_frames` counts frames timed by mtime.
    """

    live = False

    def __init__(self, cfg: FolderSource) -> None:
        if not cfg.path.is_dir():  # a wrong path in the config, not a camera that may come back (exit 2)
            what = "is not a folder" if cfg.path.exists() else "does not exist"
            raise ConfigError(f"source.path {cfg.path}: {what}; expected the folder that holds the frames")
        self.cfg = cfg
        self.name = f"folder:{cfg.path}"
        self.zone = _zone(cfg.timezone)
        self.filename_regex = strptime_regex(cfg.filename_format) if cfg.filename_format else None
        if cfg.timestamps == "filename" and self.filename_regex is None:
            raise SourceError(
                "source.filename_format: not set; expected a strptime format such as '%Y%m%d-%H%M%S' "
                "when source.timestamps is 'filename'"
            )
        self.files: list[Path] = []
        self.corrupt_frames = 0
        self.mtime_frames = 0
        self._position = 0
        self._index = 0
        self._warned_mtime = False
        self._resume_after: datetime | None = None
        self.skipped_frames = 0

    # ------------------------------------------------------------ listing

    def _matches(self, rel: str) -> bool:
        pattern = self.cfg.pattern.lower()
        target = rel.lower() if "/" in pattern else rel.rsplit("/", 1)[-1].lower()
        return fnmatch.fnmatchcase(target, pattern)

    def list_files(self) -> list[Path]:
        """All matching files, naturally sorted by their path below the folder."""
        root = self.cfg.path
        if not root.exists():
            raise SourceError(f"image folder {root} does not exist (pattern {self.cfg.pattern!r})")
        if not root.is_dir():
            raise SourceError(f"image folder {root} is not a directory (pattern {self.cfg.pattern!r})")
        found: list[tuple[str, Path]] = []
        if self.cfg.recursive:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for fn in filenames:
                    path = Path(dirpath) / fn
                    rel = path.relative_to(root).as_posix()
                    if self._matches(rel):
                        found.append((rel, path))
        else:
            for path in root.iterdir():
                if path.is_file() and self._matches(path.name):
                    found.append((path.name, path))
        found.sort(key=lambda item: natural_key(item[0]))
        return [path for _, path in found]

    # ------------------------------------------------------------ FrameSource

    def require_files(self) -> list[Path]:
        """The files to replay, or a ConfigError (exit 2: a replay with nothing to read is a wrong
        config, not a camera for systemd to restart) that points at `source.recursive` when the
        images sit in subfolders."""
        files = self.list_files()
        if files:
            return files
        where = "in or below" if self.cfg.recursive else "in"
        hint = ""
        if not self.cfg.recursive:
            below = [p for p in sorted(self.cfg.path.rglob("*")) if p.is_file() and self._matches(p.name)]
            if below:
                example = below[0].relative_to(self.cfg.path).as_posix()
                hint = f"; {len(below)} match in its subfolders (e.g. {example}): set source.recursive: true"
        raise ConfigError(
            f"source.path {self.cfg.path}: no files match pattern {self.cfg.pattern!r} {where} it{hint}"
        )

    def open(self) -> None:
        self.files = self.require_files()
        self._position = self._index = 0
        self.skipped_frames = self._skip_processed()
        log.info("replaying %d images from %s", len(self.files) - self.skipped_frames, self.cfg.path)

    def skip_through(self, moment: datetime | None) -> None:
        """Start the next open after `moment` (frames up to it were processed by an earlier run)."""
        self._resume_after = moment

    def _skip_processed(self) -> int:
        """Pass over the leading files timed at or before the resume moment, reading no pixels."""
        if self._resume_after is None:
            return 0
        mtime_frames, warned = self.mtime_frames, self._warned_mtime
        try:
            while self._position < len(self.files):
                path = self.files[self._position]
                try:
                    stamp, _clock = self._timestamp(path, path.read_bytes())
                except OSError:
                    break  # read() says what is wrong with it
                if stamp > self._resume_after:
                    break
                self._position += 1
        finally:  # the counters and the warning are about the frames this run plays
            self.mtime_frames, self._warned_mtime = mtime_frames, warned
        self._index = self._position
        return self._position

    def read(self) -> Frame | None:
        if self._position >= len(self.files):
            if not self.cfg.loop or not self.files:
                raise EndOfStream(self.name)
            self._position = 0
        path = self.files[self._position]
        self._position += 1
        image, data = self._decode(path)
        if image is None or data is None:
            return None
        stamp, clock = self._timestamp(path, data)
        name = path.relative_to(self.cfg.path).as_posix()
        frame = Frame(image=image, timestamp=stamp, clock_source=clock, index=self._index, name=name)
        self._index += 1
        return frame

    def close(self) -> None:
        """Nothing to release: files are read and closed one at a time."""

    # ------------------------------------------------------------ decoding

    def _skip(self, path: Path, why: str) -> tuple[None, None]:
        self.corrupt_frames += 1
        log.warning("skipping corrupt image %s: %s", path, why)
        return None, None

    def _decode(self, path: Path) -> tuple[np.ndarray | None, bytes | None]:
        """Pixels with cv2 (fast, applies EXIF orientation like cv2.imread) or (None, None)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            return self._skip(path, f"cannot read file ({exc.strerror or exc})")
        if not data:
            return self._skip(path, "file is empty")
        if data.startswith(_JPEG_SOI) and jpeg_is_truncated(data):
            return self._skip(path, "JPEG is truncated (no end-of-image marker)")
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return self._skip(path, "not a decodable image")
        return image, data

    # ------------------------------------------------------------ timestamps

    def _timestamp(self, path: Path, data: bytes) -> tuple[datetime, str]:
        mode = self.cfg.timestamps
        tries: list[tuple[str, Callable[[], datetime | None]]] = []
        if mode in ("exif", "exif_then_filename"):
            tries.append(("exif", lambda: self._exif_time(data)))
        if mode in ("filename", "exif_then_filename") and self.filename_regex is not None:
            tries.append(("filename", lambda: self._filename_time(path.name)))
        for clock, get in tries:
            stamp = get()
            if stamp is not None:
                return stamp, clock
        if mode != "mtime":
            self.mtime_frames += 1
            if not self._warned_mtime:
                self._warned_mtime = True
                wanted = " or ".join(clock for clock, _ in tries) or "a time"
                log.warning(
                    "%s has no %s time (timestamps=%s, filename_format=%r); using file modification "
                    "times for such files (clock_source 'mtime'), which copying can change",
                    path,
                    wanted,
                    mode,
                    self.cfg.filename_format,
                )
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc), "mtime"

    def _localize(self, stamp: datetime) -> datetime:
        """Naive camera times are wall-clock times in cfg.timezone; convert to UTC."""
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=self.zone)
        return stamp.astimezone(timezone.utc)

    def _exif_time(self, data: bytes) -> datetime | None:
        parsed = read_exif_time(data)
        return None if parsed is None else self._localize(parsed[0])

    def _filename_time(self, name: str) -> datetime | None:
        assert self.filename_regex is not None and self.cfg.filename_format is not None
        for match in self.filename_regex.finditer(name):
            try:
                stamp = datetime.strptime(match.group(1), self.cfg.filename_format)
            except ValueError:
                continue  # digits in the right shape but not a date (e.g. month 13): try further on
            return self._localize(stamp)
        return None
