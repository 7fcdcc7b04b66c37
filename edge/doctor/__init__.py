"""`trapcam doctor`: what this machine has, and whether a configured trap would start on it.

Why a separate check instead of "just run it": a trap is set up once in a garden shed and then
left alone for months. A missing Coral, a camera that libcamera cannot see, an unsynchronised
clock or a model that the chosen backend cannot open must show up on the bench, in one go, with
what was looked for, not one at a time in `journalctl` at dusk. The report is honest: a reading
that cannot be taken says "missing", never a guess, so on a desktop or CI VM it says plainly that
there is no camera, no Coral and no GPU.

Modules: `env` (where probes look, commands with timeouts), `hardware` (cameras, Coral, GPU),
`system` (board, temperature, throttling, disk, memory, clock, packages), `trap` (the config:
source, model, backend, benchmark), `report` (lines, verdict, exit code).

Exit code: 0 when the configured setup would run (or no config was given), 1 when it would not
(any "fail" line: invalid config, unloadable model, configured accelerator missing, camera absent).
"""

from __future__ import annotations

from pathlib import Path

from edge.config import OpenCVSource, Picamera2Source, TrapConfig
from edge.doctor.env import CommandResult, DoctorEnv, VideoProbe, probe_video_opencv, run_command
from edge.doctor.hardware import CORAL_USB_IDS, Findings, check_cameras, check_coral, check_gpu
from edge.doctor.report import STATUSES, Check, DoctorReport, Status
from edge.doctor.system import check_packages, check_system
from edge.doctor.trap import benchmark_backends, check_config
from edge.health import SystemProbes
from edge.sources.opencv_source import OpenCVFrameSource


def run_doctor(
    config_path: Path | None = None, *, bench_crops: int = 32, env: DoctorEnv | None = None
) -> DoctorReport:
    """Run every check; with a config also validate it, open its backend and benchmark its model."""
    env = env or DoctorEnv()
    findings = Findings()
    checks: list[Check] = []
    checks += check_cameras(env, findings)
    checks += check_coral(env, findings)
    checks += check_gpu(env, findings)
    checks += check_packages(findings)
    cfg: TrapConfig | None = None
    config_checks: list[Check] = []
    if config_path is not None:
        cfg, config_checks = check_config(Path(config_path), env, findings, bench_crops)
    probes = env.probes or SystemProbes(cfg.data_dir if cfg is not None else Path.cwd())
    checks += check_system(env, probes, cfg)
    checks += config_checks
    failures = [c for c in checks if c.status == "fail"]
    if config_path is None:
        verdict = "hardware report only; give --config FILE to check whether a trap would start here"
    elif failures:
        first = failures[0]
        more = f" (and {len(failures) - 1} more fail line(s))" if len(failures) > 1 else ""
        verdict = f"would NOT run: {first.section} {first.name}: {first.detail}{more}"
    else:
        backend = next((c.detail for c in checks if c.section == "Config" and c.name == "backend"), None)
        verdict = "would run" + (f": {backend}" if backend else " (classifier off)")
    unused = _unused_sections(cfg, checks) if cfg is not None else {}
    return DoctorReport(checks, str(config_path) if config_path else None, not failures, verdict, unused)


def _unused_sections(cfg: TrapConfig, checks: list[Check]) -> dict[str, str]:
    """Hardware sections the config does not need, with why (only where nothing in them failed)."""
    backend = cfg.classifier.backend if cfg.classifier.enabled else None
    source = cfg.source
    live_camera = isinstance(source, Picamera2Source) or (
        isinstance(source, OpenCVSource) and not OpenCVFrameSource(source).is_file
    )
    why = {
        "Cameras": None if live_camera else f"source {source.kind}",
        "Coral": None if backend == "edgetpu" else f"classifier backend {backend or 'off'}",
        "GPU": None if backend == "tensorrt" else f"classifier backend {backend or 'off'}",
    }
    failed = {c.section for c in checks if c.status in ("fail", "warning")}
    return {section: text for section, text in why.items() if text is not None and section not in failed}


__all__ = [
    "CORAL_USB_IDS",
    "STATUSES",
    "Check",
    "CommandResult",
    "DoctorEnv",
    "DoctorReport",
    "Findings",
    "Status",
    "VideoProbe",
    "benchmark_backends",
    "check_cameras",
    "check_config",
    "check_coral",
    "check_gpu",
    "check_packages",
    "check_system",
    "probe_video_opencv",
    "run_command",
    "run_doctor",
]
