"""Keras run folder -> TFLite variants (float32, float16, dynamic-range, full int8).

The route is always Keras -> SavedModel (`model.export(format="tf_saved_model")`) -> TFLite, the
same route the tests' model kit takes: dict outputs become signature outputs named by level, which
is what the device matches heads by. The SavedModel is exported with a fixed batch of 1 (the trap
classifies one crop per invoke, and accelerators want static shapes).

Variants:
  float32  plain conversion, float in/out (the reference for the quantization check)
  float16  Optimize.DEFAULT + float16 weights (float in/out)
  dynamic  Optimize.DEFAULT without representative data: int8 weights, float activations
  int8     full integer (TFLITE_BUILTINS_INT8), uint8 or int8 in/out, calibrated on up to N
           images of the run's TRAIN split, fed exactly as the model sees them (RGB float 0-255)
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge.classify.bundle import EMBEDDING_OUTPUT
from edge.errors import ConfigError, TrapcamError

VARIANTS = ("float32", "float16", "dynamic", "int8")
IO_TYPES = ("uint8", "int8")
Variant = Literal["float32", "float16", "dynamic", "int8"]


class ConvertError(TrapcamError):
    """A run folder cannot be converted, a converter failed, or the int8 model missed its budget."""

    exit_code = 1


# ---------------------------------------------------------------- the run folder


@dataclass(frozen=True)
class RunFolder:
    """What `convert` reads from a training run folder (see train/run.py)."""

    path: Path
    meta: dict[str, Any]  # run.json
    thresholds: dict[str, list[float]]  # per level, label order
    report: dict[str, Any] = field(default_factory=dict)  # report.json (optional)

    @property
    def levels(self) -> list[str]:
        return list(self.meta["levels"])

    @property
    def labels(self) -> dict[str, list[str]]:
        return {level: list(self.meta["labels"][level]) for level in self.levels}

    @property
    def size(self) -> tuple[int, int]:
        return int(self.meta["input"]["height"]), int(self.meta["input"]["width"])

    @property
    def model_path(self) -> Path:
        return self.path / str(self.meta.get("model") or "model.keras")

    @property
    def splits_path(self) -> Path:
        return self.path / str(self.meta.get("splits") or "splits.csv")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConvertError(f"{path}: {what} not found (is this a training run folder?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvertError(f"{path}: cannot read {what}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConvertError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from None


def read_run(run_dir: Path) -> RunFolder:
    """Read and check run.json, thresholds.json, report.json; ConvertError names the file and key."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConvertError(f"{run_dir}: run folder not found")
    meta_path = run_dir / "run.json"
    meta = _read_json(meta_path, "run.json")
    if not isinstance(meta, dict):
        raise ConvertError(f"{meta_path}: expected a JSON object")
    for key in ("levels", "labels", "input"):
        if key not in meta:
            raise ConvertError(f"{meta_path}: required key '{key}' is missing")
    levels = meta["levels"]
    if not isinstance(levels, list) or not levels:
        raise ConvertError(f"{meta_path}: levels: expected a non-empty list, got {levels!r}")
    for level in levels:
        labels = meta["labels"].get(level) if isinstance(meta["labels"], dict) else None
        if not isinstance(labels, list) or not labels:
            raise ConvertError(f"{meta_path}: labels.{level}: expected a non-empty list of labels")
    spec = meta["input"]
    if not isinstance(spec, dict) or "height" not in spec or "width" not in spec:
        raise ConvertError(f"{meta_path}: input: expected {{height, width, ...}}, got {spec!r}")
    if spec.get("colour_order", "RGB") != "RGB" or list(spec.get("range", [0, 255])) != [0, 255]:
        raise ConvertError(
            f"{meta_path}: input: convert expects a model taking RGB 0..255 (colour_order RGB,"
            f" range [0, 255]), got {spec.get('colour_order')} {spec.get('range')}"
        )
    model_path = run_dir / str(meta.get("model") or "model.keras")
    if not model_path.is_file():
        raise ConvertError(f"{model_path}: model not found in the run folder (training did not finish?)")

    thresholds: dict[str, list[float]] = {}
    th_path = run_dir / "thresholds.json"
    if th_path.is_file():
        raw = _read_json(th_path, "thresholds.json")
        by_level = raw.get("levels", {}) if isinstance(raw, dict) else {}
        for level, entry in by_level.items():
            if level not in levels:
                continue
            if list(entry.get("labels", [])) != list(meta["labels"][level]):
                raise ConvertError(
                    f"{th_path}: levels.{level}.labels differ from run.json's labels for '{level}'"
                )
            thresholds[level] = [float(v) for v in entry["thresholds"]]
    else:  # older runs kept them only in run.json
        thresholds = {k: [float(v) for v in vals] for k, vals in (meta.get("thresholds") or {}).items()}
    report_path = run_dir / "report.json"
    report = _read_json(report_path, "report.json") if report_path.is_file() else {}
    return RunFolder(run_dir, meta, thresholds, report if isinstance(report, dict) else {})


