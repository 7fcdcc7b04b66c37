"""The tracker's assignment solver: SciPy's own, loaded without the rest of scipy.optimize."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as public_solver

from edge.track import assignment


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (7, 3), (12, 12), (0, 4)])
def test_the_solver_loaded_alone_answers_as_scipy_optimize_does(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.random(shape)
        cost[rng.random(shape) < 0.3] = 1e6  # the tracker's gated pairs
        rows, cols = assignment.linear_sum_assignment(cost)
        want_rows, want_cols = public_solver(cost)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(cols, want_cols)
    with pytest.raises(ValueError):
        assignment.linear_sum_assignment(np.array([[np.nan, 1.0]]))


def test_the_device_loop_does_not_import_the_whole_of_scipy_optimize() -> None:
    """scipy.optimize whole is 45 MiB of resident memory at full HD (issue 23): a new
    `from scipy.optimize import` in the device's code fails here."""
    code = (
        "import sys, edge.pipeline, edge.cli\n"
        "from edge.track.assignment import assignment_source\n"
        "print(assignment_source())\n"
        "print(sorted(m for m in sys.modules if m == 'scipy.optimize' or m.startswith('scipy.linalg')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    source, imported = out.strip().splitlines()
    assert source.startswith("_lsap") and source.endswith("(loaded alone)")
    assert imported == "[]"


def test_without_the_extension_file_the_public_import_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assignment, "_solver_file", lambda: None)
    solver, source = assignment._load()
    assert solver is public_solver
    assert source == "scipy.optimize (whole package)"


def test_loading_finds_scipys_own_extension_and_loads_it_alone() -> None:
    """The same load the import does, run again in this process (a test that only imports the module
    cannot see what its loader does: the import happened before the test)."""
    path = assignment._solver_file()
    assert path is not None and path.is_file() and path.name.startswith("_lsap")
    assert path.parent.name == "optimize" and path.parent.parent.name == "scipy"
    solver, source = assignment._load()
    assert source == f"{path.name} (loaded alone)"
    rows, cols = solver(np.array([[4.0, 1.0], [2.0, 8.0]]))
    assert rows.tolist() == [0, 1] and cols.tolist() == [1, 0]
