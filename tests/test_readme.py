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


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, tests = _readme_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests.strip() in [line.strip() for line in ci_lines]
