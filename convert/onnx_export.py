"""Keras run folder -> ONNX for Jetson (TensorRT), checked with onnxruntime against Keras.

Two files, both taking NHWC float32 RGB 0..255 (like the TFLite float models) with a dynamic batch,
one output per level named by the level, softmax inside:

  model.onnx       float32: TensorRT builds an FP16 (or FP32) engine from it on the Jetson.
  model_int8.onnx  explicit quantization (QuantizeLinear/DequantizeLinear pairs, symmetric int8,
                   per-channel weights) calibrated with the entropy method (TensorRT's own default for
                   CNNs) on the same TRAIN-split crops as the TFLite int8 model. TensorRT builds an
                   INT8 engine from the Q/DQ scales in the file, so the device needs no calibration
                   data and no calibration cache; and the int8 numbers are checked here, where the
                   test split is, instead of on the trap. TensorRT needs symmetric activations, which
                   cost more accuracy than TFLite's asymmetric ones on some models: a file that
                   misses the int8 budget is left out of the bundle (with its figures and the reason
                   in model.json), and the Jetson runs the FP16 engine from model.onnx instead.

Export goes through Keras' own `model.export(format="onnx")` (tf2onnx underneath with the TensorFlow
backend), on the same training=False wrapper as the TFLite route, so augmentation layers are not in
the graph. onnxruntime runs both files on the test split (`measure_onnx`); `require_float_match`
refuses a float file that does not reproduce Keras, and the bundle writer holds the int8 file to
the same budget as the TFLite int8 model.

The int8 file is measured as TensorRT computes it: its quantized values with wide accumulation
(`exact_int8`: onnxruntime with graph optimizations off runs each Q/DQ pair and a float Conv, which
is exact for int8 values). onnxruntime's own fused int8 CPU kernels saturate their 16-bit
intermediate sums on x86 CPUs without VNNI (AVX2, AVX-512 before VNNI): on such a CPU (an AMD EPYC
here) they gave 0.93 top-1 agreement with Keras at the coarsest level for a file that agrees 0.995,
so the check measured the CPU that ran it, and the same fixture passed on one machine and failed on
another.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.check import VariantFigures, figures_for
from convert.tflite import ConvertError, inference_model

ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model_int8.onnx"}
# The float ONNX graph is the Keras graph: it must give the same top-1 on every test crop, and
# probabilities within float32 noise. Anything looser is an export bug, not a precision trade-off.
FLOAT_MIN_AGREEMENT = 0.999
FLOAT_MAX_MEAN_ABS_DIFF = 1e-4


@dataclass(frozen=True)
class OnnxModel:
    """An exported ONNX file and what onnxruntime says its input and outputs are called."""

    path: Path
    input_name: str
    output_names: tuple[str, ...]


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConvertError(
            f"ONNX export needs the Python package '{module.split('.')[0]}': pip install 'trapcam[convert]'"
        ) from None


def describe_onnx(path: Path) -> OnnxModel:
    """Input and output names of an ONNX file (from an onnxruntime session, the way a device sees it)."""
    ort = _require("onnxruntime")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a bad file
        raise ConvertError(f"{path}: onnxruntime cannot load it: {str(exc).splitlines()[0]}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ConvertError(f"{path}: expected one image input, found {[i.name for i in inputs]}")
    return OnnxModel(Path(path), inputs[0].name, tuple(o.name for o in session.get_outputs()))


def export_onnx(model: Any, size: tuple[int, int], path: Path, levels: Sequence[str]) -> OnnxModel:
    """Keras model -> float32 ONNX with a dynamic batch; ConvertError unless every level is an output."""
    _require("tf2onnx")
    _require("onnx")
    import keras

    wrapper = inference_model(model, size)
    spec = keras.InputSpec(shape=(None, size[0], size[1], 3), dtype="float32")
    try:
        wrapper.export(str(path), format="onnx", verbose=False, input_signature=[spec])
    except Exception as exc:  # tf2onnx reports unsupported ops with many exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConvertError(f"ONNX export failed: {first}") from None
    described = describe_onnx(path)
    missing = [level for level in levels if level not in described.output_names]
    if missing:
        raise ConvertError(
            f"{path.name}: outputs {list(described.output_names)} lack level(s) {missing};"
            " the Keras model must output a dict keyed by level"
        )
    return described


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over uint8 RGB images (one image per batch)."""

    def __init__(self, input_name: str, images_rgb: np.ndarray) -> None:
        self._input = input_name
        self._images = iter(images_rgb)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._images, None)
        return None if image is None else {self._input: image[None].astype(np.float32)}


