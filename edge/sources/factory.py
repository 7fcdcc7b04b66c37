"""Build the frame source that the config's `source.kind` names.

Each source module is imported only when chosen, so a trap with a Pi camera never loads
the folder-replay code, and a desktop never needs picamera2.
"""

from __future__ import annotations

from edge.config import FolderSource, OpenCVSource, Picamera2Source, SyntheticSource
from edge.errors import SourceError
from edge.sources.base import FrameSource


def make_source(cfg: SyntheticSource | FolderSource | OpenCVSource | Picamera2Source) -> FrameSource:
    """Return an unopened source for `cfg`; the capture thread opens it (and reopens it)."""
    if isinstance(cfg, FolderSource):
        from edge.sources.folder import FolderFrameSource

        return FolderFrameSource(cfg)
    if isinstance(cfg, OpenCVSource):
        from edge.sources.opencv_source import OpenCVFrameSource

        return OpenCVFrameSource(cfg)
    if isinstance(cfg, Picamera2Source):
        from edge.sources.picamera import Picamera2FrameSource

        return Picamera2FrameSource(cfg)
    if isinstance(cfg, SyntheticSource):
        from edge.sources.synthetic import SyntheticFrameSource

        return SyntheticFrameSource.from_config(cfg)
    kind = getattr(cfg, "kind", None)
    raise SourceError(
        f"source.kind: got {kind!r}; expected one of 'synthetic', 'folder', 'opencv', 'picamera2'"
    )
