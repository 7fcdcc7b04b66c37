"""The Raspberry Pi camera through picamera2.

picamera2 is tied to the OS's libcamera build, so it comes from apt, not pip, and it does
not exist on a desktop: it is imported inside `open()`, only when this source is used.

Colour order: picamera2 follows libcamera/DRM format names, which describe pixels as a
little-endian word; its "RGB888" format therefore lands in numpy as [B, G, R] per pixel —
exactly OpenCV's BGR order, so frames need no conversion. (Picamera2 manual, appendix A,
"RGB888 - 24 bits per pixel, ordered [B, G, R]"; confirmed by the maintainers in
raspberrypi/picamera2 issues #191 and #848.)
"""

from __future__ import annotations

import importlib
import logging
from datetime import datetime, timezone
from typing import Any

import numpy as np

from edge.config import Picamera2Source
from edge.errors import SourceError
from edge.frames import Frame

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "picamera2 is not installed: on Raspberry Pi OS run 'sudo apt install python3-picamera2' "
    "and create the venv with --system-site-packages"
)

# libcamera's AfModeEnum values (Manual, Auto, Continuous); plain ints avoid importing libcamera.
AF_MODE_MANUAL = 0
AF_MODE_CONTINUOUS = 2


def camera_controls(cfg: Picamera2Source) -> dict[str, Any]:
    """The libcamera controls that the config asks for (nothing set = camera's automatic mode)."""
    controls: dict[str, Any] = {}
    if cfg.autofocus == "continuous":
        controls["AfMode"] = AF_MODE_CONTINUOUS
    elif cfg.autofocus == "manual":
        controls["AfMode"] = AF_MODE_MANUAL
        controls["LensPosition"] = float(cfg.lens_position) if cfg.lens_position is not None else 0.0
    if cfg.exposure_us is not None:
        controls["ExposureTime"] = int(cfg.exposure_us)
    if cfg.analogue_gain is not None:
        controls["AnalogueGain"] = float(cfg.analogue_gain)
    return controls


class Picamera2FrameSource:
    """Live frames from a Pi camera, BGR at the configured size, timed at capture."""

    live = True

    def __init__(self, cfg: Picamera2Source) -> None:
        if cfg.autofocus == "manual" and cfg.lens_position is None:
            raise SourceError(
                "source.lens_position: not set; expected dioptres (2.0 = 50 cm) when autofocus is 'manual'"
            )
        if cfg.autofocus != "manual" and cfg.lens_position is not None:
            raise SourceError(
                f"source.lens_position: got {cfg.lens_position!r} with autofocus {cfg.autofocus!r}; "
                "expected autofocus 'manual' for a fixed lens position"
            )
        self.cfg = cfg
        self.name = f"picamera2 camera {cfg.camera_index}"
        self._camera: Any = None
        self._index = 0

    def open(self) -> None:
        try:
            module = importlib.import_module("picamera2")
        except ImportError:
            raise SourceError(INSTALL_HINT) from None
        cls = module.Picamera2
        try:
            found = len(cls.global_camera_info())
        except Exception as exc:
            raise SourceError(f"{self.name}: cannot list cameras: {exc}") from None
        if self.cfg.camera_index >= found:
            raise SourceError(
                f"{self.name}: no such camera (source.camera_index={self.cfg.camera_index}, "
                f"{found} camera(s) connected); check the ribbon cable"
            )
        try:
            camera = cls(camera_num=self.cfg.camera_index)
        except Exception as exc:
            raise SourceError(f"cannot open {self.name}: {exc}") from None
        try:
            self._configure(camera)
        except SourceError:
            camera.close()
            raise
        except Exception as exc:
            camera.close()
            raise SourceError(f"cannot configure {self.name}: {exc}") from None
        self._camera = camera

    def _configure(self, camera: Any) -> None:
        size = (self.cfg.width, self.cfg.height)
        controls = camera_controls(self.cfg)
        if "AfMode" in controls and "AfMode" not in camera.camera_controls:
            raise SourceError(
                f"{self.name} has no autofocus; set source.autofocus to 'none' (got {self.cfg.autofocus!r})"
            )
        # A still configuration gives full-quality processing (denoise) at the chosen size;
        # two buffers let the next frame expose while this one is handed over.
        config = camera.create_still_configuration(main={"size": size, "format": "RGB888"}, buffer_count=2)
        camera.configure(config)
        if controls:
            camera.set_controls(controls)
        camera.start()
        log.info("%s started at %dx%d with controls %s", self.name, size[0], size[1], controls or "auto")

    def read(self) -> Frame | None:
        camera = self._camera
        if camera is None:
            raise SourceError(f"{self.name} is not open")
        try:
            image = camera.capture_array("main")
        except Exception as exc:
            raise SourceError(f"{self.name}: capture failed: {exc}") from None
        stamp = datetime.now(timezone.utc)
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] < 3:
            raise SourceError(f"{self.name}: got an array of shape {image.shape}; expected H x W x 3")
        if image.shape[2] != 3:
            image = np.ascontiguousarray(image[:, :, :3])
        frame = Frame(image=image, timestamp=stamp, clock_source="capture", index=self._index, name=self.name)
        self._index += 1
        return frame

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        for step in (camera.stop, camera.close):
            try:
                step()
            except Exception as exc:  # closing a camera that has gone away must not mask the real error
                log.debug("%s: %s failed while closing: %s", self.name, step.__name__, exc)
