"""Health samples: is the trap well, and if not, why (one dict for the database, MQTT and logs).

Why every reading sits behind `SystemProbes`: the trap runs on a Raspberry Pi (thermal zone,
`vcgencmd get_throttled`, NTP via systemd-timesyncd), the tests and the desktop do not. A reading
that cannot be taken is None, never a made-up number: a dashboard must be able to tell "0 °C"
from "no sensor". Tests point the probes at fake files and commands at exactly that boundary.

`status` is "ok" or "degraded: <reasons>", the reasons being the `flags` list (e.g. "disk-low",
"throttled", "clock-unsynced", "camera-reconnecting", and what the loop adds: "cpu fallback").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import math
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import edge
from edge.config import TrapConfig
from edge.errors import StorageError
from edge.store.db import Database
from edge.store.schema import utc_iso

if TYPE_CHECKING:
    from edge.retention import RetentionReport

log = logging.getLogger(__name__)

GB = 1024**3
MB = 1024**2
DEFAULT_THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")

# Bits of `vcgencmd get_throttled` (Raspberry Pi firmware): now (0-3) and since boot (16-19).
THROTTLE_BITS: dict[str, int] = {
    "under_voltage": 0,
    "freq_capped": 1,
    "throttled": 2,
    "soft_temp_limit": 3,
    "under_voltage_occurred": 16,
    "freq_capped_occurred": 17,
    "throttled_occurred": 18,
    "soft_temp_limit_occurred": 19,
}
_TIME_ERROR = 5  # adjtimex() return value: the clock is not synchronised
_STA_UNSYNC = 0x0040


@dataclass
class LoopStats:
    """What the loop knows, handed in by the pipeline at each sample."""

    fps: float
    inference_ms: Sequence[float]  # recent per-crop classify times
    queue_depth: int
    frames_dropped: int
    camera_state: str
    last_detection_utc: datetime | None
    frames_processed: int
    active: bool  # inside a schedule window


def decode_throttled(value: int) -> dict[str, bool]:
    """The flags of a `get_throttled` bit field, by name."""
    return {name: bool(value >> bit & 1) for name, bit in THROTTLE_BITS.items()}


class _Timex(ctypes.Structure):
    """Linux `struct timex` (sys/timex.h); adjtimex with modes = 0 only reads it, no root needed."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("tv_sec", ctypes.c_long),
        ("tv_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("reserved", ctypes.c_int * 32),  # 11 in glibc; more room costs nothing and guards other ABIs
    ]


