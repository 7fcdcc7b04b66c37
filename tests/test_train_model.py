"""train.model and train.fit with real Keras models, real training and a really killed process.

Tiny on purpose (MobileNetV2 alpha 0.35 at 64 px, random weights, a few dozen coloured images):
the point is the wiring (preprocessing inside, heads, freezing, consistency loss, resume after
a crash), not accuracy.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest
from pydantic import ValidationError

from edge.errors import TrapcamError
from train.config import AugmentConfig, ModelConfig, TrainConfig
from train.fit import (
    AlignedCSVLogger,
    FitError,
    ResumableEarlyStopping,
    configure_devices,
    fit_two_stage,
    read_history,
)
from train.model import (
    PREPROCESSING,
    SMALL_CNN_FILTERS,
    BackbonePreprocess,
    ModelBuildError,
    build_backbone,
    build_model,
    compile_for_stage,
    count_params,
    freeze_backbone,
    load_trained,
    unfreeze,
)

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
LEVELS = ("order", "family", "species")
NUM = {"order": 2, "family": 3, "species": 4}
FAMILY_OF_SPECIES = np.array([0, 1, 2, 2])
ORDER_OF_FAMILY = np.array([0, 0, 1])
HEAD_WEIGHTS = 4 * len(LEVELS)  # fc kernel+bias, output kernel+bias per level


def tiny_cfg(**over: object) -> ModelConfig:
    fields: dict[str, object] = {"weights": "none", "alpha": 0.35, "hidden_units": 16, "dropout": 0.2}
    return ModelConfig(**(fields | over))


def build(cfg: ModelConfig | None = None, augment: AugmentConfig | None = None, levels=LEVELS):
    return build_model(
        cfg or tiny_cfg(), augment or AugmentConfig(), SIZE, levels, NUM, FAMILY_OF_SPECIES, seed=1
    )


def coloured_images(n: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Crops whose colour depends on the species (learnable), raw 0-255 float32, with targets."""
    rng = np.random.default_rng(seed)
    species = np.arange(n) % NUM["species"]
    base = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 220], [200, 200, 40]], dtype="float32")
    images = base[species][:, None, None, :] + rng.normal(0, 20, (n, SIZE, SIZE, 3))
    family = FAMILY_OF_SPECIES[species]
    targets = {"species": species, "family": family, "order": ORDER_OF_FAMILY[family]}
    return np.clip(images, 0, 255).astype("float32"), targets


# ------------------------------------------------------------------ model


def test_outputs_are_named_per_level_softmax_probabilities():
    built = build(tiny_cfg(consistency_weight=0.5))
    x, _ = coloured_images(5)
    out = built.model.predict(x, verbose=0)
    assert set(out) == set(LEVELS)
    for level in LEVELS:
        assert out[level].shape == (5, NUM[level])
        assert out[level].dtype == np.float32
        np.testing.assert_allclose(out[level].sum(axis=1), 1.0, atol=1e-5)
    assert sorted(built.model.output_names) == sorted(LEVELS)
    assert built.consistency

    flat = build(tiny_cfg(heads="flat", flat_level="family"), levels=LEVELS)
    assert flat.levels == ("family",)
    assert set(flat.model.predict(x, verbose=0)) == {"family"}
    with pytest.raises(ModelBuildError, match="flat_level 'order'"):
        build(tiny_cfg(heads="flat", flat_level="order"), levels=("species",))


def test_preprocessing_is_inside_the_model_and_survives_save_and_load(tmp_path):
    built = build()
    x, _ = coloured_images(4, seed=3)
    # The backbone inside sees x / 127.5 - 1 (MobileNet scaling), given raw 0-255 at the input.
    inner = keras.Model(built.model.input, built.model.get_layer("preprocess").output)
    np.testing.assert_allclose(inner.predict(x, verbose=0), x / 127.5 - 1.0, rtol=1e-5, atol=1e-5)
    names = [layer.name for layer in built.model.layers]
    assert names.index("augment") < names.index("preprocess") < names.index(built.backbone.name)
    path = tmp_path / "m.keras"
    built.model.save(path)
    loaded = keras.saving.load_model(path, compile=False)  # no custom_objects: registration does it
    assert loaded.get_layer("preprocess").mode == "tf"
    before, after = built.model.predict(x, verbose=0), loaded.predict(x, verbose=0)
    for level in LEVELS:
        np.testing.assert_allclose(before[level], after[level], rtol=1e-5, atol=1e-6)


