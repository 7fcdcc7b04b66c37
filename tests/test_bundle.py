"""The model bundle contract: manifest schema, writing, loading, labels files, and every bad input."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import cv2
import modelkit as mk
import numpy as np
import pytest
import tensorflow  # noqa: F401  (tests build their TFLite models with TensorFlow)

from edge.classify.bundle import (
    MANIFEST_NAME,
    BundleManifest,
    load_bundle,
    parse_manifest,
    read_labels,
    sha256_file,
    write_manifest,
)
from edge.errors import ModelError, TrapcamError


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    return mk.write_bundle(tmp_path / "bundle", mk.hierarchical_model(quant="int8", io="uint8"))


# ---------------------------------------------------------------- writing and loading


def test_written_bundle_loads_from_directory_and_from_model_json(bundle_dir: Path) -> None:
    by_dir = load_bundle(bundle_dir)
    by_json = load_bundle(bundle_dir / MANIFEST_NAME)
    assert by_dir.manifest == by_json.manifest
    assert sorted(p.name for p in bundle_dir.iterdir()) == [
        "model.json",
        "model.tflite",
    ]  # no temp files left
    expected_sha = hashlib.sha256((bundle_dir / "model.tflite").read_bytes()).hexdigest()
    assert by_dir.model_sha256 == expected_sha == by_dir.manifest.files["model.tflite"].sha256
    assert by_dir.model_path == bundle_dir / "model.tflite"
    assert by_dir.source == "bundle"
    assert by_dir.taxonomy.levels == ("order", "family", "species")
    assert by_dir.taxonomy.ancestors("species", "Caerulea glauca") == {
        "species": "Caerulea glauca",
        "family": "Caeruleidae",
        "order": "Frigidi",
    }
    spec = by_dir.manifest.input
    assert (spec.height, spec.width, spec.dtype, spec.normalization_in_model) == (32, 32, "uint8", True)
    assert spec.scale is not None and spec.zero_point is not None


def test_write_manifest_recomputes_checksums_from_the_files(tmp_path: Path) -> None:
    model = mk.flat_model()
    model.save(tmp_path / "model.tflite")
    manifest = mk.make_manifest(model, sha256="ab" * 32)  # a stale checksum from the caller
    written = write_manifest(tmp_path, manifest)
    actual = hashlib.sha256(model.tflite).hexdigest()
    assert written.files["model.tflite"].sha256 == actual
    on_disk = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert on_disk["files"]["model.tflite"]["sha256"] == actual
    assert sha256_file(tmp_path / "model.tflite") == actual


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_model_json_follows_the_umask_so_the_service_user_can_read_it(tmp_path: Path, umask: int) -> None:
    """Issue 25: model.json was 0600 whatever the umask (mkstemp), unreadable by the trap's user."""
    model = mk.flat_model()
    model.save(tmp_path / "model.tflite")
    old = os.umask(umask)
    try:
        write_manifest(tmp_path, mk.make_manifest(model))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / MANIFEST_NAME).stat().st_mode) == 0o666 & ~umask


def test_manifest_json_round_trips_through_the_schema(bundle_dir: Path) -> None:
    text = (bundle_dir / MANIFEST_NAME).read_text()
    raw = json.loads(text)
    assert set(raw) == {
        "format_version",
        "name",
        "created_utc",
        "input",
        "signature",
        "outputs",
        "taxonomy",
        "files",
        "validation",
        "training",
        "not_insect_label",
        "embedding",
        "open_set",
    }
    assert raw["not_insect_label"] is None  # said, not left out: this model has no not-insect class
    assert raw["embedding"] is None and raw["open_set"] is None
    assert [o["level"] for o in raw["outputs"]] == ["order", "family", "species"]
    assert parse_manifest(text) == BundleManifest.model_validate(raw)


def test_write_manifest_names_a_missing_file(tmp_path: Path) -> None:
    manifest = mk.make_manifest(mk.flat_model())
    with pytest.raises(ModelError, match=r"model\.tflite: model file not found"):
        write_manifest(tmp_path, manifest)


# ---------------------------------------------------------------- bad bundles


