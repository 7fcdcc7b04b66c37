"""Real TFLite models for tests, built with Keras 3 and converted like `convert` will do it.

The models are tiny CNNs whose weights are set by hand so that their answer is a *known function
of the crop's mean colour*: each class has a prototype colour and the logits are
`k * (2 m.c - |c|^2)`, i.e. the nearest prototype wins (|m|^2 is common to all classes). A test can
therefore say "a red crop must be Rubra rubra / Rubridae / Calidi" and a crop halfway between two
prototypes gives a known ~50/50 answer. No training: builds are deterministic and take a second.

Conversion goes through `model.export(..., format="tf_saved_model")` and
`tf.lite.TFLiteConverter.from_saved_model`, so outputs carry signature names as in real bundles.
Built models are cached in memory per process, keyed by their arguments; `save`/`write_bundle`/
`write_plain` write them under a directory the caller passes (e.g. a pytest tmp dir).

Only tests import this module (it imports TensorFlow lazily); `edge/` never does.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge.classify.bundle import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    BundleManifest,
    FileEntry,
    InputSpec,
    OutputHead,
    TaxonomySpec,
    write_manifest,
)

Quant = Literal["float", "int8"]
IODtype = Literal["float32", "uint8", "int8"]

INPUT_NAME = "image"
SHARPNESS = 8.0  # k in the logits: pure colours score > 0.99, a 50/50 mix ~0.5

# species -> (RGB prototype in 0..1, family, order)
SPECIES: dict[str, tuple[tuple[float, float, float], str, str]] = {
    "Rubra rubra": ((1.0, 0.0, 0.0), "Rubridae", "Calidi"),
    "Rubra purpurea": ((1.0, 0.0, 1.0), "Rubridae", "Calidi"),
    "Flava lutea": ((1.0, 1.0, 0.0), "Flavidae", "Calidi"),
    "Viridis viridis": ((0.0, 1.0, 0.0), "Viridae", "Frigidi"),
    "Caerulea caerulea": ((0.0, 0.0, 1.0), "Caeruleidae", "Frigidi"),
    "Caerulea glauca": ((0.0, 1.0, 1.0), "Caeruleidae", "Frigidi"),
}
LEVELS = ("order", "family", "species")

# Named colours (RGB 0..255) used by tests; the six pure ones are the species prototypes.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "magenta": (255, 0, 255),
    "yellow": (255, 255, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "cyan": (0, 255, 255),
}


def level_labels() -> dict[str, list[str]]:
    """Labels per level in output order (order of first appearance in SPECIES)."""
    species = list(SPECIES)
    family = list(dict.fromkeys(f for _, f, _ in SPECIES.values()))
    order = list(dict.fromkeys(o for _, _, o in SPECIES.values()))
    return {"order": order, "family": family, "species": species}


def taxonomy_parents() -> dict[str, dict[str, str]]:
    """The true parent map of the colour taxonomy."""
    return {
        "family": {f: o for _, f, o in SPECIES.values()},
        "species": {s: f for s, (_, f, _) in SPECIES.items()},
    }


def prototypes(level: str) -> np.ndarray:
    """Prototype colours (n x 3, RGB 0..1) of a level's classes: the mean of their species' colours."""
    labels = level_labels()[level]
    index = {"species": 0, "family": 1, "order": 2}[level]
    rows = []
    for label in labels:
        members = [c for s, (c, f, o) in SPECIES.items() if (s, f, o)[index] == label]
        rows.append(np.mean(np.asarray(members, dtype=np.float64), axis=0))
    return np.asarray(rows)


def reference_probs(rgb: Sequence[float], level: str) -> np.ndarray:
    """What the model computes for a crop of mean colour `rgb` (0..255), in numpy: the oracle."""
    m = np.asarray(rgb, dtype=np.float64) / 255.0
    protos = prototypes(level)
    logits = SHARPNESS * (2.0 * protos @ m - (protos**2).sum(axis=1))
    e = np.exp(logits - logits.max())
    return e / e.sum()


def colour_crop(rgb: Sequence[int], size: int) -> np.ndarray:
    """A uniform size x size crop of colour `rgb` (0..255), in BGR order like every frame on the device."""
    return np.broadcast_to(np.asarray(rgb[::-1], dtype=np.uint8), (size, size, 3)).copy()


# ---------------------------------------------------------------- built models


@dataclass(frozen=True)
class Head:
    level: str
    signature_output: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class BuiltModel:
    """A converted model plus what a manifest needs to describe it.

    input_range: None when normalisation is inside the model (it takes pixels 0..255), else the
        float range pixels 0..255 must be mapped to.
    """

    tflite: bytes
    keras_model: Any = field(repr=False)
    heads: tuple[Head, ...]
    size: int
    input_dtype: IODtype
    input_range: tuple[float, float] | None
    colour_order: Literal["RGB", "BGR"]
    quant: Quant
    signature: str = "serving_default"

    def save(self, path: Path) -> Path:
        """Write the .tflite file (creating parent folders)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.tflite)
        return path

    def keras_input(self, crops_bgr: np.ndarray) -> np.ndarray:
        """Float input for the Keras model from BGR uint8 crops (the float reference path)."""
        pixels = crops_bgr.astype(np.float32)
        if self.colour_order == "RGB":
            pixels = pixels[..., ::-1]
        if self.input_range is None:
            return np.ascontiguousarray(pixels)
        low, high = self.input_range
        return np.ascontiguousarray(low + pixels * ((high - low) / 255.0), dtype=np.float32)

    def keras_predict(self, crops_bgr: np.ndarray) -> dict[str, np.ndarray]:
        """Float Keras probabilities per level (softmax applied if the head outputs logits)."""
        out = self.keras_model(self.keras_input(crops_bgr), training=False)
        if not isinstance(out, dict):
            out = {self.heads[0].signature_output: out}
        result = {}
        for head in self.heads:
            values = np.asarray(out[head.signature_output], dtype=np.float64)
            if values.min() < 0 or not np.allclose(values.sum(axis=1), 1.0, atol=1e-3):
                values = np.exp(values - values.max(axis=1, keepdims=True))
                values /= values.sum(axis=1, keepdims=True)
            result[head.level] = values
        return result

    def input_quantization(self) -> tuple[float | None, int | None]:
        """(scale, zero_point) of the converted model's input tensor; (None, None) for float."""
        if self.input_dtype == "float32":
            return None, None
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_content=self.tflite).get_signature_runner(self.signature)
        details = next(iter(runner.get_input_details().values()))
        scale, zero_point = details["quantization"]
        return float(scale), int(zero_point)


