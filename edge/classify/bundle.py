"""The model bundle: the contract between `convert` (which writes it) and the trap (which loads it).

A bundle is a directory with `model.tflite` (plus optional accelerator variants) and `model.json`,
the manifest validated here. The manifest says everything the device must not guess: input size,
dtype, quantization, colour order, the float range the model expects, one entry per output head
(matched by signature output *name*, never by tensor index, because converters reorder outputs),
per-class abstention thresholds, the taxonomy, and a sha256 of every file so a half-copied model
is refused instead of producing plausible nonsense for a whole season.

A plain third-party `.tflite` + `labels.txt` loads too: its manifest is synthesised from the
interpreter's tensor details. Checks that need the interpreter for a *bundle* (input shape, output
names and sizes) run in the classifier at start-up, which owns the interpreter.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from edge.classify.taxonomy import Taxonomy
from edge.errors import ModelError

FORMAT_VERSION = 1
MANIFEST_NAME = "model.json"
TFLITE_IDENTIFIER = b"TFL3"

InputDtype = Literal["uint8", "int8", "float32"]
FileRole = Literal["cpu", "edgetpu", "onnx", "tensorrt", "reference", "other"]

_QUANT_RANGE = {"uint8": (0, 255), "int8": (-128, 127)}


class _Strict(BaseModel):
    """Unknown keys are errors: a misspelt `treshold` must not silently disable abstention."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """What the model's single image input expects.

    The device always holds uint8 pixels; `normalization_in_model` and `float_range` say which
    float values those pixels stand for, and `scale`/`zero_point` how that float is quantized.
    """

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    dtype: InputDtype
    scale: float | None = Field(None, gt=0, description="input quantization scale; null for float32")
    zero_point: int | None = Field(None, description="input quantization zero point; null for float32")
    colour_order: Literal["RGB", "BGR"] = "RGB"
    normalization_in_model: bool = Field(
        description="true: the model takes raw pixel values 0..255 and normalises inside"
    )
    float_range: tuple[float, float] | None = Field(
        None,
        description="float range pixels 0..255 map to, e.g. [0, 1] or [-1, 1]; only without in-model norm",
    )

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        quantized = self.dtype != "float32"
        if quantized and (self.scale is None or self.zero_point is None):
            raise ValueError(f"a {self.dtype} input needs scale and zero_point")
        if not quantized and (self.scale is not None or self.zero_point is not None):
            raise ValueError("a float32 input has no scale or zero_point (set them to null)")
        if quantized and self.zero_point is not None:
            low, high = _QUANT_RANGE[self.dtype]
            if not low <= self.zero_point <= high:
                raise ValueError(
                    f"zero_point {self.zero_point} is outside the {self.dtype} range {low}..{high}"
                )
        if self.normalization_in_model and self.float_range is not None:
            raise ValueError(
                "float_range must be null when normalization_in_model is true (pixels go in as-is)"
            )
        if not self.normalization_in_model:
            if self.float_range is None:
                raise ValueError(
                    "float_range (e.g. [0, 1] or [-1, 1]) is required when normalization_in_model is false"
                )
            if not self.float_range[0] < self.float_range[1]:
                raise ValueError(f"float_range {list(self.float_range)} must be [low, high] with low < high")
        return self

    @property
    def pixel_range(self) -> tuple[float, float]:
        """The float values that pixel 0 and pixel 255 become before quantization."""
        return (0.0, 255.0) if self.float_range is None else self.float_range


# The signature output `trapcam convert` gives the penultimate features (see EmbeddingSpec).
EMBEDDING_OUTPUT = "embedding"


class EmbeddingSpec(_Strict):
    """The model's penultimate features as an output: what the tracker links insects by across
    snapshots minutes apart (no extra inference: the same invoke as the classification)."""

    signature_output: str = Field(min_length=1, description="the output's name in the signature")
    size: int = Field(ge=1, description="features per crop")


class OpenSetSpec(_Strict):
    """Per-class reference statistics of the embedding: what makes a crop `unknown` (DESIGN.md).

    A crop whose embedding lies farther (cosine distance) from the centroid of the class the model
    chose at `level` than that class's `max_distance` is unlike the crops the class was trained on:
    an insect the model does not know. Written by `trapcam convert` from the bundle's own model on
    the training split, calibrated on the validation split (`calibration`).
    """

    level: str = Field(min_length=1, description="the head whose answer picks the centroid (the deepest)")
    metric: Literal["cosine"] = "cosine"
    centroids: list[list[float]] = Field(
        min_length=1, description="one unit vector per label of `level`, in label order"
    )
    max_distance: list[float] = Field(min_length=1, description="per label: farthest distance still known")
    calibration: dict[str, Any] = Field(
        default_factory=dict, description="how the distances were chosen and the share of known crops flagged"
    )


class OutputHead(_Strict):
    """One output head, e.g. the family classifier of a hierarchical model."""

    level: str = Field(min_length=1)
    signature_output: str = Field(min_length=1, description="the output's name in the signature")
    labels: list[str] = Field(min_length=1, description="class names in output order")
    thresholds: list[float] | None = Field(
        None, description="per-class abstention thresholds in label order; null: the configured default"
    )
    activation: Literal["softmax", "none"] | None = Field(
        None,
        description="what the device applies to this head: softmax (it outputs logits), none (probabilities);"
        " null: detect at start-up",
    )

    @model_validator(mode="after")
    def _consistent(self) -> OutputHead:
        seen: set[str] = set()
        for label in self.labels:
            if not label.strip():
                raise ValueError(f"head '{self.level}' has an empty label")
            if label in seen:
                raise ValueError(f"head '{self.level}' lists label '{label}' twice")
            seen.add(label)
        if self.thresholds is not None:
            if len(self.thresholds) != len(self.labels):
                raise ValueError(
                    f"head '{self.level}' has {len(self.thresholds)} thresholds for {len(self.labels)} labels"
                )
            bad = [t for t in self.thresholds if not 0.0 <= t <= 1.0]
            if bad:
                raise ValueError(f"head '{self.level}' thresholds must be within 0..1, got {bad[0]}")
        return self


class TaxonomySpec(_Strict):
    """Levels coarse to fine and, for each level but the first, {label: parent label one level up}."""

    levels: list[str] = Field(min_length=1)
    parents: dict[str, dict[str, str]] = Field(default_factory=dict)


class FileEntry(_Strict):
    """One file of the bundle: its checksum and what it is for."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    role: FileRole


