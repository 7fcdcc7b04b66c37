"""The demo's six steps, each done by the part of trapcam a user would run for it.

1. synthetic crops + a small hierarchical model trained on the CPU (`train`)
2. an int8 model bundle, checked against the Keras model (`convert`)
3. a synthetic light-trap night written to disk with its ground truth (`trapcam synth`)
4. that night through the device loop with the bundle (`trapcam evaluate`'s run: detector,
   classifier, tracker, SQLite; publishing too when a broker is given)
5. daily CSV files, a Camtrap DP package and the ecologist's plots (`trapcam export`, `report`)
6. counts per species against ground truth, written as the evaluation report

Everything lands under one folder; a config for the trap (`trap.yaml`) is written there too, so
every `trapcam` command can be tried on the demo's data afterwards.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from demo.options import NIGHT_START, DemoError, DemoOptions, broker_address
from demo.progress import Steps, epoch_callback
from edge.errors import TrapcamError
from edge.native_log import divert_native_stderr, quiet_environment

MARKER = "demo.json"
NATIVE_LOG = "native.log"  # TensorFlow's, absl's and the converter's own log lines (not with --verbose)
# 40% of the rendered crops are the test split that the int8 check runs on: with a few hundred test
# crops the 1-point budget measures the model, not the luck of one or two crops near a tie.
TEST_FRACTION = 0.4
VALIDATION_FRACTION = 0.15
# Training noise (std in grey levels) and no random contrast/brightness: see demo_training_config.
PIXEL_NOISE = 8.0
# Trained from scratch in a few epochs (see demo_training_config).
DEMO_BACKBONE = "small_cnn"
# What the demo writes under its folder; a re-run replaces exactly these and nothing else.
PARTS = ("train", "bundle", "night", "trap", "evaluation", "trap.yaml", MARKER, NATIVE_LOG)


@dataclass
class DemoResult:
    """What the demo made, for the summary it prints and for tests."""

    options: DemoOptions
    config_path: Path
    files: dict[str, Path] = field(default_factory=dict)
    train: Any = None  # train.run.TrainSummary
    convert: Any = None  # convert.bundle_writer.ConvertResult
    evaluation: Any = None  # edge.evaluation.report.EvaluationReport
    run: Any = None  # edge.pipeline.RunResult
    days: list[date] = field(default_factory=list)
    camtrap_problems: list[str] | None = None  # None: not validated (frictionless missing)


def prepare_folder(out: Path) -> None:
    """Make `out` ready: empty, or an earlier demo's folder (its parts are replaced).

    A folder with anything else in it is refused: the demo never deletes what it did not write.
    """
    if out.exists() and not out.is_dir():
        raise DemoError(f"{out}: exists and is not a folder; expected a folder for the demo's files")
    if out.is_dir():
        entries = {p.name for p in out.iterdir()}
        if entries and MARKER not in entries:
            raise DemoError(
                f"{out}: not empty and not an earlier demo's folder (no {MARKER}); "
                "choose another --out or empty it"
            )
        foreign = sorted(entries - set(PARTS))
        if foreign:
            raise DemoError(f"{out}: holds {foreign[0]!r}, which the demo did not write; move it away first")
        for name in entries:
            path = out / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def trap_config(options: DemoOptions, bundle: Path, night: Path) -> dict[str, Any]:
    """The trap's configuration for the demo: the recorded night replayed with the new bundle."""
    cfg: dict[str, Any] = {
        "device_id": "demo-trap",
        "data_dir": str((options.out / "trap").resolve()),
        "source": {
            "kind": "folder",
            "path": str(night.resolve()),
            "pattern": "*.jpg",
            "timestamps": "filename",
            "filename_format": "%Y%m%d-%H%M%S",
            "timezone": "UTC",
        },
        "detector": {"kind": "static_screen", "detect_width": 960},
        "classifier": {"enabled": True, "model": str(bundle.resolve())},
        "site": {"name": "Demo meadow", "latitude": 52.52, "longitude": 13.40, "timezone": "UTC"},
        "summary": {"interval_s": 300},
    }
    if options.broker is not None:
        host, port = broker_address(options.broker)
        cfg["mqtt"] = {"enabled": True, "host": host, "port": port}
    return cfg