def test_preprocessing_modes_match_each_backbone():
    assert PREPROCESSING["mobilenet_v2"] == PREPROCESSING["mobilenet_v3_large_minimalistic"] == "tf"
    assert PREPROCESSING["small_cnn"] == "tf"
    assert PREPROCESSING["efficientnet_b0"] == PREPROCESSING["efficientnet_b3"] == "raw"
    assert PREPROCESSING["resnet50"] == "caffe"
    rgb = np.array([[[[255.0, 0.0, 128.0]]]], dtype="float32")
    tf_mode = keras.ops.convert_to_numpy(BackbonePreprocess("tf")(rgb))
    np.testing.assert_allclose(tf_mode.ravel(), [1.0, -1.0, 128 / 127.5 - 1], atol=1e-6)
    caffe = keras.ops.convert_to_numpy(BackbonePreprocess("caffe")(rgb))  # BGR minus ImageNet means
    np.testing.assert_allclose(caffe.ravel(), [128 - 103.939, 0 - 116.779, 255 - 123.68], atol=1e-4)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(BackbonePreprocess("raw")(rgb)), rgb)


def test_small_cnn_is_plain_convolutions_and_learns_from_scratch():
    """The demo's backbone: conv-BN-ReLU-pool stages only (int8- and Edge-TPU-friendly), and it
    separates colour-coded crops in a few epochs from random weights.

    Seeded, in float32: its starting weights must not depend on what the worker process ran before
    (under xdist one unseeded draw left a class unlearned, 0.75; seeds 0-29 all give 1.0 here).
    """
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(0)
    built = build(tiny_cfg(backbone="small_cnn"))
    kinds = Counter(type(layer).__name__ for layer in built.backbone.layers)
    stages = len(SMALL_CNN_FILTERS)
    assert kinds == Counter(
        InputLayer=1, Conv2D=stages + 1, BatchNormalization=stages + 1, ReLU=stages + 1,
        MaxPooling2D=stages, GlobalAveragePooling2D=1,
    )  # fmt: skip
    assert built.backbone.output_shape == (None, SMALL_CNN_FILTERS[-1])
    x, targets = coloured_images(96, seed=5)
    compile_for_stage(built, 3e-3, tiny_cfg(backbone="small_cnn"))
    built.model.fit(x, targets, epochs=12, batch_size=16, verbose=0)
    predicted = built.model.predict(x, verbose=0)["species"].argmax(axis=1)
    assert (predicted == targets["species"]).mean() >= 0.95


def test_small_cnn_has_no_imagenet_weights():
    with pytest.raises(ValidationError, match="small_cnn has no ImageNet weights"):
        ModelConfig(backbone="small_cnn")  # weights default to imagenet
    with pytest.raises(ModelBuildError, match=r"small_cnn.*no ImageNet weights") as err:
        build_backbone(ModelConfig.model_construct(backbone="small_cnn", weights="imagenet", alpha=1.0), SIZE)
    assert "\n" not in str(err.value)


def test_minimalistic_mobilenet_v3_has_no_hard_swish():
    built = build_model(
        tiny_cfg(backbone="mobilenet_v3_large_minimalistic", alpha=1.0),
        AugmentConfig(),
        SIZE,
        ("species",),
        NUM,
    )
    activations = {
        getattr(layer, "activation", None).__name__
        for layer in built.backbone.layers
        if getattr(layer, "activation", None) is not None
    }
    names = " ".join(layer.name for layer in built.backbone.layers)
    assert "hard_swish" not in activations and "hard_swish" not in names
    assert "squeeze_excite" not in names
    assert built.model.predict(np.zeros((1, SIZE, SIZE, 3), "float32"), verbose=0)["species"].shape == (1, 4)


