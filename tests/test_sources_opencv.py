"""OpenCV source with a real video file written by cv2.VideoWriter, and unreachable devices."""

from __future__ import annotations

import functools
import http.server
import itertools
import os
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import OpenCVSource, parse_config
from edge.errors import ConfigError, SourceError
from edge.sources.base import EndOfStream
from edge.sources.factory import make_source
from edge.sources.opencv_source import OpenCVFrameSource

FPS = 10.0


def write_video(path: Path, frames: int = 12, size: tuple[int, int] = (96, 64)) -> Path:
    """An MJPG .avi whose frame i has brightness 10 + 12*i (so order is visible in pixels)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), min(10 + 12 * i, 255), np.uint8))
    writer.release()
    return path


def replay(source: OpenCVFrameSource) -> list:
    source.open()
    frames = []
    try:
        while True:
            frames.append(source.read())
    except EndOfStream:
        return frames
    finally:
        source.close()


def test_video_file_replays_every_frame_with_times_from_the_given_start(tmp_path: Path) -> None:
    video = write_video(tmp_path / "night.avi")
    start = datetime(2026, 7, 1, 23, 30, tzinfo=timezone(timedelta(hours=2)))
    source = OpenCVFrameSource(OpenCVSource(kind="opencv", device=str(video), start=start))
    assert source.live is False
    frames = replay(source)
    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    assert {f.clock_source for f in frames} == {"video"}
    assert frames[0].timestamp == datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc)
    steps = [(b.timestamp - a.timestamp).total_seconds() for a, b in itertools.pairwise(frames)]
    assert all(step == pytest.approx(1 / FPS, abs=1e-3) for step in steps)
    brightness = [float(f.image.mean()) for f in frames]
    assert brightness == sorted(brightness) and brightness[-1] - brightness[0] > 100
    assert frames[0].image.shape == (64, 96, 3) and frames[0].image.dtype == np.uint8


def test_video_file_start_defaults_to_mtime_minus_duration(tmp_path: Path) -> None:
    video = write_video(tmp_path / "night.avi", frames=20)
    end = 1_780_000_000.0
    os.utime(video, (end, end))
    frames = replay(OpenCVFrameSource(OpenCVSource(kind="opencv", device=str(video))))
    assert len(frames) == 20
    assert frames[0].timestamp.timestamp() == pytest.approx(end - 20 / FPS, abs=1e-3)
    assert frames[-1].timestamp.timestamp() == pytest.approx(end - 1 / FPS, abs=1e-3)


def test_missing_video_file_names_the_path(tmp_path: Path) -> None:
    source = OpenCVFrameSource(OpenCVSource(kind="opencv", device=str(tmp_path / "gone.mp4")))
    with pytest.raises(SourceError, match=r"video file .*gone\.mp4 not found"):
        source.open()


def test_not_a_video_file_cannot_be_opened(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.avi"
    bogus.write_text("this is not a video")
    with pytest.raises(SourceError, match=r"cannot open video file .*notes\.avi"):
        OpenCVFrameSource(OpenCVSource(kind="opencv", device=str(bogus))).open()


def test_usb_camera_that_does_not_exist_fails_fast() -> None:
    source = OpenCVFrameSource(OpenCVSource(kind="opencv", device=99))
    assert source.live is True
    began = time.monotonic()
    with pytest.raises(SourceError, match=r"cannot open USB camera 99 \(source.device=99\)"):
        source.open()
    assert time.monotonic() - began < 5


def test_rtsp_stream_on_a_closed_port_fails_fast_and_hides_the_password() -> None:
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"rtsp://admin:secret@127.0.0.1:{port}/stream1"
    source = OpenCVFrameSource(OpenCVSource(kind="opencv", device=url, timeout_s=2))
    began = time.monotonic()
    with pytest.raises(SourceError, match=r"cannot open stream rtsp://\*\*\*@127\.0\.0\.1") as info:
        source.open()
    assert time.monotonic() - began < 8
    assert "secret" not in str(info.value)


def test_read_before_open_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="not open"):
        OpenCVFrameSource(OpenCVSource(kind="opencv", device=0)).read()


def test_start_without_utc_offset_is_a_config_error() -> None:
    text = "source:\n  kind: opencv\n  device: night.mp4\n  start: '2026-07-01T21:30:00'\n"
    with pytest.raises(ConfigError, match=r"<config>:4: source.start: got '2026-07-01T21:30:00'"):
        parse_config(text)


def test_factory_builds_an_opencv_source(tmp_path: Path) -> None:
    source = make_source(OpenCVSource(kind="opencv", device="rtsp://cam.local/1"))
    assert isinstance(source, OpenCVFrameSource) and source.live is True


def test_http_stream_is_live_timed_at_grab_and_raises_when_it_drops(tmp_path: Path) -> None:
    """A real HTTP stream (a local server): frames carry capture times; the end is a failure."""
    write_video(tmp_path / "cam.avi", frames=6)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cam.avi"
        source = OpenCVFrameSource(OpenCVSource(kind="opencv", device=url, timeout_s=3))
        assert source.live is True
        before = datetime.now(timezone.utc)
        source.open()
        frames = [source.read() for _ in range(6)]
        after = datetime.now(timezone.utc)
        assert {f.clock_source for f in frames} == {"capture"}
        assert all(before <= f.timestamp <= after for f in frames)
        with pytest.raises(SourceError, match=r"stream http://127\.0\.0\.1:\d+/cam\.avi: grab failed"):
            source.read()
        source.close()
    finally:
        server.shutdown()
        server.server_close()
