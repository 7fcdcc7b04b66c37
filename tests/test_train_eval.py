"""train.evaluate / train.report / train.gradcam: metrics against hand-computed cases, real files,
and Grad-CAM on a small Keras model trained here so that a bright square decides its class."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.classify.taxonomy import Taxonomy
from edge.errors import TrapcamError
from train.evaluate import (
    EvaluationError,
    abstention_thresholds,
    hierarchical_consistency,
    level_metrics,
    plot_history,
    predict,
    threshold_details,
    threshold_summary,
    write_confusion,
    write_thresholds,
)
from train.report import write_report


def one_hot_probs(pred: list[int], classes: int, top: float = 0.8) -> np.ndarray:
    """Probabilities whose argmax is `pred` (rest shared evenly)."""
    p = np.full((len(pred), classes), (1.0 - top) / (classes - 1), np.float32)
    p[np.arange(len(pred)), pred] = top
    return p


# ---------------------------------------------------------------- metrics


def test_three_class_metrics_match_hand_computation() -> None:
    y_true = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 1, 0, 2, 2, 1]
    m = level_metrics(np.array(y_true), one_hot_probs(y_pred, 3), ["a", "b", "c"])
    # confusion by hand: rows true, columns predicted
    assert m["confusion"] == [[3, 1, 0], [1, 2, 0], [0, 1, 2]]
    assert m["accuracy"] == pytest.approx(0.7)
    p = [3 / 4, 2 / 4, 2 / 2]
    r = [3 / 4, 2 / 3, 2 / 3]
    f1 = [0.75, 4 / 7, 0.8]
    for i, c in enumerate(m["per_class"]):
        assert c["precision"] == pytest.approx(p[i])
        assert c["recall"] == pytest.approx(r[i])
        assert c["f1"] == pytest.approx(f1[i])
    assert [c["support"] for c in m["per_class"]] == [4, 3, 3]
    assert m["macro_precision"] == pytest.approx(0.75)
    assert m["macro_recall"] == pytest.approx((0.75 + 2 / 3 + 2 / 3) / 3)
    assert m["macro_f1"] == pytest.approx((0.75 + 4 / 7 + 0.8) / 3)
    assert m["weighted_f1"] == pytest.approx((4 * 0.75 + 3 * 4 / 7 + 3 * 0.8) / 10)
    assert "top_k_accuracy" not in m  # 3 classes, k=3: top-3 is always right, not reported
    json.dumps(m)  # plain Python types only


def test_class_never_predicted_counts_zero_and_absent_class_is_left_out_of_macro() -> None:
    # class c has samples but is never predicted: P = 0 (0/0 -> 0), R = 0, F1 = 0 - and it counts.
    # class d has no samples and no predictions: reported, but not part of the macro average.
    m = level_metrics(np.array([0, 1, 2, 2]), one_hot_probs([0, 1, 1, 1], 4), ["a", "b", "c", "d"])
    by = {c["label"]: c for c in m["per_class"]}
    assert (by["c"]["precision"], by["c"]["recall"], by["c"]["f1"]) == (0.0, 0.0, 0.0)
    assert by["b"]["precision"] == pytest.approx(1 / 3) and by["b"]["f1"] == pytest.approx(0.5)
    assert by["c"]["in_macro"] and not by["d"]["in_macro"] and by["d"]["support"] == 0
    assert m["macro_f1"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert m["macro_precision"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert m["accuracy"] == pytest.approx(0.5)


def test_top_k_accuracy() -> None:
    probs = np.array(
        [[0.5, 0.3, 0.1, 0.05, 0.05], [0.1, 0.2, 0.3, 0.4, 0.0], [0.4, 0.3, 0.2, 0.1, 0.0]], np.float32
    )
    m = level_metrics(np.array([1, 0, 4]), probs, list("abcde"), top_k=2)
    # sample 0: true b is 2nd -> hit; sample 1: true a is 4th -> miss; sample 2: true e is last -> miss
    assert m["top_k"] == 2 and m["top_k_accuracy"] == pytest.approx(1 / 3)
    assert m["accuracy"] == 0.0


@pytest.mark.parametrize(
    ("y_true", "probs", "labels", "needle"),
    [
        ([0, 1], np.ones((3, 2)) / 2, ["a", "b"], "y_true"),
        ([0, 1], np.ones((2, 3)) / 3, ["a", "b"], "3 classes but 2 labels"),
        ([0, 5], np.ones((2, 2)) / 2, ["a", "b"], "class index 5"),
    ],
)
def test_metrics_reject_mismatched_inputs(y_true: list, probs: np.ndarray, labels: list, needle: str) -> None:
    with pytest.raises(EvaluationError, match=needle):
        level_metrics(np.array(y_true), probs, labels)


# ---------------------------------------------------------------- consistency


def small_taxonomy() -> tuple[Taxonomy, dict[str, list[str]]]:
    tax = Taxonomy(
        levels=("order", "family", "species"),
        parents={
            "family": {"F1": "O1", "F2": "O1", "F3": "O2"},
            "species": {"s1": "F1", "s2": "F2", "s3": "F3"},
        },
    )
    return tax, {"order": ["O1", "O2"], "family": ["F1", "F2", "F3"], "species": ["s1", "s2", "s3"]}


def test_hierarchical_consistency_on_hand_made_taxonomy() -> None:
    tax, labels = small_taxonomy()
    pred = {
        "order": np.array([0, 0, 0, 1, 1]),  # O1 O1 O1 O2 O2
        "family": np.array([0, 1, 2, 2, 2]),  # F1 F2 F3 F3 F3
        "species": np.array([0, 0, 2, 2, 0]),  # s1 s1 s3 s3 s1
    }
    # 0: s1<F1<O1 ok; 1: s1 but F2 -> no; 2: F3 but O1 -> no; 3: s3<F3<O2 ok; 4: s1 but F3 -> no
    assert hierarchical_consistency(pred, labels, tax) == pytest.approx(2 / 5)
    # order and species only: the species' order is looked up through its family
    two = {"order": pred["order"], "species": pred["species"]}
    # 0 ok (s1->O1), 1 ok, 2: s3->O2 vs O1 no, 3 ok, 4: s1->O1 vs O2 no
    assert hierarchical_consistency(two, labels, tax) == pytest.approx(3 / 5)
    assert hierarchical_consistency({"species": pred["species"]}, labels, tax) == 1.0


def test_consistency_names_a_taxon_missing_from_the_taxonomy() -> None:
    tax, labels = small_taxonomy()
    labels = dict(labels, species=["s1", "s2", "s3", "s9"])
    with pytest.raises(EvaluationError, match="species 's9' has no family"):
        hierarchical_consistency({"family": np.array([0]), "species": np.array([3])}, labels, tax)


# ---------------------------------------------------------------- thresholds


def threshold_case() -> tuple[np.ndarray, np.ndarray]:
    rows = [
        ([0.9, 0.05, 0.05], 0),  # correct, top 0.9
        ([0.8, 0.1, 0.1], 0),  # correct, top 0.8
        ([0.7, 0.2, 0.1], 0),  # correct, top 0.7
        ([0.02, 0.95, 0.03], 0),  # wrong (predicted b): excluded however confident
        ([0.3, 0.6, 0.1], 1),  # the only correct b, top 0.6
        ([0.5, 0.3, 0.2], 2),  # c: never right
    ]
    return np.array([r[0] for r in rows], np.float32), np.array([r[1] for r in rows])


def test_thresholds_from_hand_made_scores() -> None:
    probs, y = threshold_case()
    # class a: mean 0.8, sample std 0.1 -> k=1: 0.7, k=2: 0.6
    t1 = abstention_thresholds(probs, y, 1.0)
    assert t1[0] == pytest.approx(0.7, abs=1e-6)
    assert abstention_thresholds(probs, y, 2.0)[0] == pytest.approx(0.6, abs=1e-6)
    # b (one correct) and c (none) fall back to the pooled correct scores 0.9 0.8 0.7 0.6
    pooled = 0.75 - np.sqrt(0.05 / 3)
    assert t1[1] == pytest.approx(pooled, abs=1e-6) and t1[2] == pytest.approx(pooled, abs=1e-6)
    d = threshold_details(probs, y, 1.0)
    assert [x["fallback"] for x in d] == [False, True, True]
    assert [x["n_correct"] for x in d] == [3, 1, 0]
    # clamped to 0..1
    assert abstention_thresholds(probs, y, 50.0) == [0.0, 0.0, 0.0]
    assert abstention_thresholds(probs, y, 0.0)[0] == pytest.approx(0.8, abs=1e-6)
    s = threshold_summary(d, ["a", "b", "c"])
    assert s["fallback"] == ["b", "c"] and s["min"] == pytest.approx(pooled, abs=1e-6)
    # the floor (evaluation.threshold_min): no class named below it, the fallback included
    floored = [x["threshold"] for x in threshold_details(probs, y, 50.0, 0.9, 0.3)]
    assert floored == [0.3, 0.3, 0.3]
    assert threshold_details(probs, y, 1.0, 0.9, 0.72)[0]["threshold"] == pytest.approx(0.72)
    with pytest.raises(EvaluationError, match=r"min_threshold must be in 0\.\.0\.9"):
        threshold_details(probs, y, 1.0, 0.9, 0.95)


def test_a_class_learnt_by_heart_still_gets_a_threshold_a_crop_can_reach() -> None:
    # Every training crop of class 0 scores 1.0: mean 1, std 0 -> mean - k*std = 1.0, which an int8
    # model (largest probability 255/256) never reaches. The cap keeps the class nameable.
    probs = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.2, 0.8], [0.4, 0.6]], np.float32)
    y = np.array([0, 0, 0, 1, 1])
    assert abstention_thresholds(probs, y, 1.0) == pytest.approx([0.9, 0.7 - np.sqrt(0.02)], abs=1e-6)
    assert abstention_thresholds(probs, y, 1.0, max_threshold=0.95)[0] == pytest.approx(0.95)
    assert abstention_thresholds(probs, y, 1.0, max_threshold=1.0)[0] == pytest.approx(1.0)
    with pytest.raises(EvaluationError, match="max_threshold"):
        abstention_thresholds(probs, y, 1.0, max_threshold=1.5)


def test_thresholds_with_no_correct_samples_never_abstain(tmp_path: Path) -> None:
    probs = one_hot_probs([1, 0], 2)
    assert abstention_thresholds(probs, np.array([0, 1]), 1.0) == [0.0, 0.0]
    path = write_thresholds(
        tmp_path / "thresholds.json", {"species": [0.5, 0.25]}, {"species": ["x", "y"]}, 1.0
    )
    saved = json.loads(path.read_text())
    assert saved == {"k": 1.0, "levels": {"species": {"labels": ["x", "y"], "thresholds": [0.5, 0.25]}}}
    with pytest.raises(EvaluationError, match="1 thresholds for 2 labels"):
        write_thresholds(tmp_path / "t.json", {"species": [0.5]}, {"species": ["x", "y"]}, 1.0)
    with pytest.raises(EvaluationError, match=r"outside 0\.\.1"):
        write_thresholds(tmp_path / "t.json", {"species": [0.5, 1.5]}, {"species": ["x", "y"]}, 1.0)


# ---------------------------------------------------------------- files


def test_confusion_csv_and_png(tmp_path: Path) -> None:
    cm = np.array([[3, 1, 0], [1, 2, 0], [0, 1, 2]])
    labels = ["Noctua pronuba", "Bombus terrestris", "Cabera pusaria"]
    write_confusion(cm, labels, tmp_path / "cm.csv", tmp_path / "cm.png")
    with open(tmp_path / "cm.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == labels
    assert [r[0] for r in rows[1:]] == labels
    assert np.array([[int(v) for v in r[1:]] for r in rows[1:]]).tolist() == cm.tolist()
    img = cv2.imread(str(tmp_path / "cm.png"))
    assert img is not None and img.shape[0] > 200 and img.std() > 10
    with pytest.raises(EvaluationError, match="3 labels"):
        write_confusion(np.zeros((2, 2)), labels, tmp_path / "x.csv", None)


def write_history(path: Path) -> None:
    cols = [
        "epoch",
        "stage",
        "loss",
        "val_loss",
        "species_accuracy",
        "val_species_accuracy",
        "family_accuracy",
    ]
    rows = [
        [0, 1, 2.0, 2.1, 0.3, 0.28, 0.4],
        [1, 1, 1.5, 1.7, 0.5, 0.45, 0.6],
        [2, 1, 1.2, 1.4, 0.6, 0.55, 0.7],
        [0, 2, 1.0, 1.2, 0.7, 0.62, 0.8],
        [1, 2, 0.8, 1.1, 0.8, 0.66, 0.85],
    ]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        w.writerows(rows)


def test_history_plot(tmp_path: Path) -> None:
    write_history(tmp_path / "history.csv")
    out = plot_history(tmp_path / "history.csv", tmp_path / "curves.png")
    img = cv2.imread(str(out))
    assert img is not None and img.shape[1] > img.shape[0] and img.std() > 10
    (tmp_path / "empty.csv").write_text("epoch,loss\n")
    with pytest.raises(EvaluationError, match="no epochs"):
        plot_history(tmp_path / "empty.csv", tmp_path / "x.png")
    (tmp_path / "noloss.csv").write_text("epoch,acc\n0,0.5\n")
    with pytest.raises(EvaluationError, match="no 'loss' column"):
        plot_history(tmp_path / "noloss.csv", tmp_path / "x.png")
    with pytest.raises(EvaluationError, match="not found"):
        plot_history(tmp_path / "missing.csv", tmp_path / "x.png")


def test_report_numbers_equal_the_inputs(tmp_path: Path) -> None:
    _, labels = small_taxonomy()
    species = level_metrics(np.array([0, 1, 2, 2]), one_hot_probs([0, 1, 1, 2], 3), labels["species"])
    family = level_metrics(np.array([0, 1, 2, 2]), one_hot_probs([0, 1, 2, 2], 3), labels["family"])
    probs, y = threshold_case()
    thr = threshold_summary(threshold_details(probs, y, 1.0), labels["species"]) | {"k": 1.0}
    (tmp_path / "plots").mkdir()
    report = {
        "title": "test run",
        "levels": {"family": family, "species": species},
        "consistency": np.float64(0.75),
        "thresholds": {"species": thr},
        "model": {
            "backbone": "mobilenet_v2",
            "params": {"total": np.int64(123456), "trainable": 789, "layers": 42},
        },
        "training": {"seconds": 12.5, "images_per_s": 345.25, "epochs": 7, "best_val_loss": float("nan")},
        "dataset": {"splits": {"train": 70, "validation": 15, "test": 15}},
        "figures": {
            "history": tmp_path / "plots" / "curves.png",
            "confusion": {"species": tmp_path / "plots" / "cm_species.png"},
            "gradcam": [tmp_path / "gradcam" / "g0.png"],
        },
        "notes": ["a note"],
        "config": {"seed": 0, "data": {"image_size": 96}},
    }
    md_path, json_path = write_report(tmp_path, report)
    data = json.loads(json_path.read_text())
    assert data["levels"]["species"] == species and data["levels"]["family"] == family
    assert data["consistency"] == 0.75
    assert data["thresholds"]["species"]["per_class"] == thr["per_class"]
    assert data["model"]["params"] == {"total": 123456, "trainable": 789, "layers": 42}
    assert data["training"]["images_per_s"] == 345.25 and data["training"]["best_val_loss"] is None
    assert data["dataset"]["splits"] == {"train": 70, "validation": 15, "test": 15}
    assert data["figures"]["history"] == "plots/curves.png"
    assert data["figures"]["gradcam"] == ["gradcam/g0.png"]
    assert data["config"] == {"seed": 0, "data": {"image_size": 96}}

    md = md_path.read_text()
    acc_row = next(line for line in md.splitlines() if line.startswith("| species |"))
    assert f"{species['accuracy']:.3f}" in acc_row and f"{species['macro_f1']:.3f}" in acc_row
    s3 = next(line for line in md.splitlines() if line.startswith("| s3 |"))
    per = {c["label"]: c for c in species["per_class"]}["s3"]
    assert f"{per['f1']:.3f}" in s3 and f"{thr['per_class']['s3']:.3f}" in s3
    assert "](plots/curves.png)" in md and "](plots/cm_species.png)" in md
    assert "123,456" in md and "0.750" in md and "a note" in md


def test_report_from_run_shaped_dict_finds_figures(tmp_path: Path) -> None:
    """The shape train.run assembles: levels as a list, metrics apart, figures under usual names."""
    from train.report import plot_history as report_plot_history

    _, labels = small_taxonomy()
    family = level_metrics(np.array([0, 1, 2]), one_hot_probs([0, 1, 1], 3), labels["family"])
    species = level_metrics(np.array([0, 1, 2]), one_hot_probs([0, 2, 2], 3), labels["species"])
    write_confusion(np.array(species["confusion"]), labels["species"], tmp_path / "c.csv", None)
    (tmp_path / "confusion_species.png").write_bytes(b"png")
    (tmp_path / "gradcam").mkdir()
    (tmp_path / "gradcam" / "gradcam_species_0000_s1.png").write_bytes(b"png")
    write_history(tmp_path / "history.csv")
    report_plot_history(tmp_path / "history.csv", tmp_path / "training_curves.png")
    report = {
        "levels": ["family", "species"],
        "metrics": {"species": species, "family": family},
        "hierarchical_consistency": 2 / 3,
        "parameters": {"total": 1000, "trainable": 10},
        "training": {"seconds": 3.0, "images_per_s": 50.0, "epochs": [{"stage": 1, "loss": 1.0}]},
        "dataset": {"train": 7, "validation": 2, "test": 3},
    }
    md_path, json_path = write_report(tmp_path, report)
    data = json.loads(json_path.read_text())
    assert data["metrics"]["species"] == species and data["hierarchical_consistency"] == pytest.approx(2 / 3)
    assert data["training"]["epochs"] == [{"stage": 1, "loss": 1.0}]
    assert data["figures"] == {
        "history": "training_curves.png",
        "confusion": {"species": "confusion_species.png"},
        "gradcam": ["gradcam/gradcam_species_0000_s1.png"],
    }
    md = md_path.read_text()
    lines = md.splitlines()
    # levels keep the given coarse-to-fine order; the per-class table is for the finest level
    assert lines.index(next(x for x in lines if x.startswith("| family |"))) < lines.index(
        next(x for x in lines if x.startswith("| species |"))
    )
    assert "## Per class, species" in md and "0.667" in md and "1,000" in md
    assert "| test | 3 |" in md and "](gradcam/gradcam_species_0000_s1.png)" in md


def test_report_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="levels"):
        write_report(tmp_path, {"title": "x"})
    with pytest.raises(EvaluationError, match=r"report key 'report.model.obj'"):
        write_report(tmp_path, {"levels": {}, "model": {"obj": object()}})
    assert not (tmp_path / "report.json").exists()


# ---------------------------------------------------------------- Keras: predict and Grad-CAM

import keras  # noqa: E402


def square_images(n: int, rng: np.random.Generator, size: int = 32) -> tuple[np.ndarray, np.ndarray, list]:
    """Dim noise; class 1 has a bright 8x8 square somewhere, class 0 does not."""
    images = rng.uniform(0, 70, size=(n, size, size, 3)).astype(np.float32)
    y = np.arange(n) % 2
    boxes: list = []
    for i in range(n):
        if y[i]:
            r, c = rng.integers(0, size - 8, size=2)
            images[i, r : r + 8, c : c + 8] = 255.0
            boxes.append((int(r), int(c)))
        else:
            boxes.append(None)
    return images, y, boxes


def square_model(pool_inside: bool) -> keras.Model:
    """Conv backbone nested as a sub-model, dense head with a softmax output named 'species'."""
    from keras import layers

    b_in = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(b_in)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv")(x)
    if pool_inside:
        x = layers.GlobalAveragePooling2D()(x)
    backbone = keras.Model(b_in, x, name="backbone")
    inp = keras.Input((32, 32, 3))
    h = backbone(layers.Rescaling(1 / 255.0)(inp))
    if not pool_inside:
        h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dense(16, activation="relu")(h)
    h = layers.Dropout(0.1)(h)
    out = layers.Dense(2, activation="softmax", name="species")(h)
    return keras.Model(inp, {"species": out})


@pytest.fixture(scope="module", params=[True, False], ids=["pooled-in-backbone", "pooled-in-head"])
def trained_square_model(request: pytest.FixtureRequest) -> keras.Model:
    keras.utils.set_random_seed(1)
    images, y, _ = square_images(256, np.random.default_rng(0))
    model = square_model(request.param)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss={"species": "sparse_categorical_crossentropy"})
    model.fit(images, {"species": y}, epochs=12, batch_size=32, verbose=0)
    return model


def test_predict_returns_probabilities_per_level(trained_square_model: keras.Model) -> None:
    images, y, _ = square_images(40, np.random.default_rng(5))
    probs = predict(trained_square_model, images, batch_size=16)
    assert set(probs) == {"species"} and probs["species"].shape == (40, 2)
    np.testing.assert_allclose(probs["species"].sum(axis=1), 1.0, atol=1e-5)
    m = level_metrics(y, probs["species"], ["plain", "square"])
    assert m["accuracy"] >= 0.95  # the model really learned the square
    with pytest.raises(EvaluationError, match=r"\(N, H, W, 3\)"):
        predict(trained_square_model, images[0], 4)


def test_gradcam_peaks_on_the_square(trained_square_model: keras.Model, tmp_path: Path) -> None:
    from train.gradcam import feature_layer, gradcam, gradcam_heatmaps

    name = feature_layer(trained_square_model, "species")
    pooled_inside = len(trained_square_model.get_layer("backbone").output.shape) == 2
    assert name == ("backbone/last_conv" if pooled_inside else "backbone")
    images, y, boxes = square_images(12, np.random.default_rng(7))
    idx = np.flatnonzero(y == 1)
    maps, chosen = gradcam_heatmaps(trained_square_model, images[idx], "species", class_index=[1] * len(idx))
    assert maps.shape == (len(idx), 32, 32) and maps.min() >= 0 and maps.max() <= 1
    assert chosen.tolist() == [1] * len(idx)
    hits = 0
    for heat, i in zip(maps, idx, strict=True):
        r, c = np.unravel_index(np.argmax(heat), heat.shape)
        r0, c0 = boxes[i]
        # inside the 8x8 square, allowing one pixel for the 2x pooled feature map
        hits += int(r0 - 1 <= r <= r0 + 8 and c0 - 1 <= c <= c0 + 8)
        # and the square is hotter than the rest of the crop on average
        inside = np.zeros_like(heat, bool)
        inside[r0 : r0 + 8, c0 : c0 + 8] = True
        assert heat[inside].mean() > heat[~inside].mean()
    assert hits == len(idx)

    paths = gradcam(trained_square_model, images, "species", tmp_path / "gc", 4, labels=["plain", "square"])
    assert len(paths) == 4 and all(p.exists() for p in paths)
    img = cv2.imread(str(paths[0]))
    assert img.shape == (256 + 52, 256 + 4 + 256, 3)  # each half scaled to 256 px, a caption below
    # told the truth and the scores, the caption and the name say right or wrong
    probs = predict(trained_square_model, images, batch_size=16)["species"]
    truth = y.copy()
    truth[0] = 1 - np.argmax(probs[0])  # the first picked crop: a wrong answer
    paths = gradcam(
        trained_square_model, images, "species", tmp_path / "told", 4, ["plain", "square"], truth, probs
    )
    answer = ["plain", "square"][int(np.argmax(probs[0]))]
    assert paths[0].name == f"gradcam_species_0000_{['plain', 'square'][truth[0]]}_as_{answer}.png"
    assert all(p.name.endswith("_ok.png") for p in paths[1:])  # the model learnt the square
    caption = cv2.imread(str(paths[0]))[256:]
    red = (caption[:, :, 2] > 150) & (caption[:, :, 1] < 80) & (caption[:, :, 0] < 80)
    assert red.sum() > 50  # the "model: ... (wrong)" line is red
    right = cv2.imread(str(paths[1]))[256:]
    assert not ((right[:, :, 2] > 150) & (right[:, :, 1] < 80)).any()  # a right answer: no red
    assert gradcam(trained_square_model, images, "species", tmp_path / "none", 0) == []


def test_gradcam_errors_name_the_problem(trained_square_model: keras.Model) -> None:
    from train.gradcam import GradCamError, gradcam_heatmaps

    images, _, _ = square_images(2, np.random.default_rng(1))
    with pytest.raises(GradCamError, match="no output 'family'"):
        gradcam_heatmaps(trained_square_model, images, "family")
    assert issubclass(GradCamError, TrapcamError)
    dense_only = keras.Sequential(
        [
            keras.Input((2, 2, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax", name="out"),
        ]
    )
    with pytest.raises(GradCamError, match="no 4-D convolutional feature map"):
        gradcam_heatmaps(dense_only, np.zeros((1, 2, 2, 3)), "out")


def test_gradcam_on_another_backend_says_why_instead_of_crashing(tmp_path: Path) -> None:
    code = (
        "import logging, sys, numpy as np, keras\n"
        "logging.basicConfig(level=logging.WARNING, stream=sys.stdout)\n"
        "from train.gradcam import gradcam\n"
        "m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3),"
        " keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation='softmax')])\n"
        f"print('RESULT', gradcam(m, np.zeros((2, 8, 8, 3)), 'x', r'{tmp_path}', 2))\n"
    )
    env = dict(os.environ, KERAS_BACKEND="numpy", TF_CPP_MIN_LOG_LEVEL="3")
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=root, timeout=60
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "RESULT []" in run.stdout
    assert "needs the TensorFlow backend" in run.stdout and "'numpy'" in run.stdout


def test_images_per_second_is_all_images_over_all_training_seconds() -> None:
    """Issue 25: the mean of per-epoch rates said 99 images/s where 56 were measured."""
    from train.fit import throughput

    rows = [
        {"seconds": 10.5, "train_seconds": 10.0, "images": 100},  # the first epoch: tracing, caches
        {"seconds": 1.2, "train_seconds": 1.0, "images": 100},
        {"seconds": 1.2, "train_seconds": 1.0, "images": 100},
    ]
    seconds, rate = throughput(rows)
    assert seconds == pytest.approx(12.9)
    assert rate == pytest.approx(300 / 12.0)  # 25 images/s; the mean of the rates would say 70
    assert throughput([]) == (0, None)