_CACHE: dict[tuple[Any, ...], BuiltModel] = {}


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    return tf


def _keras() -> Any:
    _tf()
    import keras

    return keras


def _build_keras(
    size: int,
    heads: Sequence[tuple[str, str, np.ndarray]],
    *,
    input_range: tuple[float, float] | None,
    colour_order: str,
    softmax: bool,
    dict_outputs: bool,
) -> Any:
    """Input -> rescale to mean-colour units -> identity conv (+1 noise channel) -> pool -> heads.

    heads: (output name, level, prototypes n x 3 RGB) per head, in the Keras output order.
    """
    keras = _keras()
    rng = np.random.default_rng(7)
    image = keras.Input((size, size, 3), name=INPUT_NAME)
    if input_range is None:
        scale, offset = 1.0 / 255.0, 0.0
    else:
        low, high = input_range
        scale, offset = 1.0 / (high - low), -low / (high - low)
    x = keras.layers.Rescaling(scale, offset, name="to_unit")(image)
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="features")
    x = conv(x)
    x = keras.layers.AveragePooling2D(2, name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="mean_colour")(x)
    kernel = np.zeros((3, 3, 3, 4), dtype=np.float32)
    for c in range(3):
        kernel[1, 1, c, c] = 1.0  # channels 0..2 copy R, G, B (in the model's colour order)
    kernel[..., 3] = rng.normal(0.0, 0.2, (3, 3, 3))  # a real, unused feature
    conv.set_weights([kernel, np.zeros(4, dtype=np.float32)])
    outputs = {}
    for name, _level, protos in heads:
        ordered = protos[:, ::-1] if colour_order == "BGR" else protos
        weights = np.zeros((4, len(protos)), dtype=np.float32)
        weights[:3] = (2.0 * SHARPNESS * ordered.T).astype(np.float32)
        bias = (-SHARPNESS * (protos**2).sum(axis=1)).astype(np.float32)
        dense = keras.layers.Dense(len(protos), activation="softmax" if softmax else None, name=name)
        outputs[name] = dense(x)
        dense.set_weights([weights, bias])
    if dict_outputs:
        return keras.Model(image, outputs, name="colour_taxonomy")
    return keras.Model(image, next(iter(outputs.values())), name="colour_flat")