class BundleManifest(_Strict):
    """`model.json`: everything the device needs to run the model without guessing."""

    format_version: int = Field(FORMAT_VERSION, ge=1)
    name: str = Field(min_length=1)
    created_utc: AwareDatetime
    input: InputSpec
    signature: str | None = Field("serving_default", description="signature key; null for models without one")
    outputs: list[OutputHead] = Field(min_length=1, description="heads ordered coarse to fine")
    taxonomy: TaxonomySpec
    files: dict[str, FileEntry] = Field(min_length=1)
    validation: dict[str, Any] = Field(default_factory=dict, description="float-vs-int8 figures from convert")
    training: dict[str, Any] = Field(default_factory=dict, description="provenance: data, backbone, epochs")
    embedding: EmbeddingSpec | None = Field(
        None, description="the penultimate features output (written by convert); null: the model has none"
    )
    open_set: OpenSetSpec | None = Field(
        None, description="per-class embedding statistics for `unknown` (written by convert); null: none"
    )
    not_insect_label: str | None = Field(
        None,
        min_length=1,
        description="the label, at every level, of crops that show no insect (trained from crops "
        "labelled not_insect): a track voted to it is stored as discarded and not counted",
    )

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        levels = [head.level for head in self.outputs]
        if len(set(levels)) != len(levels):
            raise ValueError(f"outputs: level names must be unique, got {levels}")
        names = [head.signature_output for head in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"outputs: signature_output names must be unique, got {names}")
        if self.taxonomy.levels != levels:
            raise ValueError(f"taxonomy.levels {self.taxonomy.levels} must equal the output levels {levels}")
        heads = {head.level: head for head in self.outputs}
        for level in self.taxonomy.parents:
            if level not in heads or level == levels[0]:
                raise ValueError(f"taxonomy.parents.{level}: not a level below the top ({levels[1:]})")
        for upper, lower in itertools.pairwise(levels):
            parents = self.taxonomy.parents.get(lower, {})
            upper_labels = set(heads[upper].labels)
            lower_labels = set(heads[lower].labels)
            for label in heads[lower].labels:
                if label not in parents:
                    raise ValueError(f"taxonomy.parents.{lower}: '{label}' has no parent in level '{upper}'")
            for label, parent in parents.items():
                if label not in lower_labels:
                    raise ValueError(f"taxonomy.parents.{lower}: '{label}' is not a label of level '{lower}'")
                if parent not in upper_labels:
                    raise ValueError(
                        f"taxonomy.parents.{lower}.{label}: parent '{parent}'"
                        f" is not a label of level '{upper}'"
                    )
        if self.embedding is not None and self.embedding.signature_output in names:
            raise ValueError(
                f"embedding.signature_output '{self.embedding.signature_output}' is also a head's output"
            )
        if self.open_set is not None:
            spec = self.open_set
            if self.embedding is None:
                raise ValueError("open_set needs the embedding output it measures (embedding is null)")
            if spec.level not in heads:
                raise ValueError(f"open_set.level '{spec.level}' is not an output level ({levels})")
            count = len(heads[spec.level].labels)
            if len(spec.centroids) != count or len(spec.max_distance) != count:
                raise ValueError(
                    f"open_set: {len(spec.centroids)} centroids and {len(spec.max_distance)} distances"
                    f" for {count} labels of level '{spec.level}'"
                )
            size = self.embedding.size
            if any(len(c) != size for c in spec.centroids):
                raise ValueError(f"open_set.centroids: every centroid must have embedding.size {size}")
        if self.not_insect_label is not None:
            label = self.not_insect_label
            missing = [head.level for head in self.outputs if label not in head.labels]
            if missing:
                raise ValueError(
                    f"not_insect_label '{label}' must be a label of every level; not of {missing}"
                )
            for level, parents in self.taxonomy.parents.items():
                if parents.get(label) != label:
                    raise ValueError(
                        f"taxonomy.parents.{level}.{label}: the not-insect class must be its own parent "
                        f"(got {parents.get(label)!r})"
                    )
        for filename in self.files:
            if Path(filename).name != filename or filename in ("", ".", ".."):
                raise ValueError(f"files: '{filename}' must be a plain file name inside the bundle directory")
        cpu = [name for name, entry in self.files.items() if entry.role == "cpu"]
        if len(cpu) != 1:
            raise ValueError(
                f"files: exactly one file must have role 'cpu' (the model the CPU runs), got {cpu}"
            )
        return self

    @property
    def cpu_file(self) -> str:
        """The file name of the model the CPU interpreter runs."""
        return next(name for name, entry in self.files.items() if entry.role == "cpu")

    def make_taxonomy(self) -> Taxonomy:
        return Taxonomy(
            levels=tuple(self.taxonomy.levels),
            parents={level: dict(parents) for level, parents in self.taxonomy.parents.items()},
        )


