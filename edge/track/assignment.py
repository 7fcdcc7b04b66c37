"""SciPy's `linear_sum_assignment`, without importing the whole of `scipy.optimize`.

Why: the tracker needs one function of SciPy, the C solver in `scipy/optimize/_lsap`. Importing
it the usual way runs `scipy.optimize/__init__`, which imports linprog, minimize, scipy.linalg,
scipy.sparse and their BLAS: measured on x86 with scipy 1.17, 45 MiB of resident memory and
0.3 s of start-up, a fifth of the device loop's memory at full HD (issue 23's goal is < 200 MiB).
Loading the extension module on its own costs 2 MiB. It is SciPy's own compiled code, unchanged;
only the package's other imports are skipped.

Where a SciPy release lays the solver out differently (no `_lsap` extension beside
`scipy/optimize/__init__.py`), the public import is used: the same function, with the memory.
`assignment_source()` says which one this process runs.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Assignment = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

# The extension's module name inside SciPy (its init function is PyInit__lsap).
_MODULE = "scipy.optimize._lsap"


def _solver_file() -> Path | None:
    """The compiled `_lsap` extension of the installed SciPy, or None where it is not one file."""
    spec = importlib.util.find_spec("scipy")  # imports nothing of scipy.optimize
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            candidate = Path(root) / "optimize" / f"_lsap{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _load() -> tuple[Assignment, str]:
    path = _solver_file()
    if path is not None:
        spec = importlib.util.spec_from_file_location(_MODULE, path)
        if spec is not None and spec.loader is not None:
            module: Any = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            solver = getattr(module, "linear_sum_assignment", None)
            if callable(solver):
                return solver, f"{path.name} (loaded alone)"
    from scipy.optimize import linear_sum_assignment as public

    return public, "scipy.optimize (whole package)"


linear_sum_assignment, _SOURCE = _load()


def assignment_source() -> str:
    """Which SciPy solver this process loaded: the extension alone, or the whole package."""
    return _SOURCE