def test_missing_model_file(bundle_dir: Path) -> None:
    (bundle_dir / "model.tflite").unlink()
    with pytest.raises(ModelError, match=r"model\.tflite: model file not found \(listed in .*model\.json\)"):
        load_bundle(bundle_dir)


def test_missing_path_and_directory_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model not found"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(ModelError, match=r"not a model bundle \(no model\.json inside\)"):
        load_bundle(tmp_path)


def test_checksum_mismatch_names_both_checksums(bundle_dir: Path) -> None:
    expected = load_bundle(bundle_dir).model_sha256
    with open(bundle_dir / "model.tflite", "ab") as handle:
        handle.write(b"\0")
    actual = sha256_file(bundle_dir / "model.tflite")
    with pytest.raises(ModelError) as info:
        load_bundle(bundle_dir)
    message = str(info.value)
    assert "sha256 mismatch" in message and "model.tflite" in message
    assert expected[:12] in message and actual[:12] in message
    assert "\n" not in message


def _jpeg(path: Path) -> Path:
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def test_jpeg_renamed_model_tflite_is_refused_plain_and_in_a_bundle(bundle_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    fake = _jpeg(tmp_path / "plain" / "model.tflite")
    (tmp_path / "plain" / "labels.txt").write_text("a\nb\n")
    with pytest.raises(ModelError, match=r"model\.tflite: not a TFLite model \(no 'TFL3' identifier"):
        load_bundle(fake)
    # Inside a bundle with a matching checksum: still refused before the interpreter sees it.
    _jpeg(bundle_dir / "model.tflite")
    write_manifest(bundle_dir, load_manifest_raw(bundle_dir))
    with pytest.raises(ModelError, match="not a TFLite model"):
        load_bundle(bundle_dir)


def load_manifest_raw(directory: Path) -> BundleManifest:
    return BundleManifest.model_validate_json((directory / MANIFEST_NAME).read_text())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: m.update(colour="RGB"), r"model\.json: colour: unknown key"),
        (lambda m: m["input"].update(colour="RGB"), r"model\.json: input\.colour: unknown key"),
        (lambda m: m["outputs"][2].update(treshold=0.5), r"outputs\.2\.treshold: unknown key"),
        (lambda m: m.pop("input"), r"model\.json: input: required key is missing"),
        (lambda m: m["input"].update(dtype="float16"), r"input\.dtype: Input should be 'uint8', 'int8' or"),
        (lambda m: m["input"].update(height=0), r"input\.height: Input should be greater than 0"),
        (
            lambda m: m["outputs"][1].update(thresholds=[0.5, 0.5]),
            r"outputs\.1: .*head 'family' has 2 thresholds for 4 labels",
        ),
        (
            lambda m: m["taxonomy"]["parents"]["species"].pop("Flava lutea"),
            r"taxonomy\.parents\.species: 'Flava lutea' has no parent in level 'family'",
        ),
        (
            lambda m: m["taxonomy"]["parents"]["family"].update(Flavidae="Tepidi"),
            r"taxonomy\.parents\.family\.Flavidae: parent 'Tepidi' is not a label of level 'order'",
        ),
        (
            lambda m: m["taxonomy"].update(levels=["order", "species", "family"]),
            r"taxonomy\.levels .* must equal the output levels",
        ),
        (
            lambda m: m["outputs"][2]["labels"].append("Rubra rubra"),
            r"head 'species' lists label 'Rubra rubra' twice",
        ),
        (
            lambda m: m["files"]["model.tflite"].update(role="edgetpu"),
            r"files: exactly one file must have role 'cpu'",
        ),
        (lambda m: m["files"]["model.tflite"].update(sha256="xyz"), r"files\.model\.tflite\.sha256: String"),
        (lambda m: m.update(created_utc="2026-06-01T12:00:00"), r"created_utc: Input should have timezone"),
        (lambda m: m["input"].update(float_range=[0, 1]), r"float_range must be null when normalization"),
        (lambda m: m["input"].update(scale=None), r"a uint8 input needs scale and zero_point"),
        (
            lambda m: m.update(not_insect_label="not_insect"),
            r"not_insect_label 'not_insect' must be a label of every level; "
            r"not of \['order', 'family', 'species'\]",
        ),
        (
            lambda m: (
                m.update(not_insect_label="Rubra rubra"),
                [m["outputs"][i]["labels"].append("Rubra rubra") for i in (0, 1)],
                m["taxonomy"]["parents"]["family"].update({"Rubra rubra": "Calidi"}),
                m["taxonomy"]["parents"]["species"].update({"Rubra rubra": "Rubra rubra"}),
            ),
            r"taxonomy\.parents\.family\.Rubra rubra: the not-insect class must be its own parent",
        ),
    ],
)
def test_invalid_manifest_names_the_file_and_key(bundle_dir: Path, change, expected: str) -> None:
    mk.edit_manifest(bundle_dir, change)
    with pytest.raises(ModelError, match=expected) as info:
        load_bundle(bundle_dir)
    assert str(bundle_dir / MANIFEST_NAME) in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, TrapcamError)


