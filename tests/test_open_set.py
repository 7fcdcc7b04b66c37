"""The open-set rule on known numbers (edge/classify/open_set.py) and its place in model.json."""

from __future__ import annotations

import modelkit as mk
import numpy as np
import pytest
from pydantic import ValidationError

from edge.classify.bundle import BundleManifest, OpenSetSpec
from edge.classify.open_set import OpenSetRule, fit_open_set, unknown_share


def _clusters(rng: np.random.Generator, centres: np.ndarray, per_class: int, spread: float):
    classes = np.repeat(np.arange(len(centres)), per_class)
    points = centres[classes] + rng.normal(0, spread, (len(classes), centres.shape[1]))
    return points / np.linalg.norm(points, axis=1, keepdims=True), classes


def test_known_crops_stay_known_and_crops_far_from_every_class_are_unknown() -> None:
    rng = np.random.default_rng(3)
    centres = np.eye(4, 16)  # four classes on orthogonal axes
    ref, ref_classes = _clusters(rng, centres, 60, 0.05)
    val, val_classes = _clusters(rng, centres, 50, 0.05)
    rule, calibration = fit_open_set(ref, ref_classes, 4, val, val_classes, target=0.01)
    assert calibration["validation_unknown"] <= 0.01 and calibration["validation_crops"] == 200
    test, test_classes = _clusters(rng, centres, 100, 0.05)
    assert unknown_share(rule, test, test_classes) <= 0.02
    foreign, _ = _clusters(rng, np.eye(16)[8:12], 50, 0.05)  # other axes: unlike every class
    chosen = np.argmax(foreign @ rule.centroids.T, axis=1)  # what a softmax would pick: the nearest
    assert unknown_share(rule, foreign, chosen) == 1.0
    unknown, distance = rule.unknown(foreign[0], int(chosen[0]))
    assert unknown and distance == pytest.approx(1.0 - float(foreign[0] @ rule.centroids[chosen[0]]))


def test_k_is_the_smallest_that_keeps_the_validation_crops_within_the_target() -> None:
    rng = np.random.default_rng(5)
    centres = np.eye(3, 8)
    ref, ref_classes = _clusters(rng, centres, 40, 0.1)
    val, val_classes = _clusters(rng, centres, 100, 0.1)
    _, loose = fit_open_set(ref, ref_classes, 3, val, val_classes, target=0.2)
    _, strict = fit_open_set(ref, ref_classes, 3, val, val_classes, target=0.0)
    assert loose["k"] < strict["k"] and strict["validation_unknown"] == 0.0
    assert 0.0 < loose["validation_unknown"] <= 0.2


def test_a_class_without_reference_crops_never_flags() -> None:
    rng = np.random.default_rng(7)
    ref, ref_classes = _clusters(rng, np.eye(3, 8)[:2], 30, 0.05)  # class 2 has no reference crop
    rule, calibration = fit_open_set(ref, ref_classes, 3, ref, ref_classes)
    assert calibration["classes_without_reference"] == 1 and rule.max_distance[2] == 2.0
    assert not rule.unknown(np.eye(8)[5], 2)[0]


def test_rule_from_the_manifest_is_the_rule_that_was_fitted() -> None:
    rng = np.random.default_rng(9)
    ref, classes = _clusters(rng, np.eye(2, 4), 20, 0.05)
    rule, _ = fit_open_set(ref, classes, 2, ref, classes)
    again = OpenSetRule.from_spec(rule.centroids.tolist(), rule.max_distance.tolist())
    np.testing.assert_allclose(again.centroids, rule.centroids, atol=1e-6)
    assert again.unknown(ref[0], 0) == rule.unknown(ref[0], 0)


def test_model_json_refuses_open_set_statistics_that_do_not_fit_the_model() -> None:
    manifest = mk.make_manifest(mk.hierarchical_model(quant="int8", io="uint8"))
    data = manifest.model_dump(mode="json")
    species = next(h for h in data["outputs"] if h["level"] == "species")
    n = len(species["labels"])
    spec = OpenSetSpec(level="species", centroids=[[1.0, 0.0]] * n, max_distance=[0.1] * n).model_dump()
    with pytest.raises(ValidationError, match="open_set needs the embedding output"):
        BundleManifest.model_validate(data | {"open_set": spec})
    with_embedding = data | {"embedding": {"signature_output": "embedding", "size": 2}}
    BundleManifest.model_validate(with_embedding | {"open_set": spec})  # fits
    with pytest.raises(ValidationError, match=r"open_set: 1 centroids and 1 distances for \d+ labels"):
        BundleManifest.model_validate(
            with_embedding | {"open_set": spec | {"centroids": [[1.0, 0.0]], "max_distance": [0.1]}}
        )
    with pytest.raises(ValidationError, match=r"every centroid must have embedding\.size 2"):
        BundleManifest.model_validate(with_embedding | {"open_set": spec | {"centroids": [[1.0]] * n}})
    with pytest.raises(ValidationError, match=r"open_set\.level .genus. is not an output level"):
        BundleManifest.model_validate(with_embedding | {"open_set": spec | {"level": "genus"}})
