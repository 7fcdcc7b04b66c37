"""Classifier backends behind one small interface: CPU (XNNPACK), Coral Edge TPU, Jetson TensorRT.

`open_backend(cfg, bundle, data_dir)` picks one from `classifier.backend` and applies the
no-silent-fallback policy; `probe_backends` and `benchmark` serve `trapcam doctor`. The Edge TPU
and TensorRT modules are imported only when those backends are asked for.
"""

from edge.classify.backends.base import (
    CPU_FALLBACK_FLAG,
    Backend,
    BackendProbe,
    InterpreterBackend,
    TensorBackend,
)
from edge.classify.backends.cpu import CpuBackend
from edge.classify.backends.select import open_backend, probe_backends

__all__ = [
    "CPU_FALLBACK_FLAG",
    "Backend",
    "BackendProbe",
    "CpuBackend",
    "InterpreterBackend",
    "TensorBackend",
    "open_backend",
    "probe_backends",
]
