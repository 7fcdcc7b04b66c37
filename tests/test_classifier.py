"""Classification on the device with real TFLite models built in the test (tests/modelkit.py).

The models answer by the crop's mean colour (nearest prototype), so every expected label comes
from an independent numpy oracle (`modelkit.reference_probs`), not from the model itself.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import modelkit as mk
import numpy as np
import pytest
import tensorflow  # noqa: F401  (tests build their TFLite models with TensorFlow)

from edge.classify.bundle import load_bundle
from edge.classify.classifier import Classifier
from edge.classify.interpreter import interpreter_package, load_runtime
from edge.config import ClassifierConfig
from edge.errors import ModelError

REPO = Path(__file__).resolve().parents[1]
INAT = REPO.parent / "shared" / "data" / "models" / "inat-insect-mobilenet-v2"

MIX = (255, 0, 128)  # halfway between the red and magenta species: a ~50/50 species answer


def crops_of(colours, size: int = 32) -> np.ndarray:
    return np.stack([mk.colour_crop(c, size) for c in colours])


def oracle(rgb, level: str) -> str:
    return mk.level_labels()[level][int(np.argmax(mk.reference_probs(rgb, level)))]


def random_colours(n: int, seed: int) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    return [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(n)]


# ---------------------------------------------------------------- correct answers


@pytest.mark.parametrize(
    ("quant", "io"), [("float", "float32"), ("int8", "uint8"), ("int8", "int8"), ("int8", "float32")]
)
def test_hierarchical_bundle_classifies_known_colours_at_every_level(
    tmp_path: Path, quant: str, io: str
) -> None:
    model = mk.hierarchical_model(quant=quant, io=io)
    classifier = Classifier(load_bundle(mk.write_bundle(tmp_path, model)), top_k=3)
    assert classifier.input_size == (32, 32)
    colours = list(mk.COLOURS.values())
    results = classifier.classify(crops_of(colours))
    assert len(results) == len(colours)
    for rgb, result in zip(colours, results, strict=True):
        for level in mk.LEVELS:
            prediction = result.levels[level]
            assert prediction.label == oracle(rgb, level), (rgb, level, prediction)
            assert prediction.score > 0.95
            assert len(result.probs[level]) == len(mk.level_labels()[level])
            assert sum(result.probs[level]) == pytest.approx(1.0, abs=0.02)
            scores = [score for _, score in prediction.top_k]
            assert len(prediction.top_k) == min(3, len(mk.level_labels()[level]))
            assert scores == sorted(scores, reverse=True)
            assert prediction.top_k[0] == (prediction.top_label, prediction.score)
        assert list(result.levels) == list(mk.LEVELS)
        assert (result.level, result.label) == ("species", oracle(rgb, "species"))
        assert result.score == result.levels["species"].score


def test_a_mixed_batch_keeps_each_crop_apart(tmp_path: Path) -> None:
    """Results must not alias one reused output buffer: every crop keeps its own answer."""
    classifier = Classifier(
        load_bundle(mk.write_bundle(tmp_path, mk.hierarchical_model(quant="int8", io="uint8")))
    )
    colours = [*random_colours(12, seed=5), *mk.COLOURS.values()]
    results = classifier.classify(crops_of(colours))
    for rgb, result in zip(colours, results, strict=True):
        probs = mk.reference_probs(rgb, "family")
        if np.sort(probs)[-1] - np.sort(probs)[-2] > 0.2:  # clear answers only: int8 may flip near ties
            assert result.levels["family"].top_label == oracle(rgb, "family"), rgb
    assert classifier.classify(np.empty((0, 32, 32, 3), np.uint8)) == []


def test_int8_model_agrees_with_the_float_keras_model(tmp_path: Path) -> None:
    model = mk.hierarchical_model(quant="int8", io="uint8")
    classifier = Classifier(load_bundle(mk.write_bundle(tmp_path, model)))
    colours = [*mk.COLOURS.values(), *random_colours(60, seed=11)]
    crops = crops_of(colours)
    keras_probs = model.keras_predict(crops)
    results = classifier.classify(crops)
    for level in mk.LEVELS:
        float_top = keras_probs[level].argmax(axis=1)
        labels = mk.level_labels()[level]
        int8_top = np.array([labels.index(r.levels[level].top_label) for r in results])
        agreement = float(np.mean(float_top == int8_top))
        assert agreement >= 0.95, (level, agreement)
        ordered = np.sort(keras_probs[level], axis=1)
        clear = ordered[:, -1] - ordered[:, -2] > 0.1
        assert np.array_equal(float_top[clear], int8_top[clear]), level
        tflite = np.array([r.probs[level] for r in results])
        assert np.abs(tflite - keras_probs[level]).max() < 0.05, level


def test_outputs_are_matched_by_signature_name_not_index(tmp_path: Path) -> None:
    # Signature output names sort in the reverse of the manifest's coarse-to-fine order.
    names = {"order": "head_c", "family": "head_b", "species": "head_a"}
    model = mk.hierarchical_model(quant="int8", io="uint8", output_names=names)
    from ai_edge_litert.interpreter import Interpreter

    signature_outputs = Interpreter(model_content=model.tflite).get_signature_list()["serving_default"][
        "outputs"
    ]
    manifest_outputs = [head.signature_output for head in model.heads]
    assert signature_outputs != manifest_outputs  # precondition: an index-based match would be wrong
    classifier = Classifier(load_bundle(mk.write_bundle(tmp_path, model)))
    for rgb, result in zip(
        mk.COLOURS.values(), classifier.classify(crops_of(mk.COLOURS.values())), strict=True
    ):
        assert {level: result.levels[level].label for level in mk.LEVELS} == {
            level: oracle(rgb, level) for level in mk.LEVELS
        }


def test_colour_order_is_honoured(tmp_path: Path) -> None:
    colours = list(mk.COLOURS.values())
    bgr_model = mk.hierarchical_model(quant="int8", io="uint8", colour_order="BGR")
    classifier = Classifier(load_bundle(mk.write_bundle(tmp_path / "bgr", bgr_model)))
    assert [r.label for r in classifier.classify(crops_of(colours))] == [
        oracle(c, "species") for c in colours
    ]
    # A manifest that claims the wrong order must change the answer (red is read as blue).
    model = mk.hierarchical_model(quant="int8", io="uint8")
    lying = mk.write_bundle(tmp_path / "lying", model)
    mk.edit_manifest(lying, lambda m: m["input"].update(colour_order="BGR"))
    wrong = Classifier(load_bundle(lying)).classify(crops_of([mk.COLOURS["red"]]))[0]
    assert wrong.label == "Caerulea caerulea"


def test_float_input_range_outside_the_model(tmp_path: Path) -> None:
    model = mk.flat_model(input_range=(-1.0, 1.0))
    classifier = Classifier(load_bundle(mk.write_bundle(tmp_path, model)))
    colours = [*mk.COLOURS.values(), (200, 40, 30), (20, 60, 230)]
    assert [r.label for r in classifier.classify(crops_of(colours))] == [
        oracle(c, "species") for c in colours
    ]


# ---------------------------------------------------------------- abstention and taxonomy


def test_abstention_below_threshold_falls_back_to_a_coarser_level(tmp_path: Path) -> None:
    classifier = Classifier(
        load_bundle(mk.write_bundle(tmp_path, mk.hierarchical_model(quant="int8", io="uint8"))),
        default_threshold=0.6,
    )
    result = classifier.classify(crops_of([MIX]))[0]
    species = result.levels["species"]
    assert species.label is None and species.abstained
    assert species.top_label in ("Rubra rubra", "Rubra purpurea")
    assert 0.4 < species.score < 0.6
    assert (result.level, result.label) == ("family", "Rubridae")
    assert result.score == result.levels["family"].score


def test_per_class_thresholds_from_the_bundle(tmp_path: Path) -> None:
    labels = mk.level_labels()["species"]
    thresholds = [1.0 if label == "Rubra rubra" else 0.3 for label in labels]  # red can never be sure
    bundle = mk.write_bundle(
        tmp_path, mk.hierarchical_model(quant="int8", io="uint8"), thresholds={"species": thresholds}
    )
    red, mix, green = Classifier(load_bundle(bundle), default_threshold=0.99).classify(
        crops_of([mk.COLOURS["red"], MIX, mk.COLOURS["green"]])
    )
    assert red.levels["species"].label is None
    assert (red.level, red.label) == ("family", "Rubridae")
    assert (green.level, green.label) == ("species", "Viridis viridis")  # bundle threshold 0.3, not 0.99
    assert mix.levels["species"].top_label in ("Rubra rubra", "Rubra purpurea")


def test_inconsistent_heads_give_the_deepest_consistent_answer(tmp_path: Path) -> None:
    parents = mk.taxonomy_parents()
    parents["species"]["Rubra rubra"] = "Flavidae"  # the species head's red disagrees with its family head
    parents["family"]["Caeruleidae"] = "Calidi"  # blue family disagrees with the order head
    bundle = mk.write_bundle(tmp_path, mk.hierarchical_model(quant="int8", io="uint8"), parents=parents)
    red, yellow, blue = Classifier(load_bundle(bundle)).classify(
        crops_of([mk.COLOURS["red"], mk.COLOURS["yellow"], mk.COLOURS["blue"]])
    )
    assert (red.level, red.label) == ("family", "Rubridae")
    assert (yellow.level, yellow.label) == ("species", "Flava lutea")
    assert (blue.level, blue.label) == ("order", "Frigidi")
    assert blue.levels["species"].label == "Caerulea caerulea"  # each head's own answer is kept


def test_every_head_abstaining_gives_no_level(tmp_path: Path) -> None:
    bundle = mk.write_bundle(tmp_path, mk.flat_model(quant="int8", io="uint8"))
    result = Classifier(load_bundle(bundle), default_threshold=1.0).classify(crops_of([mk.COLOURS["red"]]))[0]
    assert (result.level, result.label, result.score) == (None, None, 0.0)
    assert result.levels["species"].top_label == "Rubra rubra"


# ---------------------------------------------------------------- activations


@pytest.mark.parametrize(("quant", "io"), [("float", "float32"), ("int8", "int8")])
def test_logits_are_detected_and_softmaxed(tmp_path: Path, quant: str, io: str) -> None:
    model = mk.flat_model(quant=quant, io=io, softmax=False)
    classifier = Classifier(load_bundle(mk.write_bundle(tmp_path / "detect", model)))
    assert classifier.describe()["activation"] == {"species": "softmax"}
    colours = [*mk.COLOURS.values(), MIX]
    results = classifier.classify(crops_of(colours))
    for rgb, result in zip(colours, results, strict=True):
        assert sum(result.probs["species"]) == pytest.approx(1.0, abs=1e-4)
        assert result.probs["species"] == pytest.approx(list(mk.reference_probs(rgb, "species")), abs=0.05)
    # The manifest flag overrides detection: "none" leaves the logits as they are.
    forced = Classifier(load_bundle(mk.write_bundle(tmp_path / "forced", model, activation="none")))
    assert forced.describe()["activation"] == {"species": "none"}
    raw = forced.classify(crops_of([mk.COLOURS["red"]]))[0].probs["species"]
    assert min(raw) < 0 or abs(sum(raw) - 1.0) > 0.1


def test_probabilities_are_not_softmaxed_twice(tmp_path: Path) -> None:
    classifier = Classifier(load_bundle(mk.write_bundle(tmp_path, mk.flat_model())))
    assert classifier.describe()["activation"] == {"species": "none"}
    result = classifier.classify(crops_of([MIX]))[0]
    assert result.probs["species"] == pytest.approx(list(mk.reference_probs(MIX, "species")), abs=0.01)


# ---------------------------------------------------------------- plain models


@pytest.mark.parametrize("style", ["plain", "index", "index_colon"])
def test_plain_third_party_style_model_classifies(tmp_path: Path, style: str) -> None:
    path = mk.write_plain(tmp_path, mk.third_party_model(), label_style=style)
    classifier = Classifier(load_bundle(path))
    colours = [*mk.COLOURS.values(), (230, 30, 40), (40, 220, 60)]
    assert [r.label for r in classifier.classify(crops_of(colours))] == [
        oracle(c, "species") for c in colours
    ]
    assert classifier.input_dtype == "uint8"


def test_from_config_plain_float_model_and_bundle(tmp_path: Path) -> None:
    path = mk.write_plain(tmp_path / "plain", mk.flat_model(input_range=(-1.0, 1.0)), labels_name="names.txt")
    cfg = ClassifierConfig(
        model=path, labels=tmp_path / "plain" / "names.txt", input_range=(-1.0, 1.0), top_k=2
    )
    classifier = Classifier.from_config(cfg)
    result = classifier.classify(crops_of([mk.COLOURS["cyan"]]))[0]
    assert result.label == "Caerulea glauca" and len(result.levels["species"].top_k) == 2
    bundle = mk.write_bundle(tmp_path / "bundle", mk.hierarchical_model(quant="int8", io="uint8"))
    classifier = Classifier.from_config(ClassifierConfig(model=bundle, num_threads=1, threshold=0.9))
    assert classifier.default_threshold == 0.9 and classifier.num_threads == 1
    with pytest.raises(ModelError, match=r"classifier\.enabled is false"):
        Classifier.from_config(ClassifierConfig(enabled=False))


# ---------------------------------------------------------------- start-up checks


def _bundle(tmp_path: Path) -> Path:
    return mk.write_bundle(tmp_path, mk.hierarchical_model(quant="int8", io="uint8"))


def _drop_species_label(m: dict) -> None:
    m["outputs"][2]["labels"].remove("Caerulea glauca")
    m["taxonomy"]["parents"]["species"].pop("Caerulea glauca")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda m: m["input"].update(height=64, width=64),
            r"model\.tflite: input shape \?x32x32x3 does not match 1x64x64x3 \(.*model\.json input",
        ),
        (
            lambda m: m["outputs"][2].update(signature_output="genus"),
            r"signature 'serving_default' has no output 'genus' \(.*model\.json outputs\[2\],"
            r" level 'species'\); it has \['family', 'order', 'species'\]",
        ),
        (
            _drop_species_label,
            r"model\.json: level 'species' has 5 labels but the model's output 'species' has 6 classes",
        ),
        (
            lambda m: m.update(signature="serving"),
            r"has no signature 'serving' .* it has \['serving_default'\]",
        ),
        (
            lambda m: m["input"].update(dtype="float32", scale=None, zero_point=None),
            r"input type is uint8 but .*model\.json says input\.dtype float32",
        ),
        (
            lambda m: m["input"].update(zero_point=3),
            r"input quantization is scale 1, zero point 0 but .* says 1, 3",
        ),
        (
            lambda m: m.update(signature=None),
            r"without a signature only one output can be matched safely; the model has 3 outputs",
        ),
    ],
)
def test_bundle_that_does_not_fit_its_model_fails_at_start_up(tmp_path: Path, change, expected: str) -> None:
    bundle = _bundle(tmp_path)
    mk.edit_manifest(bundle, change)
    loaded = load_bundle(bundle)  # schema-valid: only the interpreter can tell
    with pytest.raises(ModelError, match=expected) as info:
        Classifier(loaded)
    assert "\n" not in str(info.value)


def test_swapped_head_names_are_caught_by_label_counts(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)

    def swap(m: dict) -> None:
        m["outputs"][1]["signature_output"], m["outputs"][2]["signature_output"] = "species", "family"

    mk.edit_manifest(bundle, swap)
    with pytest.raises(
        ModelError, match="level 'family' has 4 labels but the model's output 'species' has 6"
    ):
        Classifier(load_bundle(bundle))


def test_bad_crops_and_arguments(tmp_path: Path) -> None:
    classifier = Classifier(load_bundle(_bundle(tmp_path)))
    for bad in (
        np.zeros((1, 64, 64, 3), np.uint8),
        np.zeros((32, 32, 3), np.uint8),
        np.zeros((1, 32, 32, 3), np.float32),
        [np.zeros((32, 32, 3), np.uint8)],
    ):
        with pytest.raises(ModelError, match=r"crops must be an N x 32 x 32 x 3 uint8 BGR array"):
            classifier.classify(bad)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="top_k must be at least 1"):
        Classifier(load_bundle(_bundle(tmp_path / "b")), top_k=0)


def test_no_interpreter_installed_says_how_to_install() -> None:
    with pytest.raises(ModelError, match=r"no TFLite interpreter installed .*pip install ai-edge-litert"):
        load_runtime((("no_such_runtime_a.interpreter", "x"), ("no_such_runtime_b.interpreter", "y")))
    interpreter_class, package = load_runtime(
        (("no_such_runtime_a.interpreter", "x"), *load_runtime_default())
    )
    assert package.startswith("ai-edge-litert ") and interpreter_class.__name__ == "Interpreter"
    assert interpreter_package() == package


def load_runtime_default() -> tuple[tuple[str, str], ...]:
    from edge.classify.interpreter import RUNTIMES

    return RUNTIMES


# ---------------------------------------------------------------- reporting


def test_timing_counters_and_describe(tmp_path: Path) -> None:
    bundle = load_bundle(_bundle(tmp_path))
    classifier = Classifier(bundle)
    assert classifier.timing()["crops"] == 0  # the start-up probes are not counted
    crops = crops_of([*mk.COLOURS.values()] * 5)
    classifier.classify(crops[:10])
    classifier.classify(crops[10:])
    timing = classifier.timing()
    assert timing["crops"] == 30 and timing["calls"] == 2
    assert 0 < timing["invoke_s"] <= timing["classify_s"]
    assert classifier.last_invoke_s > 0
    classify_ms, invoke_ms = timing["classify_ms_per_crop"], timing["invoke_ms_per_crop"]
    print(f"tiny model: classify {classify_ms:.3f} ms/crop, invoke {invoke_ms:.3f} ms/crop")
    classifier.reset_timing()
    assert classifier.timing()["invoke_s"] == 0.0
    info = classifier.describe()
    assert info["sha256"] == bundle.model_sha256 == info["model_sha256"]
    assert info["levels"] == ["order", "family", "species"]
    assert info["label_counts"] == {"order": 2, "family": 4, "species": 6}
    assert info["interpreter"].startswith("ai-edge-litert")
    assert info["input"] == "32x32 uint8 RGB"


def test_edge_classifier_imports_without_tensorflow() -> None:
    code = (
        "import edge.classify.classifier, edge.classify.bundle, sys; assert 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


# ---------------------------------------------------------------- the real third-party model (optional data)


@pytest.mark.shared_data
@pytest.mark.skipif(not INAT.is_dir(), reason=f"optional real model not present at {INAT}")
def test_real_inaturalist_insect_model_classifies_a_dragonfly() -> None:
    bundle = load_bundle(
        INAT / "mobilenet_v2_1.0_224_inat_insect_quant.tflite", INAT / "inat_insect_labels.txt"
    )
    classifier = Classifier(bundle, num_threads=2)
    assert classifier.input_size == (224, 224)
    assert classifier.describe()["label_counts"] == {"species": 1022}
    image = cv2.imread(str(INAT / "dragonfly.bmp"))
    assert image is not None
    crop = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
    result = classifier.classify(crop[None])[0]
    top3 = result.levels["species"].top_k
    print("iNat top-3:", top3)
    odonata = (
        "Skimmer",
        "Dasher",
        "Darner",
        "Dragonlet",
        "Clubtail",
        "Setwing",
        "Pennant",
        "Meadowhawk",
        "Glider",
    )
    assert any(word in top3[0][0] for word in odonata), top3
    assert top3[0][1] > 0.3
    # A batch of the same crop: every crop gets the single crop's answer, and the timing counters
    # add up (invoke() inside classify() inside the wall time around it). How the per-crop
    # overhead beyond invoke() compares is measured in bench/bench_loop.py (row 3, side by side).
    batch = np.repeat(crop[None], 20, axis=0)
    classifier.reset_timing()
    start = time.perf_counter()
    results = classifier.classify(batch)
    wall_s = time.perf_counter() - start
    timing = classifier.timing()
    assert len(results) == 20
    assert all(r.levels["species"].top_k[0][0] == top3[0][0] for r in results)
    assert all(r.levels["species"].top_k[0][1] == pytest.approx(top3[0][1], abs=1e-3) for r in results)
    assert timing["crops"] == 20 and timing["calls"] == 1
    assert 0 < timing["last_invoke_s"] <= timing["invoke_s"] <= timing["classify_s"] <= wall_s
    assert timing["invoke_ms_per_crop"] == pytest.approx(1000 * timing["invoke_s"] / 20)