def split_images(run: RunFolder, split: str, limit: int | None = None) -> tuple[np.ndarray, list[Any]]:
    """(N x H x W x 3 uint8 RGB, samples) of one split of the run's splits.csv, decoded as in training."""
    from train.dataset import DatasetError, read_splits
    from train.inputs import load_images

    try:
        splits = read_splits(run.splits_path)
    except DatasetError as exc:
        raise ConvertError(str(exc)) from None
    samples = list(getattr(splits, split))
    if limit is not None and len(samples) > limit:
        # an even spread over the (species-sorted) split, so every class is calibrated
        picks = np.linspace(0, len(samples) - 1, limit).round().astype(int)
        samples = [samples[i] for i in sorted(set(picks.tolist()))]
    if not samples:
        raise ConvertError(f"{run.splits_path}: the {split} split is empty")
    height, width = run.size
    if height != width:
        raise ConvertError(f"{run.path / 'run.json'}: input {height}x{width} is not square")
    try:
        images = load_images(samples, height)
    except DatasetError as exc:
        raise ConvertError(str(exc)) from None
    return images, samples


# ---------------------------------------------------------------- Keras and TensorFlow


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    return tf


def load_keras_model(run: RunFolder) -> Any:
    """model.keras with the project's custom layers registered."""
    _tf()
    import keras

    import train.model  # noqa: F401  (registers the custom layers)

    try:
        return keras.saving.load_model(run.model_path, compile=False)
    except Exception as exc:  # Keras raises many kinds for a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConvertError(f"{run.model_path}: cannot load the Keras model: {first}") from None


def inference_model(model: Any, size: tuple[int, int]) -> Any:
    """`model` called with training=False, as a Keras model that `export` can trace.

    Exporting the trained model itself would trace its augmentation layers (RandomFlip & co.)
    with their default training=True: random flips at inference, and TF ops TFLite does not
    have. The wrapper fixes training=False; the dict outputs (level names) are unchanged.
    """
    import keras

    class _Inference(keras.Model):
        def __init__(self, inner: Any) -> None:
            super().__init__(name="inference")
            self.inner = inner

        def call(self, x: Any) -> Any:
            return self.inner(x, training=False)

    wrapper = _Inference(model)
    wrapper(np.zeros((1, size[0], size[1], 3), dtype=np.float32))  # builds it
    return wrapper


def with_embedding(model: Any, levels: Sequence[str]) -> Any:
    """The trained model with its penultimate features as one more output, `embedding`.

    The features are what the finest head's first dense layer reads: the backbone's pooled output,
    which describes the insect, not only its class. On the trap the classifier returns them with
    the probabilities of the same invoke, and the time-lapse tracker links an insect across
    snapshots minutes apart by them (model.json `embedding`). A model not built by `trapcam train`
    (no `<level>_fc` layer) is returned as it is.
    """
    import keras

    try:
        features = model.get_layer(f"{levels[-1]}_fc").input
    except ValueError:
        return model
    outputs = model.output
    if not isinstance(outputs, dict):
        outputs = {levels[-1]: outputs}
    return keras.Model(model.input, {**outputs, EMBEDDING_OUTPUT: features}, name=f"{model.name}_embedding")


def export_saved_model(model: Any, directory: Path, size: tuple[int, int]) -> Path:
    """Keras model -> SavedModel with a fixed 1 x H x W x 3 float32 input (signature serving_default)."""
    _tf()
    import keras

    spec = keras.InputSpec(shape=(1, size[0], size[1], 3), dtype="float32")
    wrapper = inference_model(model, size)
    wrapper.export(str(directory), format="tf_saved_model", verbose=False, input_signature=[spec])
    return Path(directory)


