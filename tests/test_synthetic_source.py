"""The synthetic frame source: built from the config, plays Frames, then EndOfStream."""

from __future__ import annotations

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


class FakeTime:
    """Stands in for the module's `time`: sleep() advances the clock by exactly what was asked."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_realtime_paces_frames_on_a_schedule_from_open(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr("edge.sources.synthetic.time", clock)
    source = make(frames=30, interval=0.05, realtime="true")
    source.open()
    read_at = []
    for _ in range(4):
        source.read()
        read_at.append(clock.now - 1000.0)
    assert read_at == pytest.approx([0.0, 0.05, 0.10, 0.15])  # frame k at open + k intervals
    assert clock.sleeps == pytest.approx([0.05] * 3)
    # A consumer 0.5 s late: frames already due come without waiting, then the schedule resumes.
    clock.now += 0.5  # now open + 0.65 s: frames 4-13 are due
    clock.sleeps.clear()
    frames = [source.read() for _ in range(11)]
    assert [f.index for f in frames] == list(range(4, 15))
    assert clock.sleeps == pytest.approx([0.05])  # only frame 14, due at open + 0.70 s
    # Frame times are trap time (interval apart), whatever the pacing did.
    assert frames[-1].timestamp - frames[0].timestamp == timedelta(seconds=0.5)
    # open() starts the schedule again.
    source.open()
    clock.sleeps.clear()
    source.read()
    source.read()
    assert clock.sleeps == pytest.approx([0.05])


def test_without_realtime_nothing_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeTime()
    monkeypatch.setattr("edge.sources.synthetic.time", clock)
    source = make(frames=4, interval=5.0)
    source.open()
    frames = [source.read() for _ in range(4)]
    assert clock.sleeps == [] and clock.now == 1000.0  # no 15 s of waiting
    assert [f.timestamp - frames[0].timestamp for f in frames] == [timedelta(seconds=5 * k) for k in range(4)]


@pytest.mark.parametrize(
    ("start", "message"),
    [("2026-07-01T21:30:00", "expected a time zone"), ("last tuesday", "expected an ISO time")],
)
def test_bad_start_time_is_named(start: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"source.start: got '{start}'; {message}"):
        make(start=start)