@dataclass(frozen=True)
class LoadedBundle:
    """A validated bundle (or a plain model with a synthesised manifest) ready for the classifier.

    source: "bundle" (model.json) or "plain" (a bare .tflite + labels file).
    manifest_path / labels_path: where the description came from, for error messages and logs.
    """

    manifest: BundleManifest
    model_path: Path
    model_sha256: str
    taxonomy: Taxonomy
    source: Literal["bundle", "plain"]
    manifest_path: Path | None = None
    labels_path: Path | None = None

    def describe_source(self) -> str:
        """The file that defined the heads and labels: named in every label-related error."""
        return str(self.manifest_path or self.labels_path or self.model_path)


# ---------------------------------------------------------------- files and checksums


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (models can be tens of MB on a Pi with little RAM)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise ModelError(f"{path}: model file not found") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror or exc}") from None
    return digest.hexdigest()


def file_entries(directory: Path, roles: Mapping[str, FileRole]) -> dict[str, FileEntry]:
    """{filename: FileEntry} with checksums computed from the files in `directory` (for convert)."""
    return {
        name: FileEntry(sha256=sha256_file(Path(directory) / name), role=role) for name, role in roles.items()
    }


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back: the only way POSIX offers).

    Why: tempfile's files are 0600 and its folders 0700 whatever the umask, so a bundle written
    through them could not be read by the trap's service user (issue 25). Modes are set from this.
    """
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_manifest(directory: Path, manifest: BundleManifest) -> BundleManifest:
    """Write `model.json` into `directory` atomically, with checksums recomputed from the files.

    The checksums are recomputed here (not trusted from the caller) so a manifest can never
    describe files other than the ones beside it. Atomic: a crash mid-write leaves the old
    manifest or the new one, never half a file. Returns the manifest as written.
    """
    directory = Path(directory)
    files = {
        name: FileEntry(sha256=sha256_file(directory / name), role=e.role)
        for name, e in manifest.files.items()
    }
    written = manifest.model_copy(update={"files": files})
    written = BundleManifest.model_validate(written.model_dump(mode="json"))
    text = json.dumps(written.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".model.json.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide it from other users
        os.replace(tmp, directory / MANIFEST_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return written


def check_tflite_file(path: Path) -> None:
    """Refuse anything that is not a TFLite flatbuffer before the interpreter sees it.

    The interpreter's own error for, say, a JPEG renamed model.tflite is an opaque flatbuffer
    message (or worse, a crash); the "TFL3" file identifier at bytes 4..8 tells us plainly.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except FileNotFoundError:
        raise ModelError(f"{path}: model file not found") from None
    except IsADirectoryError:
        raise ModelError(f"{path}: expected a .tflite file, found a directory") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read model file: {exc.strerror or exc}") from None
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        found = "an empty file" if not head else f"bytes {head[:8].hex(' ')}"
        raise ModelError(f"{path}: not a TFLite model (no 'TFL3' identifier at bytes 4..8; found {found})")


