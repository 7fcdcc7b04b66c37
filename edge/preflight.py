"""What `trapcam validate-config` checks beyond the file itself: what `trapcam run` would open.

Why: a config can be valid YAML with valid values and still fail at the first frame (a labels file
that is not there, a truncated model, a replay folder that is empty or holds its images in
subfolders). Checked before a trap is left in a field, such a mistake costs a minute, not a night.
Every check opens the real thing as `run` does and raises the same one-line error; a camera is the
one part not opened here (it may be in use by the running service).
"""

from __future__ import annotations

from collections.abc import Iterator

from edge.config import FolderSource, OpenCVSource, Picamera2Source, SyntheticSource, TrapConfig


def preflight(cfg: TrapConfig) -> Iterator[str]:
    """One line per part `run` would open, opened as `run` would; raises on the first that fails."""
    yield _source(cfg)
    yield _detector(cfg)
    yield _classifier(cfg)


def _source(cfg: TrapConfig) -> str:
    source = cfg.source
    if isinstance(source, FolderSource):
        from edge.sources.folder import FolderFrameSource

        folder = FolderFrameSource(source)  # a missing folder: the ConfigError `run` gives
        files = folder.require_files()
        return f"source: {len(files)} image(s) in {source.path}"
    if isinstance(source, OpenCVSource):
        from edge.sources.opencv_source import OpenCVFrameSource

        capture = OpenCVFrameSource(source)
        if capture.is_file:
            capture.open()  # a video file: opened and its first frame read, as `run` would
            capture.close()
            return f"source: video file {source.device} opens"
        return f"source: {capture.name} (a camera or stream: opened when `run` starts, not here)"
    if isinstance(source, Picamera2Source):
        return "source: Raspberry Pi camera (opened when `run` starts, not here: the service may hold it)"
    assert isinstance(source, SyntheticSource)
    return f"source: synthetic night, {source.frames} frames of {source.width}x{source.height}"


def _detector(cfg: TrapConfig) -> str:
    from edge.detect.factory import make_detector

    make_detector(cfg.detector)  # a learned detector's model and a sheet photo are read here
    return f"detector: {cfg.detector.kind} ready"


def _classifier(cfg: TrapConfig) -> str:
    if not cfg.classifier.enabled:
        return "classifier: off"
    from edge.classify.classifier import Classifier

    classifier = Classifier.from_config(cfg.classifier, data_dir=cfg.data_dir)
    height, width = classifier.input_size
    heads = ", ".join(f"{level} ({n} labels)" for level, n in classifier.label_counts.items())
    return (
        f"classifier: {classifier.bundle.model_path.name} loads on {cfg.classifier.backend}: {heads}, "
        f"input {width}x{height}"
    )
