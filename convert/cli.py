"""`trapcam convert` and `trapcam bundle inspect|verify` (registered via the `trapcam.commands` entry point).

`convert` needs TensorFlow (trapcam[convert]); `bundle inspect` and `bundle verify` use only edge's
own loader and interpreter, so they also run on the trap.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, ModelError, TrapcamError
from edge.native_log import divert_native_stderr, quiet_environment

_VARIANTS = ("float32", "float16", "dynamic", "int8")


class MissingExtraError(TrapcamError):
    """The conversion dependencies (Keras, TensorFlow) are not installed."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="training run folder -> checked, quantized TFLite model bundle (needs trapcam[convert])",
    )
    p.add_argument(
        "run_dir", metavar="RUN_DIR", help="training run folder (model.keras, run.json, splits.csv)"
    )
    p.add_argument("--out", help="bundle folder to write (default: RUN_DIR/bundle)")
    p.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's and the converter's own log lines (else kept in a temporary log file, "
        "whose path is printed if the conversion fails)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=_VARIANTS,
        default=list(_VARIANTS),
        metavar="VARIANT",
        help=f"TFLite variants to build, some of {', '.join(_VARIANTS)} (default: all)",
    )
    p.add_argument(
        "--bundle-variant",
        choices=_VARIANTS,
        default="int8",
        help="the variant that becomes model.tflite (default: int8)",
    )
    p.add_argument("--io", choices=["uint8", "int8"], default="uint8", help="int8 model input/output type")
    p.add_argument(
        "--budget",
        type=float,
        default=1.0,
        metavar="PP",
        help="largest accuracy drop of the int8 model, in percentage points (default 1.0)",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=0.99,
        metavar="F",
        help="smallest top-1 agreement of the int8 model with Keras (default 0.99)",
    )
    p.add_argument(
        "--representative",
        type=int,
        default=300,
        metavar="N",
        help="calibration images from the train split (default 300)",
    )
    p.add_argument(
        "--edgetpu",
        action="store_true",
        help="also compile the int8 model for the Coral Edge TPU (needs edgetpu_compiler, x86-64 Linux)",
    )
    p.add_argument(
        "--onnx",
        action="store_true",
        help="also write model.onnx and model_int8.onnx (Q/DQ) for Jetson TensorRT, checked by onnxruntime",
    )
    p.add_argument("--threads", type=int, default=1, help="interpreter threads for the check")
    p.set_defaults(func=cmd_convert)

    b = sub.add_parser("bundle", help="inspect or verify a model bundle")
    bsub = b.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)
    pi = bsub.add_parser("inspect", help="print a bundle's manifest summary")
    pi.add_argument("path", metavar="PATH", help="bundle folder or model.json")
    pi.set_defaults(func=cmd_inspect)
    pv = bsub.add_parser("verify", help="check a bundle: manifest, every file's sha256, labels vs outputs")
    pv.add_argument("path", metavar="PATH", help="bundle folder or model.json")
    pv.set_defaults(func=cmd_verify)


def cmd_convert(args: argparse.Namespace) -> int:
    from convert.bundle_writer import check_options

    # the options' rules live in one place (the library checks them too): a bad value is one line
    # naming the option, before any TensorFlow is loaded
    check_options(
        args.variants,
        args.io,
        args.representative,
        args.budget,
        args.min_agreement,
        args.bundle_variant,
        args.edgetpu,
        num_threads=args.threads,
    )
    if importlib.util.find_spec("keras") is None or importlib.util.find_spec("tensorflow") is None:
        raise MissingExtraError("trapcam convert needs Keras and TensorFlow: pip install 'trapcam[convert]'")
    log = None
    if not args.verbose:
        quiet_environment()
        log = divert_native_stderr(Path(tempfile.gettempdir()) / f"trapcam-convert-{os.getpid()}.log")

    try:
        result = _convert(args)
    except TrapcamError:
        if log is not None and log.is_file() and log.stat().st_size:
            print(f"trapcam: TensorFlow's own log lines are in {log}", file=sys.stderr)
        raise
    if log is not None:
        log.unlink(missing_ok=True)
    print(f"bundle: {result.out_dir}")
    for name, variant in result.files.items():
        entry = result.manifest.files[name]
        print(f"  {name:24s} {variant:8s} {entry.role:9s} sha256 {entry.sha256[:12]}")
    return 0


def _convert(args: argparse.Namespace) -> Any:
    from convert.bundle_writer import convert_run

    return convert_run(
        Path(args.run_dir),
        Path(args.out) if args.out else None,
        variants=args.variants,
        io=args.io,
        representative=args.representative,
        budget_pp=args.budget,
        min_agreement=args.min_agreement,
        bundle_variant=args.bundle_variant,
        edgetpu=args.edgetpu,
        onnx=args.onnx,
        num_threads=args.threads,
        echo=print,
    )


