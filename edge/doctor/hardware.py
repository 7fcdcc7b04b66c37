"""Cameras, Coral Edge TPUs and GPUs: what is attached, read from sysfs, /dev and the vendors' tools.

Each check returns report lines and fills `Findings`, which the config check reuses to say *why*
a configured accelerator or camera would fail (what this machine has, and what was looked for).
"""

from __future__ import annotations

import importlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from edge.doctor.env import DoctorEnv, dist_version, first_line, has_module, read_text, run_command
from edge.doctor.report import Check, Status

# Coral USB Accelerator: Global Unichip id before the runtime loads its firmware, Google's after.
CORAL_USB_IDS: dict[tuple[str, str], str] = {
    ("1a6e", "089a"): "not yet initialised (normal until a program opens it)",
    ("18d1", "9302"): "initialised by the Edge TPU runtime",
}

EDGETPU_LIBRARY = "libedgetpu.so.1"

# /dev/video* nodes of the Pi's CSI/ISP/codec pipelines: libcamera owns them, OpenCV cannot read them.
_PIPELINE_NODES = re.compile(r"bcm2835-(codec|isp)|pispbe|rp1-cfe|unicam|hevc|rpivid|rpi-hevc", re.I)

_CAMERA_LINE = re.compile(r"^\s*(\d+)\s*:\s*(\S+)\s*(\[[^\]]*\])?")

MAX_VIDEO_PROBES = 8


@dataclass
class CoralFinding:
    """Coral devices seen (USB sysfs entries, PCIe /dev/apex_*) and whether libedgetpu loads."""

    usb: list[dict[str, str]] = field(default_factory=list)  # path, id, state, speed
    pcie: list[str] = field(default_factory=list)
    library: str | None = None  # the name that loaded
    library_error: str | None = None

    @property
    def device(self) -> bool:
        return bool(self.usb or self.pcie)

    def looked_for(self, env: DoctorEnv) -> str:
        ids = " or ".join(f"{v}:{p}" for v, p in CORAL_USB_IDS)
        return f"USB ids {ids} under {env.usb_devices}, PCIe {env.dev_dir}/apex_*, {EDGETPU_LIBRARY}"

    def summary(self) -> str:
        devices = [f"USB {d['path']} ({d['id']})" for d in self.usb] + self.pcie
        found = ", ".join(devices) if devices else "no Coral device"
        lib = f"{EDGETPU_LIBRARY} loads" if self.library else f"{EDGETPU_LIBRARY} not found"
        return f"{found}; {lib}"


@dataclass
class GpuFinding:
    """NVIDIA GPU or Jetson seen, and which TensorRT runtimes Python can reach."""

    nvidia: list[str] = field(default_factory=list)  # nvidia-smi lines
    jetson: str | None = None  # first line of nv_tegra_release
    tensorrt: str | None = None  # version of the tensorrt module
    ort_providers: list[str] = field(default_factory=list)

    @property
    def device(self) -> bool:
        return bool(self.nvidia or self.jetson)

    @property
    def tensorrt_runtime(self) -> bool:
        return self.tensorrt is not None or "TensorrtExecutionProvider" in self.ort_providers


@dataclass
class Findings:
    """What the hardware checks found, for the config check's explanations."""

    cameras: list[str] = field(default_factory=list)
    coral: CoralFinding = field(default_factory=CoralFinding)
    gpu: GpuFinding = field(default_factory=GpuFinding)
    interpreter: str | None = None


def check_cameras(env: DoctorEnv, findings: Findings) -> list[Check]:
    """picamera2, libcamera's camera list, and every /dev/video* node opened with OpenCV."""
    section = "Cameras"
    checks: list[Check] = []
    found: list[str] = []

    if has_module("picamera2"):
        try:
            importlib.import_module("picamera2")
            version = dist_version("picamera2") or "version unknown"
            checks.append(Check(section, "picamera2", "ok", f"importable ({version})"))
        except Exception as exc:  # a broken libcamera binding raises anything; report it, don't crash
            checks.append(
                Check(section, "picamera2", "warning", f"installed but import fails: {first_line(exc)}")
            )
    else:
        checks.append(
            Check(
                section,
                "picamera2",
                "missing",
                "not installed (Raspberry Pi OS: sudo apt install python3-picamera2, "
                "venv with --system-site-packages)",
            )
        )

    checks.append(_libcamera_check(env, found))
    checks.extend(_video_checks(env, found))

    findings.cameras = found
    if found:
        checks.append(Check(section, "camera", "ok", f"found: {', '.join(found)}", {"cameras": found}))
    else:
        checks.append(
            Check(
                section,
                "camera",
                "missing",
                f"no camera found (libcamera: {' / '.join(env.camera_listers) or 'not asked'}; "
                f"V4L2: {env.dev_dir}/video*)",
                {"cameras": []},
            )
        )
    return checks


