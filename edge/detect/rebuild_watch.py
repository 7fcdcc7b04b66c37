"""Is the detector stuck rebuilding its background? Then the trap detects nothing, and health says so.

Both background detectors rebuild when most of the frame changes at once (a camera bumped, a lamp
switched): one rebuild is right and costs a few frames. A loose mount swinging in the wind, a camera
on a stem or a light that keeps jumping makes them rebuild again and again, and between rebuilds
(warm-up included) nothing is detected: a trap that runs, logs warnings nobody reads and counts
zero. So `detector-rebuilding` is raised in health while `REBUILD_LIMIT` or more rebuilds fall
within `REBUILD_WINDOW_S` of frame time (one bump, or a bump and a lamp, stay below it), and
said once in the log when it rises and when it clears. A light-trap detector that follows a knocked
view moves its background instead of rebuilding it (counts stay right); such moves count towards
the limit too, since a camera that keeps moving has a loose mount just the same.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime

REBUILD_LIMIT = 3
REBUILD_WINDOW_S = 600.0
FLAG = "detector-rebuilding"


class RebuildWatch:
    """Counts the detector's rebuilds by frame time; fed by the capture thread, read by health."""

    def __init__(self, limit: int = REBUILD_LIMIT, window_s: float = REBUILD_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self.total = 0  # rebuilds over the run: the detector's own counter at the last observation
        self.moves = 0  # the background moved with a knocked view, over the run (ditto)
        self._times: deque[datetime] = deque()
        self._raised = False
        self._lock = threading.Lock()

    def observe(self, rebuilds: int, moment: datetime, moves: int = 0) -> bool | None:
        """Take the detector's rebuild (and view move) counters after a frame at `moment`.

        Returns True when the flag rises with this frame, False when it clears, None otherwise (so
        the caller logs each change once).
        """
        with self._lock:
            new = max(0, rebuilds - self.total) + max(0, moves - self.moves)  # the counters only grow
            self._times.extend([moment] * new)
            self.total = max(self.total, rebuilds)
            self.moves = max(self.moves, moves)
            while self._times and (moment - self._times[0]).total_seconds() > self.window_s:
                self._times.popleft()
            raised = len(self._times) >= self.limit
            if raised == self._raised:
                return None
            self._raised = raised
            return raised

    @property
    def recent(self) -> int:
        """Rebuilds and moves within the window, as of the last observation."""
        with self._lock:
            return len(self._times)

    def flags(self) -> list[str]:
        """The health flag while raised (a list, as the view monitor's, for the sample's flags)."""
        with self._lock:
            return [FLAG] if self._raised else []
