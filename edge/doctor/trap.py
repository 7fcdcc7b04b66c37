"""The configured trap: would it start here? Config, source, model, backend, and a benchmark.

The backend is opened exactly as the service opens it at start (`open_backend`), so "would fail
at start" is the service's own error, with what this machine has appended to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.config import TrapConfig
from edge.doctor.env import DoctorEnv, has_module
from edge.doctor.hardware import Findings
from edge.doctor.report import Check
from edge.errors import TrapcamError

if TYPE_CHECKING:
    from edge.classify.bundle import LoadedBundle


def _source_check(cfg: TrapConfig, env: DoctorEnv, findings: Findings) -> Check:
    source = cfg.source
    retry = f"the service would retry for source.stall_timeout_s={source.stall_timeout_s:g} s, then exit 3"
    if source.kind == "synthetic":
        return Check("Config", "source", "ok", "synthetic night (no camera needed)")
    if source.kind == "folder":
        if source.path.is_dir():
            return Check("Config", "source", "ok", f"image folder {source.path}")
        return Check(
            "Config", "source", "fail", f"would fail at start: image folder {source.path} does not exist"
        )
    if source.kind == "opencv":
        device = source.device
        if isinstance(device, int):
            node = env.dev_dir / f"video{device}"
            if not node.exists():
                return Check(
                    "Config", "source", "fail", f"would not capture: USB camera {device}: no {node} ({retry})"
                )
            usable = any(c == str(node) or c.startswith(f"{node} ") for c in findings.cameras)
            if not usable:
                return Check(
                    "Config",
                    "source",
                    "fail",
                    f"would not capture: {node} gave no frame (see Cameras; a running trapcam holds "
                    f"the camera: stop it first; {retry})",
                )
            return Check("Config", "source", "ok", f"USB camera {node} delivers frames")
        if "://" in device:
            return Check("Config", "source", "ok", "network stream (not opened by the doctor)")
        if Path(device).is_file():
            return Check("Config", "source", "ok", f"video file {device}")
        return Check("Config", "source", "fail", f"would fail at start: video file {device} not found")
    # picamera2
    if not has_module("picamera2"):
        return Check(
            "Config",
            "source",
            "fail",
            f"would not capture: source picamera2 but picamera2 is not installed "
            f"(sudo apt install python3-picamera2; {retry})",
        )
    libcamera = [c for c in findings.cameras if c.startswith("libcamera ")]
    wanted = f"libcamera {source.camera_index}:"
    if not any(c.startswith(wanted) for c in libcamera):
        seen = ", ".join(libcamera) or "none"
        return Check(
            "Config",
            "source",
            "fail",
            f"would not capture: picamera2 camera {source.camera_index} not listed by libcamera "
            f"(found: {seen}; {retry})",
        )
    return Check("Config", "source", "ok", f"picamera2 camera {source.camera_index}")


def _dependency_checks(cfg: TrapConfig) -> list[Check]:
    """Packages a configured feature imports at start: missing means the service would not start."""
    checks = []
    needs = [
        (cfg.mqtt.enabled, "mqtt", "paho.mqtt", "mqtt.enabled", "pip install paho-mqtt"),
        (
            cfg.schedule.light is not None,
            "light",
            "gpiozero",
            "schedule.light",
            "sudo apt install python3-gpiozero",
        ),
        (
            any(not w.start[0].isdigit() or not w.end[0].isdigit() for w in cfg.schedule.windows),
            "schedule",
            "astral",
            "schedule windows relative to the sun",
            "pip install astral",
        ),
    ]
    for used, name, module, what, hint in needs:
        if not used:
            continue
        if has_module(module):
            checks.append(Check("Config", name, "ok", f"{what}: {module} installed"))
        else:
            checks.append(
                Check("Config", name, "fail", f"would fail at start: {what} needs {module} ({hint})")
            )
    return checks


def _hardware_hint(backend: str, env: DoctorEnv, findings: Findings) -> str:
    if backend == "edgetpu":
        coral = findings.coral
        hint = f"this machine: {coral.summary()} (looked for {coral.looked_for(env)})"
        if coral.device and coral.library:
            hint += "; if trapcam is running it holds the Coral: stop it before the doctor"
        return hint
    if backend == "tensorrt":
        gpu = findings.gpu
        has = "a GPU" if gpu.device else "no GPU"
        runtime = (
            "a TensorRT runtime"
            if gpu.tensorrt_runtime
            else "no TensorRT runtime (tensorrt, onnxruntime-gpu)"
        )
        return f"this machine: {has}, {runtime}"
    return ""


def _backend_check(cfg: TrapConfig, bundle: LoadedBundle, env: DoctorEnv, findings: Findings) -> Check:
    """Open the configured backend exactly as the service would at start, then close it again."""
    from edge.classify.backends import open_backend

    name = cfg.classifier.backend
    try:
        backend, flags = open_backend(cfg.classifier, bundle, cfg.data_dir)
    except TrapcamError as exc:
        hint = _hardware_hint(name, env, findings)
        return Check(
            "Config", "backend", "fail", f"would fail at start: {exc}" + (f"; {hint}" if hint else "")
        )
    describe = getattr(backend, "describe", None)
    info: dict[str, Any] = dict(describe()) if callable(describe) else {}
    _close(backend)
    ran = str(getattr(backend, "name", name))
    shown = ", ".join(
        f"{key} {info[key]}"
        for key in ("runtime", "delegate", "device", "num_threads", "precision")
        if key in info
    )
    what = f"{ran} would run" + (f" ({shown})" if shown else "")
    data = {"flags": list(flags), "backend": info}
    if flags:
        return Check("Config", "backend", "warning", f"{what}, degraded: {', '.join(flags)}", data)
    return Check("Config", "backend", "ok", what, data)


def _close(backend: Any) -> None:
    """Release the backend's hardware now: the Edge TPU serves one process at a time."""
    close = getattr(backend, "close", None)
    if callable(close):
        close()