def _libcamera_check(env: DoctorEnv, found: list[str]) -> Check:
    """The first camera lister that exists (rpicam-hello, then libcamera-hello) and what it lists."""
    for lister in env.camera_listers:
        result = run_command([lister, "--list-cameras"], env.timeout_s)
        if not result.found:
            continue
        if result.timed_out:
            return Check(
                "Cameras",
                "libcamera",
                "warning",
                f"{lister} --list-cameras: no answer within {env.timeout_s:g} s",
            )
        if result.error:
            return Check("Cameras", "libcamera", "warning", f"{lister}: {result.error}")
        cameras = []
        for line in result.output.splitlines():
            match = _CAMERA_LINE.match(line)
            if match:
                index, sensor, mode = match.groups()
                cameras.append(f"{index}: {sensor} {mode or ''}".strip())
        if cameras:
            found.extend(f"libcamera {c}" for c in cameras)
            return Check(
                "Cameras", "libcamera", "ok", f"{lister}: {'; '.join(cameras)}", {"cameras": cameras}
            )
        return Check("Cameras", "libcamera", "missing", f"{lister} --list-cameras: no cameras available")
    names = "/".join(env.camera_listers) or "none configured"
    return Check("Cameras", "libcamera", "missing", f"{names} not installed (Raspberry Pi OS: rpicam-apps)")


def _video_checks(env: DoctorEnv, found: list[str]) -> list[Check]:
    """Each /dev/video* node that is not part of the Pi's camera pipeline, opened in a child process."""
    nodes = sorted(env.dev_dir.glob("video*"), key=lambda p: (len(p.name), p.name))
    if not nodes:
        return [Check("Cameras", "v4l2", "missing", f"no {env.dev_dir}/video* devices")]
    checks: list[Check] = []
    to_probe: list[tuple[Path, str]] = []
    for node in nodes:
        name = read_text(env.video4linux / node.name / "name") or ""
        if name and _PIPELINE_NODES.search(name):
            continue  # part of the Pi's camera/codec pipeline: libcamera's, reported above
        to_probe.append((node, name))
    skipped = len(nodes) - len(to_probe)
    if len(to_probe) > MAX_VIDEO_PROBES:
        skipped += len(to_probe) - MAX_VIDEO_PROBES
        to_probe = to_probe[:MAX_VIDEO_PROBES]
    with ThreadPoolExecutor(max_workers=max(1, min(4, len(to_probe)))) as pool:
        results = list(pool.map(lambda item: env.probe_video(item[0], env.timeout_s), to_probe))
    for (node, name), probe in zip(to_probe, results, strict=True):
        label = f"'{name}' " if name else ""
        if probe.frame:
            size = (
                f"{probe.shape[1]}x{probe.shape[0]}" if probe.shape and len(probe.shape) >= 2 else "a frame"
            )
            found.append(f"{node} {label}".strip())
            checks.append(Check("Cameras", node.name, "ok", f"{label}opened, read {size}, closed"))
        elif probe.opened:
            checks.append(
                Check("Cameras", node.name, "warning", f"{label}opens but gave no frame (a metadata node?)")
            )
        else:
            why = probe.error or "OpenCV (V4L2) cannot open it"
            checks.append(Check("Cameras", node.name, "warning", f"{label}not a usable camera: {why}"))
    if skipped:
        checks.append(
            Check(
                "Cameras",
                "v4l2",
                "ok",
                f"{skipped} more /dev/video* node(s) not probed (codec/ISP or over the limit)",
            )
        )
    return checks


def check_coral(env: DoctorEnv, findings: Findings) -> list[Check]:
    """Coral USB (sysfs ids), Coral M.2/PCIe (/dev/apex_*), and whether libedgetpu loads."""
    section = "Coral"
    coral = findings.coral
    checks: list[Check] = []
    for device in sorted(env.usb_devices.glob("*")) if env.usb_devices.is_dir() else []:
        vendor, product = read_text(device / "idVendor"), read_text(device / "idProduct")
        if vendor is None or product is None or (vendor.lower(), product.lower()) not in CORAL_USB_IDS:
            continue
        speed = read_text(device / "speed") or "?"
        coral.usb.append(
            {
                "path": device.name,
                "id": f"{vendor}:{product}",
                "state": CORAL_USB_IDS[(vendor.lower(), product.lower())],
                "speed": speed,
            }
        )
    if coral.usb:
        for d in coral.usb:
            slow = d["speed"] not in ("5000", "10000", "20000")
            where = f"USB {d['speed']} Mbit/s" + (": use a USB 3 port for full speed" if slow else "")
            checks.append(
                Check(
                    section,
                    "usb",
                    "warning" if slow else "ok",
                    f"Coral USB Accelerator at {d['path']} ({d['id']}, {d['state']}; {where})",
                    dict(d),
                )
            )
    else:
        ids = ", ".join(f"{v}:{p}" for v, p in CORAL_USB_IDS)
        checks.append(
            Check(section, "usb", "missing", f"no Coral USB Accelerator (USB ids {ids} in {env.usb_devices})")
        )

    coral.pcie = [str(p) for p in sorted(env.dev_dir.glob("apex_*"))]
    if coral.pcie:
        checks.append(
            Check(section, "pcie", "ok", f"Coral M.2/PCIe: {', '.join(coral.pcie)}", {"devices": coral.pcie})
        )
    else:
        checks.append(
            Check(
                section,
                "pcie",
                "missing",
                f"no {env.dev_dir}/apex_* (Coral M.2/PCIe needs the gasket/apex driver)",
            )
        )

    candidates = [n for n in (env.find_library("edgetpu"), EDGETPU_LIBRARY) if n]
    for name in dict.fromkeys(candidates):
        try:
            env.load_library(name)
        except OSError as exc:
            coral.library_error = first_line(exc)
            continue
        coral.library = name
        break
    if coral.library:
        checks.append(Check(section, "libedgetpu", "ok", f"{coral.library} loads"))
    else:
        checks.append(
            Check(
                section,
                "libedgetpu",
                "missing",
                f"{EDGETPU_LIBRARY} not loadable ({coral.library_error or 'not found'}); "
                "install libedgetpu1-std: hardware/setup-coral.sh",
            )
        )

    if coral.device and coral.library:
        checks.append(Check(section, "coral", "ok", coral.summary()))
    elif coral.device:
        checks.append(
            Check(
                section, "coral", "warning", f"{coral.summary()}: the Edge TPU cannot be used until it loads"
            )
        )
    else:
        checks.append(Check(section, "coral", "missing", f"no Coral (looked for {coral.looked_for(env)})"))
    return checks


