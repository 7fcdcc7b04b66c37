"""Grad-CAM saliency maps: which part of a crop made the model choose its class.

An ecologist trusts a classifier more when it looks at the insect and not at the sheet, and a
model that learned the background shows up here long before it fails in the field.

Grad-CAM (Selvaraju et al. 2017) weights the channels of the last convolutional feature map by
the mean gradient of the class score and keeps the positive part. The feature map is found
without knowing the model: the last tensor with a 4-D (batch, H, W, C) output before global
pooling - a layer of the outer model, or, when the backbone is a nested sub-model that pools
inside, the last 4-D layer inside it; then the model is split there into "images -> feature map"
and "feature map -> class score" and both run under one `tf.GradientTape`.

The class score is the pre-softmax logit where it can be recovered (a Dense/Activation softmax
output layer): softmax probabilities saturate near 1, and their gradients then vanish.

Gradients need the TensorFlow backend; on other backends `gradcam` logs why and returns no files
instead of stopping a finished training run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.errors import TrapcamError

log = logging.getLogger(__name__)


class GradCamError(TrapcamError):
    """Grad-CAM cannot run on this model or backend (the message says why)."""


def unavailable_reason() -> str | None:
    """Why Grad-CAM cannot run here (None when it can): it needs Keras on the TensorFlow backend."""
    try:
        import keras
    except ImportError:
        return "Grad-CAM needs Keras: pip install 'trapcam[train]'"
    backend = keras.backend.backend()
    if backend != "tensorflow":
        return f"Grad-CAM needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this run uses '{backend}'"
    return None


# ---------------------------------------------------------------- finding the feature map


def _rank(tensor: Any) -> int:
    return len(tensor.shape)


def _outer_node(model: Any, layer: Any) -> Any:
    """The node of `layer` that belongs to `model`'s graph (a nested model has one per call)."""
    by_depth = getattr(model, "_nodes_by_depth", None)
    nodes = None if by_depth is None else {id(n) for group in by_depth.values() for n in group}
    for node in layer._inbound_nodes:
        if nodes is None or id(node) in nodes:
            return node
    raise GradCamError(f"layer '{layer.name}' is not connected in model '{model.name}'")


