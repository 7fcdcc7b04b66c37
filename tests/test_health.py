"""Health samples: readings from fake sysfs files and fake commands at the hardware boundary,
None where a reading does not exist, flags and status, and storage in a real SQLite file."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import stat
import subprocess
from collections import namedtuple
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from helpers import query, synthetic_config

import edge
from edge.errors import StorageError
from edge.health import (
    HealthMonitor,
    LoopStats,
    SystemProbes,
    _adjtimex_synced,
    decode_clock_state,
    decode_throttled,
    store_health,
)
from edge.retention import RetentionReport
from edge.store import Database, RunInfo

T0 = datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc)
Usage = namedtuple("Usage", "total used free")
GB = 1024**3

KEYS = {
    "ts", "uptime_s", "version", "model_sha256", "fps", "inference_ms_p50", "inference_ms_p95", "queue_depth",
    "frames_dropped", "frames_processed", "camera_state", "cpu_temp_c", "throttled", "disk_free_gb",
    "disk_total_gb", "mem_used_mb", "mem_available_mb", "clock_synced", "since_last_detection_s", "active",
    "status", "flags",
}  # fmt: skip


def script(folder: Path, name: str, body: str) -> str:
    """A fake command (what vcgencmd / timedatectl print on a Pi) as an executable shell script."""
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def stats(**kw: object) -> LoopStats:
    fields: dict[str, object] = dict(
        fps=4.25,
        inference_ms=[10.0, 12.0, 11.0, 50.0, 13.0],
        queue_depth=1,
        frames_dropped=3,
        camera_state="ok",
        last_detection_utc=T0 - timedelta(seconds=42),
        frames_processed=1200,
        active=True,
    )
    fields.update(kw)
    return LoopStats(**fields)  # type: ignore[arg-type]


@pytest.fixture
def pi(tmp_path: Path) -> SystemProbes:
    """Probes that read like a healthy Raspberry Pi: 48.3 °C, no throttling, NTP synced, 20 GB free."""
    (tmp_path / "temp").write_text("48312\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    return SystemProbes(
        tmp_path / "data",
        thermal_path=tmp_path / "temp",
        vcgencmd=script(bin_dir, "vcgencmd", 'echo "throttled=0x0"'),
        timedatectl=script(bin_dir, "timedatectl", "echo yes"),
        disk_usage=lambda p: Usage(32 * GB, 12 * GB, 20 * GB),
    )


def monitor(tmp_path: Path, probes: SystemProbes | None) -> HealthMonitor:
    cfg = synthetic_config(tmp_path / "data", "retention: {min_free_gb: 1.0}\n")
    return HealthMonitor(cfg, "ab" * 32, T0 - timedelta(hours=2), probes)


def test_healthy_sample_has_every_reading(tmp_path: Path, pi: SystemProbes) -> None:
    sample = monitor(tmp_path, pi).sample(T0, stats())
    assert set(sample) == KEYS
    assert sample["status"] == "ok" and sample["flags"] == []
    assert sample["ts"] == "2026-07-01T21:30:00.000000Z"
    assert sample["uptime_s"] == 7200.0
    assert sample["version"] == edge.__version__
    assert sample["model_sha256"] == "ab" * 32
    assert sample["cpu_temp_c"] == 48.3
    assert sample["throttled"]["raw"] == "0x0" and not any(
        v for k, v in sample["throttled"].items() if k != "raw"
    )
    assert sample["clock_synced"] is True
    assert sample["disk_free_gb"] == 20.0 and sample["disk_total_gb"] == 32.0
    assert sample["since_last_detection_s"] == 42.0
    assert sample["inference_ms_p50"] == pytest.approx(np.percentile([10, 12, 11, 50, 13], 50))
    assert sample["inference_ms_p95"] == pytest.approx(np.percentile([10, 12, 11, 50, 13], 95), abs=0.01)
    assert sample["mem_used_mb"] > 0 and sample["mem_available_mb"] > 0
    assert (sample["fps"], sample["queue_depth"], sample["frames_dropped"], sample["active"]) == (
        4.25,
        1,
        3,
        True,
    )
    json.dumps(sample, allow_nan=False)  # ready for MQTT as it is


def test_missing_readings_are_none_not_invented(tmp_path: Path) -> None:
    probes = SystemProbes(
        tmp_path,
        thermal_path=tmp_path / "no-such-thermal-zone",
        vcgencmd="no-such-vcgencmd-here",
        timedatectl=None,
        disk_usage=lambda p: (_ for _ in ()).throw(OSError("gone")),
        adjtimex=False,
    )
    sample = monitor(tmp_path, probes).sample(T0, stats(inference_ms=[], last_detection_utc=None))
    for key in ("cpu_temp_c", "throttled", "clock_synced", "disk_free_gb", "disk_total_gb"):
        assert sample[key] is None, key
    assert sample["inference_ms_p50"] is None and sample["inference_ms_p95"] is None
    assert sample["since_last_detection_s"] is None
    assert sample["status"] == "ok"  # unknown is not bad


def test_garbage_readings_are_none(tmp_path: Path) -> None:
    (tmp_path / "temp").write_text("not a number")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    probes = SystemProbes(
        tmp_path,
        thermal_path=tmp_path / "temp",
        vcgencmd=script(bin_dir, "vcgencmd", 'echo "VCHI initialization failed"'),
        timedatectl=script(
            bin_dir, "timedatectl", "echo 'System has not been booted with systemd' >&2; exit 1"
        ),
        adjtimex=False,
    )
    assert probes.cpu_temp_c() is None
    assert probes.throttled() is None
    assert probes.clock_synced() is None


def test_throttled_bits_are_decoded_now_and_since_boot(tmp_path: Path) -> None:
    flags = decode_throttled(0x50005)
    assert [k for k, v in flags.items() if v] == [
        "under_voltage",
        "throttled",
        "under_voltage_occurred",
        "throttled_occurred",
    ]
    assert [k for k, v in decode_throttled(0x80008).items() if v] == [
        "soft_temp_limit",
        "soft_temp_limit_occurred",
    ]
    assert [k for k, v in decode_throttled(0x20002).items() if v] == ["freq_capped", "freq_capped_occurred"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    probes = SystemProbes(tmp_path, vcgencmd=script(bin_dir, "vcgencmd", 'echo "throttled=0x50005"'))
    assert probes.throttled() == {"raw": "0x50005", **flags}


def test_flags_and_status_when_things_go_wrong(tmp_path: Path, pi: SystemProbes) -> None:
    bin_dir = tmp_path / "bin"
    pi.vcgencmd = script(bin_dir, "vcgencmd", 'echo "throttled=0x50005"')
    pi.timedatectl = script(bin_dir, "timedatectl", "echo no")
    pi.disk_usage = lambda p: Usage(32 * GB, 31.5 * GB, 0.5 * GB)
    sample = monitor(tmp_path, pi).sample(
        T0, stats(camera_state="reconnecting"), extra_flags=["cpu fallback"]
    )
    assert sample["flags"] == [
        "disk-low",
        "under-voltage",
        "throttled",
        "clock-unsynced",
        "camera-reconnecting",
        "cpu fallback",
    ]
    assert sample["status"] == "degraded: " + ", ".join(sample["flags"])
    assert sample["clock_synced"] is False and sample["disk_free_gb"] == 0.5


def test_only_past_throttling_is_not_degraded(tmp_path: Path, pi: SystemProbes) -> None:
    pi.vcgencmd = script(tmp_path / "bin", "vcgencmd", 'echo "throttled=0x50000"')
    sample = monitor(tmp_path, pi).sample(T0, stats())
    assert sample["throttled"]["under_voltage_occurred"] is True
    assert sample["status"] == "ok"


def test_retention_fields_when_given(tmp_path: Path, pi: SystemProbes) -> None:
    report = RetentionReport(
        crops_bytes=3 * GB,
        free_bytes=2 * GB,
        deleted_files=17,
        deleted_bytes=5_000_000,
        days_left=3.21,
        near_full=True,
        over_budget_after=False,
        message="about 3.2 days of disk room left at the current rate",
    )
    sample = monitor(tmp_path, pi).sample(T0, stats(), retention=report)
    assert sample["crops_gb"] == 3.0 and sample["days_left"] == 3.2
    assert sample["retention_deleted_files"] == 17 and sample["disk_near_full"] is True
    assert sample["retention_message"] == report.message
    assert sample["flags"] == ["disk-near-full"]


PI_THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
TIME_ERROR = 5  # sys/timex.h: what the kernel's clock state is while STA_UNSYNC is set


def kernel_clock_synced() -> bool | None:
    """The kernel's clock state read another way: glibc's ntp_gettime() returns TIME_ERROR when unsynced."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    state = libc.ntp_gettime(ctypes.create_string_buffer(512))  # struct ntptimeval is under 100 bytes
    return None if state < 0 else state != TIME_ERROR


