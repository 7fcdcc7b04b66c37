"""The training configuration: one YAML file, validated like the trap's own config.

Unknown keys are errors and every error names file, line, key path, value and what was
expected (the loader is `edge.config`'s, so both files behave the same for a user).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edge.config import Section, read_config_text, validate

LEVELS = ("order", "family", "species")


class SyntheticData(Section):
    """Crops rendered by the synthetic scene generator (tests, demo)."""

    species: list[str] | None = Field(None, description="species names from edge.synth; default: all")
    per_class: int = Field(150, ge=5, description="crops per species")
    background: Literal["sheet", "flowers", "mixed"] = "sheet"
    size: int | None = Field(
        None, ge=16, le=1024, description="side of the crops written to disk; default: data.image_size"
    )


class DataConfig(Section):
    """Where the labelled crops come from and how they are split and fed."""

    kind: Literal["folder", "nested", "csv", "synthetic"] = "folder"
    path: Path | None = Field(
        None,
        description="folder: one sub-folder per species; nested: order/family/species folders; "
        "csv: a CSV file with columns path,species[,family,order]",
    )
    taxonomy: Path | None = Field(
        None, description="CSV with columns species,family,order (kind folder or csv without those columns)"
    )
    synthetic: SyntheticData = SyntheticData()
    image_size: int = Field(
        224, ge=32, le=1024, description="square input size of the model (128 and 224 common)"
    )
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    min_per_class: int = Field(
        3, ge=3, description="fewer images than this in a class is an error (each split needs one)"
    )
    batch_size: int = Field(32, ge=1, le=4096)
    cache: Literal["memory", "none"] = Field("memory", description="keep decoded, resized images in memory")
    pipeline: Literal["auto", "tf.data", "python"] = Field(
        "auto", description="tf.data on the TensorFlow backend; a Python loader elsewhere (JAX)"
    )

    @model_validator(mode="after")
    def _path_for_kind(self) -> DataConfig:
        if self.kind != "synthetic" and self.path is None:
            raise ValueError(f"path is required for data kind '{self.kind}'")
        return self


class AugmentConfig(Section):
    """Keras preprocessing layers, active only while training."""

    flip: bool = True
    rotation: float = Field(0.1, ge=0, le=0.5, description="fraction of a full turn")
    zoom: float = Field(0.1, ge=0, le=0.5)
    contrast: float = Field(0.2, ge=0, le=1)
    brightness: float = Field(0.2, ge=0, le=1)
    noise: float = Field(
        0.0,
        ge=0,
        le=64,
        description="std of Gaussian pixel noise on the 0-255 scale: a model that keeps its answer under "
        "a few grey levels of noise also keeps it in int8, whose rounding is noise of that size",
    )


class ModelConfig(Section):
    """Backbone, heads and what the exported model takes (raw 0-255 RGB)."""

    backbone: Literal[
        "mobilenet_v2",
        "mobilenet_v3_large_minimalistic",
        "efficientnet_b0",
        "efficientnet_b3",
        "resnet50",
        "small_cnn",
    ] = "mobilenet_v2"
    weights: str = Field("imagenet", description="'imagenet', 'none', or a path to a weights file")
    alpha: float = Field(1.0, gt=0, le=1.4, description="width multiplier (MobileNets only)")
    heads: Literal["flat", "hierarchical"] = "hierarchical"
    flat_level: Literal["order", "family", "species"] = "species"
    hidden_units: int = Field(256, ge=8, description="units of each head's hidden FC-ReLU layer")
    dropout: float = Field(0.3, ge=0, lt=1)
    loss_weights: dict[str, float] = Field(
        default_factory=lambda: {"order": 0.5, "family": 0.75, "species": 1.0}
    )
    consistency_weight: float = Field(
        0.0, ge=0, description="weight of KL(species summed per family || family head); 0 = off"
    )

    @model_validator(mode="after")
    def _loss_weight_levels(self) -> ModelConfig:
        unknown = set(self.loss_weights) - set(LEVELS)
        if unknown:
            raise ValueError(f"loss_weights has unknown level(s) {sorted(unknown)}; expected {list(LEVELS)}")
        if self.backbone == "small_cnn" and self.weights.strip().lower() == "imagenet":
            raise ValueError(
                "backbone small_cnn has no ImageNet weights (it is for training from scratch); "
                "set weights: none, or a weights file saved from small_cnn"
            )
        return self

    def weights_origin(self) -> str:
        """Where the backbone's starting weights come from, in words (the run's first line, run.json)."""
        spec = self.weights.strip()
        if spec.lower() == "imagenet":
            return f"ImageNet ({self.backbone}: Keras' download, or its copy in ~/.keras/models)"
        if spec.lower() == "none":
            return "random (training from scratch)"
        return f"file {Path(spec).expanduser().resolve()}"


class StageConfig(Section):
    epochs: int = Field(10, ge=0)
    learning_rate: float = Field(1e-3, gt=0)
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="cosine: decay from learning_rate to 5% of it over the stage's epochs "
        "(steadier final weights, fewer near-ties for int8 to flip)",
    )


class FineTuneConfig(StageConfig):
    learning_rate: float = Field(1e-5, gt=0)
    unfreeze: Literal["top", "all"] = "top"
    unfreeze_layers: int = Field(30, ge=1, description="with unfreeze: top, how many backbone layers")


class TrainingConfig(Section):
    stage1: StageConfig = StageConfig()
    stage2: FineTuneConfig = FineTuneConfig()
    early_stopping_patience: int = Field(5, ge=1)
    class_weighting: Literal["balanced", "none"] = "balanced"
    mixed_precision: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: on when a GPU is present"
    )
    distribute: Literal["auto", "off"] = Field("auto", description="auto: MirroredStrategy over several GPUs")
    progress: Literal["bar", "epoch", "off"] = Field(
        "bar", description="Keras progress output: a bar per epoch, one line per epoch, or nothing"
    )
    deterministic: bool = Field(
        False,
        description="pin the thread counts and enable op determinism (train/reproducible.py); with "
        "TF_ENABLE_ONEDNN_OPTS=0 the same seed gives the same model on every x86 CPU; 15-20% slower",
    )


class EvaluationConfig(Section):
    threshold_k: float = Field(
        1.0,
        ge=0,
        description="per-class abstention threshold = mean - k * std of the top score (Bjerge et al.)",
    )
    threshold_max: float = Field(
        0.9,
        ge=0,
        le=0.99,
        description="cap of every class's threshold: a class learnt by heart (training scores all ~1.0) "
        "would otherwise get one no new crop reaches",
    )
    threshold_min: float = Field(
        0.3,
        ge=0,
        le=0.99,
        description="floor of every class's threshold: no class is named at a lower score, however its "
        "training scores spread (a 12-species model named foreign insects at 0.18)",
    )
    gradcam_samples: int = Field(8, ge=0)
    gradcam_level: Literal["order", "family", "species"] | None = Field(
        None, description="output whose Grad-CAM maps are drawn; default: the finest level of the model"
    )
    top_k: int = Field(3, ge=1, description="also report top-k accuracy (levels with more than k classes)")

    @model_validator(mode="after")
    def _floor_below_cap(self) -> EvaluationConfig:
        if self.threshold_min > self.threshold_max:
            raise ValueError(
                f"threshold_min {self.threshold_min} is above threshold_max {self.threshold_max}"
            )
        return self


class TrainConfig(Section):
    """The whole training file."""

    run_dir: Path = Field(description="everything the run writes goes here; `convert` needs only this")
    seed: int = 0
    data: DataConfig
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()


def parse_train_config(text: str, filename: str = "<train config>") -> TrainConfig:
    """Validate YAML text into a TrainConfig; ConfigError names file, line, key and value."""
    return validate(TrainConfig, text, filename)


def load_train_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    return parse_train_config(read_config_text(path, "training config"), str(path))
