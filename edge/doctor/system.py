"""The machine itself (board, temperature, throttling, disk, memory, clock) and its Python packages.

Readings come from `edge.health.SystemProbes`, the same code the running trap samples, so the
doctor and the health messages can never disagree about what "throttled" or "unsynchronised" means.
"""

from __future__ import annotations

import importlib
import os
import platform

from edge.config import TrapConfig
from edge.doctor.env import DoctorEnv, dist_version, first_line, has_module, read_text
from edge.doctor.hardware import Findings
from edge.doctor.report import Check
from edge.health import GB, SystemProbes


def check_system(env: DoctorEnv, probes: SystemProbes, cfg: TrapConfig | None) -> list[Check]:
    """Board, CPU temperature and throttling, disk, memory and clock sync, read by SystemProbes."""
    section = "System"
    checks: list[Check] = []
    model = read_text(env.device_tree_model)
    cores = os.cpu_count() or 0
    board = (
        model
        or f"{platform.machine()} ({platform.system()}; no device-tree model: not a single-board computer)"
    )
    checks.append(
        Check(
            section,
            "board",
            "ok",
            f"{board}, {cores} CPU cores, Python {platform.python_version()}",
            {"model": model},
        )
    )

    temp = probes.cpu_temp_c()
    if temp is None:
        checks.append(
            Check(section, "cpu temperature", "missing", f"no thermal sensor ({probes.thermal_path})")
        )
    elif temp >= 80.0:
        checks.append(
            Check(
                section,
                "cpu temperature",
                "warning",
                f"{temp:.1f} °C: throttling starts at 80-85 °C (heatsink, fan, shade)",
            )
        )
    else:
        checks.append(Check(section, "cpu temperature", "ok", f"{temp:.1f} °C", {"celsius": temp}))

    throttled = probes.throttled()
    if throttled is None:
        checks.append(
            Check(
                section,
                "throttling",
                "missing",
                f"{probes.vcgencmd or 'vcgencmd'} not available (Raspberry Pi firmware only)",
            )
        )
    else:
        now = [k for k in ("under_voltage", "freq_capped", "throttled", "soft_temp_limit") if throttled[k]]
        before = [k.removesuffix("_occurred") for k in throttled if k.endswith("_occurred") and throttled[k]]
        if now:
            detail = f"now: {', '.join(now)} ({throttled['raw']}): check the power supply and cooling"
            checks.append(Check(section, "throttling", "warning", detail, throttled))
        elif before:
            detail = (
                f"since boot: {', '.join(before)} ({throttled['raw']}): the supply or cooling is marginal"
            )
            checks.append(Check(section, "throttling", "warning", detail, throttled))
        else:
            checks.append(Check(section, "throttling", "ok", f"none ({throttled['raw']})", throttled))

    disk = probes.disk()
    min_free = cfg.retention.min_free_gb if cfg is not None else 1.0
    if disk is None:
        checks.append(Check(section, "disk", "missing", f"cannot read free space of {probes.data_dir}"))
    else:
        free, total = disk
        detail = f"{free / GB:.1f} GB free of {total / GB:.1f} GB ({probes.data_dir})"
        low = free < min_free * GB
        checks.append(
            Check(
                section,
                "disk",
                "warning" if low else "ok",
                detail + (f": below retention.min_free_gb {min_free:g} GB" if low else ""),
                {"free_bytes": free, "total_bytes": total},
            )
        )

    memory = probes.memory()
    if memory is None:
        checks.append(Check(section, "memory", "missing", "psutil not installed"))
    else:
        used, available = memory
        low = available < 256
        detail = f"{available:.0f} MB available, {used:.0f} MB used" + (
            ": low for the loop (~250 MB)" if low else ""
        )
        checks.append(Check(section, "memory", "warning" if low else "ok", detail))

    clock = probes.clock_synced()
    if clock is True:
        checks.append(Check(section, "clock sync", "ok", "synchronised (NTP)"))
    elif clock is False:
        checks.append(
            Check(
                section,
                "clock sync",
                "warning",
                "not synchronised: timestamps and sunset windows may be wrong (network time or an RTC)",
            )
        )
    else:
        checks.append(
            Check(section, "clock sync", "warning", "unknown (no timedatectl answer, adjtimex unavailable)")
        )
    return checks


# (label, module, distributions, what it is for)
PACKAGES: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("numpy", "numpy", ("numpy",), "arrays"),
    (
        "opencv",
        "cv2",
        (
            "opencv-python-headless",
            "opencv-python",
            "opencv-contrib-python-headless",
            "opencv-contrib-python",
        ),
        "decoding, detection, USB/RTSP cameras",
    ),
    ("paho-mqtt", "paho.mqtt", ("paho-mqtt",), "MQTT publishing"),
    ("gpiozero", "gpiozero", ("gpiozero",), "the light relay"),
    ("astral", "astral", ("astral",), "sunset/sunrise windows"),
    ("psutil", "psutil", ("psutil",), "memory readings"),
)


def check_packages(findings: Findings) -> list[Check]:
    """The TFLite interpreter that would run, and the other packages the loop may need."""
    from edge.classify.interpreter import RUNTIMES

    section = "Packages"
    checks: list[Check] = []
    present = [
        (dist, dist_version(dist) or "version unknown")
        for module, dist in RUNTIMES
        if has_module(module.split(".")[0])
    ]
    if present:
        first = f"{present[0][0]} {present[0][1]}"
        findings.interpreter = first
        others = ", ".join(f"{d} {v}" for d, v in present[1:])
        absent = [dist for _, dist in RUNTIMES if dist not in dict(present)]
        extra = (f"; also {others}" if others else "") + (
            f"; not installed: {', '.join(absent)}" if absent else ""
        )
        checks.append(Check(section, "tflite interpreter", "ok", f"{first} would run the model{extra}"))
    else:
        names = " / ".join(dist for _, dist in RUNTIMES)
        checks.append(
            Check(
                section,
                "tflite interpreter",
                "missing",
                f"none installed ({names}): pip install ai-edge-litert",
            )
        )
    for label, module, distributions, purpose in PACKAGES:
        if not has_module(module):
            checks.append(Check(section, label, "missing", f"not installed (needed for {purpose})"))
            continue
        version = dist_version(*distributions)
        if version is None:  # e.g. Debian's python3-opencv ships no pip metadata
            try:
                version = str(getattr(importlib.import_module(module), "__version__", "version unknown"))
            except Exception as exc:
                checks.append(
                    Check(section, label, "warning", f"installed but import fails: {first_line(exc)}")
                )
                continue
        checks.append(Check(section, label, "ok", f"{version} ({purpose})"))
    return checks
