"""The README's first two commands are the way in; CI must run exactly the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```sh\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_begins_with_demo_and_test_commands() -> None:
    demo, tests = _readme_commands()
    assert "python3 -m venv" in demo and "trapcam run --config examples/demo.yaml" in demo
    assert "python3 -m venv" in tests and "pytest" in tests
    assert (ROOT / "examples" / "demo.yaml").is_file()


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, tests = _readme_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests.strip() in [line.strip() for line in ci_lines]
