"""What a restarted trap needs to go on following the insects its previous run left open.

A track's row holds its last box, times, hits and votes, but the tracker also keeps a colour
histogram, the classifier's embedding, the vote tallies and which detection was its best. Without
them a moth that sits through a restart (a crash, a SIGKILL, a power cut, an update) becomes a
second track and a second count: on a synthetic night killed four times, 72 insects for 30.

So while a track is open, and for the tracks a run's end closed, its row carries this state as
`tracks.resume_json`; the next run of the same source hands those tracks back to the tracker
(`Tracker.carry_over`), which continues them by its ordinary rules: a track unseen for longer
than `max_gap_s` is lost, one lost for longer than `reid_window_s` ends. Tracks the tracker
itself ended keep no resume state.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.track import TrackingError


def _encode(vector: np.ndarray | None) -> str | None:
    if vector is None:
        return None
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _decode(text: Any, what: str) -> np.ndarray | None:
    if text is None:
        return None
    try:
        raw = base64.b64decode(str(text), validate=True)
    except ValueError:
        raise TrackingError(f"resume state: {what} is not base64 text") from None
    if not raw or len(raw) % 4:
        raise TrackingError(f"resume state: {what} holds {len(raw)} bytes; expected float32 values")
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    if not np.all(np.isfinite(vector)):
        raise TrackingError(f"resume state: {what} holds values that are not finite numbers")
    return vector


@dataclass(frozen=True)
class ResumeState:
    """The tracker's memory of one track beyond its row.

    appearance / embedding: the running colour histogram and classifier embedding (None: none yet).
    vote: `TaxonVote.state()`.
    best_key: the key of the track's best detection so far, so a worse one does not replace it;
        best_box: that detection's box (x0, y0, x1, y1), what the insect's size is measured on.
    velocity: px/s of its last box, so a walking insect is looked for where it went meanwhile.
    lost: it was waiting for re-identification (unseen) when saved.
    counted: the run that saved it counted it already (ended at that run's clean end, its summary
        and message sent); a killed run's open tracks were never counted by it.
    revision: the revision of the last MQTT track message for it (1: the first; a continuation
        publishes the next one).
    """

    appearance: np.ndarray | None
    embedding: np.ndarray | None
    vote: dict[str, Any] = field(default_factory=dict)
    best_key: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    best_box: tuple[int, int, int, int] | None = None
    velocity: tuple[float, float] = (0.0, 0.0)
    lost: bool = False
    counted: bool = False
    revision: int = 1

    def to_json(self) -> str:
        return json.dumps(
            {
                "appearance": _encode(self.appearance),
                "embedding": _encode(self.embedding),
                "vote": self.vote,
                "best_key": list(self.best_key),
                "best_box": list(self.best_box) if self.best_box is not None else None,
                "velocity": [round(v, 3) for v in self.velocity],
                "lost": self.lost,
                "counted": self.counted,
                "revision": self.revision,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> ResumeState:
        """Parse what `to_json` wrote; a damaged value is a TrackingError naming the field."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            raise TrackingError("resume state: not JSON") from None
        if not isinstance(data, dict):
            raise TrackingError(f"resume state: expected an object, got {type(data).__name__}")
        key = data.get("best_key", [-1.0, -1.0, -1.0])
        if not (isinstance(key, list) and len(key) == 3 and all(isinstance(k, int | float) for k in key)):
            raise TrackingError(f"resume state: best_key {key!r}; expected three numbers")
        box = data.get("best_box")
        if box is not None and not (
            isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) for v in box)
        ):
            raise TrackingError(f"resume state: best_box {box!r}; expected four integers or null")
        velocity = data.get("velocity", [0.0, 0.0])
        if not (
            isinstance(velocity, list)
            and len(velocity) == 2
            and all(isinstance(v, int | float) and math.isfinite(v) for v in velocity)
        ):
            raise TrackingError(f"resume state: velocity {velocity!r}; expected two finite numbers")
        revision = data.get("revision", 1)
        if isinstance(revision, bool) or not isinstance(revision, int) or revision < 1:
            raise TrackingError(f"resume state: revision {revision!r}; expected an integer >= 1")
        vote = data.get("vote") or {}
        if not isinstance(vote, dict):
            raise TrackingError(f"resume state: vote is a {type(vote).__name__}; expected an object")
        return cls(
            appearance=_decode(data.get("appearance"), "appearance"),
            embedding=_decode(data.get("embedding"), "embedding"),
            vote=vote,
            best_key=(float(key[0]), float(key[1]), float(key[2])),
            best_box=None if box is None else (box[0], box[1], box[2], box[3]),
            velocity=(float(velocity[0]), float(velocity[1])),
            lost=bool(data.get("lost", False)),
            counted=bool(data.get("counted", False)),
            revision=revision,
        )