def quantize_onnx(float_model: OnnxModel, out_path: Path, calibration_rgb: np.ndarray) -> OnnxModel:
    """float ONNX -> Q/DQ int8 ONNX (symmetric, per-channel weights: the form TensorRT consumes)."""
    quantization = _require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="trapcam-onnx-") as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(float_model.path), str(prepared), skip_symbolic_shape=True)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its calibrator prints progress lines
                quantization.quantize_static(
                    str(prepared),
                    str(out_path),
                    _Calibration(float_model.input_name, calibration_rgb),
                    quant_format=quantization.QuantFormat.QDQ,
                    activation_type=quantization.QuantType.QInt8,
                    weight_type=quantization.QuantType.QInt8,
                    per_channel=True,
                    calibrate_method=quantization.CalibrationMethod.Entropy,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
                )
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConvertError(f"ONNX int8 quantization failed: {first}") from None
    return describe_onnx(out_path)


def onnx_session(model_path: Path, num_threads: int = 1, exact_int8: bool = False) -> Any:
    """An onnxruntime CPU session; `exact_int8` computes a Q/DQ file as TensorRT does (module docstring)."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    if exact_int8:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def onnx_predict(
    model: OnnxModel,
    images_rgb: np.ndarray,
    levels: Sequence[str],
    num_threads: int = 1,
    exact_int8: bool = False,
) -> tuple[dict[str, np.ndarray], float]:
    """({level: N x C probabilities}, ms per crop) from onnxruntime on the CPU, one crop per run."""
    session = onnx_session(model.path, num_threads, exact_int8)
    outputs: dict[str, list[np.ndarray]] = {level: [] for level in levels}
    started = time.perf_counter()
    for image in images_rgb:
        result = session.run(list(levels), {model.input_name: image[None].astype(np.float32)})
        for level, probs in zip(levels, result, strict=True):
            outputs[level].append(np.asarray(probs[0], dtype=np.float64))
    ms = 1000.0 * (time.perf_counter() - started) / max(1, len(images_rgb))
    return {level: np.stack(rows) for level, rows in outputs.items()}, ms


def measure_onnx(
    variant: str,
    model: OnnxModel,
    images_rgb: np.ndarray,
    truth: Mapping[str, np.ndarray],
    keras_probs: Mapping[str, np.ndarray],
    num_threads: int = 1,
) -> VariantFigures:
    """An ONNX file's figures on the test split against the truth and Keras (onnxruntime, CPU; the
    int8 file exactly as TensorRT computes it, see the module docstring)."""
    probs, ms = onnx_predict(model, images_rgb, list(truth), num_threads, exact_int8=variant == "onnx-int8")
    figures = figures_for(variant, truth, keras_probs, probs)
    figures.size_bytes = model.path.stat().st_size
    figures.invoke_ms_per_crop = ms
    figures.classify_ms_per_crop = ms
    figures.input = f"float32 NHWC '{model.input_name}' (onnxruntime)"
    return figures


def require_float_match(model: OnnxModel, figures: VariantFigures) -> None:
    """ConvertError unless the float ONNX file reproduces Keras (an export bug, not a precision trade)."""
    for level, fig in figures.levels.items():
        if fig.agreement < FLOAT_MIN_AGREEMENT or fig.mean_abs_prob_diff > FLOAT_MAX_MEAN_ABS_DIFF:
            raise ConvertError(
                f"{model.path.name} does not reproduce Keras at level '{level}': top-1 agreement"
                f" {fig.agreement:.4f}, mean |dp| {fig.mean_abs_prob_diff:.2e}"
                f" (expected >= {FLOAT_MIN_AGREEMENT} and <= {FLOAT_MAX_MEAN_ABS_DIFF:g})"
            )
