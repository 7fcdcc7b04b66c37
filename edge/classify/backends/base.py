"""The one small interface every classifier backend offers, whatever hardware runs the model.

Two kinds, because the hardware decides what the classifier can hold on to:

- `InterpreterBackend` (CPU with XNNPACK, Coral Edge TPU): a TFLite interpreter. The classifier keeps
  one code path for signatures, input quantization, output dequantization and heads, so a model
  answers the same on the CPU and on the Edge TPU (which runs the same int8 graph).
- `TensorBackend` (TensorRT): a `run(batch) -> {output name: probabilities}` over NHWC float32 RGB
  0..255 images, the ONNX contract `convert` writes; outputs are named by level.

A backend is opened once at start-up, and every check that can fail runs then (never at the first
insect of the night).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge.classify.bundle import InputSpec, LoadedBundle

CPU_FALLBACK_FLAG = "cpu fallback"  # health then says "degraded: cpu fallback"


@dataclass(frozen=True)
class BackendProbe:
    """Whether a backend could run here, and why (for `trapcam doctor`)."""

    name: str
    available: bool
    detail: str
    configured: bool = False


class Backend(ABC):
    """A model file opened on one kind of hardware, ready for the classifier."""

    name: ClassVar[str]

    def __init__(self, bundle: LoadedBundle, model_path: Path, model_sha256: str) -> None:
        self.bundle = bundle
        self.model_path = Path(model_path)  # the file this backend runs (not always the CPU model)
        self.model_sha256 = model_sha256

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What runs where, for the runs table, health and `doctor` (always has 'backend')."""

    def close(self) -> None:  # noqa: B027 - optional hook; most backends free everything on GC
        """Release the hardware (the Edge TPU can be held by one process at a time)."""


class InterpreterBackend(Backend):
    """A backend that hands the classifier a TFLite interpreter (CPU, Edge TPU)."""

    def __init__(self, bundle: LoadedBundle, model_path: Path, model_sha256: str, interpreter: Any) -> None:
        super().__init__(bundle, model_path, model_sha256)
        self.interpreter = interpreter

    def close(self) -> None:
        self.interpreter = None


class TensorBackend(Backend):
    """A backend that runs whole batches itself and returns float outputs by name (TensorRT)."""

    input_name: str
    input_spec: InputSpec  # what `run` takes: float32, RGB, raw pixel values 0..255
    output_sizes: dict[str, int]  # output name -> classes

    @abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """{output name: N x classes float32} for an N x H x W x 3 float32 RGB 0..255 batch."""


def bundle_dir(bundle: LoadedBundle) -> Path:
    """The folder the bundle's files live in."""
    return (bundle.manifest_path or bundle.model_path).parent


def verified_file(bundle: LoadedBundle, name: str) -> tuple[Path, str]:
    """(path, sha256) of one file listed in the bundle's manifest, checked like the CPU model.

    A half-copied accelerator model must be refused at start-up just like a half-copied CPU model,
    not produce plausible nonsense on the TPU or GPU for a season.
    """
    from edge.classify.bundle import sha256_file
    from edge.errors import ModelError

    path = bundle_dir(bundle) / name
    source = bundle.describe_source()
    if not path.is_file():
        raise ModelError(f"{path}: model file not found (listed in {source})")
    actual = sha256_file(path)
    entry = bundle.manifest.files.get(name)
    if entry is not None and actual != entry.sha256:
        raise ModelError(
            f"{path}: sha256 mismatch: {Path(source).name} expects {entry.sha256[:12]}…,"
            f" the file is {actual[:12]}… (changed or incompletely copied)"
        )
    return path, actual