# ---------------------------------------------------------------- manifest parsing


def _format_errors(exc: ValidationError, filename: str) -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling)"
        elif error["type"] == "missing":
            message = "required key is missing"
        parts.append(f"{filename}: {loc}: {message}")
    return " | ".join(parts)


def parse_manifest(text: str, filename: str = MANIFEST_NAME) -> BundleManifest:
    """Validate manifest JSON text; ModelError names the file and the key path."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"{filename}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(raw, dict):
        raise ModelError(f"{filename}: expected a JSON object at the top level, got {type(raw).__name__}")
    version = raw.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelError(
            f"{filename}: format_version: expected an integer (this trapcam reads {FORMAT_VERSION})"
        )
    if version > FORMAT_VERSION:
        raise ModelError(
            f"{filename}: format_version {version} is newer than this trapcam understands ({FORMAT_VERSION});"
            " upgrade trapcam on the device"
        )
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as exc:
        raise ModelError(_format_errors(exc, filename)) from None


def read_manifest(path: Path) -> BundleManifest:
    """Read and validate `model.json` from disk."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{path}: model.json not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read manifest: {exc}") from None
    return parse_manifest(text, str(path))


# ---------------------------------------------------------------- labels files

_INDEXED = re.compile(r"^\s*(\d+)\s*(?::\s*|\s+)(\S.*?)\s*$")


