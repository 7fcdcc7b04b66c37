"""The frame-source interface shared by every camera and replay source."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from edge.frames import Frame


class EndOfStream(Exception):
    """Raised by `FrameSource.read` when a finite source (folder, video file) is exhausted."""


class FrameSource(Protocol):
    """A camera or replay that delivers frames one at a time.

    `open` may raise SourceError (the capture thread retries with backoff). `read` returns
    the next Frame, returns None when a frame was unusable (corrupt file, failed grab; the
    source counts and logs it), raises EndOfStream at the end of a finite source, and
    raises SourceError when the device is gone (the capture thread reopens it).
    """

    name: str
    live: bool  # True for cameras (reopen on failure, pace captures), False for replays

    def open(self) -> None: ...

    def read(self) -> Frame | None: ...

    def close(self) -> None: ...


@runtime_checkable
class ResumableSource(Protocol):
    """A replay that can start after the frames earlier runs already processed (edge/restart.py).

    `skip_through(moment)` before `open`: the next open starts at the first frame later than
    `moment`; `skipped_frames` says how many it passed over (read without decoding where it can).
    """

    skipped_frames: int

    def skip_through(self, moment: datetime | None) -> None: ...