def check_config(
    config_path: Path, env: DoctorEnv, findings: Findings, bench_crops: int
) -> tuple[TrapConfig | None, list[Check]]:
    """Validate the config, its source, the model bundle, the backend it would run, and benchmark it."""
    from edge.classify.bundle import load_bundle
    from edge.config import load_config

    try:
        cfg = load_config(config_path)
    except TrapcamError as exc:
        return None, [Check("Config", "config", "fail", f"would fail at start: {exc}")]
    ccfg = cfg.classifier
    classifier = f"{ccfg.model} on {ccfg.backend}" if ccfg.enabled else "off"
    checks = [
        Check(
            "Config",
            "config",
            "ok",
            f"{config_path}: valid (source {cfg.source.kind}, detector {cfg.detector.kind}, "
            f"classifier {classifier})",
        ),
        _source_check(cfg, env, findings),
        *_dependency_checks(cfg),
    ]
    if not ccfg.enabled:
        checks.append(
            Check("Config", "classifier", "ok", "disabled (classifier.enabled: false): nothing to benchmark")
        )
        return cfg, checks
    try:
        bundle = load_bundle(
            ccfg.model,
            ccfg.labels,
            level=ccfg.level,
            input_range=ccfg.input_range,
            colour_order=ccfg.colour_order,
        )
    except TrapcamError as exc:
        checks.append(Check("Config", "model", "fail", f"would fail at start: {exc}"))
        return cfg, checks
    spec = bundle.manifest.input
    heads = ", ".join(f"{h.level} {len(h.labels)}" for h in bundle.manifest.outputs)
    checks.append(
        Check(
            "Config",
            "model",
            "ok",
            f"{bundle.model_path} loads ({bundle.source}, {spec.height}x{spec.width} {spec.dtype}, "
            f"labels: {heads}, sha256 {bundle.model_sha256[:12]})",
        )
    )
    checks.append(_backend_check(cfg, bundle, env, findings))
    checks.extend(benchmark_backends(cfg, bundle, env, findings, bench_crops))
    return cfg, checks


def _bench_crops(bundle: LoadedBundle, count: int) -> np.ndarray:
    """Deterministic noise crops of the model's input size (timing does not depend on content)."""
    spec = bundle.manifest.input
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, spec.height, spec.width, 3), dtype=np.uint8)


def _timing_text(result: dict[str, Any]) -> str:
    """'1.23 ms per crop (median; invoke 1.10 ms)' from a benchmark dict, whatever it holds."""
    median = result.get("median_ms_per_crop")
    if not isinstance(median, (int, float)):
        return json.dumps(result, default=str)
    invoke = result.get("invoke_ms_per_crop")
    extra = f"; invoke {invoke:.2f} ms" if isinstance(invoke, (int, float)) else ""
    return f"{median:.2f} ms per crop (median{extra})"


def benchmark_backends(
    cfg: TrapConfig, bundle: LoadedBundle, env: DoctorEnv, findings: Findings, crops: int, repeats: int = 5
) -> list[Check]:
    """Median ms per crop of the configured model on every backend that is available here.

    Each available backend is opened as the service would open it (without CPU fallback, so an
    accelerator's row measures the accelerator), benchmarked on `crops` noise crops of the model's
    input size, and closed; an unavailable one says why, and what this machine has.
    """
    from edge.classify.backends import open_backend, probe_backends
    from edge.classify.benchmark import benchmark

    section = "Benchmark"
    if crops <= 0:
        return [Check(section, "benchmark", "ok", "skipped (--bench-crops 0)")]
    batch = _bench_crops(bundle, crops)
    checks: list[Check] = []
    for probe in probe_backends(cfg.classifier, bundle, cfg.data_dir):
        name = str(probe.name)
        if not probe.available:
            hint = _hardware_hint(name, env, findings)
            detail = f"not available: {probe.detail}" + (f"; {hint}" if hint else "")
            checks.append(Check(section, name, "missing", detail))
            continue
        try:
            only = cfg.classifier.model_copy(update={"backend": name, "allow_cpu_fallback": False})
            backend, _ = open_backend(only, bundle, cfg.data_dir)
            try:
                result = dict(benchmark(backend, batch, repeats))
            finally:
                _close(backend)
        except TrapcamError as exc:
            checks.append(Check(section, name, "warning", f"available but could not be benchmarked: {exc}"))
            continue
        detail = f"{_timing_text(result)}; {crops} crops x {repeats} repeats; {probe.detail}"
        checks.append(Check(section, name, "ok", detail, result))
    return checks
