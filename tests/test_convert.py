"""`convert`: a real training run -> TFLite variants -> a checked model bundle the edge loads.

The main run folder is the demo's (tests/conftest.py `demo_run`, trained once per session at the
demo's default settings: 11 species, 8 families, 4 orders, 64 px, the small CNN from scratch, 1,320
test crops). It is converted here again with every variant, the Edge TPU model and both ONNX files,
and held to convert's default bar (1 pp, 99% top-1 agreement at every level): that model holds it
with margin on every CPU tried (tests/test_demo.py keeps 99.5%), so the same bar here is a
measurement on 1,320 crops (one crop = 0.08 pp), never one lucky crop. The bundle is then loaded by
the device's own code (load_bundle + Classifier) and compared with the Keras model crop by crop.

MobileNetV2, the backbone users fine-tune, is converted too (`mobilenet_run`): a short run whose
float32 file must reproduce Keras, whose int8 file must run on the edge runtime and whose ops the
Edge TPU report must list; its int8 accuracy is not held to a budget (two epochs from scratch have
no margin to hold one, and the demo's model holds it).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow  # noqa: F401

from convert.check import LevelFigures, VariantFigures, check_budget, figures_for
from convert.tflite import ConvertError, converter_failure
from demo.options import DemoOptions
from edge.classify.bundle import current_umask
from edge.errors import ConfigError, ModelError
from train.model import SMALL_CNN_FILTERS
from train.presets import synthetic_run_config

ROOT = Path(__file__).resolve().parents[1]
# The module's first test pays for the demo's run unless tests/test_demo.py already did (conftest.py).
pytestmark = pytest.mark.timeout(1500)
SPECIES = ["Noctua pronuba", "Autographa gamma", "Pterostichus melanarius", "Coccinella septempunctata"]
# convert's default bar: what the demo's model is held to by the demo itself
FIXTURE_BUDGET_PP = 1.0
FIXTURE_MIN_AGREEMENT = 0.99
# MobileNetV2 alpha 0.35 from random weights, two epochs: its conversion path, not its accuracy
MOBILENET_CONFIG = synthetic_run_config(
    Path("{run_dir}"), SPECIES[:3], per_class=40, epochs=2, test_fraction=0.4, colour_augment=False
)


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def run_dir(demo_run: dict[str, Any]) -> Path:
    """The demo's training run folder (read only: every test converts it into a folder of its own)."""
    return Path(demo_run["out"]) / "train"


@pytest.fixture(scope="module")
def run_meta(run_dir: Path) -> dict[str, Any]:
    """The run's run.json and its test split's size."""
    from train.dataset import read_splits

    meta = json.loads((run_dir / "run.json").read_text())
    meta["test_crops"] = len(read_splits(run_dir / "splits.csv").test)
    return meta


# Coral's edgetpu_compiler comes only from Coral's apt repository, which this machine cannot reach:
# a stand-in at that tool boundary writes <stem>_edgetpu.tflite and prints the compiler's log lines.
FAKE_COMPILER = """#!/bin/sh
out=.
while [ $# -gt 1 ]; do
  case "$1" in -o) out="$2"; shift 2;; *) shift;; esac
done
model="$1"
stem=$(basename "$model" .tflite)
cp "$model" "$out/${stem}_edgetpu.tflite"
printf 'Edge TPU Compiler version 16.0\nNumber of operations that will run on Edge TPU: 71\n'
printf 'Number of operations that will run on CPU: 2\n'
"""


@pytest.fixture(scope="module")
def fake_compiler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bindir = tmp_path_factory.mktemp("bin")
    script = bindir / "edgetpu_compiler"
    script.write_text(FAKE_COMPILER)
    script.chmod(0o755)
    return bindir


@pytest.fixture(scope="module")
def converted(run_dir: Path, tmp_path_factory: pytest.TempPathFactory, fake_compiler: Path) -> Any:
    """The full bundle: four TFLite variants, the Edge TPU model and both ONNX files."""
    from convert import convert_run

    out = tmp_path_factory.mktemp("convert-out") / "bundle"
    tables: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{fake_compiler}{os.pathsep}{os.environ.get('PATH', '')}")
        result = convert_run(
            run_dir,
            out,
            edgetpu=True,
            onnx=True,
            budget_pp=FIXTURE_BUDGET_PP,
            min_agreement=FIXTURE_MIN_AGREEMENT,
            echo=tables.append,
        )
    table = next(t for t in tables if t.startswith("quantization check"))
    assert "int8" in table and "onnx-int8" in table and "onnxruntime" in table
    print("\n".join(tables))
    return result