def check_gpu(env: DoctorEnv, findings: Findings) -> list[Check]:
    """nvidia-smi, a Jetson's L4T release file, and the TensorRT runtimes Python can import."""
    section = "GPU"
    gpu = findings.gpu
    checks: list[Check] = []
    if env.nvidia_smi is not None:
        query = [env.nvidia_smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        result = run_command(query, env.timeout_s)
        if not result.found:
            checks.append(Check(section, "nvidia-smi", "missing", f"{env.nvidia_smi} not found"))
        elif result.ok:
            gpu.nvidia = [line.strip() for line in result.output.splitlines() if line.strip()]
            checks.append(Check(section, "nvidia-smi", "ok", "; ".join(gpu.nvidia) or "ran, listed nothing"))
        else:
            why = (
                f"no answer within {env.timeout_s:g} s"
                if result.timed_out
                else first_line(result.output or result.error or "failed")
            )
            checks.append(Check(section, "nvidia-smi", "warning", f"{env.nvidia_smi}: {why}"))
    gpu.jetson = read_text(env.tegra_release)
    if gpu.jetson is not None:
        first = gpu.jetson.splitlines()[0] if gpu.jetson else "(empty)"
        checks.append(Check(section, "jetson", "ok", f"{env.tegra_release}: {first}"))
    else:
        checks.append(Check(section, "jetson", "missing", f"not a Jetson (no {env.tegra_release})"))

    if has_module("tensorrt"):
        try:
            module = importlib.import_module("tensorrt")
            gpu.tensorrt = str(getattr(module, "__version__", dist_version("tensorrt") or "version unknown"))
            checks.append(Check(section, "tensorrt", "ok", f"tensorrt {gpu.tensorrt} importable"))
        except Exception as exc:  # CUDA libraries missing make this raise anything
            checks.append(
                Check(section, "tensorrt", "warning", f"installed but import fails: {first_line(exc)}")
            )
    else:
        checks.append(Check(section, "tensorrt", "missing", "tensorrt Python bindings not installed"))

    if has_module("onnxruntime"):
        try:
            ort = importlib.import_module("onnxruntime")
            gpu.ort_providers = list(ort.get_available_providers())
            version = getattr(ort, "__version__", "?")
            gpu_providers = [
                p for p in gpu.ort_providers if p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
            ]
            status: Status = "ok" if gpu_providers else "missing"
            note = "" if gpu_providers else " (no TensorRT or CUDA provider)"
            checks.append(
                Check(
                    section,
                    "onnxruntime",
                    status,
                    f"onnxruntime {version}: providers {', '.join(gpu.ort_providers)}{note}",
                    {"providers": gpu.ort_providers},
                )
            )
        except Exception as exc:
            checks.append(
                Check(section, "onnxruntime", "warning", f"installed but import fails: {first_line(exc)}")
            )
    else:
        checks.append(Check(section, "onnxruntime", "missing", "onnxruntime not installed"))

    if gpu.device:
        what = (
            "; ".join(gpu.nvidia)
            if gpu.nvidia
            else f"Jetson ({gpu.jetson.splitlines()[0] if gpu.jetson else 'L4T'})"
        )
        runtime = (
            "a TensorRT runtime is importable" if gpu.tensorrt_runtime else "no TensorRT runtime importable"
        )
        checks.append(
            Check(section, "gpu", "ok" if gpu.tensorrt_runtime else "warning", f"{what}; {runtime}")
        )
    else:
        smi = env.nvidia_smi or "nvidia-smi"
        checks.append(Check(section, "gpu", "missing", f"no GPU (looked for {smi} and {env.tegra_release})"))
    return checks
