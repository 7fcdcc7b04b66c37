"""The README's first two commands are the way in; CI must run exactly the second one."""

from __future__ import annotations

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser under its old name
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```sh\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_begins_with_demo_and_test_commands() -> None:
    demo, tests = _readme_commands()
    assert "python3 -m venv" in demo and demo.strip().endswith("trapcam demo")
    assert "python3 -m venv" in tests and "pytest" in tests
    # The extra the demo command installs exists and brings what the demo imports.
    extra = re.search(r"-e '\.\[(\w+)\]'", demo)
    assert extra is not None
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    wanted = " ".join(extras[extra.group(1)])
    for part in ("train", "convert", "export", "report", "evaluate"):
        assert part in wanted, f"the {extra.group(1)!r} extra lacks {part}"
    assert pyproject["project"]["entry-points"]["trapcam.commands"]["demo"] == "demo.cli:register"
    assert (ROOT / "examples" / "demo.yaml").is_file()


def test_ci_runs_both_readme_commands_verbatim_and_installs_nothing_else() -> None:
    """CI is a newcomer: the README's two commands word for word (tests, then the demo), installing
    nothing before them; what follows them is a check script of hardware/ that brings its own tools
    (the arm64 userland), never a package install."""
    demo, tests = _readme_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    commands = [line for line in ci_lines if line and not line.startswith(("#", "set ", "cd "))]
    assert commands[:2] == [tests.strip(), demo.strip()]
    assert commands[2:] == ["sh hardware/arm64-userland.sh trapcam-data/demo"]
    assert (ROOT / "hardware" / "arm64-userland.sh").is_file()


def test_both_commands_bring_their_system_packages() -> None:
    """The distribution's packages come from tools/system-packages.sh, which each command runs first."""
    demo, tests = _readme_commands()
    assert demo.startswith("sh tools/system-packages.sh demo && ")
    assert tests.startswith("sh tools/system-packages.sh tests && ")
    script = (ROOT / "tools" / "system-packages.sh").read_text(encoding="utf-8")
    for package in ("python3-venv", "mosquitto", "systemd"):
        assert f"add {package}" in script


def _stub_bin(folder: Path, record: Path, names: dict[str, str]) -> None:
    """Stand-ins for system commands: each appends its name and arguments to `record`."""
    folder.mkdir()
    for name, exit_code in names.items():
        stub = folder / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{record}"\nexit {exit_code}\n')
        stub.chmod(0o755)


def test_system_packages_script_installs_only_what_is_missing(tmp_path: Path) -> None:
    """Run for real with stand-ins for apt-get, sudo and id at the PATH's front: a python3 without
    venv makes it install python3-venv through sudo (not root); with everything there it does nothing."""
    import os
    import subprocess

    record = tmp_path / "calls.txt"
    record.touch()
    bindir = tmp_path / "bin"
    _stub_bin(bindir, record, {"apt-get": "0", "id": "0", "python3": "1"})
    (bindir / "id").write_text("#!/bin/sh\necho 1000\n")  # not root
    (bindir / "sudo").write_text(f'#!/bin/sh\necho "sudo $*" >> "{record}"\nexec "$@"\n')
    (bindir / "sudo").chmod(0o755)
    script = ROOT / "tools" / "system-packages.sh"
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["sh", str(script), "demo"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    calls = record.read_text().splitlines()
    assert "installing with apt-get: python3-venv" in done.stdout
    assert any(c.startswith("sudo apt-get update") for c in calls)
    assert any(c.startswith("apt-get install") and c.endswith(" python3-venv") for c in calls), calls
    assert any(c.startswith("sudo env DEBIAN_FRONTEND=noninteractive apt-get install") for c in calls)

    record.write_text("")
    (bindir / "python3").unlink()  # the real python3 has venv and ensurepip
    done = subprocess.run(["sh", str(script), "demo"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and record.read_text() == "" and done.stdout == ""

    bad = subprocess.run(["sh", str(script), "desktop"], env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown set 'desktop'; expected demo or tests" in bad.stderr
