"""The CPU backend: the bundle's role-"cpu" TFLite model on the TFLite interpreter.

ai-edge-litert (and tflite-runtime) apply the XNNPACK delegate by default, which is what makes an
int8 MobileNet usable on a Raspberry Pi's Cortex-A cores; `num_threads` is handed to it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from edge.classify.backends.base import InterpreterBackend
from edge.classify.bundle import LoadedBundle
from edge.classify.interpreter import interpreter_package, make_interpreter


class CpuBackend(InterpreterBackend):
    """The model that `load_bundle` already checked (path and sha256), on the CPU."""

    name: ClassVar[str] = "cpu"

    def __init__(self, bundle: LoadedBundle, num_threads: int = 2) -> None:
        interpreter = make_interpreter(bundle.model_path, num_threads)
        super().__init__(bundle, bundle.model_path, bundle.model_sha256, interpreter)
        self.num_threads = num_threads

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "delegate": "XNNPACK",
            "runtime": interpreter_package(),
            "model_path": str(self.model_path),
            "model_sha256": self.model_sha256,
            "num_threads": self.num_threads,
        }
