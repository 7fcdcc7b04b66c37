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

import logging
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from edge.config import TrapConfig
from edge.errors import ConfigError
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
        self.folder.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            if not ok:
                raise OSError("JPEG encoding failed")
            tmp.write_bytes(buf.tobytes())
            tmp.replace(path)
        except OSError as exc:  # tonight still starts from it; only a restart would lack it
            log.warning(
                "%s: cannot store the night's empty sheet (%s); a restart tonight will lack it", path, exc
            )
        log.info(
            "detector: the lamp went on %.0f s ago: this frame is the night's empty sheet (%s)", since, path
        )
        return image
