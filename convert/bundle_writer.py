"""A training run folder -> a checked model bundle, written all at once.

`convert_run` converts every variant, runs the quantization check through the edge runtime, and
only then writes the bundle: model.tflite (the chosen variant, role "cpu"), the other variants as
model_<variant>.tflite (role "reference"), and model.json through edge's own `write_manifest`.
Optionally (`edgetpu=True`) the int8 model compiled by `edgetpu_compiler` as model_edgetpu.tflite
(role "edgetpu"), and (`onnx=True`) model.onnx and model_int8.onnx for TensorRT on a Jetson (role
"onnx", both checked with onnxruntime). The int8 model's Edge TPU op report is always recorded.
Everything is written into a temporary folder beside `out_dir` and renamed at the end, so a
failure (bad run folder, converter error, missed budget) leaves nothing half-written behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from convert.check import (
    CheckResult,
    figures_for,
    gate,
    hold_to_budget,
    keras_predict,
    run_on_edge,
    truth_indices,
)
from convert.edgetpu import INSTALL_HINT, EdgeTpuError, compile_edgetpu, edgetpu_report
from convert.onnx_export import ONNX_FILES, export_onnx, measure_onnx, quantize_onnx, require_float_match
from convert.open_set import fit_bundle_open_set
from convert.tflite import (
    IO_TYPES,
    VARIANTS,
    ConvertError,
    RunFolder,
    convert_variants,
    input_details,
    load_keras_model,
    read_run,
    split_images,
    with_embedding,
)
from edge.classify.bundle import (
    EMBEDDING_OUTPUT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    BundleManifest,
    EmbeddingSpec,
    FileRole,
    InputSpec,
    OpenSetSpec,
    OutputHead,
    TaxonomySpec,
    current_umask,
    file_entries,
    load_bundle,
    sha256_file,
    write_manifest,
)
from edge.classify.types import NOT_INSECT
from edge.errors import ConfigError, ExportError, ModelError
from edge.export.csvsafe import atomic_write


@dataclass
class ConvertResult:
    """What `convert_run` produced."""

    out_dir: Path
    manifest: BundleManifest
    check: CheckResult
    files: dict[str, str] = field(default_factory=dict)  # file name -> variant

    def describe(self) -> str:
        lines = [self.check.table(), f"bundle: {self.out_dir}"]
        for name, variant in self.files.items():
            entry = self.manifest.files[name]
            lines.append(f"  {name:24s} {variant:8s} {entry.role:9s} sha256 {entry.sha256[:12]}")
        return "\n".join(lines)


EDGETPU_FILE = "model_edgetpu.tflite"


def variant_file(variant: str, bundle_variant: str) -> str:
    if variant in ONNX_FILES:
        return ONNX_FILES[variant]
    return "model.tflite" if variant == bundle_variant else f"model_{variant}.tflite"


def check_options(
    variants: Sequence[str],
    io: str,
    representative: int,
    budget_pp: float,
    min_agreement: float,
    bundle_variant: str,
    edgetpu: bool = False,
    num_threads: int = 1,
) -> tuple[str, ...]:
    """ConfigError naming the option for a bad value; returns the variants without duplicates.

    The one place these rules live: `trapcam convert` calls it on its arguments before anything
    heavy loads, and `convert_run` on its parameters.

    With `edgetpu`, the compiler must be installed: better to say so before minutes of converting.
    """
    chosen = tuple(dict.fromkeys(variants))
    if not chosen:
        raise ConfigError(f"--variants: name at least one of {list(VARIANTS)}")
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"--variants: unknown variant '{unknown[0]}'; expected some of {list(VARIANTS)}")
    if bundle_variant not in chosen:
        raise ConfigError(f"bundle variant '{bundle_variant}' is not among the variants {list(chosen)}")
    if io not in IO_TYPES:
        raise ConfigError(f"--io {io!r}: expected one of {list(IO_TYPES)}")
    if int(representative) < 1:
        raise ConfigError(f"--representative {representative}: need at least 1 calibration image")
    if not budget_pp >= 0:
        raise ConfigError(f"--budget {budget_pp}: expected percentage points >= 0")
    if not 0.0 <= min_agreement <= 1.0:
        raise ConfigError(f"--min-agreement {min_agreement}: expected a fraction within 0..1")
    if int(num_threads) < 1:
        raise ConfigError(f"--threads {num_threads}: need at least 1")
    if edgetpu and "int8" not in chosen:
        raise ConfigError("--edgetpu compiles the int8 model: add int8 to --variants")
    if edgetpu and shutil.which("edgetpu_compiler") is None:
        raise EdgeTpuError(INSTALL_HINT)
    return chosen


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a folder that is not a bundle (it may hold someone's files)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConvertError(f"{out_dir}: output exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
        raise ConvertError(f"{out_dir}: output folder exists and is not a model bundle; choose another --out")


def make_manifest(
    run: RunFolder,
    model_file: str,
    tflite: bytes | Path,
    files: Mapping[str, FileRole],
    directory: Path,
    validation: Mapping[str, Any] | None = None,
    open_set: OpenSetSpec | None = None,
) -> BundleManifest:
    """The manifest for `run` whose CPU model is `model_file` (input spec read from its input tensor)."""
    details = input_details(tflite)
    height, width = run.size
    if details["shape"] != [1, height, width, 3]:
        raise ConvertError(
            f"{model_file}: converted input shape {details['shape']} is not [1, {height}, {width}, 3]"
        )
    dtype = details["dtype"]
    if dtype not in ("uint8", "int8", "float32"):
        raise ConvertError(f"{model_file}: converted input type {dtype} is not uint8, int8 or float32")
    quantized = dtype != "float32"
    outputs = details["outputs"]
    heads = []
    for level in run.levels:
        labels = run.labels[level]
        if level not in outputs:
            raise ConvertError(
                f"{model_file}: the signature has no output '{level}' (it has {sorted(outputs)});"
                " the Keras model must output a dict keyed by level"
            )
        size = outputs[level][-1]
        if size != len(labels):
            raise ConvertError(
                f"{model_file}: output '{level}' has {size} classes but run.json lists {len(labels)} labels"
            )
        heads.append(
            OutputHead(
                level=level,
                signature_output=level,
                labels=labels,
                thresholds=run.thresholds.get(level),
                activation="none",  # the softmax is inside the model
            )
        )
    parents = run.meta.get("taxonomy_parents") or {}
    # trained from crops labelled not_insect: say so, so the trap does not count what it calls that
    not_insect = NOT_INSECT if all(NOT_INSECT in run.labels[level] for level in run.levels) else None
    embedding = None
    if EMBEDDING_OUTPUT in outputs:
        embedding = EmbeddingSpec(signature_output=EMBEDDING_OUTPUT, size=int(outputs[EMBEDDING_OUTPUT][-1]))
    return BundleManifest(
        format_version=FORMAT_VERSION,
        name=f"{run.meta.get('backbone', 'model')}-{run.path.name}",
        created_utc=datetime.now(timezone.utc),
        input=InputSpec(
            height=height,
            width=width,
            dtype=dtype,
            scale=details["scale"] if quantized else None,
            zero_point=details["zero_point"] if quantized else None,
            colour_order="RGB",
            normalization_in_model=True,
        ),
        signature="serving_default",
        outputs=heads,
        taxonomy=TaxonomySpec(
            levels=run.levels, parents={lvl: dict(parents[lvl]) for lvl in run.levels[1:] if lvl in parents}
        ),
        files=file_entries(directory, files),
        validation=dict(validation or {}),
        training=provenance(run),
        not_insect_label=not_insect,
        embedding=embedding,
        open_set=open_set,
    )


def provenance(run: RunFolder) -> dict[str, Any]:
    """What the model was trained on, from run.json and report.json."""
    report = run.report
    metrics = report.get("metrics") or {}
    test_metrics = {
        level: {k: metrics[level][k] for k in ("accuracy", "macro_f1", "n") if k in metrics[level]}
        for level in run.levels
        if isinstance(metrics.get(level), dict)
    }
    config = report.get("config") or {}
    training = report.get("training") or {}
    return {
        "run_dir": str(run.path.resolve()),
        "model_keras_sha256": sha256_file(run.model_path),
        "backbone": run.meta.get("backbone"),
        "weights": run.meta.get("weights"),
        "seed": run.meta.get("seed"),
        "levels": run.levels,
        "image_size": list(run.size),
        "heads": (config.get("model") or {}).get("heads"),
        "dataset": report.get("dataset"),
        "test_metrics": test_metrics,
        "hierarchical_consistency": report.get("hierarchical_consistency"),
        "epochs": len(training.get("epochs") or []) or None,
        "train_seconds": training.get("seconds"),
    }


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace out_dir by the finished staging folder (the old bundle is removed only afterwards)."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        old.rmdir()
        os.replace(out_dir, old)
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide it from the service user
    try:
        os.replace(staging, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


CHECK_FILES = ("quantization_check.txt", "quantization_check.json")


def keep_check(run_dir: Path, result: CheckResult, error: str | None) -> str:
    """Write the quantization check's table and figures into the run folder, whatever the outcome.

    Why: a missed budget leaves no bundle (nothing half-written), and the table on the screen was
    the only record of what was measured; it is what a user needs to decide what to try next.
    """
    run_dir = Path(run_dir)
    verdict = f"verdict: {result.verdict}" + (f" ({error})" if error else "")
    text = result.table() + "\n" + verdict + "\n"
    figures = result.to_json() | {"error": error}
    try:
        for name, content in zip(CHECK_FILES, (text, json.dumps(figures, indent=2) + "\n"), strict=True):
            atomic_write(run_dir / name, content.encode("utf-8"))
    except ExportError as exc:  # a run folder on read-only media: say so, the conversion itself stands
        return f"not kept ({exc})"
    return str(run_dir / CHECK_FILES[0])


def convert_run(
    run_dir: Path,
    out_dir: Path | None = None,
    variants: Sequence[str] = VARIANTS,
    io: str = "uint8",
    representative: int = 300,
    budget_pp: float = 1.0,
    min_agreement: float = 0.99,
    bundle_variant: str = "int8",
    *,
    edgetpu: bool = False,
    onnx: bool = False,
    num_threads: int = 1,
    echo: Callable[[str], None] | None = None,
) -> ConvertResult:
    """Convert a training run folder into a checked model bundle in `out_dir` (default RUN_DIR/bundle).

    edgetpu: also compile the int8 model for the Coral Edge TPU (needs `edgetpu_compiler`).
    onnx: also export model.onnx and model_int8.onnx for TensorRT, each checked with onnxruntime.

    ConvertError when the run folder is incomplete, a converter fails (naming the op when it can),
    or the int8 variant misses the budget (naming the level and both numbers); ConfigError for a
    bad option. `echo` receives the quantization table (also on a missed budget).
    """
    chosen = check_options(
        variants, io, representative, budget_pp, min_agreement, bundle_variant, edgetpu, num_threads
    )
    run = read_run(Path(run_dir))
    out_dir = Path(out_dir) if out_dir is not None else run.path / "bundle"
    _check_out_dir(out_dir)
    model = load_keras_model(run)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="trapcam-check-") as work:
            # the TFLite files carry the penultimate features too (the time-lapse tracker's cue)
            tflites = convert_variants(
                with_embedding(model, run.levels), run, chosen, io, representative, work_dir=Path(work)
            )
            names = {variant_file(v, bundle_variant): v for v in chosen}
            for name, variant in names.items():
                (staging / name).write_bytes(tflites[variant])

            images, samples = split_images(run, "test")
            truth = truth_indices(samples, run.labels)
            reference = keras_predict(model, images, run.levels)
            keras_figures = figures_for("keras", truth, reference, reference)
            gated = "int8" if "int8" in chosen else None
            result = CheckResult(
                images=len(images),
                keras=keras_figures,
                budget_pp=budget_pp,
                min_agreement=min_agreement,
                gated_variant=gated,
                verdict="passed" if gated else "ungated",
            )
            for variant in chosen:
                check_dir = Path(work) / f"bundle-{variant}"
                check_dir.mkdir()
                shutil.copyfile(staging / variant_file(variant, bundle_variant), check_dir / "model.tflite")
                manifest = make_manifest(
                    run, "model.tflite", tflites[variant], {"model.tflite": "cpu"}, check_dir
                )
                write_manifest(check_dir, manifest)
                try:
                    ran = run_on_edge(check_dir, images, num_threads=num_threads)
                except ModelError as exc:
                    raise ConvertError(f"{variant} model does not run on the edge runtime: {exc}") from None
                if variant == bundle_variant:
                    bundle_run = ran  # its test embeddings serve the open set's check too
                figures = figures_for(variant, truth, reference, ran.probs)
                figures.size_bytes = len(tflites[variant])
                figures.invoke_ms_per_crop = ran.timing["invoke_ms_per_crop"]
                figures.classify_ms_per_crop = ran.timing["classify_ms_per_crop"]
                spec = manifest.input
                figures.input = f"{spec.dtype}" + (
                    f" scale {spec.scale:g} zero point {spec.zero_point}" if spec.scale else ""
                )
                result.variants[variant] = figures
            roles: dict[str, FileRole] = {
                name: ("cpu" if variant == bundle_variant else "reference") for name, variant in names.items()
            }
            onnx_facts: dict[str, Any] | None = None
            try:
                if gated:
                    gate(result, gated)
                if onnx:
                    written, onnx_facts = _onnx_files(
                        model,
                        run,
                        staging,
                        Path(work),
                        images,
                        truth,
                        reference,
                        result,
                        representative,
                        num_threads,
                        echo,
                    )
                    for variant, role in written.items():
                        names[variant_file(variant, bundle_variant)] = variant
                        roles[variant_file(variant, bundle_variant)] = role
            except ConvertError as exc:
                result.passed, result.verdict = False, "failed"
                if echo:
                    echo(result.table())
                kept = keep_check(run.path, result, str(exc))
                raise ConvertError(f"{exc}. The check's table: {kept}") from None
            if echo:
                echo(result.table())
            kept = keep_check(run.path, result, None)
            if echo:
                echo(f"quantization check: {kept}")

            validation = result.to_json() | {"bundle_variant": bundle_variant, "io": io}
            validation["variants"] = {
                v: figs
                | {
                    "file": variant_file(v, bundle_variant)
                    if variant_file(v, bundle_variant) in roles
                    else None
                }
                for v, figs in validation["variants"].items()
            }
            if onnx_facts is not None:
                validation["onnx"] = onnx_facts
            if "int8" in chosen:
                validation["edgetpu"] = _edgetpu_step(
                    staging, variant_file("int8", bundle_variant), Path(work), edgetpu, echo
                )
                if edgetpu:
                    names[EDGETPU_FILE] = "edgetpu"
                    roles[EDGETPU_FILE] = "edgetpu"
            # the open-set statistics, from the bundle's own model (convert/open_set.py)
            open_set = fit_bundle_open_set(
                Path(work) / f"bundle-{bundle_variant}", run, bundle_run, num_threads=num_threads, echo=echo
            )
            manifest = make_manifest(
                run,
                "model.tflite",
                tflites[bundle_variant],
                roles,
                staging,
                validation=validation,
                open_set=open_set,
            )
            written = write_manifest(staging, manifest)
            load_bundle(staging)  # the device's own loader accepts it before it is put in place
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ConvertResult(out_dir=out_dir, manifest=written, check=result, files=names)


def _onnx_files(
    model: Any,
    run: RunFolder,
    staging: Path,
    work: Path,
    images: Any,
    truth: Mapping[str, Any],
    reference: Mapping[str, Any],
    result: CheckResult,
    representative: int,
    num_threads: int,
    echo: Callable[[str], None] | None,
) -> tuple[dict[str, FileRole], dict[str, Any]]:
    """Export and check model.onnx (must match Keras) and model_int8.onnx into `staging`.

    Returns ({variant: role} of the files written, the ONNX facts for model.json). The int8 file is
    left out, with the reason, when it misses the int8 budget: model.onnx (FP16 engine) still serves.
    """
    float_model = export_onnx(model, run.size, staging / ONNX_FILES["onnx"], run.levels)
    float_figures = measure_onnx("onnx", float_model, images, truth, reference, num_threads)
    result.variants["onnx"] = float_figures
    require_float_match(float_model, float_figures)
    facts: dict[str, Any] = {
        "input": float_model.input_name,
        "layout": "NHWC float32 RGB 0..255, dynamic batch",
        "outputs": list(float_model.output_names),
    }
    written: dict[str, FileRole] = {"onnx": "onnx"}
    calibration, _ = split_images(run, "train", limit=representative)
    candidate = quantize_onnx(float_model, work / ONNX_FILES["onnx-int8"], calibration)
    figures = measure_onnx("onnx-int8", candidate, images, truth, reference, num_threads)
    result.variants["onnx-int8"] = figures
    try:
        hold_to_budget(result, figures)  # the same rule as the TFLite int8 model's
    except ConvertError as exc:
        facts["int8_left_out"] = str(exc)
        if echo:
            echo(f"onnx: {ONNX_FILES['onnx-int8']} left out ({exc}); build the FP16 engine from model.onnx")
    else:
        shutil.copyfile(candidate.path, staging / ONNX_FILES["onnx-int8"])
        written["onnx-int8"] = "onnx"
    return written, facts


def _edgetpu_step(
    staging: Path, int8_file: str, work: Path, compile_it: bool, echo: Callable[[str], None] | None
) -> dict[str, Any]:
    """The int8 model's Edge TPU op report, and with `compile_it` the compiled model_edgetpu.tflite.

    Ops the Edge TPU cannot run (e.g. HARD_SWISH) are listed before compiling: the compiler leaves
    them, and in practice everything after the first of them, on the CPU, which is slow on a Pi.
    """
    report = edgetpu_report(staging / int8_file)
    figures: dict[str, Any] = {
        "source": int8_file,
        "ops": report.ops,
        "unsupported_ops": report.unsupported,
        "all_int8": report.all_int8,
        "compatible": report.compatible,
    }
    if echo and report.unsupported:
        listed = ", ".join(f"{name} x{count}" for name, count in report.unsupported.items())
        echo(f"edge tpu: ops the Edge TPU cannot run (they stay on the CPU): {listed}")
    if not compile_it:
        return figures
    compiled = compile_edgetpu(staging / int8_file, work / "edgetpu")
    shutil.copyfile(compiled.path, staging / EDGETPU_FILE)
    figures |= {"file": EDGETPU_FILE, "edgetpu_ops": compiled.edgetpu_ops, "cpu_ops": compiled.cpu_ops}
    if echo:
        echo(f"edge tpu: {compiled.edgetpu_ops} operations on the Edge TPU, {compiled.cpu_ops} on the CPU")
    return figures
