"""The empty lit sheet a static-screen detector starts from (`detector.sheet_reference`).

Why: a mark, a stain or a scale bar on the sheet looks to a background model exactly like a moth
that sits all night (bench/real/METHOD.md: six of the seven false tracks on the real AMI frames
were such marks, and no pixel statistic over a night told them from sitting moths). What tells
them apart is evidence from before any insect came: the sheet when the lamp went on. So:

- a file: a photo of the empty lit sheet, taken with this camera in this place;
- `lamp_on`: a run whose first frame comes within `sheet_reference_within_s` of the schedule
  opening its window takes that frame as the night's empty sheet and stores it as
  `<data_dir>/sheet/<night>.jpg` (night = the export day, so one file per night); a restart later
  that night reads it back instead. A run that starts later without a stored sheet cannot know
  what was there before the insects: it says so once and starts as without a reference (insect-like
  blobs in its first frame are painted out, so sitting insects still count; marks may too).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from edge.config import TrapConfig
from edge.errors import ConfigError, ExportError
from edge.export.csvsafe import atomic_write
from edge.export.data import day_of
from edge.schedule import Schedule

log = logging.getLogger(__name__)


def read_sheet(path: Path) -> np.ndarray:
    """The image at `path` (BGR uint8), or a ConfigError naming the file."""
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise ConfigError(
            f"detector.sheet_reference {path}: not a readable image; expected a photo of the empty lit sheet"
        )
    return image


class LampOnSheet:
    """Finds the night's empty sheet for a run's first frame (`lamp_on`); see the module docstring."""

    KEEP_NIGHTS = 30

    def __init__(self, cfg: TrapConfig, schedule: Schedule) -> None:
        self.cfg = cfg
        self.schedule = schedule
        self.folder = cfg.data_dir / "sheet"

    def path_for(self, moment: datetime) -> Path:
        night = day_of(moment, self.cfg.site.timezone, self.cfg.export.day_starts_at)
        return self.folder / f"{night.isoformat()}.jpg"

    def for_first_frame(self, image: np.ndarray, moment: datetime) -> np.ndarray | None:
        """The empty sheet of this frame's night: stored earlier that night, or this very frame when
        the lamp went on moments ago (then stored); None when neither can be known."""
        path = self.path_for(moment)
        if path.is_file():
            log.info("detector: the empty sheet of this night is %s (stored when the lamp went on)", path)
            return read_sheet(path)
        opened = self.schedule.window_start(moment)
        since = None if opened is None else (moment - opened).total_seconds()
        if since is None or since > self.cfg.detector.sheet_reference_within_s:
            when = (
                "outside the schedule's windows" if since is None else f"{since / 60:.0f} min after the lamp"
            )
            log.warning(
                "detector.sheet_reference lamp_on: no empty sheet stored for the night of %s and this run "
                "started %s, so its first frame may hold insects: marks on the sheet may be counted as "
                "insects tonight",
                path.stem,
                when,
            )
            return None
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        try:
            if not ok:
                raise ExportError("JPEG encoding failed")
            atomic_write(path, buf.tobytes())
        except ExportError as exc:  # tonight still starts from it; only a restart would lack it
            log.warning(
                "%s: cannot store the night's empty sheet (%s); a restart tonight will lack it", path, exc
            )
        log.info(
            "detector: the lamp went on %.0f s ago: this frame is the night's empty sheet (%s)", since, path
        )
        self._prune()
        return image

    def _prune(self) -> None:
        """Keep the empty sheets of the last KEEP_NIGHTS nights: one 4K JPEG a night, unattended for
        a season, would otherwise grow without bound (older ones help nobody's restart)."""
        nights = sorted(p for p in self.folder.glob("????-??-??.jpg") if p.is_file())
        for old in nights[: -self.KEEP_NIGHTS]:
            try:
                old.unlink()
            except OSError as exc:
                log.warning("%s: cannot delete an old empty sheet (%s)", old, exc)


class CarriedBackground:
    """The static-screen detector's background, kept for the next run of the same source tonight.

    Why: a run that starts mid-night (after a crash, a watchdog kill, a power cut) has no empty
    sheet to start from unless one was configured or stored at lamp-on. Built from its own first
    frame, its background takes a small insect sitting perfectly still for sheet; when that insect
    moves it is a second track of an insect already counted (bench.restarts: +0..+2 insects per
    night with four kills). The detector never blends an insect into its background, so the
    background the earlier run held is the empty sheet as that run knew it.

    One PNG per source (`<data_dir>/sheet/background-<source key>.png`, at detection resolution,
    viewable) and a JSON beside it naming the source, the night and the frame time it was saved
    at. It is saved when the detector first builds its background, after a rebuild or repair (at
    most once a minute), every `SAVE_EVERY_S` of frame time for the light's drift, and at a stop.
    A run takes it only for the same night, from frames not older than it (`--from-start` never
    reads it), and only if the view has not moved (`StaticScreenDetector.continue_from`).
    """

    SAVE_EVERY_S = 300.0
    MIN_GAP_S = 60.0

    def __init__(self, cfg: TrapConfig, source: str) -> None:
        self.cfg = cfg
        self.source = source
        key = hashlib.sha1(source.encode("utf-8")).hexdigest()[:12]
        self.image_path = cfg.data_dir / "sheet" / f"background-{key}.png"
        self.info_path = self.image_path.with_suffix(".json")
        self._saved_version = -1
        self._saved_at: datetime | None = None
        self._failed = False

    def _night(self, moment: datetime) -> str:
        return day_of(moment, self.cfg.site.timezone, self.cfg.export.day_starts_at).isoformat()

    def load(self, moment: datetime) -> np.ndarray | None:
        """The background saved tonight before `moment` (float32 BGR), or None (and why, logged)."""
        if not self.info_path.is_file() or not self.image_path.is_file():
            return None
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
            saved = datetime.fromisoformat(str(info["frame_utc"]))
            night, source = str(info["night"]), str(info["source"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "%s: unreadable (%s); building the background from the first frame", self.info_path, exc
            )
            return None
        if source != self.source or night != self._night(moment):
            return None  # another night's (or, by a hash collision, another source's): not evidence
        if saved > moment:
            log.info("%s is from a later frame than this run's first; not used", self.image_path)
            return None
        image = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if image is None:
            log.warning(
                "%s: not a readable image; building the background from the first frame", self.image_path
            )
            return None
        return image.astype(np.float32)

    def due(self, version: int, moment: datetime) -> bool:
        """Whether to save now: the first background at once; a changed one (rebuilt, repaired) once
        `MIN_GAP_S` has passed since the last save (a crowded sheet repairs ghosts every few frames,
        and each save is a file written to an SD card); any after `SAVE_EVERY_S` (the light drifts)."""
        if self._saved_at is None:
            return True
        since = (moment - self._saved_at).total_seconds()
        return since >= self.SAVE_EVERY_S or (version != self._saved_version and since >= self.MIN_GAP_S)

    def save(self, background: np.ndarray, version: int, moment: datetime) -> None:
        """Write the background and its JSON atomically (image first: the JSON names a complete one).

        A failure (a full disk) is said once and costs only the next restart's carry-over.
        """
        self._saved_version, self._saved_at = version, moment
        info = {"source": self.source, "night": self._night(moment), "frame_utc": moment.isoformat()}
        ok, buf = cv2.imencode(".png", np.clip(background + 0.5, 0, 255).astype(np.uint8))
        try:
            if not ok:
                raise ExportError("PNG encoding failed")
            atomic_write(self.image_path, buf.tobytes())
            atomic_write(self.info_path, json.dumps(info).encode())
        except ExportError as exc:
            if not self._failed:
                log.warning(
                    "%s: cannot keep the detector's background for a restart (%s); a restart tonight "
                    "builds it from its first frame",
                    self.image_path,
                    exc,
                )
            self._failed = True
            return
        self._failed = False