def _representative(
    size: int, input_range: tuple[float, float] | None, colour_order: str
) -> Callable[[], Iterator]:
    """Calibration images in the model's input domain: prototypes, mixes, black/white, noise."""

    def generate() -> Iterator[list[np.ndarray]]:
        rng = np.random.default_rng(3)
        colours = [*COLOURS.values(), (0, 0, 0), (255, 255, 255), (128, 128, 128)]
        colours += [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(40)]
        images = [colour_crop(c, size) for c in colours]
        images += [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(10)]
        for bgr in images:
            pixels = bgr.astype(np.float32)
            if colour_order == "RGB":
                pixels = pixels[..., ::-1]
            if input_range is not None:
                low, high = input_range
                pixels = low + pixels * ((high - low) / 255.0)
            yield [np.ascontiguousarray(pixels[None], dtype=np.float32)]

    return generate


def _convert(keras_model: Any, quant: Quant, io: IODtype, representative: Callable[[], Iterator]) -> bytes:
    """Keras -> SavedModel -> TFLite, the same route `convert` takes."""
    tf = _tf()
    with tempfile.TemporaryDirectory(prefix="modelkit-") as tmp:
        saved = Path(tmp) / "saved_model"
        keras_model.export(str(saved), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if quant == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io]
            converter.inference_output_type = {"uint8": tf.uint8, "int8": tf.int8, "float32": tf.float32}[io]
        elif io != "float32":
            raise ValueError(f"a float model has float32 input and output, not {io}")
        return bytes(converter.convert())


def hierarchical_model(
    *,
    size: int = 32,
    quant: Quant = "float",
    io: IODtype = "float32",
    output_names: Mapping[str, str] | None = None,
    input_range: tuple[float, float] | None = None,
    colour_order: Literal["RGB", "BGR"] = "RGB",
) -> BuiltModel:
    """Three heads (order, family, species) as dict outputs: signature outputs named by level.

    output_names renames heads' signature outputs (e.g. so their sorted order differs from the
    coarse-to-fine order of the manifest); int8 models need io "uint8" or "int8".
    """
    names = {level: level for level in LEVELS} | dict(output_names or {})
    key = ("hier", size, quant, io, tuple(sorted(names.items())), input_range, colour_order)
    if key not in _CACHE:
        heads = [(names[level], level, prototypes(level)) for level in LEVELS]
        model = _build_keras(
            size, heads, input_range=input_range, colour_order=colour_order, softmax=True, dict_outputs=True
        )
        tflite = _convert(model, quant, io, _representative(size, input_range, colour_order))
        labels = level_labels()
        _CACHE[key] = BuiltModel(
            tflite=tflite,
            keras_model=model,
            heads=tuple(Head(level, names[level], tuple(labels[level])) for level in LEVELS),
            size=size,
            input_dtype=io,
            input_range=input_range,
            colour_order=colour_order,
            quant=quant,
        )
    return _CACHE[key]


def flat_model(
    *,
    size: int = 32,
    quant: Quant = "float",
    io: IODtype = "float32",
    softmax: bool = True,
    input_range: tuple[float, float] | None = None,
    colour_order: Literal["RGB", "BGR"] = "RGB",
) -> BuiltModel:
    """One head over the six colour species (a single, unnamed Keras output: "output_0").

    softmax=False makes the head output logits (the classifier must detect and apply softmax).
    """
    key = ("flat", size, quant, io, softmax, input_range, colour_order)
    if key not in _CACHE:
        model = _build_keras(
            size,
            [("species", "species", prototypes("species"))],
            input_range=input_range,
            colour_order=colour_order,
            softmax=softmax,
            dict_outputs=False,
        )
        tflite = _convert(model, quant, io, _representative(size, input_range, colour_order))
        from ai_edge_litert.interpreter import Interpreter

        outputs = Interpreter(model_content=tflite).get_signature_list()["serving_default"]["outputs"]
        _CACHE[key] = BuiltModel(
            tflite=tflite,
            keras_model=model,
            heads=(Head("species", outputs[0], tuple(SPECIES)),),
            size=size,
            input_dtype=io,
            input_range=input_range,
            colour_order=colour_order,
            quant=quant,
        )
    return _CACHE[key]