def _is_model(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _last_4d_layer(model: Any) -> Any | None:
    """The last layer of `model` (not counting its inputs) whose output is 4-D."""
    import keras

    found = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            out = _outer_node(model, layer).output_tensors
        except GradCamError:
            continue
        if len(out) == 1 and _rank(out[0]) == 4:
            found = layer
    return found


@dataclass
class _Split:
    """images -> feature map (and, for a nested backbone, its pooled output) -> class score."""

    front: Any  # keras.Model: images -> tensor that feeds `feature` (or the feature map itself)
    feature: Any | None  # keras.Model: backbone input -> [feature map, backbone output]; None: outer
    back: Any  # keras.Model: feature map (outer) or backbone output (nested) -> score input
    score: Any  # callable: back's output -> (N, C) class scores (logits where recoverable)
    layer_name: str


def _score_head(model: Any, level: str) -> tuple[Any, Any]:
    """(tensor, fn) so that fn(tensor) are the class scores of output `level`, logits if possible."""
    import keras
    from keras import ops

    names = list(model.output_names)
    if level not in names:
        raise GradCamError(f"model has no output '{level}' (outputs: {names})")
    tensor = model.outputs[names.index(level)]
    layer = tensor._keras_history.operation
    activation = getattr(layer, "activation", None)
    softmax = activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"
    if isinstance(layer, keras.layers.Dense) and softmax:
        node = _outer_node(model, layer)
        inp = node.input_tensors[0]

        def dense_logits(x: Any, layer: Any = layer) -> Any:
            y = ops.matmul(ops.cast(x, "float32"), ops.cast(layer.kernel, "float32"))
            return y + ops.cast(layer.bias, "float32") if layer.use_bias else y

        return inp, dense_logits
    if isinstance(layer, keras.layers.Activation) and softmax:
        return _outer_node(model, layer).input_tensors[0], lambda x: ops.cast(x, "float32")
    if isinstance(layer, keras.layers.Softmax):
        return _outer_node(model, layer).input_tensors[0], lambda x: ops.cast(x, "float32")
    return tensor, lambda x: ops.cast(x, "float32")


def _split(model: Any, level: str) -> _Split:
    """Cut `model` at its last convolutional feature map (see the module docstring)."""
    import keras

    if isinstance(model, keras.Sequential):
        # A Sequential is a functional graph underneath; rebuild it as one to walk its nodes.
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    score_tensor, score_fn = _score_head(model, level)
    # Walk the outer layers: the last 4-D output wins, unless a later nested model pools inside.
    choice: tuple[str, Any] | None = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            node = _outer_node(model, layer)
        except GradCamError:
            continue
        outs = node.output_tensors
        if len(outs) == 1 and _rank(outs[0]) == 4:
            choice = ("outer", layer)
        elif _is_model(layer) and _last_4d_layer(layer) is not None:
            choice = ("nested", layer)
    if choice is None:
        raise GradCamError(f"model '{model.name}' has no 4-D convolutional feature map for Grad-CAM")
    kind, layer = choice
    node = _outer_node(model, layer)
    try:
        if kind == "outer":
            fmap = node.output_tensors[0]
            return _Split(
                front=keras.Model(model.inputs, fmap),
                feature=None,
                back=keras.Model(fmap, score_tensor),
                score=score_fn,
                layer_name=layer.name,
            )
        inner = _last_4d_layer(layer)
        if len(node.input_tensors) != 1 or len(node.output_tensors) != 1:
            raise GradCamError(f"nested backbone '{layer.name}' must have one input and one output")
        inner_fmap = _outer_node(layer, inner).output_tensors[0]
        return _Split(
            front=keras.Model(model.inputs, node.input_tensors[0]),
            feature=keras.Model(layer.inputs, [inner_fmap, layer.outputs[0]]),
            back=keras.Model(node.output_tensors[0], score_tensor),
            score=score_fn,
            layer_name=f"{layer.name}/{inner.name}",
        )
    except GradCamError:
        raise
    except (ValueError, TypeError) as exc:
        # e.g. a skip connection around the feature map: the model cannot be cut there.
        raise GradCamError(f"cannot split model at '{layer.name}' for Grad-CAM: {exc}") from None


def feature_layer(model: Any, level: str) -> str:
    """Name of the feature map Grad-CAM uses ("backbone/layer" inside a nested backbone)."""
    return _split(model, level).layer_name


# ---------------------------------------------------------------- heat maps


def gradcam_heatmaps(
    model: Any, images: np.ndarray, level: str, class_index: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Heat maps (N, H, W) in 0..1 at image resolution, and the class each map explains.

    class_index: one class per image; default the predicted class. A map that is zero
    everywhere (no positive evidence) stays zero rather than being stretched from noise.
    """
    reason = unavailable_reason()
    if reason:
        raise GradCamError(reason)
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise GradCamError(f"Grad-CAM expects images of shape (N, H, W, 3), got {images.shape}")
    parts = _split(model, level)
    x = tf.convert_to_tensor(images.astype(np.float32))
    with tf.GradientTape() as tape:
        h = parts.front(x, training=False)
        if parts.feature is None:
            fmap = h
            tape.watch(fmap)
            pre = parts.back(fmap, training=False)
        else:
            fmap, pooled = parts.feature(h, training=False)
            pre = parts.back(pooled, training=False)
        scores = tf.cast(parts.score(pre), tf.float32)
        if class_index is None:
            chosen = tf.argmax(scores, axis=1, output_type=tf.int32)
        else:
            chosen = tf.constant(np.asarray(class_index, np.int32).reshape(-1))
            if int(chosen.shape[0]) != len(images):
                raise GradCamError(f"{int(chosen.shape[0])} class indices for {len(images)} images")
        target = tf.gather(scores, chosen, axis=1, batch_dims=1)
    grads = tape.gradient(target, fmap)
    if grads is None:
        raise GradCamError(f"no gradient from output '{level}' to feature map '{parts.layer_name}'")
    fmap32 = tf.cast(fmap, tf.float32)
    weights = tf.reduce_mean(tf.cast(grads, tf.float32), axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * fmap32, axis=-1)).numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1).reshape(-1, 1, 1)
    cam = np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)
    height, width = images.shape[1:3]
    maps = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in cam])
    return np.clip(maps, 0.0, 1.0), chosen.numpy()


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8: the crop with the heat map (jet colours) blended over it."""
    rgb = np.clip(np.asarray(image, np.float32), 0, 255).astype(np.uint8)
    heat = cv2.applyColorMap((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1.0 - alpha, heat, alpha, 0.0)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "class"


PANEL_PX = 256  # each half of a Grad-CAM image is scaled up to this (crops are often 64-128 px)
CAPTION_PX = 52  # two lines of text under the panels


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _caption(width: int, lines: Sequence[tuple[str, tuple[int, int, int]]]) -> np.ndarray:
    """A white strip with one line of text per entry (RGB colour), for the image's own caption."""
    strip = np.full((CAPTION_PX, width, 3), 255, np.uint8)
    for row, (text, colour) in enumerate(lines):
        cv2.putText(
            strip, _ascii(text), (6, 20 + 24 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA
        )
    return strip


def gradcam(
    model: Any,
    images: np.ndarray,
    level: str,
    out_dir: Path,
    n: int,
    labels: Sequence[str] | None = None,
    truth: Sequence[int] | np.ndarray | None = None,
    probs: np.ndarray | None = None,
) -> list[Path]:
    """Write up to `n` PNGs (crop | overlay side by side, captioned) for a spread of `images`.

    Images are taken evenly across the array (test splits are usually grouped by class, so
    this shows several classes). Each half is scaled to PANEL_PX; the caption says the true
    class (`truth`, indices into `labels`) and the model's answer with its score (`probs`, N x classes),
    and whether it was right. File names carry the index, the true class and "ok" or the wrong
    answer, so a folder listing already shows where the model looked when it was wrong. Returns
    [] and logs the reason when Grad-CAM cannot run on this backend, so a finished training run
    still writes its report.
    """
    reason = unavailable_reason()
    if reason:
        log.warning("skipping Grad-CAM: %s", reason)
        return []
    images = np.asarray(images)
    if n <= 0 or len(images) == 0:
        return []
    pick = np.unique(np.linspace(0, len(images) - 1, num=min(n, len(images))).round().astype(int))
    maps, chosen = gradcam_heatmaps(model, images[pick], level)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def name(index: int) -> str:
        return labels[index] if labels is not None and index < len(labels) else str(index)

    paths = []
    for i, heat, cls in zip(pick, maps, chosen, strict=True):
        crop = np.clip(images[i], 0, 255).astype(np.uint8)
        scale = max(1.0, PANEL_PX / max(crop.shape[:2]))
        size = (round(crop.shape[1] * scale), round(crop.shape[0] * scale))
        big = cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC)
        hot = cv2.resize(overlay(crop, heat), size, interpolation=cv2.INTER_CUBIC)
        panel = np.concatenate([big, np.full((size[1], 4, 3), 255, np.uint8), hot], 1)
        answer = name(int(cls))
        score = f" {float(probs[i][int(cls)]):.2f}" if probs is not None else ""
        lines = [(f"{level}, test crop {int(i)}", (0, 0, 0))]
        suffix = _slug(answer)
        if truth is not None:
            true = name(int(truth[i]))
            right = int(truth[i]) == int(cls)
            verdict = "right" if right else "wrong"
            lines = [
                (f"true: {true}", (0, 0, 0)),
                (f"model: {answer}{score} ({verdict})", (0, 110, 0) if right else (190, 0, 0)),
            ]
            suffix = f"{_slug(true)}_ok" if right else f"{_slug(true)}_as_{_slug(answer)}"
        else:
            lines.append((f"model: {answer}{score}", (0, 0, 0)))
        panel = np.concatenate([panel, _caption(panel.shape[1], lines)], 0)
        path = out_dir / f"gradcam_{_slug(level)}_{int(i):04d}_{suffix}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)):
            raise GradCamError(f"{path}: cannot write Grad-CAM image")
        paths.append(path)
    return paths
