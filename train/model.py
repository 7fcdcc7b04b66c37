"""Insect classifiers: an ImageNet backbone with one FC-ReLU-FC head per taxonomic level.

Follows Bjerge et al. (2023): a shared CNN backbone, per-level heads (order, family, species)
of Dense-ReLU, Dropout, Dense-softmax, trained with Adam on a weighted sum of per-level
cross-entropies. Everything the field device needs is inside the graph: augmentation layers
(inactive at inference), the backbone's own input scaling, and the heads, so the exported model
takes raw 0-255 RGB and `convert` never has to know which backbone was used.

Only Keras 3 operations (`keras.ops`) are used, so the same model builds and trains with
KERAS_BACKEND=jax. The custom layers are registered for `.keras` loading; importing this module
is what makes `keras.saving.load_model` find them.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers as kl
from keras import ops

from edge.errors import ModelError
from train.config import AugmentConfig, ModelConfig

log = logging.getLogger("trapcam.train.model")

# Caffe-style means (BGR order) that ResNet50's ImageNet weights were trained with.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

# How each backbone wants its input, given raw 0-255 RGB:
#   "tf": scale to [-1, 1]; "caffe": RGB->BGR and subtract the ImageNet means;
#   "raw": pass 0-255 through (EfficientNet rescales and normalises inside itself).
PREPROCESSING = {
    "mobilenet_v2": "tf",
    "mobilenet_v3_large_minimalistic": "tf",
    "efficientnet_b0": "raw",
    "efficientnet_b3": "raw",
    "resnet50": "caffe",
    "small_cnn": "tf",
}


# BatchNorm momentum for backbones trained from scratch (see build_backbone).
_SCRATCH_BN_MOMENTUM = 0.9


class ModelBuildError(ModelError):
    """The model cannot be built as configured (weights file, sizes, class counts)."""


@dataclass
class BuiltModel:
    """The full classifier and the backbone inside it (kept to freeze/unfreeze it)."""

    model: keras.Model
    backbone: keras.Model
    levels: tuple[str, ...]
    consistency: bool = False

    @property
    def output_levels(self) -> tuple[str, ...]:
        return self.levels


@keras.saving.register_keras_serializable(package="trapcam")
class BackbonePreprocess(kl.Layer):
    """Maps raw 0-255 RGB to what the backbone's ImageNet weights expect.

    Inside the model so that training, evaluation and the exported TFLite model all see the
    same numbers, and the device only has to deliver RGB pixels.
    """

    def __init__(self, mode: str = "tf", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("tf", "caffe", "raw"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            bgr = ops.flip(x, axis=-1)
            return bgr - ops.convert_to_tensor(np.asarray(_CAFFE_MEAN_BGR, dtype="float32"), x.dtype)
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="trapcam")
class FamilyConsistency(kl.Layer):
    """Passes the family probabilities through and adds a hierarchy-consistency loss.

    loss = weight * mean over the batch of KL(p || q), where p is the species head's
    probabilities summed per family (a matmul with the one-hot species->family matrix) and q is
    the family head. Differentiable, so it pulls both heads towards answers that agree with the
    taxonomy. Added with `self.add_loss`, which Keras 3 collects on every backend.
    """

    def __init__(
        self, family_of_species: Sequence[int], num_families: int, weight: float, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.family_of_species = [int(i) for i in family_of_species]
        self.num_families = int(num_families)
        self.weight = float(weight)
        matrix = np.zeros((len(self.family_of_species), self.num_families), dtype="float32")
        matrix[np.arange(len(self.family_of_species)), self.family_of_species] = 1.0
        self._matrix = matrix

    def call(self, inputs: Sequence[Any]) -> Any:
        species, family = inputs
        species = ops.cast(species, "float32")
        family = ops.cast(family, "float32")
        summed = ops.matmul(species, ops.convert_to_tensor(self._matrix))
        eps = 1e-7
        p = ops.clip(summed, eps, 1.0)
        q = ops.clip(family, eps, 1.0)
        kl = ops.sum(p * (ops.log(p) - ops.log(q)), axis=-1)
        self.add_loss(self.weight * ops.mean(kl))
        return family

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[1]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "family_of_species": self.family_of_species,
            "num_families": self.num_families,
            "weight": self.weight,
        }


def output_levels(cfg: ModelConfig, levels: Sequence[str]) -> tuple[str, ...]:
    """The levels that get a head: all dataset levels (hierarchical) or just `flat_level`."""
    levels = tuple(levels)
    if cfg.heads == "flat":
        if cfg.flat_level not in levels:
            raise ModelBuildError(
                f"model.flat_level '{cfg.flat_level}' is not a level of the dataset {list(levels)}"
            )
        return (cfg.flat_level,)
    return levels


@keras.saving.register_keras_serializable(package="trapcam")
class PixelNoise(kl.Layer):
    """Gaussian noise of `stddev` grey levels (0-255 scale), only while training.

    Keras' GaussianNoise takes a std of at most 1 (for inputs scaled to 0..1); this model's
    augmentation works on 0-255 pixels.
    """

    def __init__(self, stddev: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stddev = float(stddev)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training or self.stddev <= 0:
            return inputs
        noise = keras.random.normal(ops.shape(inputs), stddev=self.stddev, seed=self.seed_generator)
        return inputs + ops.cast(noise, inputs.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


def augmentation(augment: AugmentConfig, seed: int | None = None) -> keras.Sequential | None:
    """Keras preprocessing layers; they transform only when called with training=True.

    Computed in float32 (also under mixed precision) on 0-255 values, before the backbone's
    scaling, so value ranges are the same for every backbone.
    """
    steps: list[kl.Layer] = []
    kw: dict[str, Any] = {"dtype": "float32", "seed": seed}
    if augment.flip:
        steps.append(kl.RandomFlip("horizontal_and_vertical", name="flip", **kw))
    if augment.rotation > 0:
        steps.append(kl.RandomRotation(augment.rotation, fill_mode="reflect", name="rotation", **kw))
    if augment.zoom > 0:
        steps.append(kl.RandomZoom(augment.zoom, fill_mode="reflect", name="zoom", **kw))
    if augment.contrast > 0:
        steps.append(kl.RandomContrast(augment.contrast, value_range=(0, 255), name="contrast", **kw))
    if augment.brightness > 0:
        steps.append(kl.RandomBrightness(augment.brightness, value_range=(0, 255), name="brightness", **kw))
    if augment.noise > 0:
        steps.append(PixelNoise(augment.noise, name="noise", **kw))
    if not steps:
        return None
    return keras.Sequential(steps, name="augment")


def _backbone_factory(name: str, alpha: float) -> Callable[..., keras.Model]:
    apps = keras.applications
    if name == "mobilenet_v2":
        return lambda **kw: apps.MobileNetV2(alpha=alpha, **kw)
    if name == "mobilenet_v3_large_minimalistic":
        # minimalistic: ReLU instead of hard-swish, no squeeze-excite, 3x3 kernels: Edge TPU friendly.
        return lambda **kw: apps.MobileNetV3Large(
            alpha=alpha, minimalistic=True, include_preprocessing=False, **kw
        )
    if name == "efficientnet_b0":
        return apps.EfficientNetB0
    if name == "efficientnet_b3":
        return apps.EfficientNetB3
    if name == "resnet50":
        return apps.ResNet50
    if name == "small_cnn":
        return small_cnn
    raise ModelBuildError(f"model.backbone: unknown backbone '{name}'")


# Filters of small_cnn's stages: one 3x3 conv-BN-ReLU each, then 2x2 max pooling.
SMALL_CNN_FILTERS = (16, 32, 64, 128)


def small_cnn(
    *,
    include_top: bool = False,
    weights: str | None = None,
    input_shape: tuple[int, int, int],
    pooling: str = "avg",
) -> keras.Model:
    """A plain CNN for training from scratch on a few thousand crops (the demo, the tests).

    MobileNetV2 from random weights needs many epochs to separate similar species on two cores,
    and its ~150 small layers run slowly on a CPU. Four conv-BN-ReLU stages learn the same crops in
    a few epochs, and plain convolutions with ReLU quantize to int8 with hardly any change of answer.
    There are no ImageNet weights for it: it is not a transfer-learning backbone for real photos.
    """
    if include_top or weights is not None or pooling != "avg":
        raise ValueError("small_cnn has no ImageNet weights and no classification top")
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for index, filters in enumerate(SMALL_CNN_FILTERS):
        x = kl.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stage{index}_conv")(x)
        x = kl.BatchNormalization(name=f"stage{index}_bn")(x)
        x = kl.ReLU(name=f"stage{index}_relu")(x)
        x = kl.MaxPooling2D(2, name=f"stage{index}_pool")(x)
    x = kl.Conv2D(SMALL_CNN_FILTERS[-1], 3, padding="same", use_bias=False, name="top_conv")(x)
    x = kl.BatchNormalization(name="top_bn")(x)
    x = kl.ReLU(name="top_relu")(x)
    x = kl.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")


def imagenet_unavailable(backbone: str, exc: BaseException) -> str:
    """The one line for ImageNet weights that could not be downloaded (offline, proxy, server down).

    Why its own message: Keras ends in about 60 lines of traceback and "URL fetch failure", which
    says nothing of the two ways on: weights from a file, or training from random weights.
    """
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return (
        f"model.weights: imagenet: cannot download the ImageNet weights of {backbone} ({reason}). "
        "Run once with network access (Keras keeps them in ~/.keras/models), give a weights file "
        "(model.weights: path/to/backbone.weights.h5, saved from the same backbone and image size), "
        "or train from random weights (model.weights: none; needs far more images per class, see "
        "the README's Training section)"
    )


def build_backbone(cfg: ModelConfig, image_size: int) -> keras.Model:
    """The headless backbone (global average pooling), with weights as configured.

    weights: 'imagenet' downloads Keras' ImageNet weights; 'none' starts from random weights;
    anything else is a path to a weights file saved from the same backbone and size.
    """
    factory = _backbone_factory(cfg.backbone, cfg.alpha)
    spec = cfg.weights.strip()
    keras_weights: str | None
    path: Path | None = None
    if spec.lower() == "imagenet":
        keras_weights = "imagenet"
    elif spec.lower() == "none":
        keras_weights = None
    else:
        keras_weights = None
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelBuildError(f"model.weights: weights file {path} not found")
    try:
        backbone = factory(
            include_top=False,
            weights=keras_weights,
            input_shape=(image_size, image_size, 3),
            pooling="avg",
        )
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelBuildError(
            f"model.backbone {cfg.backbone} (alpha {cfg.alpha}, {image_size} px, weights {spec}): {first}"
        ) from None
    except Exception as exc:  # the download: Keras raises a bare Exception ("URL fetch failure ...")
        if keras_weights != "imagenet":
            raise
        raise ModelBuildError(imagenet_unavailable(cfg.backbone, exc)) from None
    if spec.lower() == "none":
        # From scratch, BatchNorm's moving statistics must catch up with weights that change
        # fast; at Keras' default momentum (0.99) validation runs on stale statistics for
        # many epochs on a small dataset and the best-by-val_loss checkpoint stays near chance.
        for layer in _all_layers(backbone):
            if _is_batchnorm(layer):
                layer.momentum = _SCRATCH_BN_MOMENTUM
    if path is not None:
        try:
            # Keras only warns when parts of a file do not match (and keeps random weights there).
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                backbone.load_weights(str(path))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelBuildError(
                f"model.weights: {path} does not fit backbone {cfg.backbone} "
                f"(alpha {cfg.alpha}, {image_size} px): {first}"
            ) from None
    return backbone


def _check_classes(levels: Sequence[str], num_classes: Mapping[str, int]) -> None:
    for level in levels:
        if level not in num_classes:
            raise ModelBuildError(f"num_classes has no entry for level '{level}'")
        if int(num_classes[level]) < 1:
            raise ModelBuildError(f"level '{level}' has {num_classes[level]} classes; need at least 1")


def build_model(
    cfg: ModelConfig,
    augment: AugmentConfig,
    image_size: int,
    levels: Sequence[str],
    num_classes: Mapping[str, int],
    family_of_species: np.ndarray | Sequence[int] | None = None,
    seed: int | None = None,
) -> BuiltModel:
    """Backbone + per-level heads; input float 0-255 RGB (batch, S, S, 3), outputs {level: probs}.

    levels: the dataset's levels (coarse to fine); with heads 'flat' only `cfg.flat_level` gets
    a head. family_of_species: species index -> family index, needed for the consistency term
    (hierarchical heads with consistency_weight > 0). Under a mixed-precision policy the softmax
    outputs stay float32 so losses and exported probabilities are exact.
    """
    heads = output_levels(cfg, levels)
    _check_classes(heads, num_classes)
    use_consistency = (
        cfg.heads == "hierarchical"
        and cfg.consistency_weight > 0
        and "species" in heads
        and "family" in heads
    )
    fam_index: np.ndarray | None = None
    if use_consistency:
        if family_of_species is None:
            raise ModelBuildError(
                "model.consistency_weight > 0 needs the species->family map (family_of_species)"
            )
        fam_index = np.asarray(family_of_species, dtype="int64").reshape(-1)
        if fam_index.shape[0] != int(num_classes["species"]):
            raise ModelBuildError(
                f"family_of_species has {fam_index.shape[0]} entries for {num_classes['species']} species"
            )
        if fam_index.size and (fam_index.min() < 0 or fam_index.max() >= int(num_classes["family"])):
            raise ModelBuildError(
                f"family_of_species has an index outside 0..{int(num_classes['family']) - 1}"
            )

    backbone = build_backbone(cfg, image_size)
    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="float32", name="image")
    x = inputs
    aug = augmentation(augment, seed)
    if aug is not None:
        x = aug(x)
    x = BackbonePreprocess(PREPROCESSING[cfg.backbone], name="preprocess", dtype="float32")(x)
    features = backbone(x)

    outputs: dict[str, Any] = {}
    for level in heads:
        h = kl.Dense(cfg.hidden_units, activation="relu", name=f"{level}_fc")(features)
        h = kl.Dropout(cfg.dropout, name=f"{level}_dropout")(h)
        name = "family_head" if use_consistency and level == "family" else level
        outputs[level] = kl.Dense(int(num_classes[level]), activation="softmax", dtype="float32", name=name)(
            h
        )
    if use_consistency:
        assert fam_index is not None
        outputs["family"] = FamilyConsistency(
            fam_index.tolist(),
            int(num_classes["family"]),
            cfg.consistency_weight,
            name="family",
            dtype="float32",
        )([outputs["species"], outputs["family"]])

    model = keras.Model(inputs, {level: outputs[level] for level in heads}, name=f"trapcam_{cfg.backbone}")
    log.info(
        "built %s (%s heads %s, %d px, weights %s, consistency %s)",
        cfg.backbone,
        cfg.heads,
        ",".join(heads),
        image_size,
        cfg.weights,
        cfg.consistency_weight if use_consistency else "off",
    )
    return BuiltModel(model=model, backbone=backbone, levels=heads, consistency=use_consistency)


def compile_for_stage(
    built: BuiltModel,
    lr: float | keras.optimizers.schedules.LearningRateSchedule,
    cfg: ModelConfig,
    levels: Sequence[str] | None = None,
) -> None:
    """(Re)compile with Adam at `lr` (a rate or a schedule): needed after every change of what is trainable.

    Loss: sparse categorical cross-entropy per head, weighted by cfg.loss_weights (levels not
    listed weigh 1.0); the consistency term, if any, is added by its layer. Metrics: accuracy
    per head (logged as `<level>_accuracy`). levels: defaults to the model's heads.
    """
    heads = tuple(levels) if levels is not None else built.levels
    heads = tuple(level for level in heads if level in built.levels)
    built.model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss={level: keras.losses.SparseCategoricalCrossentropy() for level in heads},
        loss_weights={level: float(cfg.loss_weights.get(level, 1.0)) for level in heads},
        metrics={level: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] for level in heads},
    )


def _is_batchnorm(layer: kl.Layer) -> bool:
    return isinstance(layer, kl.BatchNormalization)


def _all_layers(model: keras.Model) -> list[kl.Layer]:
    out: list[kl.Layer] = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(_all_layers(layer))
    return out


def freeze_backbone(built: BuiltModel) -> int:
    """Stage 1: only the heads learn. Returns the number of trainable weight tensors."""
    built.backbone.trainable = False
    return len(built.model.trainable_weights)


def unfreeze(built: BuiltModel, mode: str = "top", layers: int = 30, freeze_batchnorm: bool = True) -> int:
    """Stage 2: make the top `layers` backbone layers (mode 'top') or all ('all') trainable.

    With pretrained weights BatchNorm layers stay trainable=False, which in Keras 3 also runs
    them in inference mode: with small fine-tuning batches, updating their statistics would
    wreck the pretrained features. A backbone trained from scratch (weights: none) has no
    statistics to protect: frozen at their initial mean 0 / variance 1 they leave the network
    unable to learn at all, so `freeze_batchnorm=False` lets them train. Recompile afterwards
    (`compile_for_stage`). Returns trainable weight tensors.
    """
    if mode not in ("top", "all"):
        raise ModelBuildError(f"training.stage2.unfreeze: unknown mode '{mode}' (expected top or all)")
    backbone = built.backbone
    backbone.trainable = True
    # Set every layer explicitly: Keras does not propagate trainable=True to sublayers when
    # the model's own flag is already True (after an earlier partial unfreeze).
    cut = max(len(backbone.layers) - int(layers), 0) if mode == "top" else 0
    for index, layer in enumerate(backbone.layers):
        layer.trainable = index >= cut
    if freeze_batchnorm:
        for layer in _all_layers(backbone):
            if _is_batchnorm(layer):
                layer.trainable = False
    return len(built.model.trainable_weights)


def count_params(model: keras.Model) -> dict[str, int]:
    """Parameter and layer counts for the report (layers counted inside nested models too)."""
    trainable = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    non_trainable = int(sum(int(np.prod(w.shape)) for w in model.non_trainable_weights))
    every = _all_layers(model)
    return {
        "total": trainable + non_trainable,
        "trainable": trainable,
        "non_trainable": non_trainable,
        "layers": sum(1 for layer in every if not isinstance(layer, keras.Model)),
        "top_level_layers": len(model.layers),
        "trainable_weight_tensors": len(model.trainable_weights),
    }


def load_trained(path: str | Path) -> keras.Model:
    """Load a `.keras` file written by training (this module registers the custom layers)."""
    path = Path(path)
    if not path.is_file():
        raise ModelBuildError(f"{path}: model file not found")
    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelBuildError(f"{path}: cannot load Keras model: {first}") from None
