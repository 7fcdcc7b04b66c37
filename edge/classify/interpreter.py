"""Creating a TFLite interpreter without TensorFlow.

The trap installs `ai-edge-litert` (the maintained TFLite runtime). Old Coral setups only have
`tflite-runtime`, which offers the same Interpreter API, so it is the fallback. TensorFlow is
never imported here: it is hundreds of MB and seconds of start-up the device cannot afford.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ModelError
from edge.native_log import without_runtime_notices

# (module that provides Interpreter, distribution name for the version and the install hint)
RUNTIMES: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
)

_loaded: dict[tuple[tuple[str, str], ...], tuple[Any, str]] = {}
_notice_said = False  # the runtime's once-per-process notice has been taken off the screen


def load_runtime(candidates: Sequence[tuple[str, str]] = RUNTIMES) -> tuple[Any, str]:
    """(Interpreter class, "package version") from the first runtime that imports.

    Raises ModelError with the install command when none is available.
    """
    key = tuple(candidates)
    if key in _loaded:
        return _loaded[key]
    for module_name, distribution in candidates:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            version = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            version = "unknown version"
        _loaded[key] = (module.Interpreter, f"{distribution} {version}")
        return _loaded[key]
    tried = ", ".join(module for module, _ in candidates)
    raise ModelError(
        f"no TFLite interpreter installed (tried {tried}); install one with: pip install ai-edge-litert"
    )


def interpreter_package() -> str:
    """Which runtime package (and version) runs the model, for health messages and the runs table."""
    return load_runtime()[1]


def make_interpreter(model_path: Path, num_threads: int) -> Any:
    """A TFLite interpreter for `model_path`; ModelError (naming the file) when it cannot be built."""
    interpreter_class, _ = load_runtime()
    if num_threads < 1:
        raise ModelError(f"num_threads must be at least 1, got {num_threads}")
    try:
        interpreter = interpreter_class(model_path=str(model_path), num_threads=num_threads)
    except (ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"{model_path}: the TFLite interpreter cannot load this model: {first_line}"
        ) from None
    global _notice_said
    if not _notice_said:
        # The runtime's XNNPACK notice is printed once per process, at the first allocation: take it
        # here, off the screen. A caller that resizes inputs allocates again; one whose model cannot
        # be allocated as it is gets its own error from its own allocation.
        _notice_said = True
        with without_runtime_notices(), contextlib.suppress(ValueError, RuntimeError):
            interpreter.allocate_tensors()
    return interpreter


def tensor_dtype_name(dtype: Any, model_path: Path) -> str:
    """'uint8' | 'int8' | 'float32' for an input tensor's numpy dtype; other types are refused."""
    name = np.dtype(dtype).name
    if name not in ("uint8", "int8", "float32"):
        raise ModelError(f"{model_path}: input tensor type {name} is not supported (uint8, int8 or float32)")
    return name