@pytest.fixture(scope="module")
def keras_and_test(run_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Keras float probabilities on the test split and the test images (uint8 RGB)."""

    import train.model  # noqa: F401  (custom layers)
    from train.dataset import read_splits
    from train.inputs import load_images

    meta = json.loads((run_dir / "run.json").read_text())
    images = load_images(read_splits(run_dir / "splits.csv").test, meta["input"]["height"])
    model = keras.saving.load_model(run_dir / "model.keras", compile=False)
    probs = model.predict(images.astype("float32"), verbose=0)
    return {level: np.asarray(probs[level]) for level in meta["levels"]}, images


# ---------------------------------------------------------------- the bundle on the edge runtime


def test_int8_bundle_reproduces_keras_top1_on_the_edge_runtime(
    converted: Any, keras_and_test: tuple[dict[str, np.ndarray], np.ndarray], run_meta: dict[str, Any]
) -> None:
    from edge.classify.bundle import load_bundle
    from edge.classify.classifier import Classifier

    keras_probs, images = keras_and_test
    bundle = load_bundle(converted.out_dir)
    assert bundle.source == "bundle" and bundle.model_path.name == "model.tflite"
    classifier = Classifier(bundle, num_threads=1)
    results = classifier.classify(np.ascontiguousarray(images[..., ::-1]))  # BGR like the trap's crops
    recorded = converted.manifest.validation["variants"]["int8"]["levels"]
    assert len(images) == run_meta["test_crops"] >= 1000
    for level, reference in keras_probs.items():
        got = np.array([np.argmax(r.probs[level]) for r in results])
        agreement = float(np.mean(got == np.argmax(reference, axis=1)))
        # the device, batched, reproduces crop for crop what convert measured one crop at a time
        assert agreement == pytest.approx(recorded[level]["agreement"], abs=1e-9), level
        assert agreement >= FIXTURE_MIN_AGREEMENT, (level, agreement)
    assert classifier.input_dtype == "uint8"
    # the penultimate features come with every answer (the time-lapse tracker's cue): unit length,
    # and crops of one species closer to each other than to another species' crops
    assert classifier.has_embedding
    vectors = np.stack([r.embedding for r in results])
    assert vectors.shape == (len(images), converted.manifest.embedding.size)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    species = np.array([np.argmax(p) for p in keras_probs["species"]])
    same, other = [], []
    for k in range(len(run_meta["labels"]["species"])):
        mine, rest = vectors[species == k], vectors[species != k]
        centre = mine.mean(axis=0)
        same.append(float(np.mean(1 - mine @ centre / np.linalg.norm(centre))))
        other.append(float(np.mean(1 - rest @ centre / np.linalg.norm(centre))))
    assert max(same) < min(other), (same, other)


def test_manifest_describes_the_files_labels_thresholds_and_quantization(
    converted: Any, run_dir: Path, run_meta: dict[str, Any]
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edge.classify.bundle import read_manifest, sha256_file

    out = converted.out_dir
    manifest = read_manifest(out / "model.json")
    meta = json.loads((run_dir / "run.json").read_text())
    thresholds = json.loads((run_dir / "thresholds.json").read_text())["levels"]
    roles = {name: entry.role for name, entry in manifest.files.items()}
    assert roles == {
        "model.tflite": "cpu",
        "model_float32.tflite": "reference",
        "model_float16.tflite": "reference",
        "model_dynamic.tflite": "reference",
        "model_edgetpu.tflite": "edgetpu",
        "model.onnx": "onnx",
        "model_int8.onnx": "onnx",  # it keeps the fixture's budget (checked below)
    }
    assert sorted(p.name for p in out.iterdir()) == sorted([*roles, "model.json"])
    for name, entry in manifest.files.items():
        assert entry.sha256 == sha256_file(out / name)
    assert [h.level for h in manifest.outputs] == meta["levels"] == manifest.taxonomy.levels
    for head in manifest.outputs:
        assert head.signature_output == head.level
        assert head.labels == meta["labels"][head.level]
        assert head.thresholds == pytest.approx(thresholds[head.level]["thresholds"])
        assert head.activation == "none"
    assert manifest.taxonomy.parents == meta["taxonomy_parents"]
    # the features before the heads, declared and present in the TFLite signature (int8 like the rest)
    assert manifest.embedding is not None and manifest.embedding.signature_output == "embedding"
    assert manifest.embedding.size == SMALL_CNN_FILTERS[-1]  # the small CNN's pooled features

    runner = Interpreter(model_path=str(out / "model.tflite")).get_signature_runner("serving_default")
    outputs = runner.get_output_details()
    assert sorted(outputs) == sorted([*meta["levels"], "embedding"])
    assert list(outputs["embedding"]["shape"]) == [1, SMALL_CNN_FILTERS[-1]]
    assert outputs["embedding"]["dtype"] == np.uint8
    details = next(iter(runner.get_input_details().values()))
    scale, zero_point = details["quantization"]
    spec = manifest.input
    assert (spec.height, spec.width, spec.dtype) == (64, 64, "uint8")
    assert spec.scale == pytest.approx(scale) and spec.zero_point == zero_point
    assert spec.colour_order == "RGB" and spec.normalization_in_model and spec.float_range is None
    assert list(details["shape"]) == [1, 64, 64, 3]

    validation = manifest.validation
    assert validation["passed"] is True and validation["bundle_variant"] == "int8"
    assert validation["verdict"] == "passed" and validation["measurable"] is True
    assert validation["images"] == run_meta["test_crops"]
    assert validation["resolution_pp"] == pytest.approx(100 / run_meta["test_crops"], abs=1e-4)
    assert (validation["budget_pp"], validation["min_agreement"]) == (
        FIXTURE_BUDGET_PP,
        FIXTURE_MIN_AGREEMENT,
    )
    assert set(validation["variants"]) == {"float32", "float16", "dynamic", "int8", "onnx", "onnx-int8"}
    report = json.loads((run_dir / "report.json").read_text())
    assert validation["images"] == report["dataset"]["test"]
    for level in meta["levels"]:
        assert validation["keras"][level]["accuracy"] == pytest.approx(report["metrics"][level]["accuracy"])
        int8 = validation["variants"]["int8"]["levels"][level]
        assert int8["agreement"] >= FIXTURE_MIN_AGREEMENT
        assert validation["variants"]["float32"]["levels"][level]["agreement"] == 1.0
    sizes = {v: validation["variants"][v]["size_bytes"] for v in validation["variants"]}
    assert sizes["int8"] < sizes["float32"] / 2
    training = manifest.training
    assert training["backbone"] == "small_cnn" and training["weights"] == "none"
    assert training["seed"] == DemoOptions(out=run_dir).seed
    assert training["test_metrics"]["species"]["accuracy"] == report["metrics"]["species"]["accuracy"]


def test_bundle_verify_and_inspect(converted: Any, run_meta: dict[str, Any]) -> None:
    counts = {level: len(run_meta["labels"][level]) for level in ("order", "family", "species")}
    assert counts == {"order": 4, "family": 8, "species": 11}
    out = _cli("bundle", "verify", str(converted.out_dir), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok") and "species 11" in out.stdout

    out = _cli("bundle", "inspect", str(converted.out_dir), timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for level, count in counts.items():
        assert any(line.split()[:3] == [level, str(count), "labels"] for line in text.splitlines()), text
    assert "uint8" in text and "model_float16.tflite" in text and "passed" in text


def test_corrupted_bundle_is_refused(converted: Any, tmp_path: Path) -> None:
    from edge.classify.bundle import load_bundle

    bad = shutil.copytree(converted.out_dir, tmp_path / "bad")
    model = bad / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_bundle(bad)
    out = _cli("bundle", "verify", str(bad), timeout=60)
    assert out.returncode != 0
    assert len(out.stderr.strip().splitlines()) == 1 and "sha256 mismatch" in out.stderr, out.stderr

    # a damaged reference variant is caught by verify even though the CPU model is intact
    ref = shutil.copytree(converted.out_dir, tmp_path / "ref")
    with open(ref / "model_float16.tflite", "ab") as handle:
        handle.write(b"\0")
    load_bundle(ref)
    out = _cli("bundle", "verify", str(ref), timeout=60)
    assert out.returncode != 0 and "model_float16.tflite" in out.stderr, out.stderr


def test_edgetpu_model_and_op_report_are_in_the_bundle(converted: Any) -> None:
    from convert.edgetpu import EDGETPU_OPS, tflite_ops
    from edge.classify.bundle import read_manifest

    out = converted.out_dir
    tpu = read_manifest(out / "model.json").validation["edgetpu"]
    ops = tflite_ops(out / "model.tflite")  # the op report is about the int8 model itself
    assert tpu["source"] == "model.tflite" and sum(tpu["ops"].values()) == len(ops)
    assert tpu["unsupported_ops"] == {op: ops.count(op) for op in set(ops) if op not in EDGETPU_OPS}
    assert tpu["all_int8"] is True and tpu["compatible"] is (not tpu["unsupported_ops"])
    # the compiler's output went into the bundle under its role, with the counts from its log
    assert (tpu["file"], tpu["edgetpu_ops"], tpu["cpu_ops"]) == ("model_edgetpu.tflite", 71, 2)
    assert (out / "model_edgetpu.tflite").read_bytes() == (out / "model.tflite").read_bytes()
    text = _cli("bundle", "inspect", str(out), timeout=60).stdout
    assert "edge tpu: ops it cannot run:" in text and "71 ops on the TPU" in text


def test_onnx_files_reproduce_keras_in_onnxruntime(
    converted: Any, run_dir: Path, keras_and_test: tuple[dict[str, np.ndarray], np.ndarray], tmp_path: Path
) -> None:
    """Checked independently of convert's own check: onnxruntime on the test crops vs Keras."""
    import onnx
    import onnxruntime as ort

    from convert.check import check_budget
    from convert.onnx_export import describe_onnx, quantize_onnx
    from convert.tflite import read_run, split_images
    from edge.classify.bundle import read_manifest

    keras_probs, images = keras_and_test
    levels = list(keras_probs)
    out = converted.out_dir
    validation = read_manifest(out / "model.json").validation

    def agreement_and_diff(path: Path, exact_int8: bool = False) -> dict[str, tuple[float, float]]:
        options = ort.SessionOptions()
        if exact_int8:  # the Q/DQ values as TensorRT computes them (convert/onnx_export.py docstring)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        (image_input,) = session.get_inputs()
        assert image_input.shape[1:] == [64, 64, 3] and image_input.type == "tensor(float)"
        assert image_input.name == validation["onnx"]["input"]
        got = session.run(levels, {image_input.name: images.astype(np.float32)})  # a batch: dynamic axis
        return {
            level: (
                float(np.mean(np.argmax(probs, 1) == np.argmax(keras_probs[level], 1))),
                float(np.mean(np.abs(probs - keras_probs[level]))),
            )
            for level, probs in zip(levels, got, strict=True)
        }

    for level, (agreement, diff) in agreement_and_diff(out / "model.onnx").items():
        assert agreement == 1.0 and diff <= 1e-4, (level, agreement, diff)
    assert validation["variants"]["onnx"]["file"] == "model.onnx"

    # The int8 file keeps the fixture's budget, so it is in the bundle; onnxruntime here agrees with
    # Keras as well as convert recorded (the file that is left out is the next test's case).
    # Quantize model.onnx again here to check the Q/DQ form TensorRT reads.
    int8 = validation["variants"]["onnx-int8"]
    assert int8["file"] == "model_int8.onnx" and "int8_left_out" not in validation["onnx"]
    for level, (agreement, _diff) in agreement_and_diff(out / "model_int8.onnx", exact_int8=True).items():
        assert agreement >= FIXTURE_MIN_AGREEMENT, level
        assert agreement == pytest.approx(int8["levels"][level]["agreement"], abs=1e-9), level
    check_budget(
        converted.check.keras, converted.check.variants["onnx-int8"], FIXTURE_BUDGET_PP, FIXTURE_MIN_AGREEMENT
    )
    calibration, _ = split_images(read_run(run_dir), "train", limit=50)
    again = quantize_onnx(describe_onnx(out / "model.onnx"), tmp_path / "q.onnx", calibration)
    ops = {node.op_type for node in onnx.load(again.path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


def test_onnx_int8_that_misses_the_budget_is_left_out_with_its_reason(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calibrated on black images, the int8 ONNX file saturates on every real crop: a certain miss.

    The file is left out (with the reason, naming the level) and model.onnx still serves TensorRT.
    """
    import convert.bundle_writer as writer
    from convert import convert_run
    from edge.classify.bundle import read_manifest

    real_split = writer.split_images

    def black_calibration(run: Any, split: str, limit: int | None = None) -> Any:
        images, samples = real_split(run, split, limit=limit)
        return (np.zeros_like(images), samples) if split == "train" else (images, samples)

    monkeypatch.setattr(writer, "split_images", black_calibration)
    out = tmp_path / "bundle"
    lines: list[str] = []
    convert_run(
        run_dir,
        out,
        variants=["int8"],
        onnx=True,
        budget_pp=FIXTURE_BUDGET_PP,
        min_agreement=FIXTURE_MIN_AGREEMENT,
        echo=lines.append,
    )
    validation = read_manifest(out / "model.json").validation
    reason = validation["onnx"]["int8_left_out"]
    assert "onnx-int8 model" in reason and "at level '" in reason
    assert validation["variants"]["onnx-int8"]["file"] is None
    worst = min(f["agreement"] for f in validation["variants"]["onnx-int8"]["levels"].values())
    assert worst < FIXTURE_MIN_AGREEMENT
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx", "model.tflite"]
    assert any("model_int8.onnx left out" in line for line in lines)


def test_edgetpu_without_the_compiler_fails_before_converting(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convert import convert_run
    from convert.edgetpu import EdgeTpuError

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    out = tmp_path / "bundle"
    with pytest.raises(EdgeTpuError, match="edgetpu_compiler was not found"):
        convert_run(run_dir, out, edgetpu=True)
    assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="add int8 to --variants"):
        convert_run(run_dir, out, variants=["float32"], bundle_variant="float32", edgetpu=True)


# ---------------------------------------------------------------- MobileNetV2, the backbone users fine-tune


@pytest.fixture(scope="module")
def mobilenet_run(trained_run: Any) -> Path:
    return trained_run(MOBILENET_CONFIG)


def test_mobilenet_v2_converts_float32_exactly_and_its_int8_model_runs_whole_on_the_edge_tpu(
    mobilenet_run: Path, fake_compiler: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Depthwise convolutions, ReLU6 and 1280 pooled features: the float32 file answers as Keras does,
    the int8 file (uint8 in and out, with its embedding) runs on the device's classifier exactly as
    convert measured it, and the Edge TPU report finds no op the TPU cannot run."""
    from convert import convert_run
    from convert.edgetpu import tflite_ops
    from edge.classify.bundle import load_bundle
    from edge.classify.classifier import Classifier
    from train.dataset import read_splits
    from train.inputs import load_images

    monkeypatch.setenv("PATH", f"{fake_compiler}{os.pathsep}{os.environ.get('PATH', '')}")
    # no budget: two epochs from scratch have no margin to hold one (module docstring)
    result = convert_run(
        mobilenet_run,
        tmp_path / "bundle",
        variants=["float32", "int8"],
        representative=100,
        budget_pp=100.0,
        min_agreement=0.0,
        edgetpu=True,
    )
    manifest = result.manifest
    assert manifest.training["backbone"] == "mobilenet_v2"
    assert manifest.embedding is not None and manifest.embedding.size == 1280
    validation = manifest.validation
    for level in manifest.taxonomy.levels:
        float32 = validation["variants"]["float32"]["levels"][level]
        assert float32["agreement"] == 1.0 and float32["mean_abs_prob_diff"] < 1e-4, (level, float32)

    images = load_images(read_splits(mobilenet_run / "splits.csv").test, 64)
    assert len(images) == validation["images"] == 48
    results = Classifier(load_bundle(result.out_dir), num_threads=1).classify(
        np.ascontiguousarray(images[..., ::-1])
    )
    model = keras.saving.load_model(mobilenet_run / "model.keras", compile=False)
    reference = model.predict(images.astype("float32"), verbose=0)
    for level in manifest.taxonomy.levels:
        got = np.array([np.argmax(r.probs[level]) for r in results])
        agreement = float(np.mean(got == np.argmax(np.asarray(reference[level]), 1)))
        assert agreement == pytest.approx(validation["variants"]["int8"]["levels"][level]["agreement"]), level
    assert all(r.embedding is not None and r.embedding.shape == (1280,) for r in results)

    tpu = validation["edgetpu"]
    ops = tflite_ops(result.out_dir / "model.tflite")
    assert "DEPTHWISE_CONV_2D" in ops and tpu["ops"]["DEPTHWISE_CONV_2D"] == ops.count("DEPTHWISE_CONV_2D")
    assert tpu["all_int8"] is True and tpu["unsupported_ops"] == {} and tpu["compatible"] is True


# ---------------------------------------------------------------- a flat (single-level) run


# 100 crops per species, 15% held out: 60 test crops, one crop = 1.67 pp (too few for a 1 pp budget).
# The demo's small_cnn: this test is about the single-head path, and it learns these crops in 15 epochs
# (MobileNetV2 from scratch took 40 and left little margin; bench.model_margin --recipe flat).
FLAT_CONFIG = synthetic_run_config(
    Path("{run_dir}"), SPECIES, heads="flat", epochs=15, per_class=100, backbone="small_cnn"
)


@pytest.fixture(scope="module")
def flat_run(trained_run: Any) -> Path:
    return trained_run(FLAT_CONFIG)


FOREIGN_SPECIES = [
    "Smerinthus ocellata",
    "Melolontha melolontha",
    "Episyrphus balteatus",
    "Bombus terrestris",
]


def test_the_open_set_calls_species_the_model_never_saw_unknown(flat_run: Path, tmp_path: Path) -> None:
    """Issue 25: a model trained on some species and shown others. The statistics come from the
    bundle's own int8 model; held-out crops of its own species stay known (<= 2%), crops of species
    it never saw mostly turn unknown, through the device's Classifier."""
    import cv2
    from scipy.stats import binom

    from convert import convert_run
    from convert.open_set import BAR_UNKNOWN
    from edge.classify.bundle import load_bundle
    from edge.classify.classifier import Classifier
    from train.config import SyntheticData
    from train.synthetic import write_synthetic_dataset

    lines: list[str] = []
    result = convert_run(
        flat_run, tmp_path / "bundle", variants=["int8"], representative=100, echo=lines.append
    )
    spec = result.manifest.open_set
    assert spec is not None and spec.level == "species" and len(spec.centroids) == len(SPECIES)
    calibration = spec.calibration
    assert calibration["validation_unknown"] <= 0.01  # the calibration's target, met by construction
    # Issue 25's bar (2%) on the held-out split. This fixture's split is 60 crops, where one crop is
    # 1.7%, and which crops land beyond their class's limit differs with the CPU float training ran on
    # (2 of 60 on one x86 machine, 0 on another). Even a model exactly at the bar calls 2 or more of 60
    # unknown one time in three; so the test fails only where the bar is clearly missed: more crops
    # than a model at the bar gives in 99 of 100 splits (binomial; 4 of 60).
    test_crops = calibration["test_crops"]
    called = round(calibration["test_unknown"] * test_crops)
    assert test_crops >= 50 and called <= binom.ppf(0.99, test_crops, BAR_UNKNOWN), (called, test_crops)
    assert calibration["reference_crops"] == 4 * 60 and calibration["classes_without_reference"] == 0
    assert [line for line in lines if line.startswith("open set (species): ")]

    classifier = Classifier(load_bundle(result.out_dir), num_threads=1)
    assert classifier.has_open_set

    def unknown_share(species: list[str], seed: int) -> dict[str, float]:
        root = write_synthetic_dataset(
            SyntheticData(species=species, per_class=20), tmp_path / f"s{seed}", seed, 64
        )
        shares = {}
        for name in species:
            crops = [cv2.imread(str(p)) for p in sorted((root / name).glob("*.png"))]
            shares[name] = float(np.mean([classifier.classify(c[None])[0].unknown for c in crops]))
        return shares

    known = unknown_share(SPECIES, seed=23)  # new crops of the species it was trained on
    foreign = unknown_share(FOREIGN_SPECIES, seed=23)
    assert max(known.values()) <= 0.05, known  # measured: 0 of 20 for each
    assert np.mean(list(foreign.values())) >= 0.5, foreign  # measured: 0.95, 0.95, 0.35, 0.70


def test_flat_run_gives_a_uint8_single_head_bundle_that_also_loads_as_a_plain_model(
    flat_run: Path, tmp_path: Path
) -> None:
    """One head, uint8 in and uint8 out: the shape of the common third-party models (e.g. iNat).

    Its test split (60 crops, one crop = 1.67 pp) is too small to measure convert's default budget,
    and the check says so in one line instead of certifying or refusing on one crop: the verdict
    "unmeasured" and the resolution are in model.json. What this test also holds is the single-head
    path: the bundle's manifest, its uint8 tensors, and the device reproducing exactly the agreement
    that convert recorded.
    """
    from ai_edge_litert.interpreter import Interpreter

    import train.model  # noqa: F401  (custom layers)
    from convert import convert_run
    from edge.classify.bundle import load_bundle
    from edge.classify.classifier import Classifier
    from train.dataset import read_splits
    from train.inputs import load_images

    lines: list[str] = []
    result = convert_run(
        flat_run, tmp_path / "bundle", variants=["float32", "int8"], representative=200, echo=lines.append
    )
    manifest = result.manifest
    validation = manifest.validation
    assert validation["images"] == 60 and (validation["budget_pp"], validation["min_agreement"]) == (
        1.0,
        0.99,
    )
    assert validation["verdict"] == "unmeasured" and validation["measurable"] is False
    assert validation["passed"] is False  # not certified
    assert validation["resolution_pp"] == pytest.approx(100 / 60, abs=1e-4)
    said = [line for line in "\n".join(lines).splitlines() if "too small to measure the budget" in line]
    assert len(said) == 1 and "one crop of 60 is 1.67 pp" in said[0] and "at least 200 test crops" in said[0]
    assert "not measured" in "\n".join(lines)
    assert [h.level for h in manifest.outputs] == ["species"] == manifest.taxonomy.levels
    assert manifest.outputs[0].labels == json.loads((flat_run / "run.json").read_text())["labels"]["species"]
    recorded = manifest.validation["variants"]["int8"]["levels"]["species"]["agreement"]

    interpreter = Interpreter(model_path=str(result.out_dir / "model.tflite"))
    (inp,) = interpreter.get_input_details()
    outputs = interpreter.get_signature_runner("serving_default").get_output_details()
    assert sorted(outputs) == ["embedding", "species"]  # the head, and the features for time-lapse linking
    assert inp["dtype"] == np.uint8 and {d["dtype"] for d in outputs.values()} == {np.uint8}

    images = load_images(read_splits(flat_run / "splits.csv").test, 64)
    model = keras.saving.load_model(flat_run / "model.keras", compile=False)
    reference = np.argmax(np.asarray(model.predict(images.astype("float32"), verbose=0)["species"]), 1)

    # the bundle, and the bare model.tflite + labels.txt the way a third-party model is shipped
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(result.out_dir / "model.tflite", plain / "model.tflite")
    (plain / "labels.txt").write_text("\n".join(manifest.outputs[0].labels) + "\n", encoding="utf-8")
    answers = {}
    for source, path in (("bundle", result.out_dir), ("plain", plain / "model.tflite")):
        bundle = load_bundle(path)
        assert bundle.source == source
        assert bundle.manifest.embedding == manifest.embedding  # a plain copy keeps its features too
        results = Classifier(bundle, num_threads=1).classify(np.ascontiguousarray(images[..., ::-1]))
        answers[source] = np.array([np.argmax(r.probs["species"]) for r in results])
    agreement = float(np.mean(answers["bundle"] == reference))
    # a clear miss (more than 3 crops beyond the budget) would have been refused even on 60 crops
    assert agreement == pytest.approx(recorded) and agreement >= 0.99 - 3 / 60
    assert np.array_equal(answers["bundle"], answers["plain"])  # the same model, read either way


# ---------------------------------------------------------------- bad input, nothing left behind


@pytest.mark.parametrize("missing", ["model.keras", "run.json"])
def test_incomplete_run_folder_gives_one_line_and_no_output(
    run_dir: Path, tmp_path: Path, missing: str
) -> None:
    from convert import convert_run

    partial = tmp_path / "run"
    partial.mkdir()
    for name in ("run.json", "thresholds.json", "splits.csv", "report.json", "model.keras"):
        if name != missing:
            shutil.copy(run_dir / name, partial / name)
    out = tmp_path / "out" / "bundle"
    with pytest.raises(ConvertError) as info:
        convert_run(partial, out)
    message = str(info.value)
    assert "\n" not in message and missing in message
    assert not out.exists() and not (tmp_path / "out").exists()

    cli = _cli("convert", str(partial), "--out", str(out), timeout=120)
    assert cli.returncode == 1
    assert _last_line(cli.stderr).startswith("trapcam: error:") and missing in cli.stderr
    assert not out.exists()


def test_invalid_options_are_refused_before_anything_runs(tmp_path: Path) -> None:
    from convert import convert_run

    with pytest.raises(ConfigError, match="min-agreement"):
        convert_run(tmp_path / "nowhere", min_agreement=1.01)
    with pytest.raises(ConfigError, match="bundle variant 'int8'"):
        convert_run(tmp_path / "nowhere", variants=["float32"])
    # the command line says exactly what the library says (one set of rules, in check_options),
    # one line, exit 2, before TensorFlow loads
    from convert.bundle_writer import check_options

    good = {"variants": ["int8"], "io": "uint8", "representative": 300, "budget_pp": 1.0}
    good |= {"min_agreement": 0.99, "bundle_variant": "int8"}
    for option, value, keyword in (
        ("--min-agreement", "1.01", {"min_agreement": 1.01}),
        ("--budget", "-1", {"budget_pp": -1.0}),
        ("--representative", "0", {"representative": 0}),
        ("--threads", "0", {"num_threads": 0}),
    ):
        with pytest.raises(ConfigError) as info:
            check_options(**(good | keyword))
        out = _cli("convert", str(tmp_path), option, value, timeout=60)
        assert out.returncode == 2, (option, out.stderr)
        assert out.stderr.strip() == f"trapcam: error: {info.value}", (option, out.stderr)
        assert option in str(info.value)


def test_missed_budget_names_the_level_and_both_numbers() -> None:
    truth = {"order": np.array([0, 1, 0, 1]), "species": np.array([0, 1, 2, 3])}
    keras = {"order": np.eye(2)[[0, 1, 0, 1]], "species": np.eye(4)}
    int8 = {"order": np.eye(2)[[0, 1, 0, 1]], "species": np.eye(4)[[0, 1, 2, 2]]}  # one species wrong
    reference = figures_for("keras", truth, keras, keras)
    quantized = figures_for("int8", truth, keras, int8)
    assert quantized.levels["species"].agreement == 0.75
    with pytest.raises(ConvertError) as info:
        check_budget(reference, quantized, budget_pp=1.0, min_agreement=0.99)
    message = str(info.value)
    assert "'species'" in message and "100.00%" in message and "75.00%" in message and "25.00" in message
    check_budget(reference, quantized, budget_pp=30.0, min_agreement=0.7)  # a looser budget passes

    # agreement alone: accuracy unchanged, but the model changed its mind on two crops
    fig = VariantFigures(
        "int8", {"order": LevelFigures(accuracy=1.0, macro_f1=1.0, agreement=0.98, mean_abs_prob_diff=0.01)}
    )
    ref = VariantFigures("keras", {"order": LevelFigures(1.0, 1.0, 1.0, 0.0)})
    with pytest.raises(ConvertError, match=r"98\.00% of test crops at level 'order'; at least 99\.00%"):
        check_budget(ref, fig, budget_pp=1.0, min_agreement=0.99)


def test_a_missed_budget_names_the_level_that_misses_most() -> None:
    """Issue 25: the error named the first level over the budget (family, 2 pp), not the worst (species)."""
    levels = {"order": (1.0, 1.0), "family": (0.98, 0.98), "species": (0.90, 0.91)}
    ref = VariantFigures("keras", {k: LevelFigures(1.0, 1.0, 1.0, 0.0) for k in levels})
    got = VariantFigures(
        "int8", {k: LevelFigures(acc, acc, agree, 0.01) for k, (acc, agree) in levels.items()}
    )
    with pytest.raises(ConvertError, match=r"loses 10\.00 percentage points of accuracy at level 'species'"):
        check_budget(ref, got, budget_pp=1.0, min_agreement=0.99)
    same_accuracy = VariantFigures(
        "int8", {k: LevelFigures(1.0, 1.0, agree, 0.01) for k, (_, agree) in levels.items()}
    )
    with pytest.raises(ConvertError, match=r"for 91\.00% of test crops at level 'species'"):
        check_budget(ref, same_accuracy, budget_pp=1.0, min_agreement=0.95)


def test_the_check_is_kept_in_the_run_folder_whatever_the_outcome(tmp_path: Path) -> None:
    from convert.bundle_writer import keep_check
    from convert.check import gate

    passed = _check_on(400, flips=2)
    gate(passed, "int8")
    assert keep_check(tmp_path, passed, None) == str(tmp_path / "quantization_check.txt")
    text = (tmp_path / "quantization_check.txt").read_text()
    assert text.startswith("quantization check on 400 test crops") and text.endswith("verdict: passed\n")
    failed = _check_on(400, flips=5)
    with pytest.raises(ConvertError) as err:
        gate(failed, "int8")
    keep_check(tmp_path, failed, str(err.value))
    figures = json.loads((tmp_path / "quantization_check.json").read_text())
    assert figures["verdict"] == "failed" and figures["error"].startswith("int8 model loses 1.25 percentage")
    assert figures["variants"]["int8"]["levels"]["species"]["accuracy"] == pytest.approx(395 / 400)
    assert "verdict: failed (int8 model loses 1.25" in (tmp_path / "quantization_check.txt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["quantization_check.json", "quantization_check.txt"]


def _check_on(images: int, flips: int) -> Any:
    """A CheckResult of `images` crops, one level, where int8 changes its answer on `flips` crops."""
    from convert.check import CheckResult

    truth = {"species": np.zeros(images, dtype=np.int64)}
    keras = {"species": np.eye(2)[np.zeros(images, dtype=np.int64)]}
    int8 = {"species": np.eye(2)[(np.arange(images) < flips).astype(np.int64)]}
    result = CheckResult(images=images, keras=figures_for("keras", truth, keras, keras))
    result.variants["int8"] = figures_for("int8", truth, keras, int8)
    return result


def test_budget_resolution_and_too_small_test_splits() -> None:
    """One crop = 100/n pp; where that is more than half the budget the check neither certifies nor
    refuses on one crop (verdict "unmeasured", one line saying so), but still refuses a clear miss."""
    from convert.check import budget_measurable, format_table, gate

    assert budget_measurable(200, 1.0, 0.99) and not budget_measurable(199, 1.0, 0.99)
    assert budget_measurable(40, 5.0, 0.95) and not budget_measurable(39, 5.0, 0.95)
    assert budget_measurable(10, 0.0, 1.0)  # an exact demand is always measured

    small = _check_on(48, flips=1)  # the fixture that failed on another machine: one crop = 2.08 pp
    gate(small, "int8")
    assert (small.verdict, small.passed, small.measurable) == ("unmeasured", False, False)
    table = format_table(small)
    assert "on 48 test crops (edge runtime); one crop = 2.08 pp" in table
    assert table.splitlines()[-1].startswith("the test split is too small to measure the budget")
    assert "at least 200 test crops" in table and ": not measured" in table
    json_ = small.to_json()
    assert (json_["verdict"], json_["measurable"], json_["resolution_pp"]) == ("unmeasured", False, 2.0833)

    clear_miss = _check_on(48, flips=5)  # 10.4 pp: more than three crops beyond 1 pp / 99%
    with pytest.raises(ConvertError, match="on this small test split") as err:
        gate(clear_miss, "int8")
    assert "the test split (48 crops, one = 2.08 pp) is too small to measure the budget" in str(err.value)
    assert str(err.value).endswith("(hold out at least 200 test crops to measure it)")
    assert clear_miss.verdict == "failed"

    measured = _check_on(400, flips=2)  # 0.5%: within 1 pp / 99%
    gate(measured, "int8")
    assert (measured.verdict, measured.passed) == ("passed", True)
    assert "too small" not in format_table(measured) and ": passed" in format_table(measured)
    missed = _check_on(400, flips=5)
    with pytest.raises(ConvertError, match=r"loses 1\.25 percentage points"):
        gate(missed, "int8")
    assert (missed.verdict, missed.passed) == ("failed", False)


def test_converter_failures_name_the_op() -> None:
    assert "op 'HARD_SWISH'" in str(
        converter_failure("int8", "Quantization not yet supported for op: 'HARD_SWISH'.")
    )
    assert "op 'tf.ImageProjectiveTransformV3'" in str(
        converter_failure("int8", "loc(x): error: 'tf.ImageProjectiveTransformV3' op is neither a custom op")
    )
    assert "op 'HARD_SWISH'" in str(converter_failure("int8", "failed to quantize HARD_SWISH node"))
    message = str(converter_failure("int8", "\nsomething odd happened\nsecond line"))
    assert message == "int8 conversion failed: something odd happened"


# ---------------------------------------------------------------- the command end to end


def test_convert_command_end_to_end(run_dir: Path, run_meta: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "cli-bundle"
    cli = _cli(
        "convert",
        str(run_dir),
        "--out",
        str(out),
        "--variants",
        "float32",
        "int8",
        "--representative",
        "100",
        "--budget",
        str(FIXTURE_BUDGET_PP),
        "--min-agreement",
        str(FIXTURE_MIN_AGREEMENT),
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    crops = run_meta["test_crops"]
    assert f"quantization check on {crops} test crops" in cli.stdout
    assert f"one crop = {100 / crops:.2f} pp" in cli.stdout
    assert "int8" in cli.stdout and ": passed" in cli.stdout
    assert f"quantization check: {run_dir / 'quantization_check.txt'}" in cli.stdout
    assert (run_dir / "quantization_check.txt").read_text().endswith("verdict: passed\n")
    noise = ("oneDNN", "absl", "I0000", "W0000", "XNNPACK", "fully_quantize")
    assert [line for line in (cli.stdout + cli.stderr).splitlines() if any(w in line for w in noise)] == []
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.tflite", "model_float32.tflite"]
    umask = current_umask()  # the folder and model.json follow it (tempfile's 0700 and 0600 did not)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o666 & ~umask}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    verify = _cli("bundle", "verify", str(out), timeout=60)
    assert verify.returncode == 0, verify.stderr


def test_a_run_trained_with_not_insect_crops_declares_its_label_in_model_json(tmp_path: Path) -> None:
    """`convert` writes model.json's not_insect_label when every level has the class (train/dataset.py)."""
    import modelkit as mk

    from convert.bundle_writer import make_manifest
    from convert.tflite import RunFolder

    model = mk.hierarchical_model(quant="int8", io="uint8")
    model.save(tmp_path / "model.tflite")
    rename = {"Frigidi": "not_insect", "Viridae": "not_insect", "Viridis viridis": "not_insect"}
    labels = {level: [rename.get(x, x) for x in names] for level, names in mk.level_labels().items()}
    parents = {
        level: {rename.get(c, c): rename.get(p, p) for c, p in pairs.items()}
        for level, pairs in mk.taxonomy_parents().items()
    }

    def manifest(labels: dict[str, list[str]], parents: dict[str, dict[str, str]]) -> Any:
        meta = {
            "levels": list(mk.LEVELS),
            "labels": labels,
            "input": {"height": 32, "width": 32},
            "taxonomy_parents": parents,
            "model": "model.tflite",  # provenance hashes "the Keras file"; any file will do here
        }
        run = RunFolder(tmp_path, meta, {})
        return make_manifest(
            run, "model.tflite", tmp_path / "model.tflite", {"model.tflite": "cpu"}, tmp_path
        )

    assert manifest(labels, parents).not_insect_label == "not_insect"
    assert manifest(mk.level_labels(), mk.taxonomy_parents()).not_insect_label is None
