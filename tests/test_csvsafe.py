"""edge/export/csvsafe.py's promises as properties (issue 26: the mutants tests/test_export.py let live).

Every file the exports write goes through these: stable bytes for the same rows, formula-safe text,
and a replace that never leaves half a file where the daily timer or a spreadsheet would read it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from edge.errors import ExportError
from edge.export.csvsafe import Num, atomic_write, fixed, integer, render_csv, safe_cell


def test_cells_say_what_they_hold() -> None:
    assert safe_cell(7) == "7" and safe_cell(0) == "0"  # a plain int, not only our Num
    assert integer(None) is None and integer(3) == Num("3")
    assert fixed(None, 2) is None and fixed(1, 3) == "1.000"
    assert safe_cell(True) == "true" and safe_cell(None) == ""
    assert safe_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and safe_cell(Num("-3")) == "-3"


def test_render_csv_refuses_its_callers_bugs_by_name() -> None:
    with pytest.raises(ExportError, match=r"^csv: row has 1 cells, header 2$"):
        render_csv(["a", "b"], [[1]])
    with pytest.raises(ExportError, match=r"^csv: float 0\.5 without a fixed format \(use fixed\(\)\)$"):
        render_csv(["a"], [[0.5]])
    assert render_csv(["a", "b"], [[1, "x,y"]]) == b'a,b\n1,"x,y"\n'


def test_atomic_write_says_whether_it_changed_the_file(tmp_path: Path) -> None:
    target = tmp_path / "day" / "counts.csv"
    assert atomic_write(target, b"one\n") is True  # new file, folder made
    assert atomic_write(target, b"one\n") is False  # the same bytes: untouched (the timer's idempotence)
    assert atomic_write(target, b"two\n") is True and target.read_bytes() == b"two\n"
    assert atomic_write(target, iter([b"thr", b"ee\n"])) is True and target.read_bytes() == b"three\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["counts.csv"]  # no temporary left
    assert target.stat().st_mode & 0o777 == 0o644


def test_the_temporary_file_is_hidden_and_beside_the_target(tmp_path: Path, monkeypatch) -> None:
    """Beside it: os.replace is atomic only within one filesystem. Hidden, `.tmp`: a glob for
    *.csv (a user's script, the export's own listing) never picks up half a file."""
    seen: list[Path] = []
    real = tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        seen.append(Path(name))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    target = tmp_path / "export" / "counts.csv"
    atomic_write(target, b"x\n")
    (made,) = seen
    assert made.parent == target.parent
    assert made.name.startswith(".counts.csv.") and made.name.endswith(".tmp")


def test_a_write_that_cannot_happen_names_the_file_and_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(
        ExportError, match=r"not-a-folder/counts\.csv: cannot write: (File exists|Not a directory)$"
    ):
        atomic_write(blocker / "counts.csv", b"y\n")
    target = tmp_path / "counts.csv"
    target.write_bytes(b"old\n")

    def broken():
        yield b"new"
        raise OSError(28, "No space left on device")

    with pytest.raises(
        ExportError, match=r"counts\.csv: cannot write: No space left on device; the old file was kept$"
    ):
        atomic_write(target, broken())
    assert target.read_bytes() == b"old\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "counts.csv",
        "not-a-folder",
    ]
