"""The synthetic frame source: built from the config, plays Frames, then EndOfStream."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest

from edge.config import parse_config
from edge.errors import ConfigError, SourceError
from edge.frames import Frame
from edge.sources.base import EndOfStream
from edge.sources.synthetic import SyntheticFrameSource

CONFIG = """
source:
  kind: synthetic
  scene: {scene}
  seed: 3
  width: 320
  height: 240
  frames: {frames}
  frame_interval_s: {interval}
  insects: 4
  start: "{start}"
  realtime: {realtime}
"""


def make(scene="sheet", frames=12, interval=5.0, start="2026-07-01T21:30:00Z", realtime="false"):
    text = CONFIG.format(scene=scene, frames=frames, interval=interval, start=start, realtime=realtime)
    return SyntheticFrameSource.from_config(parse_config(text).source)


@pytest.mark.parametrize("scene", ["sheet", "flowers"])
def test_plays_every_frame_then_end_of_stream(scene: str) -> None:
    source = make(scene=scene)
    assert source.live is False and scene in source.name
    source.open()
    frames = []
    with pytest.raises(EndOfStream):
        while True:
            frames.append(source.read())
    source.close()
    assert len(frames) == len(source.night) == 12
    for i, f in enumerate(frames):
        assert isinstance(f, Frame) and f.index == i and f.clock_source == "synthetic"
        assert f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8
        assert f.timestamp.utcoffset() == timedelta(0)
        assert np.array_equal(f.image, source.night.render(i)[0])
    assert frames[0].timestamp.isoformat() == "2026-07-01T21:30:00+00:00"
    assert frames[-1].timestamp - frames[0].timestamp == timedelta(seconds=55)


def test_reopen_starts_again_and_read_needs_open() -> None:
    source = make(frames=3)
    with pytest.raises(SourceError, match="before open"):
        source.read()
    source.open()
    first = source.read()
    source.read()
    source.open()
    assert source.read().index == 0 and np.array_equal(first.image, source.night.render(0)[0])
    source.close()
    with pytest.raises(SourceError, match="after close"):
        source.read()


def test_realtime_paces_frames() -> None:
    source = make(frames=4, interval=0.05, realtime="true")
    source.open()
    t = time.monotonic()
    for _ in range(4):
        source.read()
    assert time.monotonic() - t >= 0.14
    fast = make(frames=4, interval=5.0)
    fast.open()
    t = time.monotonic()
    for _ in range(4):
        fast.read()
    assert time.monotonic() - t < 2.0  # not realtime: no 15 s of waiting


@pytest.mark.parametrize(
    ("start", "message"),
    [("2026-07-01T21:30:00", "expected a time zone"), ("last tuesday", "expected an ISO time")],
)
def test_bad_start_time_is_named(start: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"source.start: got '{start}'; {message}"):
        make(start=start)