def test_invalid_json_and_version_problems(bundle_dir: Path) -> None:
    path = bundle_dir / MANIFEST_NAME
    text = path.read_text()
    path.write_text(text.replace('"format_version": 1,', '"format_version": 1'))
    with pytest.raises(ModelError, match=r"model\.json: not valid JSON: .* at line 3"):
        load_bundle(bundle_dir)
    raw = json.loads(text)
    raw["format_version"] = 2
    raw["brand_new_key"] = {"from": "the future"}  # the version is reported, not the unknown key
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"format_version 2 is newer than this trapcam understands \(1\)"):
        load_bundle(bundle_dir)
    raw["format_version"] = "1"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="format_version: expected an integer"):
        load_bundle(bundle_dir)
    path.write_text("[1, 2]")
    with pytest.raises(ModelError, match="expected a JSON object at the top level, got list"):
        load_bundle(bundle_dir)


def test_plain_options_are_refused_for_a_bundle(bundle_dir: Path) -> None:
    with pytest.raises(ModelError, match="a bundle defines its own labels, input_range; remove them"):
        load_bundle(bundle_dir, labels=bundle_dir / "labels.txt", input_range=(0.0, 1.0))


# ---------------------------------------------------------------- plain .tflite + labels


@pytest.mark.parametrize("style", ["plain", "index", "index_colon"])
def test_plain_model_with_labels_file_styles(tmp_path: Path, style: str) -> None:
    model = mk.third_party_model()
    path = mk.write_plain(tmp_path, model, label_style=style)
    bundle = load_bundle(path)  # labels.txt found beside the model
    assert bundle.source == "plain"
    assert bundle.labels_path == tmp_path / "labels.txt"
    head = bundle.manifest.outputs[0]
    assert head.labels == list(mk.SPECIES)
    assert head.level == "species"
    assert bundle.taxonomy.levels == ("species",)
    spec = bundle.manifest.input
    scale, zero_point = model.input_quantization()
    assert (spec.dtype, spec.scale, spec.zero_point) == ("uint8", scale, zero_point)
    # Raw pixels: the synthesised float range makes pixel p map to quantized value p.
    assert spec.float_range is not None
    assert spec.float_range[0] == pytest.approx(-zero_point * scale)
    assert spec.float_range[1] == pytest.approx((255 - zero_point) * scale)
    assert bundle.model_sha256 == hashlib.sha256(model.tflite).hexdigest()


@pytest.mark.parametrize(
    "labels_name", ["labels.txt", "classifier.txt", "classifier_labels.txt", "inat_insect_labels.txt"]
)
def test_labels_file_is_found_beside_the_model(tmp_path: Path, labels_name: str) -> None:
    path = mk.write_plain(
        tmp_path, mk.third_party_model(), filename="classifier.tflite", labels_name=labels_name
    )
    assert load_bundle(path).labels_path == tmp_path / labels_name


def test_two_candidate_labels_files_are_never_guessed_between(tmp_path: Path) -> None:
    path = mk.write_plain(tmp_path, mk.third_party_model(), filename="m.tflite", labels_name="a_labels.txt")
    (tmp_path / "b_labels.txt").write_bytes((tmp_path / "a_labels.txt").read_bytes())
    with pytest.raises(ModelError, match=r"none found beside it"):
        load_bundle(path)