def third_party_model(size: int = 32) -> BuiltModel:
    """Like common downloaded classifiers: full int8, uint8 in/out, expects [-1, 1], one output."""
    return flat_model(size=size, quant="int8", io="uint8", input_range=(-1.0, 1.0))


# ---------------------------------------------------------------- writing bundles and plain models


def make_manifest(
    model: BuiltModel,
    *,
    name: str = "colour-taxonomy-test",
    model_file: str = "model.tflite",
    thresholds: Mapping[str, Sequence[float]] | None = None,
    parents: Mapping[str, Mapping[str, str]] | None = None,
    activation: Literal["softmax", "none"] | None = None,
    sha256: str = "0" * 64,
) -> BundleManifest:
    """A manifest describing `model` (checksums are filled in by write_manifest)."""
    scale, zero_point = model.input_quantization()
    levels = [head.level for head in model.heads]
    if parents is None:
        true = taxonomy_parents()
        parents = {level: true[level] for level in levels[1:]}
    return BundleManifest(
        format_version=FORMAT_VERSION,
        name=name,
        created_utc=datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc),
        input=InputSpec(
            height=model.size,
            width=model.size,
            dtype=model.input_dtype,
            scale=scale,
            zero_point=zero_point,
            colour_order=model.colour_order,
            normalization_in_model=model.input_range is None,
            float_range=model.input_range,
        ),
        signature=model.signature,
        outputs=[
            OutputHead(
                level=head.level,
                signature_output=head.signature_output,
                labels=list(head.labels),
                thresholds=list(thresholds[head.level]) if thresholds and head.level in thresholds else None,
                activation=activation,
            )
            for head in model.heads
        ],
        taxonomy=TaxonomySpec(levels=levels, parents={k: dict(v) for k, v in parents.items()}),
        files={model_file: FileEntry(sha256=sha256, role="cpu")},
        validation={"note": "built by tests/modelkit.py"},
        training={"data": "hand-set colour prototypes", "sharpness": SHARPNESS},
    )


def write_bundle(directory: Path, model: BuiltModel, **manifest_args: Any) -> Path:
    """Write model.tflite + model.json (via edge's write_manifest) into `directory`; return it.

    manifest_args go to `make_manifest` (thresholds, parents, activation, name).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = make_manifest(model, **manifest_args)
    model.save(directory / manifest.cpu_file)
    write_manifest(directory, manifest)
    return directory


def edit_manifest(directory: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """Apply `change` to the raw JSON of a written bundle's model.json (for bad-input tests)."""
    path = Path(directory) / MANIFEST_NAME
    raw = json.loads(path.read_text(encoding="utf-8"))
    change(raw)
    path.write_text(json.dumps(raw, indent=2), encoding="utf-8")
    return path