_OP_PATTERNS = (
    re.compile(r"\bop(?:eration)?s?:?\s*'([^']+)'"),  # op 'XYZ', op: 'HARD_SWISH'
    re.compile(r"'((?:tf|tfl)\.[\w.]+)'\s*op"),  # 'tf.Foo' op is neither a custom op ...
    re.compile(r"\bop(?:eration)?s?:?\s+([A-Z][A-Z0-9_]{2,})\b"),  # op HARD_SWISH
)
_BARE_NAME = re.compile(r"\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)\b")


def _builtin_ops() -> set[str]:
    """TFLite builtin operator names (HARD_SWISH, CONV_2D, ...), to spot a bare one in a message."""
    try:
        from tensorflow.lite.python import schema_py_generated as schema

        return {name for name in vars(schema.BuiltinOperator) if name.isupper()}
    except Exception:  # pragma: no cover - a TensorFlow without the schema module
        return set()


def converter_failure(variant: str, message: str) -> ConvertError:
    """One line for a converter failure: the op when the message names one, else its first line."""
    text = message.strip()
    for pattern in _OP_PATTERNS:
        match = pattern.search(text)
        if match:
            return ConvertError(f"{variant} conversion failed: op '{match.group(1)}' is not supported")
    builtins = _builtin_ops()
    for match in _BARE_NAME.finditer(text):
        if len(match.group(1)) > 2 and match.group(1) in builtins:
            return ConvertError(f"{variant} conversion failed: op '{match.group(1)}' is not supported")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "no message")
    return ConvertError(f"{variant} conversion failed: {first}")


def convert_saved_model(
    saved_model: Path,
    variant: str,
    io: str = "uint8",
    representative: Callable[[], Iterator[list[np.ndarray]]] | None = None,
) -> bytes:
    """One TFLite variant from a SavedModel; ConvertError names the variant and, if known, the op."""
    if variant not in VARIANTS:
        raise ConfigError(f"variant '{variant}': expected one of {list(VARIANTS)}")
    tf = _tf()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        if io not in IO_TYPES:
            raise ConfigError(f"--io {io}: expected one of {list(IO_TYPES)}")
        if representative is None:
            raise ConvertError("int8 conversion needs representative images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = {"uint8": tf.uint8, "int8": tf.int8}[io]
        converter.inference_output_type = {"uint8": tf.uint8, "int8": tf.int8}[io]
    try:
        return bytes(converter.convert())
    except Exception as exc:  # the converter raises ConverterError, RuntimeError, ValueError ...
        raise converter_failure(variant, str(exc) or type(exc).__name__) from None


def representative_dataset(images_rgb: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """Calibration generator: one image at a time (batch 1), float32 RGB 0-255 as the model takes it."""

    def generate() -> Iterator[list[np.ndarray]]:
        for image in images_rgb:
            yield [np.ascontiguousarray(image[None], dtype=np.float32)]

    return generate


def convert_variants(
    model: Any,
    run: RunFolder,
    variants: Sequence[str] = VARIANTS,
    io: str = "uint8",
    representative: int = 300,
    work_dir: Path | None = None,
) -> dict[str, bytes]:
    """{variant: flatbuffer bytes} for a loaded Keras model of `run`."""
    with tempfile.TemporaryDirectory(prefix="trapcam-convert-", dir=work_dir) as tmp:
        saved = export_saved_model(model, Path(tmp) / "saved_model", run.size)
        calibration = None
        if "int8" in variants:
            images, _ = split_images(run, "train", limit=representative)
            calibration = representative_dataset(images)
        return {v: convert_saved_model(saved, v, io, calibration) for v in variants}


def input_details(tflite: bytes | Path, signature: str = "serving_default") -> dict[str, Any]:
    """The single input tensor of a converted model's signature: name, shape, dtype, quantization."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(tflite, bytes):
        interpreter = Interpreter(model_content=tflite)
    else:
        interpreter = Interpreter(model_path=str(tflite))
    runner = interpreter.get_signature_runner(signature)
    inputs = runner.get_input_details()
    if len(inputs) != 1:
        raise ConvertError(f"converted model has {len(inputs)} inputs in '{signature}'; expected one image")
    name, details = next(iter(inputs.items()))
    outputs = {k: [int(v) for v in d["shape"]] for k, d in runner.get_output_details().items()}
    scale, zero_point = details["quantization"]
    return {
        "name": name,
        "shape": [int(v) for v in details["shape"]],
        "dtype": np.dtype(details["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
        "outputs": outputs,
    }
