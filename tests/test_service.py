"""`trapcam install-service`: unit files rendered for a config, checked by systemd-analyze verify."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import load_config
from edge.service import UNITS, render_units, settings_for, write_units

ROOT = Path(__file__).resolve().parents[1]
CONFIG = """\
device_id: meadow-3
data_dir: {data}
source: {{kind: opencv, device: 0, interval_s: 200, stall_timeout_s: 300}}
site: {{timezone: Europe/Berlin}}
export: {{day_starts_at: "11:45", directory: {export}}}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "trap.yaml"
    path.write_text(CONFIG.format(data=tmp_path / "data", export=tmp_path / "exports"))
    return path


def _verify(paths: list[Path]) -> str:
    done = subprocess.run(
        ["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 for directives it ignores; what matters is whether it said anything about ours
    return "\n".join(
        line for line in (done.stdout + done.stderr).splitlines() if any(str(p) in line for p in paths)
    )


def test_units_carry_this_config_and_this_environment(config: Path, tmp_path: Path) -> None:
    settings = settings_for(load_config(config), config, user="trapcam")
    units = render_units(settings)
    service = units["trapcam.service"]
    assert f"ExecStart={Path(sys.executable).parent / 'trapcam'} run --config {config}" in service
    assert "Type=notify" in service and "Restart=always" in service and "StartLimitBurst=5" in service
    assert "WatchdogSec=600" in service  # 3 x the 200 s camera interval beats stall + 60 s
    assert f"ReadWritePaths={tmp_path / 'data'}" in service
    for hardening in ("User=trapcam", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"):
        assert hardening in service
    export = units["trapcam-export.service"]
    assert f"export --config {config} --camtrap-dp --pending" in export  # a missed day is caught up
    assert f"ReadWritePaths={tmp_path / 'data'} {tmp_path / 'exports'}" in export
    assert "OnCalendar=*-*-* 12:15 Europe/Berlin" in units["trapcam-export.timer"]
    assert not any("@" in line for text in units.values() for line in text.splitlines() if "=" in line)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_rendered_units_pass_systemd_analyze_verify(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "units"
    cli = subprocess.run(
        [sys.executable, "-m", "edge", "install-service", "--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "systemctl enable --now trapcam.service trapcam-export.timer" in cli.stdout
    paths = [out / name for name in UNITS]
    assert all(p.is_file() for p in paths) and not list(out.glob(".*"))  # no temp files left
    assert _verify(paths) == ""

    # the check can fail: a broken directive is reported
    broken = tmp_path / "broken" / "trapcam.service"
    broken.parent.mkdir()
    broken.write_text(paths[0].read_text().replace("Type=notify", "Type=notfy"))
    assert "notfy" in _verify([broken])


def test_bad_user_and_unwritable_folder_are_one_line_errors(config: Path, tmp_path: Path) -> None:
    bad_user = subprocess.run(
        [sys.executable, "-m", "edge", "install-service", "-c", str(config), "--user", "x y", "--print"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert bad_user.returncode != 0 and "--user 'x y'" in bad_user.stderr
    assert len(bad_user.stderr.strip().splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    settings = settings_for(load_config(config), config)
    from edge.service import ServiceError

    with pytest.raises(ServiceError, match="cannot create it"):
        write_units(render_units(settings), blocker / "units")


def test_a_built_wheel_carries_the_units_and_its_install_service_renders_them(
    config: Path, tmp_path: Path
) -> None:
    """`pip install trapcam[edge]` has no checkout beside it: the unit templates must be package data.
    The wheel is built from this tree (pip, the project's own build backend), unpacked on its own
    (no dependencies: this environment has them), and its `install-service` runs with the checkout
    out of sight. The wheel's metadata carries the SPDX license expression and the license file."""
    import zipfile

    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("trapcam-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {f"edge/systemd/{u}" for u in UNITS} <= set(names)
    assert "License-Expression: Apache-2.0" in meta
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    out = tmp_path / "units"
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, edge; print(edge.__file__); from edge.cli import main; sys.exit(main(sys.argv[1:]))",
            "install-service",
            "--config",
            str(config),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the checkout: its edge/ must not be the one imported
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[0].startswith(str(site))  # the wheel's edge, not the checkout's
    assert f"--config {config}" in (out / "trapcam.service").read_text()
    assert all((out / u).is_file() for u in UNITS)
