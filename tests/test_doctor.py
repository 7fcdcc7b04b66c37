"""`trapcam doctor`: honest about this machine, exact about why a configured trap would not start.

Real parts everywhere the machine has them: the CLI in a subprocess, a real TFLite bundle built by
tests/modelkit.py, the real CPU backend and benchmark, OpenCV really opening a /dev/video* node.
Fakes only at the hardware boundary: a /sys tree with a Coral's USB ids, /dev/apex_0, scripts that
print what rpicam-hello / nvidia-smi / vcgencmd print on the real boards, the libedgetpu loader.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import modelkit as mk
import pytest

from edge.classify.bundle import FileEntry, read_manifest, write_manifest
from edge.cli import main
from edge.doctor import (
    DoctorEnv,
    check_coral,
    check_gpu,
    run_command,
    run_doctor,
)
from edge.doctor.env import has_module
from edge.doctor.hardware import Findings
from edge.health import SystemProbes

ROOT = Path(__file__).resolve().parents[1]
Usage = namedtuple("Usage", "total used free")
GB = 1024**3


def script(folder: Path, name: str, body: str) -> str:
    """A fake command (what the tool prints on a real board) as an executable shell script."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def rows(report_or_dict: object, section: str) -> dict[str, dict]:
    """{name: check} of one section, from a DoctorReport or its JSON dict."""
    data = report_or_dict if isinstance(report_or_dict, dict) else report_or_dict.to_dict()  # type: ignore[union-attr]
    return {c["name"]: c for c in data["checks"] if c["section"] == section}


def bare_env(tmp_path: Path, **overrides: object) -> DoctorEnv:
    """A machine with nothing attached: empty /sys and /dev trees, no vendor tools, no libedgetpu."""
    sysfs = tmp_path / "sys"
    (sysfs / "bus/usb/devices").mkdir(parents=True, exist_ok=True)
    (sysfs / "class/video4linux").mkdir(parents=True, exist_ok=True)
    dev = tmp_path / "dev"
    dev.mkdir(exist_ok=True)

    def no_library(name: str) -> object:
        raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    fields: dict[str, object] = dict(
        usb_devices=sysfs / "bus/usb/devices",
        dev_dir=dev,
        video4linux=sysfs / "class/video4linux",
        tegra_release=tmp_path / "etc/nv_tegra_release",
        device_tree_model=tmp_path / "proc/device-tree/model",
        camera_listers=(str(tmp_path / "bin/rpicam-hello"),),
        nvidia_smi=str(tmp_path / "bin/nvidia-smi"),
        find_library=lambda name: None,
        load_library=no_library,
        probes=SystemProbes(tmp_path, thermal_path=None, vcgencmd=None, timedatectl=None, adjtimex=False),
        timeout_s=5.0,
    )
    fields.update(overrides)
    return DoctorEnv(**fields)  # type: ignore[arg-type]


def usb_device(root: Path, name: str, vendor: str, product: str, speed: str) -> None:
    """One entry of /sys/bus/usb/devices as the kernel writes it."""
    device = root / name
    device.mkdir(parents=True)
    (device / "idVendor").write_text(f"{vendor}\n")
    (device / "idProduct").write_text(f"{product}\n")
    (device / "speed").write_text(f"{speed}\n")