def test_augmentation_only_in_training():
    built = build(tiny_cfg(dropout=0.0))
    x, _ = coloured_images(4, seed=5)
    first, second = built.model.predict(x, verbose=0), built.model.predict(x, verbose=0)
    for level in LEVELS:
        np.testing.assert_array_equal(first[level], second[level])
    aug = built.model.get_layer("augment")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(aug(x, training=False)), x)
    a = keras.ops.convert_to_numpy(aug(x, training=True))
    b = keras.ops.convert_to_numpy(aug(x, training=True))
    assert np.abs(a - x).mean() > 1.0 and np.abs(a - b).mean() > 1.0
    assert a.min() >= 0.0 and a.max() <= 255.0
    trained = built.model(x, training=True)["species"]  # dropout 0: only augmentation differs
    assert np.abs(keras.ops.convert_to_numpy(trained) - first["species"]).max() > 1e-6

    none = build(tiny_cfg(), AugmentConfig(flip=False, rotation=0, zoom=0, contrast=0, brightness=0))
    assert "augment" not in [layer.name for layer in none.model.layers]


def test_freeze_and_unfreeze_keep_batchnorm_frozen():
    built = build()
    bb = built.backbone
    bn = [layer for layer in bb.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bn
    assert freeze_backbone(built) == HEAD_WEIGHTS
    top = unfreeze(built, "top", 20)
    assert top > HEAD_WEIGHTS
    assert all(not layer.trainable for layer in bb.layers[:-20])
    every = unfreeze(built, "all", 1)  # after a partial unfreeze: every non-BN layer comes back
    non_bn = sum(len(layer.weights) for layer in bb.layers if layer not in bn)
    assert every == HEAD_WEIGHTS + non_bn > top
    assert all(not layer.trainable for layer in bn)
    assert freeze_backbone(built) == HEAD_WEIGHTS
    unfreeze(built, "all", 1)

    # A fine-tuning step changes conv kernels but not BatchNorm statistics (inference mode).
    compile_for_stage(built, 1e-2, tiny_cfg())
    x, y = coloured_images(8)
    conv = next(layer for layer in bb.layers if isinstance(layer, keras.layers.Conv2D))
    kernel = keras.ops.convert_to_numpy(conv.kernel).copy()
    moving = keras.ops.convert_to_numpy(bn[0].moving_mean).copy()
    built.model.train_on_batch(x, y)
    assert np.abs(keras.ops.convert_to_numpy(conv.kernel) - kernel).max() > 0
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(bn[0].moving_mean), moving)
    with pytest.raises(ModelBuildError, match="unknown mode 'some'"):
        unfreeze(built, "some", 3)
    counts = count_params(built.model)
    assert counts["total"] == counts["trainable"] + counts["non_trainable"] > 0
    assert counts["layers"] > counts["top_level_layers"]


def test_consistency_loss_only_when_weighted():
    x, _ = coloured_images(6)
    with_term = build(tiny_cfg(consistency_weight=2.0))
    out = with_term.model(x, training=False)
    assert len(with_term.model.losses) == 1
    # The same number from numpy: KL(species summed per family || family head) * weight.
    species = keras.ops.convert_to_numpy(out["species"])
    family = keras.ops.convert_to_numpy(out["family"])
    summed = np.zeros_like(family)
    for s, f in enumerate(FAMILY_OF_SPECIES):
        summed[:, f] += species[:, s]
    expected = 2.0 * np.mean(np.sum(summed * (np.log(summed) - np.log(family)), axis=1))
    got = float(keras.ops.convert_to_numpy(with_term.model.losses[0]))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-7)

    for cfg in (tiny_cfg(consistency_weight=0.0), tiny_cfg(heads="flat", consistency_weight=2.0)):
        plain = build(cfg)
        plain.model(x, training=False)
        assert plain.model.losses == []
    with pytest.raises(ModelBuildError, match="family_of_species"):
        build_model(tiny_cfg(consistency_weight=1.0), AugmentConfig(), SIZE, LEVELS, NUM, None)
    with pytest.raises(ModelBuildError, match="3 entries for 4 species"):
        build_model(tiny_cfg(consistency_weight=1.0), AugmentConfig(), SIZE, LEVELS, NUM, [0, 1, 2])