def _manifest_path(path: Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: bundle not found")
    if path.is_dir():
        return path / "model.json"
    if path.name.endswith(".json"):
        return path
    raise ConfigError(f"{path}: expected a bundle folder or its model.json")


def inspect_text(path: Path) -> str:
    """The manifest summary `trapcam bundle inspect` prints."""
    from edge.classify.bundle import read_manifest

    manifest_path = _manifest_path(path)
    m = read_manifest(manifest_path)
    spec = m.input
    quant = f", scale {spec.scale:g}, zero point {spec.zero_point}" if spec.scale is not None else ""
    norm = "normalised inside the model" if spec.normalization_in_model else f"float range {spec.float_range}"
    lines = [
        f"bundle: {manifest_path.parent}",
        f"name: {m.name} (format {m.format_version}, created {m.created_utc.isoformat()})",
        f"input: {spec.height}x{spec.width}x3 {spec.dtype}{quant}, {spec.colour_order}, {norm}",
        f"signature: {m.signature}",
        "levels:",
    ]
    for head in m.outputs:
        if head.thresholds:
            th = f"thresholds {min(head.thresholds):.3f}..{max(head.thresholds):.3f}"
        else:
            th = "thresholds: default"
        lines.append(
            f"  {head.level:10s} {len(head.labels):4d} labels  output '{head.signature_output}'  {th}"
            f"  activation {head.activation or 'auto'}"
        )
    lines.append("files:")
    for name, entry in m.files.items():
        lines.append(f"  {name:24s} {entry.role:9s} sha256 {entry.sha256[:12]}")
    validation = m.validation
    if validation.get("variants"):
        lines.append(
            f"validation: {validation.get('images')} {validation.get('split', '')} crops,"
            f" budget {validation.get('budget_pp')} pp / agreement {validation.get('min_agreement')}:"
            f" {_verdict(validation)}"
        )
        keras = validation.get("keras", {})
        for level, figs in keras.items():
            lines.append(f"  keras    {level:10s} accuracy {figs['accuracy']:.3f}")
        for variant, figs in validation["variants"].items():
            for level, lf in figs.get("levels", {}).items():
                lines.append(
                    f"  {variant:8s} {level:10s} accuracy {lf['accuracy']:.3f}"
                    f"  agreement {lf['agreement']:.3f}"
                    f"  |dp| {lf['mean_abs_prob_diff']:.4f}"
                )
            lines.append(
                f"  {variant:8s} {figs.get('size_bytes', 0) / 1024:.1f} KB,"
                f" {figs.get('invoke_ms_per_crop', 0):.3f} ms/crop"
            )
    elif validation:
        lines.append(f"validation: {validation}")
    tpu = validation.get("edgetpu")
    if tpu:
        unsupported = ", ".join(f"{k} x{v}" for k, v in tpu.get("unsupported_ops", {}).items()) or "none"
        compiled = (
            f"; {tpu['file']}: {tpu['edgetpu_ops']} ops on the TPU, {tpu['cpu_ops']} on the CPU"
            if tpu.get("file")
            else "; not compiled (trapcam convert --edgetpu)"
        )
        lines.append(f"edge tpu: ops it cannot run: {unsupported}{compiled}")
    training = m.training
    if training:
        shown = {k: training[k] for k in ("backbone", "weights", "seed", "image_size") if k in training}
        lines.append("training: " + ", ".join(f"{k} {v}" for k, v in shown.items()))
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace) -> int:
    print(inspect_text(Path(args.path)))
    return 0


def verify_bundle(path: Path) -> str:
    """ModelError (one line) unless the bundle loads, every listed file matches, and labels fit outputs."""
    from edge.classify.bundle import check_tflite_file, load_bundle, sha256_file
    from edge.classify.classifier import Classifier

    bundle = load_bundle(Path(path))
    if bundle.source != "bundle":
        raise ModelError(f"{path}: not a model bundle (no model.json)")
    folder = bundle.model_path.parent
    for name, entry in bundle.manifest.files.items():
        file = folder / name
        if not file.is_file():
            raise ModelError(f"{file}: listed in model.json but missing")
        actual = sha256_file(file)
        if actual != entry.sha256:
            raise ModelError(
                f"{file}: sha256 mismatch: model.json expects {entry.sha256[:12]}…,"
                f" the file is {actual[:12]}…"
            )
        if name.endswith(".tflite") and entry.role in ("cpu", "reference"):
            check_tflite_file(file)
    classifier = Classifier(bundle, num_threads=1)  # labels vs output sizes, input quantization, signature
    counts = ", ".join(f"{level} {n}" for level, n in classifier.describe()["label_counts"].items())
    return f"ok: {folder} ({len(bundle.manifest.files)} files, {counts})"


def cmd_verify(args: argparse.Namespace) -> int:
    print(verify_bundle(Path(args.path)))
    return 0


def _verdict(validation: dict) -> str:
    """passed / FAILED / not measured (test split too small), with the check's resolution."""
    verdict = validation.get("verdict") or ("passed" if validation.get("passed") else "failed")
    text = {"passed": "passed", "failed": "FAILED", "unmeasured": "not measured (test split too small)"}.get(
        verdict, verdict
    )
    resolution = validation.get("resolution_pp")
    return text + (f"; one crop = {resolution:.2f} pp" if isinstance(resolution, (int, float)) else "")