# ---------------------------------------------------------------- model and configs


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real int8 bundle that also lists an Edge TPU model (a copy: no Edge TPU can run it here)."""
    folder = mk.write_bundle(
        tmp_path_factory.mktemp("doctor-bundle"), mk.hierarchical_model(quant="int8", io="uint8")
    )
    shutil.copy(folder / "model.tflite", folder / "model_edgetpu.tflite")
    manifest = read_manifest(folder / "model.json")
    files = dict(manifest.files) | {"model_edgetpu.tflite": FileEntry(sha256="0" * 64, role="edgetpu")}
    write_manifest(folder, manifest.model_copy(update={"files": files}))
    return folder


def write_config(
    tmp_path: Path, classifier: str = "", source: str = "{kind: synthetic}", extra: str = ""
) -> Path:
    path = tmp_path / "trap.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\nsource: {source}\n{classifier}\n{extra}")
    return path


def classifier_yaml(bundle: Path, **keys: object) -> str:
    lines = [f"  model: {bundle}"] + [f"  {k}: {json.dumps(v)}" for k, v in keys.items()]
    return "classifier:\n" + "\n".join(lines)


def table_row(text: str, name: str) -> tuple[str, str]:
    """(status, detail) of the line named `name` in the doctor's text table."""
    pattern = re.compile(rf"^  (ok|missing|warning|fail)\s+{re.escape(name)}\s{{2,}}(.*)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            return match.group(1), match.group(2)
    raise AssertionError(f"no {name!r} line in:\n{text}")


def edgetpu_runtime_loads() -> bool:
    """Whether the real libedgetpu loads here: then the real Edge TPU backend may open a Coral."""
    try:
        ctypes.CDLL("libedgetpu.so.1")
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- the CLI, with PATH as the fixture


def test_doctor_cli_reports_the_tools_on_its_path_and_a_cpu_config_exits_0(
    tmp_path: Path, bundle: Path
) -> None:
    """The CLI in a subprocess; its PATH decides which vendor tools this "machine" has."""
    config = write_config(tmp_path, classifier_yaml(bundle))
    command = [sys.executable, "-m", "edge", "doctor", "--config", str(config), "--bench-crops", "8"]
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    text = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=ROOT, env=os.environ | {"PATH": str(empty)}
    )
    assert text.returncode == 0, text.stdout + text.stderr
    # a CPU classifier on a replayed night needs no camera, Coral or GPU: one line per such section,
    # not 13 "missing" lines for accelerators nobody configured
    assert "libcamera" not in text.stdout and "nvidia-smi" not in text.stdout
    assert (
        sum(line.startswith("  -  ") for line in text.stdout.splitlines()) == 3
        and "classifier backend cpu: 5 readings (0 found)" in text.stdout
    )
    assert "not used by this config: Cameras, Coral, GPU" in text.stdout
    # without --config: the hardware survey, each line saying what it looked for
    survey = subprocess.run(
        command[:4],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=os.environ | {"PATH": str(empty)},
    )
    assert table_row(survey.stdout, "libcamera") == (
        "missing",
        "rpicam-hello/libcamera-hello not installed (Raspberry Pi OS: rpicam-apps)",
    )
    assert table_row(survey.stdout, "nvidia-smi") == ("missing", "nvidia-smi not found")
    # the table: section headers, one status word per line, and the verdict last
    assert "\nCameras\n" in text.stdout and "\nBenchmark\n" in text.stdout
    assert text.stdout.rstrip().splitlines()[-1].startswith("verdict: would run")

    tools = tmp_path / "pi-bin"
    sensor = "0 : imx708 [4608x2592 10-bit RGGB] (/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a)"
    script(tools, "rpicam-hello", f"echo 'Available cameras'\necho '{sensor}'")
    script(tools, "nvidia-smi", "echo 'NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB'")
    as_json = subprocess.run(
        [*command, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=os.environ | {"PATH": str(tools)},
    )
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["would_run"] is True and report["exit_code"] == 0
    assert report["verdict"].startswith("would run: cpu would run")
    assert {c["status"] for c in report["checks"]} <= {"ok", "missing", "warning"}
    cameras, gpu = rows(report, "Cameras"), rows(report, "GPU")
    assert cameras["libcamera"]["status"] == "ok"
    assert cameras["libcamera"]["detail"] == "rpicam-hello: 0: imx708 [4608x2592 10-bit RGGB]"
    assert cameras["camera"]["status"] == "ok"
    assert "libcamera 0: imx708 [4608x2592 10-bit RGGB]" in cameras["camera"]["data"]["cameras"]
    assert gpu["nvidia-smi"]["status"] == "ok"
    assert gpu["nvidia-smi"]["detail"] == "NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB"
    assert gpu["gpu"]["status"] in ("ok", "warning") and gpu["gpu"]["detail"].startswith("NVIDIA H100")
    cpu = rows(report, "Benchmark")["cpu"]
    assert cpu["status"] == "ok" and cpu["data"]["median_ms_per_crop"] > 0


# ---------------------------------------------------------------- a fake machine, in process


def test_without_a_config_it_is_a_hardware_report_and_exits_0(tmp_path: Path) -> None:
    report = run_doctor(None, env=bare_env(tmp_path))
    assert report.exit_code == 0 and "give --config" in report.verdict
    assert not rows(report, "Config") and not rows(report, "Benchmark")
    for section, name in (("Cameras", "camera"), ("Coral", "coral"), ("GPU", "gpu")):
        assert rows(report, section)[name]["status"] == "missing"
    assert (
        "no camera found" in report.render() and "no Coral" in report.render() and "no GPU" in report.render()
    )


def test_what_the_fake_machine_has_is_what_the_report_says(tmp_path: Path) -> None:
    """A camera lister, a Coral M.2 node and nvidia-smi put into the fake trees are each reported present."""
    env = bare_env(tmp_path)
    script(tmp_path / "bin", "rpicam-hello", "echo '0 : imx708 [4608x2592 10-bit RGGB] (/base/imx708@1a)'")
    script(tmp_path / "bin", "nvidia-smi", "echo 'NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB'")
    (env.dev_dir / "apex_0").touch()
    report = run_doctor(None, env=env)
    camera, gpu = rows(report, "Cameras")["camera"], rows(report, "GPU")["gpu"]
    coral = rows(report, "Coral")
    assert camera["status"] == "ok" and camera["data"]["cameras"] == [
        "libcamera 0: imx708 [4608x2592 10-bit RGGB]"
    ]
    assert coral["pcie"]["status"] == "ok" and coral["pcie"]["data"]["devices"] == [
        str(env.dev_dir / "apex_0")
    ]
    # the card without its runtime: present, but unusable, and the line says why
    assert coral["coral"]["status"] == "warning"
    assert coral["coral"]["detail"].startswith(f"{env.dev_dir / 'apex_0'}; libedgetpu.so.1 not found")
    assert gpu["status"] in ("ok", "warning") and gpu["detail"].startswith("NVIDIA H100 80GB HBM3")
    text = report.render()
    assert "no camera found" not in text and "no Coral (" not in text and "no GPU" not in text


# ---------------------------------------------------------------- Coral: fake /sys and /dev trees


def test_a_coral_usb_id_in_a_fake_sys_tree_is_reported(tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    usb_device(env.usb_devices, "1-1", "1d6b", "0003", "5000")  # a root hub: not a Coral
    usb_device(env.usb_devices, "2-1.2", "18d1", "9302", "5000")
    findings = Findings()
    checks = {c.name: c for c in check_coral(env, findings)}
    assert checks["usb"].status == "ok"
    assert "2-1.2" in checks["usb"].detail and "18d1:9302" in checks["usb"].detail
    assert checks["libedgetpu"].status == "missing"
    # a device without its runtime cannot be used: a warning that says what is missing
    assert checks["coral"].status == "warning" and "libedgetpu.so.1 not found" in checks["coral"].detail
    assert findings.coral.device and findings.coral.library is None


def test_a_coral_before_first_use_on_usb2_with_the_runtime_loading(tmp_path: Path) -> None:
    loaded: list[str] = []
    env = bare_env(
        tmp_path,
        find_library=lambda name: "libedgetpu.so.1" if name == "edgetpu" else None,
        load_library=lambda name: loaded.append(name) or object(),
    )
    usb_device(env.usb_devices, "1-1.3", "1a6e", "089a", "480")
    checks = {c.name: c for c in check_coral(env, Findings())}
    assert checks["usb"].status == "warning" and "USB 3 port" in checks["usb"].detail
    assert "not yet initialised" in checks["usb"].detail
    assert checks["libedgetpu"].status == "ok" and loaded == ["libedgetpu.so.1"]
    assert checks["coral"].status == "ok"


def test_a_coral_pcie_card_is_found_by_its_apex_node(tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    (env.dev_dir / "apex_0").touch()
    checks = {c.name: c for c in check_coral(env, Findings())}
    assert checks["pcie"].status == "ok" and "apex_0" in checks["pcie"].detail
    assert checks["usb"].status == "missing"


@pytest.mark.hardware
def test_edgetpu_configured_and_none_found_exits_1_saying_what_was_looked_for(
    tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if edgetpu_runtime_loads():
        pytest.skip("libedgetpu.so.1 loads here: the Edge TPU backend may open, its failure cannot be shown")
    config = write_config(tmp_path, classifier_yaml(bundle, backend="edgetpu"))
    assert main(["doctor", "--config", str(config), "--bench-crops", "0"]) == 1  # the CLI's exit code
    capsys.readouterr()
    env = bare_env(tmp_path)  # what the hint says this machine has comes from these empty trees
    out = run_doctor(config, env=env, bench_crops=0).render()
    line = next(line for line in out.splitlines() if line.strip().startswith("fail") and " backend " in line)
    assert "would fail at start" in line and "classifier.backend edgetpu" in line
    assert "this machine: no Coral device; libedgetpu.so.1 not found" in line
    assert "1a6e:089a" in line and "18d1:9302" in line and str(env.usb_devices) in line
    assert f"PCIe {env.dev_dir}/apex_*" in line
    assert out.rstrip().splitlines()[-1].startswith("verdict: would NOT run: Config backend")

    # a Coral M.2 card in the fake /dev but no runtime: still fails, and the line names the card
    (env.dev_dir / "apex_0").touch()
    backend = rows(run_doctor(config, env=env, bench_crops=0), "Config")["backend"]
    assert backend["status"] == "fail" and f"this machine: {env.dev_dir / 'apex_0'};" in backend["detail"]

    # the same, allowed to fall back: it would run, degraded, and says so
    config = write_config(tmp_path, classifier_yaml(bundle, backend="edgetpu", allow_cpu_fallback=True))
    report = run_doctor(config, env=bare_env(tmp_path), bench_crops=0)
    backend = rows(report, "Config")["backend"]
    assert report.exit_code == 0
    assert backend["status"] == "warning" and "cpu fallback" in backend["detail"]


def test_an_invalid_config_or_a_missing_model_exits_1_with_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path, "classifier: {model: m.tflite, backend: tpu}")
    report = run_doctor(config, env=bare_env(tmp_path))
    assert report.exit_code == 1
    line = rows(report, "Config")["config"]
    assert line["status"] == "fail" and "classifier.backend" in line["detail"] and "'tpu'" in line["detail"]

    config = write_config(tmp_path, f"classifier: {{model: {tmp_path / 'absent.tflite'}}}")
    report = run_doctor(config, env=bare_env(tmp_path))
    model = rows(report, "Config")["model"]
    assert report.exit_code == 1 and model["status"] == "fail" and "absent.tflite" in model["detail"]
    assert "\n" not in model["detail"]


# ---------------------------------------------------------------- cameras


def test_cameras_from_a_fake_rpicam_hello_and_a_video_node_that_is_no_camera(tmp_path: Path) -> None:
    listing = (
        "Available cameras\\n-----------------\\n"
        "0 : imx477 [4056x3040 12-bit RGGB] (/base/soc/i2c0mux/i2c@1/imx477@1a)\\n"
        "    Modes: 'SRGGB10_CSI2P' : 1332x990 [120.05 fps - (696, 528)/2664x1980 crop]\\n"
    )
    env = bare_env(tmp_path)
    script(tmp_path / "bin", "rpicam-hello", f"printf '{listing}'")
    (env.dev_dir / "video0").write_bytes(b"")  # a node OpenCV cannot read a frame from
    (env.video4linux / "video0").mkdir()
    (env.video4linux / "video0" / "name").write_text("HD USB Camera\n")
    (env.dev_dir / "video10").write_bytes(b"")
    (env.video4linux / "video10").mkdir()
    (env.video4linux / "video10" / "name").write_text("bcm2835-codec-decode\n")  # libcamera's, not probed
    report = run_doctor(None, env=env)
    cameras = rows(report, "Cameras")
    assert cameras["libcamera"]["status"] == "ok" and "imx477" in cameras["libcamera"]["detail"]
    assert "Modes" not in cameras["libcamera"]["detail"]
    assert cameras["video0"]["status"] == "warning" and "HD USB Camera" in cameras["video0"]["detail"]
    assert "video10" not in cameras and "1 more /dev/video*" in cameras["v4l2"]["detail"]
    assert cameras["camera"]["status"] == "ok" and "imx477" in cameras["camera"]["detail"]


def test_configured_cameras_that_are_not_there_fail(tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    report = run_doctor(write_config(tmp_path, source="{kind: opencv, device: 0}"), env=env, bench_crops=0)
    source = rows(report, "Config")["source"]
    assert report.exit_code == 1 and source["status"] == "fail"
    assert f"no {env.dev_dir / 'video0'}" in source["detail"] and "stall_timeout_s" in source["detail"]

    (env.dev_dir / "video0").write_bytes(b"")  # there, but delivers no frame
    report = run_doctor(write_config(tmp_path, source="{kind: opencv, device: 0}"), env=env, bench_crops=0)
    assert "gave no frame" in rows(report, "Config")["source"]["detail"] and report.exit_code == 1

    report = run_doctor(write_config(tmp_path, source="{kind: picamera2}"), env=env, bench_crops=0)
    source = rows(report, "Config")["source"]
    assert report.exit_code == 1 and source["status"] == "fail"
    if not has_module("picamera2"):
        assert "picamera2 is not installed" in source["detail"]
    else:
        assert "not listed by libcamera" in source["detail"]


def test_a_hung_camera_tool_is_cut_off_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    tool = script(tmp_path / "bin", "rpicam-hello", f"sleep 60 >/dev/null 2>&1 &\necho $! > {pid_file}\nwait")
    result = run_command([tool, "--list-cameras"], timeout_s=0.5)
    assert result.found and result.timed_out and not result.ok
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the hung tool's child was left running"

    report = run_doctor(None, env=bare_env(tmp_path, timeout_s=0.5))
    libcamera = rows(report, "Cameras")["libcamera"]
    assert libcamera["status"] == "warning" and "no answer within 0.5 s" in libcamera["detail"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie still answers kill(0): look at its state
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------- GPU and system readings


def test_a_gpu_from_fake_nvidia_smi_and_a_jetson_release_file(tmp_path: Path) -> None:
    env = bare_env(tmp_path)
    script(tmp_path / "bin", "nvidia-smi", "echo 'NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB'")
    env.tegra_release.parent.mkdir(parents=True)
    env.tegra_release.write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n"
    )
    checks = {c.name: c for c in check_gpu(env, Findings())}
    assert checks["nvidia-smi"].status == "ok" and "H100" in checks["nvidia-smi"].detail
    assert checks["jetson"].status == "ok" and "R36" in checks["jetson"].detail
    assert checks["gpu"].status in ("ok", "warning") and "H100" in checks["gpu"].detail


def test_system_readings_come_from_the_health_probes(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    thermal = tmp_path / "temp"
    thermal.write_text("85000\n")
    hot = SystemProbes(
        tmp_path,
        thermal_path=thermal,
        vcgencmd=script(bin_dir, "vcgencmd", "echo throttled=0x50005"),
        timedatectl=script(bin_dir, "timedatectl", "echo no"),
        disk_usage=lambda _path: Usage(total=32 * GB, used=31.8 * GB, free=0.2 * GB),
        adjtimex=False,
    )
    system = rows(run_doctor(None, env=bare_env(tmp_path, probes=hot)), "System")
    assert (
        system["cpu temperature"]["status"] == "warning" and "85.0 °C" in system["cpu temperature"]["detail"]
    )
    assert system["throttling"]["status"] == "warning"
    assert "under_voltage" in system["throttling"]["detail"] and "0x50005" in system["throttling"]["detail"]
    assert system["disk"]["status"] == "warning" and "min_free_gb" in system["disk"]["detail"]
    assert (
        system["clock sync"]["status"] == "warning" and "not synchronised" in system["clock sync"]["detail"]
    )

    thermal.write_text("45000\n")
    well = SystemProbes(
        tmp_path,
        thermal_path=thermal,
        vcgencmd=script(bin_dir, "vcgencmd2", "echo throttled=0x0"),
        timedatectl=script(bin_dir, "timedatectl2", "echo yes"),
        disk_usage=lambda _path: Usage(total=32 * GB, used=2 * GB, free=30 * GB),
        adjtimex=False,
    )
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    system = rows(run_doctor(None, env=bare_env(tmp_path, probes=well)), "System")
    assert system["board"]["detail"].startswith("Raspberry Pi 5 Model B Rev 1.0,")
    for name in ("cpu temperature", "throttling", "disk", "clock sync"):
        assert system[name]["status"] == "ok", system[name]


def test_missing_readings_say_missing_not_a_made_up_number(tmp_path: Path) -> None:
    system = rows(run_doctor(None, env=bare_env(tmp_path)), "System")
    assert system["cpu temperature"]["status"] == "missing"
    assert system["throttling"]["status"] == "missing"
    assert system["clock sync"]["status"] == "warning" and "unknown" in system["clock sync"]["detail"]


# ---------------------------------------------------------------- benchmark


def test_the_benchmark_measures_every_available_backend_and_says_why_others_are_not(
    tmp_path: Path, bundle: Path
) -> None:
    config = write_config(tmp_path, classifier_yaml(bundle))
    report = run_doctor(config, env=bare_env(tmp_path), bench_crops=6)
    bench = rows(report, "Benchmark")
    assert bench["cpu"]["status"] == "ok" and "ms per crop" in bench["cpu"]["detail"]
    assert bench["cpu"]["data"]["crops"] == 6 and bench["cpu"]["data"]["median_ms_per_crop"] > 0
    # the Edge TPU model is in the bundle but the device is not here: not benchmarked, and why
    assert (
        bench["edgetpu"]["status"] == "missing"
        and "this machine: no Coral device" in bench["edgetpu"]["detail"]
    )
    assert bench["tensorrt"]["status"] == "missing" and "no GPU" in bench["tensorrt"]["detail"]

    report = run_doctor(config, env=bare_env(tmp_path), bench_crops=0)
    assert rows(report, "Benchmark")["benchmark"]["detail"] == "skipped (--bench-crops 0)"
    assert report.exit_code == 0


def test_cli_help_lists_doctor_and_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["doctor", "--help"])
    out = capsys.readouterr().out
    assert "--config" in out and "--json" in out and "--bench-crops" in out
