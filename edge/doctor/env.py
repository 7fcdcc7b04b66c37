"""Where the doctor looks, and the two ways it touches the machine: commands and camera probes.

`DoctorEnv` holds every path, command name and loader the probes use, so a test points the doctor
at a fake /sys tree, a fake `rpicam-hello` or a fake library loader exactly at the hardware
boundary. Commands and camera probes run in their own process group with a timeout: a hung V4L2
driver or USB camera must not hang the doctor.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edge.health import SystemProbes

# A camera probe runs in a child process: cv2.VideoCapture on a wedged device can block forever.
_VIDEO_PROBE = """
import json, sys
import cv2
cap = cv2.VideoCapture(sys.argv[1], cv2.CAP_V4L2)
out = {"opened": bool(cap.isOpened()), "frame": False}
if out["opened"]:
    ok, frame = cap.read()
    out["frame"] = bool(ok and frame is not None)
    if out["frame"]:
        out["shape"] = list(frame.shape)
cap.release()
print(json.dumps(out))
"""


@dataclass(frozen=True)
class CommandResult:
    """A command's outcome: found (on PATH), its exit code, stdout+stderr, and whether it timed out."""

    found: bool
    returncode: int | None = None
    output: str = ""
    timed_out: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.found and self.returncode == 0 and not self.timed_out


@dataclass(frozen=True)
class VideoProbe:
    """What OpenCV made of one /dev/video* node (opened, read one frame, closed)."""

    opened: bool
    frame: bool
    shape: tuple[int, ...] | None = None
    error: str | None = None


def _run_bounded(args: Sequence[str], timeout_s: float) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a command in its own process group, killed whole on timeout.

    The group matters: a wrapper script that waits on a hung child would otherwise keep the pipes
    open after the wrapper itself is killed. Raises subprocess.TimeoutExpired and OSError.
    """
    with subprocess.Popen(
        list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        return proc.returncode, out or "", err or ""


def run_command(args: Sequence[str], timeout_s: float) -> CommandResult:
    """Run a command by name or path; never raises, never waits much longer than `timeout_s`."""
    path = shutil.which(args[0])
    if path is None:
        return CommandResult(found=False)
    try:
        code, out, err = _run_bounded([path, *args[1:]], timeout_s)
    except subprocess.TimeoutExpired:
        return CommandResult(found=True, timed_out=True)
    except OSError as exc:
        return CommandResult(found=True, error=str(exc))
    return CommandResult(found=True, returncode=code, output=out + err)


def probe_video_opencv(device: Path, timeout_s: float) -> VideoProbe:
    """Open `device` with OpenCV's V4L2 backend in a child process, read one frame, close it."""
    try:
        code, out, err = _run_bounded([sys.executable, "-c", _VIDEO_PROBE, str(device)], timeout_s)
    except subprocess.TimeoutExpired:
        return VideoProbe(False, False, error=f"no answer within {timeout_s:g} s (a hung driver or camera?)")
    except OSError as exc:
        return VideoProbe(False, False, error=str(exc))
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        last = (err.strip().splitlines() or [f"exit code {code}"])[-1]
        return VideoProbe(False, False, error=f"probe failed: {last}")
    result = json.loads(lines[-1])
    shape = tuple(result["shape"]) if result.get("shape") else None
    return VideoProbe(bool(result["opened"]), bool(result["frame"]), shape)


def _load_library(name: str) -> Any:
    """dlopen a shared library (raises OSError when it cannot be loaded)."""
    return ctypes.CDLL(name)


@dataclass
class DoctorEnv:
    """Where every probe looks; the defaults are the real machine, tests point them at fakes."""

    usb_devices: Path = Path("/sys/bus/usb/devices")
    dev_dir: Path = Path("/dev")
    video4linux: Path = Path("/sys/class/video4linux")
    tegra_release: Path = Path("/etc/nv_tegra_release")
    device_tree_model: Path = Path("/proc/device-tree/model")
    camera_listers: tuple[str, ...] = ("rpicam-hello", "libcamera-hello")
    nvidia_smi: str | None = "nvidia-smi"
    find_library: Callable[[str], str | None] = ctypes.util.find_library
    load_library: Callable[[str], Any] = _load_library
    probe_video: Callable[[Path, float], VideoProbe] = probe_video_opencv
    probes: SystemProbes | None = None  # None: SystemProbes(data_dir) with the real sources
    timeout_s: float = 10.0


def dist_version(*distributions: str) -> str | None:
    """The installed version of the first of `distributions` that pip metadata knows, else None."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def has_module(name: str) -> bool:
    """Whether `name` can be imported, found without importing it (some imports take seconds)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def first_line(text: object) -> str:
    """The first line of an error's text: report lines stay one line each."""
    lines = str(text).strip().splitlines()
    return lines[0] if lines else type(text).__name__


def read_text(path: Path) -> str | None:
    """A small sysfs/proc file's text without NULs (device-tree strings end in one), or None."""
    try:
        return path.read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None
