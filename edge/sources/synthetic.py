"""A frame source that plays a synthetic trap night, with its ground truth at hand.

Used by the demo, tests and benchmarks exactly like a camera: the pipeline cannot tell it from a
replayed folder, and `source.night` gives evaluation code the ground truth of every frame.
"""

from __future__ import annotations

import time
from datetime import datetime

from edge.config import SyntheticSource
from edge.errors import ConfigError, SourceError
from edge.frames import Frame
from edge.sources.base import EndOfStream
from edge.synth.scene import SceneParams, SyntheticNight


def parse_start(text: str, key: str = "source.start") -> datetime:
    """An ISO 8601 time with a zone ('Z' accepted); a time without a zone is an error, not a guess.

    key: what the error names (a config key, or a command-line option such as '--start').
    """
    try:
        start = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{key}: got {text!r}; expected an ISO time such as 2026-07-01T21:30:00+00:00"
        ) from None
    if start.tzinfo is None:
        raise ConfigError(f"{key}: got {text!r}; expected a time zone, e.g. 2026-07-01T21:30:00+00:00")
    return start


class SyntheticFrameSource:
    """Plays `night` frame by frame; with realtime, read() waits so frames come frame_interval_s apart."""

    live = False

    def __init__(self, night: SyntheticNight, realtime: bool = False) -> None:
        self.night = night
        self.realtime = realtime
        p = night.params
        self.name = f"synthetic:{p.scene}:seed={p.seed}"
        self._next: int | None = None
        self._t0 = 0.0
        self._resume_after: datetime | None = None
        self.skipped_frames = 0

    @classmethod
    def from_config(cls, cfg: SyntheticSource) -> SyntheticFrameSource:
        params = SceneParams(
            scene=cfg.scene,
            width=cfg.width,
            height=cfg.height,
            frames=cfg.frames,
            frame_interval_s=cfg.frame_interval_s,
            snapshot_every=cfg.snapshot_every,
            insects=cfg.insects,
            seed=cfg.seed,
            start=parse_start(cfg.start),
        )
        return cls(SyntheticNight(params), realtime=cfg.realtime)

    def skip_through(self, moment: datetime | None) -> None:
        """Start the next open after `moment` (frames up to it were processed by an earlier run)."""
        self._resume_after = moment

    def open(self) -> None:
        """Start (again) from the first frame, or from the first after `skip_through`'s moment."""
        first = 0
        if self._resume_after is not None:
            while first < len(self.night) and self.night.timestamp(first) <= self._resume_after:
                first += 1
        self.skipped_frames = first
        self._next = first
        self._t0 = time.monotonic() - (
            (self.night.timestamp(first) - self.night.timestamp(0)).total_seconds()
            if first < len(self.night)
            else 0.0
        )

    def read(self) -> Frame:
        if self._next is None:
            raise SourceError(f"{self.name}: read() called before open() or after close()")
        i = self._next
        if i >= len(self.night):
            raise EndOfStream(f"{self.name}: all {len(self.night)} frames played")
        if self.realtime:
            delay = (
                self._t0
                + (self.night.timestamp(i) - self.night.timestamp(0)).total_seconds()
                - time.monotonic()
            )
            if delay > 0:
                time.sleep(delay)
        image, _truth = self.night.render(i)
        self._next = i + 1
        return Frame(
            image=image,
            timestamp=self.night.timestamp(i),
            clock_source="synthetic",
            index=i,
            name=f"{self.name}#{i}",
        )

    def close(self) -> None:
        self._next = None
