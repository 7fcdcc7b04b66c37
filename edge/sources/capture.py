"""The capture thread: reads a FrameSource in the background into a bounded queue.

Why a thread: a camera keeps exposing while the pipeline detects and classifies, so the
newest frame is ready when the pipeline asks. Why bounded: a trap runs for months, and a
pipeline that falls behind must never grow memory without limit.

Queue policy differs by source, on purpose:

* Live sources (cameras): when the queue is full the OLDEST frame is dropped and counted in
  `dropped_frames`. A late frame is worth less than a fresh one, and the camera cannot wait.
* Replays (image folder, video file, synthetic night): the producer BLOCKS until there is
  room. A recorded night must be processed completely; nothing is ever dropped.

Failures: a live source that raises SourceError (on open or read) is closed and reopened
with exponential backoff (`reopen_backoff_s`: first and longest wait); `state` is
"reconnecting" until frames flow again, then "ok". Each state change is logged once, not
every retry. A replay that fails is "failed" and `get()` re-raises its error. When no frame
has arrived for `stall_timeout_s`, `stalled()` is True and the run loop exits non-zero so
systemd restarts the service.

Work on each frame can run here too (`prepare`): the pipeline detects insects in the capture
thread, so detection (OpenCV) of the next frame overlaps classification (TFLite) of this
one; both release the GIL. `prepare` raising a TrapcamError (e.g. a frame of the wrong
shape) skips that frame and counts it as corrupt.

Consumer loop::

    with CaptureThread(source, settings) as capture:
        while not capture.done:
            frame = capture.get(timeout=1.0)
            if frame is None:
                if capture.stalled():
                    sys.exit(3)
                continue
            process(frame)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from edge.config import CaptureSettings
from edge.errors import ConfigError, SourceError, TrapcamError
from edge.frames import Frame
from edge.sources.base import EndOfStream, FrameSource

log = logging.getLogger(__name__)

State = Literal["starting", "ok", "reconnecting", "ended", "failed", "stopped"]


class CaptureThread:
    """Background capture with a bounded queue, reconnection and stall detection.

    `clock` is the monotonic time that stall detection measures against (injectable so a
    test can make hours pass); waits (pacing, backoff, `get` timeouts) use real time.
    """

    def __init__(
        self,
        source: FrameSource,
        settings: CaptureSettings,
        clock: Callable[[], float] = time.monotonic,
        prepare: Callable[[Frame], Any] | None = None,
    ) -> None:
        self.source = source
        self.settings = settings
        self.clock = clock
        self.prepare = prepare
        self.live = bool(source.live)
        self._queue: deque[Any] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture[{source.name}]", daemon=True)
        self._state: State = "starting"
        self._error: BaseException | None = None
        self.last_error: str | None = None
        self.frames_captured = 0
        self.dropped_frames = 0
        self.corrupt_frames = 0
        self.reopen_attempts = 0
        self._last_progress = clock()
        self._down_since: float | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> CaptureThread:
        self._last_progress = self.clock()
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish, wake it if it waits, and join it."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("capture thread for %s did not stop within %.1f s", self.source.name, timeout)
        with self._cond:
            if self._state not in ("ended", "failed"):
                self._state = "stopped"
            self._cond.notify_all()

    def __enter__(self) -> CaptureThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ consumer side

    @property
    def state(self) -> State:
        return self._state

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def done(self) -> bool:
        """True once the source has ended, failed or been stopped and the queue is drained."""
        return self._state in ("ended", "failed", "stopped") and not self._queue

    def get(self, timeout: float | None = None) -> Any:
        """Next frame (or what `prepare` made of it), oldest first; None on timeout or once the
        stream has ended and drained.

        Re-raises the source's error when a replay has failed (after the queued frames).
        """
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._queue:
                if self._state == "failed" and self._error is not None:
                    raise self._error
                if self._state in ("ended", "stopped"):
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame = self._queue.popleft()
            self._last_progress = self.clock()  # a replay blocked on a slow consumer is not stalled
            self._cond.notify_all()
            return frame

    def stalled(self) -> bool:
        """True when no frame has come for `stall_timeout_s` (never after a replay ended)."""
        if self._state in ("ended", "stopped"):
            return False
        return self.clock() - self._last_progress > self.settings.stall_timeout_s

    # ------------------------------------------------------------ producer side

    def _set_state(self, state: State, message: str | None = None) -> None:
        """Change state and log it once; retries in the same state log at debug level only."""
        with self._cond:
            if state == self._state:
                return
            self._state = state
            self._cond.notify_all()
        level = logging.WARNING if state in ("reconnecting", "failed") else logging.INFO
        log.log(level, "capture %s: %s%s", self.source.name, state, f" ({message})" if message else "")

    def queue_limit(self, frame_bytes: int) -> int:
        """Frames of this size the queue may hold: queue_size, fewer where they would pass queue_mb
        (a 4K frame is 24 MiB), never fewer than one."""
        fit = int(self.settings.queue_mb * 2**20 // max(int(frame_bytes), 1))
        return max(1, min(self.settings.queue_size, fit))

    def _room(self, limit: int) -> bool:
        """A replay waits for room in the queue *before* it reads the next file: a decoded frame
        held while waiting would be one more frame in memory (24 MiB at 4K). False: stop was asked."""
        with self._cond:
            while len(self._queue) >= limit and not self._stop.is_set():
                self._cond.wait(0.5)
        return not self._stop.is_set()

    def _put(self, frame: Any, limit: int) -> None:
        """Queue a frame: a live source drops the oldest beyond `limit` (queue_limit), a replay waits."""
        with self._cond:
            if self.live:
                while len(self._queue) >= limit:
                    self._queue.popleft()
                    self.dropped_frames += 1
            else:
                while len(self._queue) >= limit and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
            self._queue.append(frame)
            self.frames_captured += 1
            self._last_progress = self.clock()
            self._cond.notify_all()

    def _wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; False when asked to stop meanwhile (stop() wakes it at once)."""
        if seconds > 0:
            self._stop.wait(seconds)
        return not self._stop.is_set()

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self.last_error = str(exc)
        self._set_state("failed", str(exc))

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug in a source must reach the consumer, not vanish here
            self._fail(exc)
        finally:
            self._close_source()
            with self._cond:
                self._cond.notify_all()

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception as exc:
            log.debug("closing %s failed: %s", self.source.name, exc)

    def _loop(self) -> None:
        first_wait, longest_wait = self.settings.reopen_backoff_s
        backoff = first_wait
        opened = False
        next_capture = time.monotonic()
        limit = self.settings.queue_size  # of frames of the last size read (queue_limit)
        while not self._stop.is_set():
            try:
                if not opened:
                    self.source.open()
                    opened = True
                if self.live and self.settings.interval_s > 0:
                    if not self._wait(next_capture - time.monotonic()):
                        return
                    next_capture = max(next_capture + self.settings.interval_s, time.monotonic())
                if not self.live and not self._room(limit):
                    return  # asked to stop while waiting
                frame = self.source.read()
            except EndOfStream:
                self._set_state("ended")
                return
            except SourceError as exc:
                if not self.live:
                    self._fail(exc)
                    return
                self.last_error = str(exc)
                if self._state != "reconnecting":
                    self._down_since = self.clock()
                self._set_state("reconnecting", str(exc))
                if opened:
                    self._close_source()
                    opened = False
                log.debug("reopening %s in %.2f s", self.source.name, backoff)
                if not self._wait(backoff):
                    return
                self.reopen_attempts += 1
                backoff = min(backoff * 2, longest_wait)
                continue
            if frame is None:
                self.corrupt_frames += 1
                continue
            item: Any = frame
            if self.prepare is not None:
                try:
                    item = self.prepare(frame)
                except ConfigError:
                    raise  # the setup is wrong (not this frame): the run must stop and say so
                except TrapcamError as exc:
                    self.corrupt_frames += 1
                    log.warning("capture %s: skipped frame %s: %s", self.source.name, frame.name, exc)
                    continue
            if self._state != "ok":
                since = self._down_since
                self._set_state("ok", None if since is None else f"back after {self.clock() - since:.1f} s")
                self._down_since = None
                backoff = first_wait
            limit = self.queue_limit(frame.image.nbytes)
            self._put(item, limit)
