"""Following each insect across frames so that it is counted once.

- `tracker`: Hungarian assignment of detections to tracks, track lifecycle, occlusion and
  re-identification.
- `appearance`: a cheap colour descriptor that helps tell neighbouring insects apart.
- `vote`: one taxon per track from the classifications of its detections.

`TrackingError` is defined here, before the submodules are imported, so each of them can
raise it without importing another.
"""

from edge.errors import TrapcamError


class TrackingError(TrapcamError):
    """Input to the tracker or the vote is unusable (time going backwards, empty box, bad crop)."""


from edge.track.appearance import appearance_descriptor, appearance_distance  # noqa: E402
from edge.track.tracker import Tracker, TrackInput, TrackState, TrackUpdate  # noqa: E402
from edge.track.vote import TaxonVote, VoteResult, vote  # noqa: E402

__all__ = [
    "TaxonVote",
    "TrackInput",
    "TrackState",
    "TrackUpdate",
    "Tracker",
    "TrackingError",
    "VoteResult",
    "appearance_descriptor",
    "appearance_distance",
    "vote",
]