def write_plain(
    directory: Path,
    model: BuiltModel,
    *,
    filename: str = "model.tflite",
    labels_name: str | None = "labels.txt",
    label_style: Literal["plain", "index", "index_colon"] = "plain",
) -> Path:
    """Write a bare .tflite and (unless labels_name is None) a labels file beside it; return the .tflite."""
    directory = Path(directory)
    path = model.save(directory / filename)
    if labels_name is not None:
        labels = model.heads[0].labels
        if label_style == "plain":
            lines = list(labels)
        elif label_style == "index":
            lines = [f"{i}  {label}" for i, label in enumerate(labels)]
        else:
            lines = [f"{i}: {label}" for i, label in enumerate(labels)]
        (directory / labels_name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------- object detectors

DETECTOR_SIZE = 64  # input side of the built detectors
ANCHOR_SIDE = 32  # every anchor box is this square, in input pixels
ANCHOR_STRIDE = 8
ANCHOR_CENTRES = tuple(ANCHOR_SIDE // 2 + ANCHOR_STRIDE * i for i in range(5))  # 16, 24, ..., 48


def anchor_boxes() -> np.ndarray:
    """(25, 4) anchors as (x0, y0, x1, y1) input pixels, row by row (the models' candidate order)."""
    half = ANCHOR_SIDE / 2
    return np.array(
        [(cx - half, cy - half, cx + half, cy + half) for cy in ANCHOR_CENTRES for cx in ANCHOR_CENTRES],
        dtype=np.float32,
    )


def box_detector(
    layout: Literal["ssd", "yolo"],
    *,
    quant: Quant = "float",
    io: IODtype = "float32",
    units: str = "normalized",
) -> bytes:
    """A TFLite object detector with hand-set weights: it finds dark squares on a pale ground.

    Each of 25 anchors (ANCHOR_SIDE squares on a stride-ANCHOR_STRIDE grid) scores the share of its
    window that is dark (grey below 0.3; letterbox bars are 0.45): a dark 24 px square centred on an
    anchor gives it 0.56, its neighbours 0.375 or less. `ssd`: outputs detection_boxes [1, 25, 4]
    (ymin, xmin, ymax, xmax fractions), detection_classes, detection_scores [1, 25] and
    num_detections [1], like
    TensorFlow's object-detection exports. `yolo`: one [1, 6, 25] output of centre x, centre y,
    width, height (fractions or input pixels, `units`) and two class scores (the share, and a
    fifth of it). A float model takes pixels in [0, 1]; an int8 one takes raw uint8 pixels.
    """
    key = ("detector", layout, quant, io, units)
    if key in _CACHE:
        return _CACHE[key]  # type: ignore[return-value]
    keras = _keras()
    from keras import ops

    size = DETECTOR_SIZE
    image = keras.Input((size, size, 3), name=INPUT_NAME)
    x = keras.layers.Rescaling(1.0 / 255.0 if io != "float32" else 1.0, name="to_unit")(image)
    darkness = keras.layers.Conv2D(1, 1, name="darkness")
    dark = keras.layers.ReLU(max_value=1.0, name="dark")(darkness(x))
    darkness.set_weights([np.full((1, 1, 3, 1), -10.0 / 3.0, np.float32), np.array([3.0], np.float32)])
    share = keras.layers.AveragePooling2D(ANCHOR_SIDE, strides=ANCHOR_STRIDE, name="anchor_share")(dark)
    scores = keras.layers.Reshape((25,), name="scores")(share)
    anchors = anchor_boxes()

    class Outputs(keras.layers.Layer):
        def call(self, s: Any) -> Any:
            zero = ops.zeros_like(s)
            if layout == "ssd":
                corners = anchors[:, [1, 0, 3, 2]] / size  # ymin, xmin, ymax, xmax fractions
                return {
                    "detection_boxes": ops.expand_dims(zero, -1) + ops.convert_to_tensor(corners),
                    "detection_classes": zero + 1.0,
                    "detection_scores": s,
                    "num_detections": ops.sum(zero, axis=1) + 25.0,
                }
            centre = (anchors[:, :2] + anchors[:, 2:]) / 2
            sides = anchors[:, 2:] - anchors[:, :2]
            geometry = np.concatenate([centre, sides], axis=1).T  # (4, 25)
            if units == "normalized":
                geometry = geometry / size
            rows = ops.expand_dims(zero, 1) + ops.convert_to_tensor(geometry.astype(np.float32))
            classes = ops.stack([s, s * 0.2], axis=1)
            return ops.concatenate([rows, classes], axis=1)

    model = keras.Model(image, Outputs(name="outputs")(scores), name=f"{layout}_detector")

    def representative() -> Iterator[list[np.ndarray]]:
        rng = np.random.default_rng(5)
        for i in range(40):
            frame = np.full((size, size, 3), 220, np.uint8)
            cx, cy = (int(v) for v in rng.integers(8, size - 8, 2))
            frame[max(0, cy - 12) : cy + 12, max(0, cx - 12) : cx + 12] = 30 + i
            frame[0, 0], frame[-1, -1] = 0, 255  # the full pixel range: input scale 1, raw pixels in
            yield [frame[None].astype(np.float32)]

    tflite = _convert(model, quant, io, representative)
    _CACHE[key] = tflite  # type: ignore[assignment]
    return tflite