def system_clock_synced() -> bool | None:
    """What timedatectl says (systemd), else the kernel's state: read here, not through SystemProbes."""
    tool = shutil.which("timedatectl")
    if tool is not None:
        out = subprocess.run(
            [tool, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, timeout=10
        )
        if out.returncode == 0 and out.stdout.strip() in ("yes", "no"):
            return out.stdout.strip() == "yes"
    return kernel_clock_synced()


def test_default_probes_on_this_machine_do_not_fail(tmp_path: Path) -> None:
    """Whatever this machine has (a VM: maybe no thermal zone, no vcgencmd), a sample comes out."""
    assert SystemProbes(tmp_path).thermal_path == PI_THERMAL_ZONE  # the Pi's SoC sensor by default
    sample = monitor(tmp_path, None).sample(T0, stats())
    assert set(sample) == KEYS
    try:
        here = int(PI_THERMAL_ZONE.read_text()) / 1000.0
    except (OSError, ValueError):
        assert sample["cpu_temp_c"] is None  # no sensor here: no number
    else:
        assert sample["cpu_temp_c"] == pytest.approx(here, abs=3.0)  # a live sensor moves between reads
    # the nearest existing parent of a data_dir not yet made
    assert sample["disk_total_gb"] == round(shutil.disk_usage(tmp_path).total / GB, 3)
    assert sample["clock_synced"] is system_clock_synced()


def test_cpu_temperature_is_the_thermal_zone_in_millidegrees(tmp_path: Path) -> None:
    zone = tmp_path / "thermal_zone0" / "temp"
    zone.parent.mkdir()
    zone.write_text("48123\n")
    probes = SystemProbes(tmp_path, thermal_path=zone, vcgencmd=None, timedatectl=None, adjtimex=False)
    assert probes.cpu_temp_c() == 48.123
    assert monitor(tmp_path, probes).sample(T0, stats())["cpu_temp_c"] == 48.1
    zone.write_text("-2500\n")  # a cold night outside
    assert probes.cpu_temp_c() == -2.5
    zone.write_text("")
    assert probes.cpu_temp_c() is None
    zone.unlink()
    assert probes.cpu_temp_c() is None
    zone.mkdir()  # there, but unreadable as a file
    assert probes.cpu_temp_c() is None


@pytest.mark.skipif(not os.path.exists("/proc/version"), reason="adjtimex is Linux")
def test_adjtimex_reads_the_kernel_clock_state() -> None:
    assert _adjtimex_synced() is kernel_clock_synced()


def test_adjtimex_state_and_status_bits_are_decoded() -> None:
    sta_unsync, sta_pll, sta_nano = 0x0040, 0x0001, 0x2000
    assert decode_clock_state(0, sta_pll | sta_nano) is True  # TIME_OK, NTP disciplining the clock
    assert decode_clock_state(1, sta_pll) is True  # TIME_INS: a leap second pending, still synced
    assert decode_clock_state(TIME_ERROR, sta_pll) is False
    assert decode_clock_state(0, sta_pll | sta_unsync) is False
    assert decode_clock_state(TIME_ERROR, sta_unsync) is False  # a fresh boot with no NTP
    assert decode_clock_state(-1, 0) is None  # the call failed: unknown


def test_store_health_writes_a_row(tmp_path: Path, pi: SystemProbes) -> None:
    sample = monitor(tmp_path, pi).sample(T0, stats(camera_state="reconnecting"))
    db_path = tmp_path / "trapcam.db"
    with Database(db_path) as db:
        run_id = db.start_run(RunInfo(device_id="t", software_version="0", config_json="{}", source="x"))
        store_health(db, run_id, sample)
        with pytest.raises(StorageError, match="expected 'ts' and 'status'"):
            store_health(db, run_id, {"fps": 1.0})
    rows = query(db_path, "SELECT run_id, ts_utc, status, payload_json FROM health")
    assert len(rows) == 1
    assert rows[0][:3] == (run_id, "2026-07-01T21:30:00.000000Z", "degraded: camera-reconnecting")
    assert json.loads(rows[0][3]) == sample