def read_labels(path: Path) -> list[str]:
    """Labels in output order from a labels file: one per line, optionally "0 label" or "0: label".

    Coral-style indices are used only when *every* line has one, and then they must be exactly
    0..n-1 (a gap would shift every class after it). An empty line inside the file is an error
    rather than a silently shifted label list.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ModelError(f"{path}: labels file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read labels file: {exc}") from None
    lines = text.rstrip("\r\n\t ").splitlines()
    if not lines:
        raise ModelError(f"{path}: labels file is empty; expected one label per line")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            raise ModelError(f"{path}:{number}: empty line; expected one label per line")
    matches = [_INDEXED.match(line) for line in lines]
    if all(matches):
        by_index: dict[int, str] = {}
        for number, match in enumerate(matches, start=1):
            assert match is not None
            index = int(match.group(1))
            if index in by_index:
                raise ModelError(f"{path}:{number}: index {index} appears twice")
            by_index[index] = match.group(2)
        missing = sorted(set(range(len(by_index))) - set(by_index))
        if missing:
            raise ModelError(
                f"{path}: indices must run 0..{len(by_index) - 1}; index {missing[0]} is missing"
            )
        labels = [by_index[i] for i in range(len(by_index))]
    else:
        labels = [line.strip() for line in lines]
    seen: dict[str, int] = {}
    for number, label in enumerate(labels, start=1):
        if label in seen:
            raise ModelError(f"{path}: label '{label}' appears twice (lines {seen[label]} and {number})")
        seen[label] = number
    return labels


def find_labels(model_path: Path) -> Path | None:
    """The labels file next to a plain model.

    labels.txt, <stem>.txt or <stem>_labels.txt; failing those, the one and only `*labels*.txt`
    in the folder (model zoos ship e.g. `inat_insect_labels.txt` beside a differently named
    model). Two or more candidates are never guessed between.
    """
    folder, stem = model_path.parent, model_path.stem
    for name in ("labels.txt", f"{stem}.txt", f"{stem}_labels.txt"):
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.glob("*labels*.txt") if p.is_file())
    return candidates[0] if len(candidates) == 1 else None


# ---------------------------------------------------------------- loading


def load_bundle(
    path: Path,
    labels: Path | None = None,
    *,
    level: str | None = None,
    input_range: tuple[float, float] | None = None,
    colour_order: Literal["RGB", "BGR"] | None = None,
) -> LoadedBundle:
    """Load a bundle directory, a model.json, or a plain `.tflite` (+ labels file).

    level / input_range / colour_order describe a *plain* model, which carries no manifest
    (defaults: one level "species", RGB; a quantized input takes raw pixels; a float input has no
    safe default range, so it must be given). For a bundle, model.json is the only authority and
    giving them is an error rather than being silently ignored.
    """
    path = Path(path)
    if path.is_dir():
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ModelError(f"{path}: not a model bundle (no {MANIFEST_NAME} inside)")
    elif path.name.endswith(".json"):
        manifest_path = path
    elif path.suffix.lower() == ".tflite" or path.exists():
        return _load_plain(path, labels, level=level, input_range=input_range, colour_order=colour_order)
    else:
        raise ModelError(
            f"{path}: model not found (expected a bundle directory, model.json or a .tflite file)"
        )
    overrides = {"labels": labels, "level": level, "input_range": input_range, "colour_order": colour_order}
    given = [key for key, value in overrides.items() if value is not None]
    if given:
        raise ModelError(
            f"{manifest_path}: a bundle defines its own {', '.join(given)}; remove them from the config"
        )
    manifest = read_manifest(manifest_path)
    model_path = manifest_path.parent / manifest.cpu_file
    expected = manifest.files[manifest.cpu_file].sha256
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found (listed in {manifest_path})")
    check_tflite_file(model_path)
    actual = sha256_file(model_path)
    if actual != expected:
        raise ModelError(
            f"{model_path}: sha256 mismatch: {manifest_path.name} expects {expected[:12]}…,"
            f" the file is {actual[:12]}… (changed or incompletely copied)"
        )
    return LoadedBundle(
        manifest=manifest,
        model_path=model_path,
        model_sha256=actual,
        taxonomy=manifest.make_taxonomy(),
        source="bundle",
        manifest_path=manifest_path,
    )


def _load_plain(
    model_path: Path,
    labels: Path | None,
    *,
    level: str | None,
    input_range: tuple[float, float] | None,
    colour_order: Literal["RGB", "BGR"] | None,
) -> LoadedBundle:
    """Synthesise a manifest for a bare `.tflite` from its tensor details and a labels file."""
    from edge.classify.interpreter import make_interpreter, tensor_dtype_name

    check_tflite_file(model_path)
    labels_path = labels if labels is not None else find_labels(model_path)
    if labels_path is None:
        raise ModelError(
            f"{model_path}: no labels file given and none found beside it"
            f" (looked for labels.txt, {model_path.stem}.txt, {model_path.stem}_labels.txt"
            " and a single *labels*.txt)"
        )
    label_list = read_labels(labels_path)
    sha = sha256_file(model_path)
    interpreter = make_interpreter(model_path, num_threads=1)
    signatures = interpreter.get_signature_list()
    if len(signatures) > 1:
        raise ModelError(
            f"{model_path}: has {len(signatures)} signatures ({sorted(signatures)});"
            " write a model.json that names one"
        )
    if signatures:
        signature = next(iter(signatures))
        runner = interpreter.get_signature_runner(signature)
        inputs = list(runner.get_input_details().values())
        outputs = list(runner.get_output_details().items())
    else:
        signature = None
        inputs = interpreter.get_input_details()
        outputs = [(d["name"], d) for d in interpreter.get_output_details()]
    if len(inputs) != 1:
        raise ModelError(f"{model_path}: expected one image input, the model has {len(inputs)}")
    embedding: EmbeddingSpec | None = None
    if signatures and len(outputs) == 2 and any(name == EMBEDDING_OUTPUT for name, _ in outputs):
        # a flat model from `trapcam convert` shipped without its model.json: its classes and the
        # features it carries for the time-lapse tracker, both named in the signature
        features = next(d for name, d in outputs if name == EMBEDDING_OUTPUT)
        embedding = EmbeddingSpec(
            signature_output=EMBEDDING_OUTPUT, size=int(_prod(features["shape"][1:]) or 1)
        )
        outputs = [(name, d) for name, d in outputs if name != EMBEDDING_OUTPUT]
    if len(outputs) != 1:
        raise ModelError(
            f"{model_path}: a plain model must have one output (got {len(outputs)}: "
            f"{[name for name, _ in outputs]}); write a model.json that names each head"
        )
    spec = inputs[0]
    shape = [int(v) for v in spec["shape"]]
    if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
        raise ModelError(f"{model_path}: input shape {shape} is not 1 x H x W x 3 (one RGB image)")
    dtype = tensor_dtype_name(spec["dtype"], model_path)
    output_name, output = outputs[0]
    size = int(max(1, _prod(output["shape"][1:] if len(output["shape"]) > 1 else output["shape"])))
    if size != len(label_list):
        raise ModelError(
            f"{labels_path}: has {len(label_list)} labels but {model_path.name} outputs {size} classes"
        )
    scale, zero_point = (None, None)
    if dtype != "float32":
        scale, zero_point = float(spec["quantization"][0]), int(spec["quantization"][1])
    if input_range is None:
        if dtype == "float32":
            raise ModelError(
                f"{model_path}: a plain float model does not say what input range it expects;"
                " set classifier.input_range (e.g. [-1, 1] for MobileNet, [0, 1], or [0, 255])"
            )
        # A quantized third-party model takes raw pixels: the float range is whatever the
        # quantized range represents, so pixel p becomes exactly quantized value p (uint8).
        low, high = _QUANT_RANGE[dtype]
        assert scale is not None and zero_point is not None
        input_range = ((low - zero_point) * scale, (high - zero_point) * scale)
    level_name = level or "species"
    manifest = BundleManifest(
        format_version=FORMAT_VERSION,
        name=model_path.stem,
        created_utc=datetime.fromtimestamp(model_path.stat().st_mtime, tz=timezone.utc),
        input=InputSpec(
            height=shape[1],
            width=shape[2],
            dtype=dtype,
            scale=scale,
            zero_point=zero_point,
            colour_order=colour_order or "RGB",
            normalization_in_model=False,
            float_range=(float(input_range[0]), float(input_range[1])),
        ),
        signature=signature,
        outputs=[OutputHead(level=level_name, signature_output=output_name, labels=label_list)],
        taxonomy=TaxonomySpec(levels=[level_name]),
        files={model_path.name: FileEntry(sha256=sha, role="cpu")},
        training={"source": "plain model", "labels_file": str(labels_path)},
        embedding=embedding,
    )
    return LoadedBundle(
        manifest=manifest,
        model_path=model_path,
        model_sha256=sha,
        taxonomy=manifest.make_taxonomy(),
        source="plain",
        labels_path=Path(labels_path),
    )


def _prod(values: Any) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out
