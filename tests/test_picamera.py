"""Picamera2 source against a stand-in `picamera2` module (the camera is the hardware boundary).

The fake records what the source asks of the camera and hands out numpy frames in the byte
order real picamera2 gives for "RGB888" ([B, G, R] per pixel).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, ClassVar

import numpy as np
import pytest

from edge.config import Picamera2Source
from edge.errors import SourceError
from edge.sources.capture import CaptureThread
from edge.sources.factory import make_source
from edge.sources.picamera import INSTALL_HINT, Picamera2FrameSource


class FakePicamera2:
    """Implements the part of picamera2.Picamera2 that the source uses."""

    cameras: ClassVar[list[dict[str, Any]]] = [{"Model": "imx708"}]
    has_autofocus = True
    fail_after: int | None = None  # capture_array raises after this many frames
    instances: ClassVar[list[FakePicamera2]] = []

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.calls: list[tuple[str, Any]] = []
        self.config: dict[str, Any] | None = None
        self.controls: dict[str, Any] = {}
        self.started = False
        self.closed = False
        self.captured = 0
        self.camera_controls = {"ExposureTime": (1, 1_000_000, None), "AnalogueGain": (1.0, 16.0, None)}
        if self.has_autofocus:
            self.camera_controls["AfMode"] = (0, 2, 0)
            self.camera_controls["LensPosition"] = (0.0, 15.0, 1.0)
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return FakePicamera2.cameras

    def create_still_configuration(self, main: dict[str, Any], buffer_count: int = 1) -> dict[str, Any]:
        self.calls.append(("create_still_configuration", main))
        return {"main": dict(main), "buffer_count": buffer_count}

    def configure(self, config: dict[str, Any]) -> None:
        self.calls.append(("configure", config))
        self.config = config

    def set_controls(self, controls: dict[str, Any]) -> None:
        self.calls.append(("set_controls", controls))
        self.controls.update(controls)

    def start(self) -> None:
        assert self.config is not None, "start() before configure()"
        self.calls.append(("start", None))
        self.started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        if not self.started:
            raise RuntimeError("camera not started")
        if self.fail_after is not None and self.captured >= self.fail_after:
            raise RuntimeError("Camera frontend has timed out!")
        assert self.config is not None
        width, height = self.config["main"]["size"]
        image = np.zeros((height, width, 3), np.uint8)
        image[..., 0] = 200  # blue byte first: picamera2 "RGB888" is [B, G, R] in memory
        image[..., 2] = self.captured % 256
        self.captured += 1
        return image

    def stop(self) -> None:
        self.calls.append(("stop", None))
        self.started = False

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closed = True


@pytest.fixture
def fake_picamera2(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakePicamera2]]:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(FakePicamera2, "cameras", [{"Model": "imx708"}])
    monkeypatch.setattr(FakePicamera2, "has_autofocus", True)
    monkeypatch.setattr(FakePicamera2, "fail_after", None)
    monkeypatch.setattr(FakePicamera2, "instances", [])
    yield FakePicamera2


def cfg(**kw: Any) -> Picamera2Source:
    return Picamera2Source(kind="picamera2", width=320, height=240, **kw)


def test_missing_picamera2_tells_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail
    source = Picamera2FrameSource(cfg())
    with pytest.raises(SourceError) as info:
        source.open()
    assert str(info.value) == INSTALL_HINT
    assert "sudo apt install python3-picamera2" in INSTALL_HINT and "--system-site-packages" in INSTALL_HINT


def test_configures_size_format_and_controls(fake_picamera2: type[FakePicamera2]) -> None:
    source = Picamera2FrameSource(
        cfg(autofocus="manual", lens_position=2.5, exposure_us=20000, analogue_gain=4.0, camera_index=0)
    )
    source.open()
    (camera,) = fake_picamera2.instances
    names = [name for name, _ in camera.calls]
    assert names == ["create_still_configuration", "configure", "set_controls", "start"]
    assert camera.config is not None
    assert camera.config["main"] == {"size": (320, 240), "format": "RGB888"}
    assert camera.controls == {"AfMode": 0, "LensPosition": 2.5, "ExposureTime": 20000, "AnalogueGain": 4.0}
    source.close()
    assert camera.closed and [n for n, _ in camera.calls][-2:] == ["stop", "close"]


def test_continuous_autofocus_and_automatic_exposure(fake_picamera2: type[FakePicamera2]) -> None:
    Picamera2FrameSource(cfg(autofocus="continuous")).open()
    assert fake_picamera2.instances[0].controls == {"AfMode": 2}
    Picamera2FrameSource(cfg()).open()
    assert "set_controls" not in [name for name, _ in fake_picamera2.instances[1].calls]


def test_frames_are_bgr_with_capture_timestamps(fake_picamera2: type[FakePicamera2]) -> None:
    source = make_source(cfg())
    assert isinstance(source, Picamera2FrameSource) and source.live is True
    source.open()
    before = datetime.now(timezone.utc)
    frames = [source.read() for _ in range(3)]
    after = datetime.now(timezone.utc)
    assert [f.index for f in frames] == [0, 1, 2]
    assert {f.clock_source for f in frames} == {"capture"}
    assert all(before <= f.timestamp <= after for f in frames)
    assert frames[0].timestamp <= frames[1].timestamp <= frames[2].timestamp
    assert frames[0].image.shape == (240, 320, 3)
    assert frames[0].image[0, 0, 0] == 200  # blue stays in channel 0 (OpenCV order): no conversion
    assert [int(f.image[0, 0, 2]) for f in frames] == [0, 1, 2]


def test_capture_failure_is_a_source_error(fake_picamera2: type[FakePicamera2]) -> None:
    fake_picamera2.fail_after = 1
    source = Picamera2FrameSource(cfg())
    source.open()
    assert source.read() is not None
    with pytest.raises(
        SourceError, match="picamera2 camera 0: capture failed: Camera frontend has timed out"
    ):
        source.read()


def test_capture_thread_reopens_the_camera_after_a_failure(fake_picamera2: type[FakePicamera2]) -> None:
    fake_picamera2.fail_after = 2  # each (re)opened camera gives two frames, then times out
    source = Picamera2FrameSource(cfg(reopen_backoff_s=(0.01, 0.02)))
    with CaptureThread(source, source.cfg) as capture:
        frames = [capture.get(timeout=5) for _ in range(5)]
    assert all(f is not None for f in frames)
    assert len(fake_picamera2.instances) >= 3
    assert all(cam.closed for cam in fake_picamera2.instances)


def test_missing_camera_and_missing_autofocus_are_named(fake_picamera2: type[FakePicamera2]) -> None:
    with pytest.raises(
        SourceError, match=r"no such camera \(source.camera_index=1, 1 camera\(s\) connected\)"
    ):
        Picamera2FrameSource(cfg(camera_index=1)).open()
    fake_picamera2.has_autofocus = False
    with pytest.raises(SourceError, match=r"has no autofocus; set source\.autofocus to 'none'"):
        Picamera2FrameSource(cfg(autofocus="continuous")).open()
    assert fake_picamera2.instances[-1].closed


def test_lens_position_needs_manual_focus() -> None:
    with pytest.raises(SourceError, match=r"source\.lens_position: not set"):
        Picamera2FrameSource(cfg(autofocus="manual"))
    with pytest.raises(SourceError, match="expected autofocus 'manual'"):
        Picamera2FrameSource(cfg(lens_position=1.0))