class SystemProbes:
    """Readings of the machine; each method returns None when its source does not exist here.

    Every source is injectable: `thermal_path` (a sysfs file in millidegrees), `vcgencmd` and
    `timedatectl` (command names or paths; None: do not try), `disk_usage` (shutil.disk_usage's
    signature), `adjtimex` (False: do not try the libc call).
    """

    def __init__(
        self,
        data_dir: Path,
        thermal_path: Path | None = DEFAULT_THERMAL,
        vcgencmd: str | None = "vcgencmd",
        timedatectl: str | None = "timedatectl",
        disk_usage: Callable[[Path], Any] = shutil.disk_usage,
        adjtimex: bool = True,
        command_timeout_s: float = 5.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.thermal_path = thermal_path
        self.vcgencmd = vcgencmd
        self.timedatectl = timedatectl
        self.disk_usage = disk_usage
        self.adjtimex = adjtimex
        self.command_timeout_s = command_timeout_s

    def cpu_temp_c(self) -> float | None:
        if self.thermal_path is None:
            return None
        try:
            return int(Path(self.thermal_path).read_text().strip()) / 1000.0
        except (OSError, ValueError):
            return None

    def throttled(self) -> dict[str, Any] | None:
        """Decoded `vcgencmd get_throttled` (with the raw value), or None without vcgencmd."""
        out = self._command(self.vcgencmd, "get_throttled")
        if out is None or "=" not in out:
            return None
        raw = out.split("=", 1)[1].strip()
        try:
            value = int(raw, 16)
        except ValueError:
            return None
        return {"raw": raw, **decode_throttled(value)}

    def disk(self) -> tuple[int, int] | None:
        """(free, total) bytes of the disk that holds data_dir (its nearest existing parent)."""
        probe = self.data_dir
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        try:
            usage = self.disk_usage(probe)
        except OSError:
            return None
        return int(usage.free), int(usage.total)

    def memory(self) -> tuple[float, float] | None:
        """(used, available) MB."""
        try:
            import psutil
        except ImportError:
            return None
        mem = psutil.virtual_memory()
        return mem.used / MB, mem.available / MB

    def clock_synced(self) -> bool | None:
        """NTP synchronised? timedatectl first (systemd), then the kernel's adjtimex, else None."""
        out = self._command(self.timedatectl, "show", "-p", "NTPSynchronized", "--value")
        if out in ("yes", "no"):
            return out == "yes"
        if not self.adjtimex:
            return None
        return _adjtimex_synced()

    def _command(self, program: str | None, *args: str) -> str | None:
        """stdout of a command that exited 0, stripped; None when it is missing or failed."""
        if program is None:
            return None
        path = shutil.which(program)
        if path is None:
            return None
        try:
            done = subprocess.run(
                [path, *args], capture_output=True, text=True, timeout=self.command_timeout_s, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None


def decode_clock_state(state: int, status: int) -> bool | None:
    """adjtimex()'s return value and `timex.status` as "synchronised?"; None when the call failed."""
    if state < 0:
        return None
    return state != _TIME_ERROR and not status & _STA_UNSYNC


def _adjtimex_synced() -> bool | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        timex = _Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    return decode_clock_state(state, timex.status)


class HealthMonitor:
    """Builds health samples; the loop calls `sample` every health.interval_s and stores/publishes it."""

    def __init__(
        self,
        cfg: TrapConfig,
        model_sha256: str | None,
        started: datetime,
        probes: SystemProbes | None = None,
    ) -> None:
        self.cfg = cfg
        self.model_sha256 = model_sha256
        self.started = started
        self.probes = probes or SystemProbes(cfg.data_dir)

    def sample(
        self,
        now: datetime,
        stats: LoopStats,
        extra_flags: Sequence[str] = (),
        retention: RetentionReport | None = None,
    ) -> dict[str, Any]:
        """One JSON-ready health sample (see the module docstring for status and flags)."""
        p50, p95 = _percentiles(stats.inference_ms)
        throttled = self.probes.throttled()
        disk = self.probes.disk()
        memory = self.probes.memory()
        clock = self.probes.clock_synced()
        temp = self.probes.cpu_temp_c()
        last = stats.last_detection_utc
        out: dict[str, Any] = {
            "ts": utc_iso(now),
            "uptime_s": round((now - self.started).total_seconds(), 1),
            "version": edge.__version__,
            "model_sha256": self.model_sha256,
            "fps": _round(stats.fps, 2),
            "inference_ms_p50": p50,
            "inference_ms_p95": p95,
            "queue_depth": int(stats.queue_depth),
            "frames_dropped": int(stats.frames_dropped),
            "frames_processed": int(stats.frames_processed),
            "camera_state": stats.camera_state,
            "cpu_temp_c": _round(temp, 1),
            "throttled": throttled,
            "disk_free_gb": None if disk is None else round(disk[0] / GB, 3),
            "disk_total_gb": None if disk is None else round(disk[1] / GB, 3),
            "mem_used_mb": None if memory is None else round(memory[0], 1),
            "mem_available_mb": None if memory is None else round(memory[1], 1),
            "clock_synced": clock,
            "since_last_detection_s": None if last is None else round((now - last).total_seconds(), 1),
            "active": bool(stats.active),
        }
        if retention is not None:
            out.update(
                crops_gb=round(retention.crops_bytes / GB, 3),
                days_left=_round(retention.days_left, 1),
                disk_near_full=retention.near_full,
                retention_deleted_files=retention.deleted_files,
                retention_message=retention.message,
            )
        flags = self._flags(stats, disk, throttled, clock, retention)
        flags.extend(f for f in extra_flags if f not in flags)
        out["flags"] = flags
        out["status"] = "ok" if not flags else "degraded: " + ", ".join(flags)
        return out

    def _flags(
        self,
        stats: LoopStats,
        disk: tuple[int, int] | None,
        throttled: dict[str, Any] | None,
        clock: bool | None,
        retention: RetentionReport | None,
    ) -> list[str]:
        flags: list[str] = []
        if disk is not None and disk[0] < self.cfg.retention.min_free_gb * GB:
            flags.append("disk-low")
        if retention is not None and retention.near_full:
            flags.append("disk-near-full")
        if throttled is not None:
            if throttled["under_voltage"]:
                flags.append("under-voltage")
            if throttled["throttled"] or throttled["freq_capped"] or throttled["soft_temp_limit"]:
                flags.append("throttled")
        if clock is False:
            flags.append("clock-unsynced")
        if stats.camera_state not in ("ok", "starting", "ended", "stopped"):  # ended: a replay finished
            flags.append(f"camera-{stats.camera_state}")
        return flags


def store_health(db: Database, run_id: int, sample: dict[str, Any]) -> None:
    """Queue the sample as a row of the health table (the writer thread writes it)."""
    ts, status = sample.get("ts"), sample.get("status")
    if not isinstance(ts, str) or not isinstance(status, str):
        raise StorageError(
            f"health sample: expected 'ts' and 'status' text (from HealthMonitor.sample), got {ts!r}"
        )
    try:
        payload = json.dumps(sample, allow_nan=False, separators=(",", ":"), default=str)
    except ValueError as exc:
        raise StorageError(f"health sample: cannot be stored as JSON: {exc}") from None
    db.submit(
        "INSERT INTO health (run_id, ts_utc, status, payload_json) VALUES (?, ?, ?, ?)",
        (run_id, ts, status, payload),
    )


def _percentiles(values: Sequence[float]) -> tuple[float | None, float | None]:
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if data.size == 0:
        return None, None
    p50, p95 = np.percentile(data, [50, 95])
    return round(float(p50), 2), round(float(p95), 2)


def _round(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


__all__ = [
    "HealthMonitor",
    "LoopStats",
    "SystemProbes",
    "decode_clock_state",
    "decode_throttled",
    "store_health",
]
