"""tools/mutation.py refuses what it cannot run in one line, before installing or copying anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "tools/mutation.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_module_or_test_file_that_is_not_there_is_one_line_and_exit_2() -> None:
    out = _tool("edge/nope.py", "--tests", "tests/test_csvsafe.py")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        f"mutation: edge/nope.py: not a Python file of this checkout (give it relative to {ROOT})"
    ]
    out = _tool("edge/export/csvsafe.py", "--tests", "tests/test_nope.py")
    assert out.returncode == 2
    assert out.stderr.strip() == "mutation: --tests tests/test_nope.py: no such test file in this checkout"


def test_a_keep_folder_that_holds_files_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "old-run.txt").write_text("x", encoding="utf-8")
    out = _tool("edge/export/csvsafe.py", "--tests", "tests/test_csvsafe.py", "--keep", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"mutation: --keep {tmp_path}: the folder is not empty; remove it or name a new one"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["old-run.txt"]