def test_weights_from_a_file_and_clear_errors(tmp_path):
    source = build()
    path = tmp_path / "backbone.weights.h5"
    source.backbone.save_weights(path)
    again = build(tiny_cfg(weights=str(path)))
    for a, b in zip(source.backbone.get_weights(), again.backbone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    with pytest.raises(ModelBuildError, match=r"missing\.weights\.h5 not found"):
        build(tiny_cfg(weights=str(tmp_path / "missing.weights.h5")))
    other = build_model(tiny_cfg(alpha=0.5), AugmentConfig(), SIZE, ("species",), NUM)
    wrong = tmp_path / "alpha05.weights.h5"
    other.backbone.save_weights(wrong)
    with pytest.raises(
        ModelBuildError, match=r"alpha05\.weights\.h5 does not fit backbone mobilenet_v2"
    ) as err:
        build(tiny_cfg(weights=str(wrong)))
    assert "\n" not in str(err.value) and isinstance(err.value, TrapcamError)
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not an hdf5 file")
    with pytest.raises(ModelBuildError, match=r"junk\.weights\.h5 does not fit"):
        build(tiny_cfg(weights=str(junk)))
    with pytest.raises(ModelBuildError, match=r"nothing\.keras: model file not found"):
        load_trained(tmp_path / "nothing.keras")


def test_device_plan_on_cpu():
    from train.config import TrainingConfig

    try:
        plan = configure_devices(TrainingConfig())
        assert plan.gpus == 0 and not plan.mixed_precision and plan.strategy is None
        assert keras.mixed_precision.global_policy().name == "float32"
        forced = configure_devices(TrainingConfig(mixed_precision="on"))
        assert forced.mixed_precision and forced.notes
        built = build()  # built under mixed_float16: outputs stay float32
        assert built.model.get_layer("species").dtype_policy.name == "float32"
        assert built.model.get_layer("species_fc").dtype_policy.name == "mixed_float16"
        out = built.model.predict(np.zeros((2, SIZE, SIZE, 3), "float32"), verbose=0)
        assert out["species"].dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


# ------------------------------------------------------------------ fit helpers


def test_resumed_early_stopping_keeps_best_and_patience():
    cb = ResumableEarlyStopping([1.0, 0.5, 0.7, 0.8], monitor="val_loss", patience=3)
    cb.on_train_begin()
    assert cb.best == 0.5 and cb.wait == 2
    fresh = ResumableEarlyStopping([], monitor="val_loss", patience=3)
    fresh.on_train_begin()
    assert fresh.best is None and fresh.wait == 0


def test_csv_logger_appends_under_the_existing_columns(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,stage,val_loss\n0,1.5,1,1.6\n", encoding="utf-8")
    logger = AlignedCSVLogger(str(path), append=True)
    logger.on_train_begin()
    logger.on_epoch_end(1, {"val_loss": 0.9, "loss": 1.0, "stage": 2, "learning_rate": 1e-5})
    logger.on_train_end()
    rows = read_history(path)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[1]["loss"] == 1.0 and rows[1]["val_loss"] == 0.9 and rows[1]["stage"] == 2


# ------------------------------------------------------------------ a killed run resumes

RUN_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    import keras
    from test_train_model import run_training

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                os._exit(1)  # like SIGKILL after the first epoch's files are written

    run_training(Path(sys.argv[1]), [Kill()])
    """
)


def train_config(run_dir: Path, epochs: tuple[int, int] = (3, 2), backbone: str = "small_cnn") -> TrainConfig:
    return TrainConfig(
        run_dir=run_dir,
        seed=3,
        data={"kind": "synthetic", "image_size": SIZE, "batch_size": 8},
        model=tiny_cfg(consistency_weight=0.5, backbone=backbone).model_dump(),
        training={
            "stage1": {"epochs": epochs[0], "learning_rate": 1e-3},
            "stage2": {"epochs": epochs[1], "learning_rate": 1e-4, "unfreeze": "top", "unfreeze_layers": 12},
            "early_stopping_patience": 5,
            "progress": "off",
            "mixed_precision": "off",
        },
    )


def run_training(
    run_dir: Path, callbacks: list, epochs: tuple[int, int] = (3, 2), backbone: str = "small_cnn"
) -> object:
    """The training the subprocess runs (and the test reruns): real batches from train.inputs.

    The small CNN: what these tests are about is resuming and the stages, not MobileNetV2's build
    (43 s with it, 14 s without)."""
    from train.inputs import make_batches

    cfg = train_config(run_dir, epochs, backbone)
    keras.utils.set_random_seed(0)
    x, y = coloured_images(24)
    vx, vy = coloured_images(8, seed=1)
    weights = {k: np.ones(len(x), "float32") for k in y}
    train = make_batches(x.astype("uint8"), y, weights, 8, shuffle=True, seed=0)
    val = make_batches(vx.astype("uint8"), vy, None, 8, shuffle=False, seed=0)
    built = build_model(cfg.model, cfg.augment, SIZE, LEVELS, NUM, FAMILY_OF_SPECIES, seed=1)
    return fit_two_stage(
        built, train, val, cfg, run_dir, LEVELS, train_images=len(x), extra_callbacks=callbacks
    )


@pytest.mark.slow
def test_killed_run_resumes_and_finishes(tmp_path):
    run_dir = tmp_path / "run"
    script = tmp_path / "killed.py"
    script.write_text(RUN_SCRIPT.format(tests=str(ROOT / "tests")), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, str(script), str(run_dir)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    first = read_history(run_dir / "history.csv")
    assert [r["epoch"] for r in first] == [0]
    assert not (run_dir / "stages.json").exists()
    assert (run_dir / "backup" / "stage1" / "latest.weights.h5").is_file()
    assert (run_dir / "checkpoints" / "best.keras").is_file()

    result = run_training(run_dir, [])
    history = read_history(run_dir / "history.csv")
    assert [r["epoch"] for r in history] == [0, 1, 2, 3, 4]  # continued, not restarted
    assert [r["stage"] for r in history] == [1, 1, 1, 2, 2]
    assert history[0] == first[0]
    with (run_dir / "history.csv").open(newline="") as f:
        assert sum(1 for row in csv.reader(f)) == 1 + 5  # header once, no duplicate rows
    stages = json.loads((run_dir / "stages.json").read_text())
    assert [s["stage"] for s in stages["completed"]] == [1, 2]
    assert stages["completed"][0]["epochs_run"] == 3 and stages["completed"][1]["first_epoch"] == 3
    assert (
        stages["completed"][1]["trainable_weight_tensors"]
        > stages["completed"][0]["trainable_weight_tensors"]
    )
    assert result.resumed and result.best_val_loss == min(r["val_loss"] for r in history)
    assert all(r["images_per_s"] > 0 and r["images"] == 24 for r in history)
    assert not (run_dir / "backup" / "stage1").exists()  # deleted once each stage finished

    best = load_trained(result.best_checkpoint)
    x, _ = coloured_images(4, seed=9)
    ours, theirs = best.predict(x, verbose=0), result_model_predict(result, run_dir, x)
    np.testing.assert_allclose(ours["species"], theirs["species"], rtol=1e-5, atol=1e-6)

    again = run_training(run_dir, [])  # everything finished: nothing is trained again
    assert [r["epoch"] for r in again.history] == [0, 1, 2, 3, 4]

    # A crash between the stages: stage 2 starts again from stage 1's final weights.
    stages["completed"] = stages["completed"][:1]
    (run_dir / "stages.json").write_text(json.dumps(stages))
    with (run_dir / "history.csv").open(newline="") as f:
        lines = list(csv.reader(f))
    with (run_dir / "history.csv").open("w", newline="") as f:
        csv.writer(f).writerows(lines[:4])
    rerun = run_training(run_dir, [])
    assert [r["stage"] for r in rerun.history] == [1, 1, 1, 2, 2]
    assert [s["stage"] for s in rerun.stages] == [1, 2]
    (run_dir / "checkpoints" / "stage1_final.weights.h5").unlink()
    stages["completed"] = stages["completed"][:1]
    (run_dir / "stages.json").write_text(json.dumps(stages))
    with pytest.raises(FitError, match=r"stage1_final\.weights\.h5: missing"):
        run_training(run_dir, [])


def result_model_predict(result, run_dir: Path, x: np.ndarray) -> dict:
    """best.keras loaded a second time, the way convert and the evaluation load it."""
    return keras.saving.load_model(run_dir / "checkpoints" / "best.keras", compile=False).predict(
        x, verbose=0
    )