def demo_training_config(options: DemoOptions, run_dir: Path, *, deterministic: bool = True) -> str:
    """The demo's training YAML: its recipe in one place (bench/model_margin.py trains it too).

    The backbone is the plain `small_cnn`, not MobileNetV2: from random weights (the demo cannot
    assume a download of ImageNet weights) MobileNetV2 needed 40 epochs (7 minutes on two cores)
    and on some seeds still left two species of one family half-learnt, so that its int8 copy
    flipped more answers than the 99% bar allows. Four conv-BN-ReLU stages reach 99.6-100% species
    accuracy on these crops in 15 epochs, with int8 agreeing on >= 99.9% of them.

    An int8 copy of a network changes its activations by about as much as a few grey levels of
    pixel noise; training with Gaussian pixel noise (PIXEL_NOISE) keeps answers that hold under it.
    Random contrast and brightness are off: colour is what tells several species apart (see
    DemoOptions for the sizes).
    """
    from edge.synth.species import SPECIES
    from train.presets import synthetic_run_config

    species = [s.name for s in SPECIES if options.species is None or s.name in options.species]
    return synthetic_run_config(
        run_dir,
        species,
        image_size=options.image_size,
        per_class=options.per_class,
        epochs=options.epochs,
        seed=options.seed,
        lr_schedule="cosine",
        test_fraction=TEST_FRACTION,
        validation_fraction=VALIDATION_FRACTION,
        noise=PIXEL_NOISE,
        colour_augment=False,
        deterministic=deterministic,
        backbone=DEMO_BACKBONE,
    )


def _train(steps: Steps, options: DemoOptions, result: DemoResult) -> Path:
    from edge.synth.species import SPECIES
    from train.config import parse_train_config
    from train.run import train

    run_dir = (options.out / "train").resolve()
    chosen = [s for s in SPECIES if options.species is None or s.name in options.species]
    species = [s.name for s in chosen]
    cfg = parse_train_config(demo_training_config(options, run_dir), "demo training config")
    families = len({s.family for s in chosen})
    orders = sorted({s.order for s in chosen})
    steps.say(
        f"  {len(species)} species of {families} families and {len(orders)} orders ({', '.join(orders)}), "
        f"{options.per_class} synthetic {options.image_size}-px crops each; "
        f"a small CNN ({cfg.model.backbone}) from scratch with heads for order, family and species"
    )
    with steps.bar("training", options.epochs) as advance:
        levels = ("order", "family", "species")
        summary = train(cfg, extra_callbacks=[epoch_callback(advance, levels)])
    result.train = summary
    for line in summary.describe().splitlines():
        steps.say(f"  {line}")
    result.files["training report"] = summary.files.get("report_md") or run_dir
    return run_dir


def _convert(steps: Steps, run_dir: Path, options: DemoOptions, result: DemoResult) -> Path:
    from convert.bundle_writer import convert_run
    from convert.tflite import ConvertError

    bundle = (options.out / "bundle").resolve()
    steps.say(
        f"  float32 and int8 TFLite; the int8 model must agree with Keras on >= {options.min_agreement:.0%} "
        f"of test crops and lose <= {options.budget_pp:g} percentage point(s) of accuracy"
    )
    lines: list[str] = []
    try:
        with steps.bar("converting", 1) as advance:
            converted = convert_run(
                run_dir,
                bundle,
                variants=("float32", "int8"),
                budget_pp=options.budget_pp,
                min_agreement=options.min_agreement,
                echo=lines.append,
            )
            advance()
    except ConvertError as exc:
        raise DemoError(
            f"{exc}; the demo's model is too weakly trained for a faithful int8 copy "
            "(raise --epochs or --per-class)"
        ) from None
    finally:  # the quantization table shows why, also when the budget was missed
        for line in "\n".join(lines).splitlines():
            steps.say(f"  {line}")
    result.convert = converted
    result.files["model bundle"] = bundle
    return bundle