def test_plain_model_level_name_and_explicit_labels(tmp_path: Path) -> None:
    path = mk.write_plain(tmp_path, mk.third_party_model(), labels_name="names.list")
    with pytest.raises(
        ModelError, match=r"no labels file given and none found beside it \(looked for labels\.txt"
    ):
        load_bundle(path)
    bundle = load_bundle(path, tmp_path / "names.list", level="taxon")
    assert bundle.taxonomy.levels == ("taxon",)
    assert bundle.labels_path == tmp_path / "names.list"


def test_wrong_label_count_names_both_numbers_and_the_file(tmp_path: Path) -> None:
    path = mk.write_plain(tmp_path, mk.third_party_model())
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(list(mk.SPECIES)[:5]) + "\n")
    with pytest.raises(ModelError, match=r"labels\.txt: has 5 labels but model\.tflite outputs 6 classes"):
        load_bundle(path)


def test_plain_float_model_needs_its_input_range(tmp_path: Path) -> None:
    path = mk.write_plain(tmp_path, mk.flat_model(input_range=(-1.0, 1.0)))
    with pytest.raises(
        ModelError, match=r"plain float model does not say what input range.*classifier\.input_range"
    ):
        load_bundle(path)
    bundle = load_bundle(path, input_range=(-1.0, 1.0), colour_order="BGR")
    assert bundle.manifest.input.float_range == (-1.0, 1.0)
    assert bundle.manifest.input.colour_order == "BGR"
    assert bundle.manifest.signature == "serving_default"
    assert bundle.manifest.outputs[0].signature_output == "output_0"


def test_jpeg_with_tflite_name_and_empty_file(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("a\n")
    (tmp_path / "empty.tflite").write_bytes(b"")
    with pytest.raises(ModelError, match=r"empty\.tflite: not a TFLite model .*found an empty file"):
        load_bundle(tmp_path / "empty.tflite")
    with pytest.raises(ModelError, match="model file not found"):
        load_bundle(tmp_path / "missing.tflite")


# ---------------------------------------------------------------- labels files


def _labels(tmp_path: Path, text: str, name: str = "labels.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_labels_styles_parse_to_the_same_list(tmp_path: Path) -> None:
    assert read_labels(_labels(tmp_path, "moth\nbeetle\nfly\n")) == ["moth", "beetle", "fly"]
    assert read_labels(_labels(tmp_path, "0 moth\n1  beetle\n2 fly")) == ["moth", "beetle", "fly"]
    assert read_labels(_labels(tmp_path, "0: moth\n1:beetle\n2: fly\n\n")) == ["moth", "beetle", "fly"]
    # Out of order indices are placed by index.
    assert read_labels(_labels(tmp_path, "1 beetle\n0 moth\n")) == ["moth", "beetle"]
    # A UTF-8 byte order mark and Windows line ends are not part of the first label.
    assert read_labels(_labels(tmp_path, "\ufeffmoth\r\nbeetle\r\n")) == ["moth", "beetle"]
    # Only some lines start with a number: those are names, not indices.
    assert read_labels(_labels(tmp_path, "7 spot ladybird\nmoth\n")) == ["7 spot ladybird", "moth"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", r"labels\.txt: labels file is empty"),
        ("\n \n", r"labels\.txt: labels file is empty"),
        ("moth\n\nfly\n", r"labels\.txt:2: empty line"),
        ("0 moth\n2 fly\n", r"indices must run 0\.\.1; index 1 is missing"),
        ("0 moth\n0 fly\n", r"labels\.txt:2: index 0 appears twice"),
        ("moth\nfly\nmoth\n", r"label 'moth' appears twice \(lines 1 and 3\)"),
    ],
)
def test_bad_labels_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ModelError, match=expected):
        read_labels(_labels(tmp_path, text))


def test_missing_labels_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope\.txt: labels file not found"):
        read_labels(tmp_path / "nope.txt")


def test_truncated_model_is_refused_by_the_interpreter_with_a_clear_line(tmp_path: Path) -> None:
    model = mk.third_party_model()
    path = mk.write_plain(tmp_path, model)
    path.write_bytes(model.tflite[: len(model.tflite) // 2])  # still starts with the TFL3 header
    with pytest.raises(ModelError, match=r"model\.tflite: the TFLite interpreter cannot load this model: "):
        load_bundle(path)
