"""The direction of dependencies from the design: `edge` runs on the trap and imports neither
TensorFlow/Keras nor the desktop packages (`train`, `convert`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_EDGE = {"tensorflow", "keras", "torch", "jax", "train", "convert"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "path", sorted((ROOT / "edge").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_edge_module_imports_nothing_heavy(path: Path) -> None:
    assert not (_imports(path) & FORBIDDEN_IN_EDGE)


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    import tensorflow as tf\n    from keras import layers\n")
    assert _imports(sample) == {"tensorflow", "keras"}