def _night(steps: Steps, options: DemoOptions, result: DemoResult) -> Path:
    from edge.synth.scene import SceneParams, SyntheticNight
    from edge.synth.writer import write_night

    night = SyntheticNight(
        SceneParams(
            scene="sheet",
            width=options.width,
            height=options.height,
            frames=options.frames,
            frame_interval_s=5.0,
            insects=options.insects,
            seed=options.seed,
            start=NIGHT_START,
            species=options.species,
        )
    )
    folder = (options.out / "night").resolve()
    minutes = options.frames * 5.0 / 60.0
    steps.say(
        f"  white sheet under a light, {options.width}x{options.height}, one frame every 5 s "
        f"({minutes:.0f} minutes from {NIGHT_START:%Y-%m-%d %H:%M} UTC), {options.insects} insect visits"
    )
    with steps.bar("rendering", options.frames) as advance:
        write_night(night, folder, on_frame=lambda _i: advance())
    result.files["night (frames + ground_truth.csv)"] = folder
    return folder


def _device_loop(
    steps: Steps, options: DemoOptions, config_path: Path, night: Path, result: DemoResult
) -> Any:
    from edge.config import load_config
    from edge.evaluation.ground_truth import load_ground_truth
    from edge.evaluation.run import evaluate_frames

    cfg = load_config(config_path)
    truth = load_ground_truth(night, "synthetic")
    steps.say(
        "  static-screen detector, int8 classifier on the CPU, tracker, SQLite"
        + (f", MQTT to {cfg.mqtt.host}:{cfg.mqtt.port}" if cfg.mqtt.enabled else " (no broker given)")
    )
    with steps.bar("frames", len(truth.frames)) as advance:
        evaluation, run = evaluate_frames(cfg, truth, on_frame=lambda _n: advance(), config_path=config_path)
    result.evaluation, result.run = evaluation, run
    fps = run.frames / run.elapsed_s if run.elapsed_s > 0 else 0.0
    steps.say(f"  {run.frames} frames at {fps:.1f} frames/s, {run.detections} detections")
    ops = run.operations or {}
    publisher, outbox = ops.get("publisher"), ops.get("outbox")
    if cfg.mqtt.enabled and publisher and outbox:
        error = f" ({publisher['last_error']})" if publisher.get("last_error") else ""
        steps.say(
            f"  mqtt {cfg.mqtt.host}:{cfg.mqtt.port}: {publisher['state']}{error}; "
            f"{outbox['delivered_total']} messages delivered, {outbox['pending']} waiting in the outbox"
        )
    result.files["database"] = cfg.database_path
    result.files["crops"] = cfg.crops_path
    return cfg, truth


def _exports(steps: Steps, cfg: Any, truth: Any, result: DemoResult) -> None:
    from edge.export import export_days, validate_camtrap_dp, write_camtrap_dp
    from edge.export.data import day_of
    from edge.report import write_report

    days = sorted({day_of(f.timestamp, cfg.site.timezone, cfg.export.day_starts_at) for f in truth.frames})
    result.days = days
    with steps.bar("exporting", 3) as advance:
        csvs = export_days(
            cfg.database_path, cfg.export_path, days, cfg.site, cfg.export, device_id=cfg.device_id
        )
        advance()
        package = write_camtrap_dp(
            cfg.database_path,
            cfg.export_path,
            days,
            cfg.site,
            cfg.export,
            cfg.device_id,
            crops_dir=cfg.crops_path,
        )
        try:
            result.camtrap_problems = validate_camtrap_dp(package)
        except TrapcamError:
            result.camtrap_problems = None  # frictionless missing: said below, not hidden
        advance()
        report_files = write_report(cfg, None, since=days[0].isoformat(), until=days[-1].isoformat())
        advance()
    for path in csvs:
        result.files[f"daily CSV {path.name}"] = path
    result.files["Camtrap DP package"] = package
    result.files["report (HTML)"] = report_files[0]
    for path in report_files[1:]:
        result.files[f"report {path.name}"] = path
    if result.camtrap_problems is None:
        steps.say("  Camtrap DP written; not validated (pip install 'trapcam[export]' for frictionless)")
    elif result.camtrap_problems:
        steps.say(f"  Camtrap DP package is NOT valid: {result.camtrap_problems[0]}")
    else:
        steps.say("  Camtrap DP package validated (frictionless, Camtrap DP 1.0 profile)")


