"""Keras model -> TFLite (float32, float16, dynamic range, full int8) bundles, with a quantization check.

Imports `edge`'s contracts (edge.classify.bundle) so that what it writes is exactly what the
device loads, and checks every variant through the device's own Classifier.

- `convert.tflite`: run folder reading, Keras -> SavedModel -> TFLite variants, ConvertError
- `convert.check`: per-level accuracy / macro F1 / top-1 agreement / probability difference, the budget
- `convert.bundle_writer`: `convert_run(run_dir, out_dir, ...)` -> ConvertResult (atomic bundle write)
- `convert.cli`: `trapcam convert`, `trapcam bundle inspect|verify`

Edge TPU compilation and ONNX export are not done yet. Importing this package does not import
TensorFlow; `convert_run` and `ConvertResult` are loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConvertResult", "convert_run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from convert import bundle_writer

        return getattr(bundle_writer, name)
    raise AttributeError(f"module 'convert' has no attribute {name!r}")