def _against_truth(steps: Steps, options: DemoOptions, result: DemoResult) -> None:
    report = result.evaluation
    md, js = report.write((options.out / "evaluation").resolve())
    result.files["evaluation report (Markdown)"] = md
    result.files["evaluation report (JSON)"] = js
    for line in truth_lines(report):
        steps.say(f"  {line}")


def _share(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def truth_lines(report: Any) -> list[str]:
    """The demo's verdict as printable lines: counts, tracking, detection, classification and a
    table of counts per species against ground truth (from an EvaluationReport)."""
    lines: list[str] = []
    t = report.tracking
    if t is not None:
        lines.append(
            f"counted {t.counted} insects, {t.true_count} were there (count error {t.count_error:+.1%}); "
            f"counted twice: {t.double_counted}, missed: {t.missed}, false tracks: {t.false_tracks}"
        )
        if t.mota is not None:
            lines.append(f"tracking: MOTA {t.mota:.3f}, IDF1 {_share(t.idf1)}, id switches {t.id_switches}")
    d = report.detection
    lines.append(
        f"detection: precision {_share(d.precision)}, recall {_share(d.recall)} ({d.tp} boxes found)"
    )
    for level, c in report.classification.items():
        views = [
            f"{name} accuracy {_share(s.accuracy)}, macro F1 {_share(s.macro_f1)}"
            for name, s in (("per track", c.tracks), ("per crop", c.crops))
            if s is not None
        ]
        if views:
            lines.append(f"{level}: " + "; ".join(views))
    rows = report.counts_per_taxon.get("species", [])
    if rows:
        width = max(28, *(len(r.label) for r in rows))
        lines.append("")
        lines.append(f"{'species':{width}s} {'true':>5s} {'counted':>8s} {'correct':>8s} {'error':>7s}")
        for r in rows:
            error = "-" if r.count_error is None else f"{r.count_error:+.0%}"
            correct = "-" if r.correct is None else str(r.correct)
            lines.append(f"{r.label:{width}s} {r.true:5d} {r.counted:8d} {correct:>8s} {error:>7s}")
    return lines


def run_demo(options: DemoOptions, steps: Steps | None = None) -> DemoResult:
    """Run all six steps into options.out; returns what was made (see `DemoResult`)."""
    options.check()
    steps = steps or Steps(6)
    out = options.out
    prepare_folder(out)
    if not options.verbose:
        quiet_environment()  # in case TensorFlow is not loaded yet
        divert_native_stderr((out / NATIVE_LOG).resolve())
    (out / MARKER).write_text(
        json.dumps({"written_by": "trapcam demo", "options": {k: str(v) for k, v in vars(options).items()}}),
        encoding="utf-8",
    )
    config_path = (out / "trap.yaml").resolve()
    result = DemoResult(options=options, config_path=config_path)

    steps.step("synthetic crops and a small model, trained on the CPU")
    run_dir = _train(steps, options, result)
    steps.step("int8 model bundle, checked against the trained model")
    bundle = _convert(steps, run_dir, options, result)
    steps.step("a synthetic light-trap night with ground truth")
    night = _night(steps, options, result)
    config_path.write_text(
        "# Written by `trapcam demo`: the demo's night replayed with the demo's model.\n"
        + yaml.safe_dump(trap_config(options, bundle, night), sort_keys=False),
        encoding="utf-8",
    )
    result.files["trap config"] = config_path
    steps.step("the night through the device loop")
    cfg, truth = _device_loop(steps, options, config_path, night, result)
    steps.step("daily CSV, Camtrap DP and plots")
    _exports(steps, cfg, truth, result)
    steps.step("counts against ground truth")
    _against_truth(steps, options, result)

    steps.say()
    steps.say("files:")
    width = max(len(k) for k in result.files)
    for name, path in result.files.items():
        steps.say(f"  {name:{width}s}  {path}")
    steps.say()
    day = result.days[0]
    steps.say("next, on the demo's data:")
    steps.say(f"  trapcam report --config {config_path} --since {day}")
    steps.say(f"  trapcam export --config {config_path} --date {day} --camtrap-dp --validate")
    steps.say(f"  trapcam evaluate {night} --config {config_path}   (the night again, into its own folder)")
    return result
