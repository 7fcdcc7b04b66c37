"""The `trapcam` command line.

Every input error is printed as one line (`trapcam: error: ...`) with a non-zero exit;
tracebacks are only for bugs. Heavy modules are imported inside each subcommand so that
`trapcam --help` and `validate-config` stay instant on a Raspberry Pi.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from edge import __version__
from edge.errors import ConfigError, TrapcamError

log = logging.getLogger("trapcam")


def _source_override(text: str, cfg: Any) -> Any:
    """Turn `--source` into a source section: folder, video file, USB index, URL or a kind name."""
    from edge.config import FolderSource, OpenCVSource, Picamera2Source, SyntheticSource

    keep = cfg.source.model_dump(include={"queue_size", "stall_timeout_s", "reopen_backoff_s", "interval_s"})
    if text == "synthetic":
        return SyntheticSource(kind="synthetic", **keep)
    if text == "picamera2":
        return Picamera2Source(kind="picamera2", **keep)
    if text.isdigit():
        return OpenCVSource(kind="opencv", device=int(text), **keep)
    if "://" in text:
        return OpenCVSource(kind="opencv", device=text, **keep)
    path = Path(text)
    if path.is_dir():
        base = cfg.source.model_dump(exclude={"kind", "path"}) if cfg.source.kind == "folder" else keep
        return FolderSource(kind="folder", path=path, **base)
    if path.is_file():
        return OpenCVSource(kind="opencv", device=str(path), **keep)
    raise ConfigError(
        f"--source {text!r}: not a folder, video file, camera index, URL, 'synthetic' or 'picamera2'"
    )


def cmd_validate_config(args: argparse.Namespace) -> int:
    """The file, then what `run` would open (edge/preflight.py): one line each, or the first error."""
    from edge.config import load_config, timelapse_advice
    from edge.preflight import preflight

    if (args.config is None) == (args.config_file is None):
        raise ConfigError("validate-config: give the configuration file once, as CONFIG or --config CONFIG")
    path = args.config or args.config_file
    cfg = load_config(path)
    print(f"{path}: the file is valid")
    if not args.file_only:
        for line in preflight(cfg):
            print(f"{path}: {line}")
    advice = timelapse_advice(cfg)
    if advice:
        print(f"{path}: note: {advice}")
    print(f"{path}: ok")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.logs import setup_logging

    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames {args.max_frames}: expected 1 or more frames")
    cfg = load_config(args.config)
    if args.source:
        cfg.source = _source_override(args.source, cfg)
    if args.data_dir:
        cfg.data_dir = Path(args.data_dir)
    setup_logging(args.log_level or cfg.logging.level, cfg.logging.format)

    from edge.pipeline import Pipeline  # after config checks: imports OpenCV and the interpreter

    pipeline = Pipeline(cfg, record_tracks=cfg.source.kind == "synthetic", from_start=args.from_start)

    def _graceful(signum: int, _frame: Any) -> None:
        log.info("signal %s: finishing the current frame and shutting down", signal.Signals(signum).name)
        pipeline.stop()

    signal.signal(signal.SIGTERM, _graceful)
    signal.signal(signal.SIGINT, _graceful)
    result = pipeline.run(max_frames=args.max_frames)

    from edge.summary import print_run_summary

    print_run_summary(cfg, pipeline, result)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from edge.sources.synthetic import parse_start
    from edge.synth.scene import SceneParams, SyntheticNight
    from edge.synth.writer import write_night, write_video

    params = SceneParams(
        scene=args.scene,
        width=args.width,
        height=args.height,
        frames=args.frames,
        frame_interval_s=args.interval,
        snapshot_every=args.snapshot_every,
        insects=args.insects,
        seed=args.seed,
        start=parse_start(args.start),
    )
    night = SyntheticNight(params)
    out = Path(args.out)
    if args.video:
        write_video(night, out, fps=args.fps)
    else:
        write_night(night, out, fmt=args.format)
    print(f"wrote {len(night)} frames with ground truth to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Daily CSV files (and optionally a Camtrap DP package) for the chosen days; prints each file."""
    from edge.config import load_config
    from edge.export import choose_days, export_days, validate_camtrap_dp, write_camtrap_dp
    from edge.export.camtrap import package_files

    cfg = load_config(args.config)
    out = Path(args.out) if args.out else cfg.export_path
    choice = choose_days(
        cfg.database_path,
        out,
        cfg.device_id,
        day=args.date,
        since=args.since,
        until=args.until,
        pending=args.pending,
        tz=cfg.site.timezone,
        day_starts_at=cfg.export.day_starts_at,
    )
    if choice.note:
        print(f"trapcam: {choice.note}", file=sys.stderr)
    days = choice.days
    if not days:
        return 0
    for path in export_days(cfg.database_path, out, days, cfg.site, cfg.export, device_id=cfg.device_id):
        print(path)
    if args.camtrap_dp or args.validate:
        pkg = write_camtrap_dp(
            cfg.database_path, out, days, cfg.site, cfg.export, cfg.device_id, crops_dir=cfg.crops_path
        )
        for path in package_files(pkg):
            print(path)
        if args.validate:
            problems = validate_camtrap_dp(pkg)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                print(
                    f"trapcam: error: {pkg}: not a valid Camtrap DP package: {problems[0]}{more}",
                    file=sys.stderr,
                )
                return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Plots and one HTML page for ecologists from the database; prints each file written."""
    from edge.config import load_config
    from edge.errors import ReportError
    from edge.report import write_report

    if args.top < 1:
        raise ReportError(f"--top {args.top}: expected at least 1")
    cfg = load_config(args.config)
    out = Path(args.out) if args.out else None
    for path in write_report(cfg, out, since=args.since, until=args.until, level=args.level, top=args.top):
        print(path)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run the trap's detector, classifier and tracker on annotated frames and report how they did."""
    from datetime import datetime, timezone

    from edge.config import load_config
    from edge.evaluation.counting import EvaluationError
    from edge.evaluation.ground_truth import load_ground_truth
    from edge.sources.synthetic import parse_start

    cfg = load_config(args.config)
    if not 0.0 < args.iou <= 1.0:
        raise EvaluationError(f"--iou {args.iou:g}: expected a number in (0, 1]")
    truth = load_ground_truth(
        Path(args.ground_truth),
        args.format,
        images=Path(args.images) if args.images else None,
        fps=args.fps,
        start=parse_start(args.start, "--start") if args.start else None,
        classes=Path(args.classes) if args.classes else None,
    )
    out = (
        Path(args.out) if args.out else cfg.data_dir / f"evaluate-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    )

    from edge.evaluation.run import evaluate_frames, isolated_config

    eval_cfg = isolated_config(cfg, out)
    database = eval_cfg.database_path
    if database.resolve() == cfg.database_path.resolve():
        raise EvaluationError(
            f"--out {out}: would use the trap's own database {cfg.database_path}; pick another folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        for old in (
            database,
            database.with_name(database.name + "-wal"),
            database.with_name(database.name + "-shm"),
        ):
            old.unlink(missing_ok=True)  # a fresh database for every evaluation
    except OSError as exc:
        raise EvaluationError(f"{out}: cannot prepare the output folder: {exc.strerror or exc}") from None
    report, _result = evaluate_frames(eval_cfg, truth, iou_threshold=args.iou, config_path=Path(args.config))
    md, js = report.write(out)
    print(report.to_markdown())
    print(f"report: {md}")
    print(f"        {js}")
    return 0


def cmd_install_service(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.service import next_steps, render_units, settings_for, write_units

    cfg = load_config(args.config)
    settings = settings_for(cfg, Path(args.config), user=args.user)
    units = render_units(settings)
    if args.print:
        for name, text in units.items():
            print(f"# ---- {name}\n{text}")
        return 0
    out = Path(args.out)
    for path in write_units(units, out):
        print(f"wrote {path}")
    print("next, as root:")
    for step in next_steps(settings, out):
        print(f"  {step}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """What this machine has (cameras, Coral, GPU, system, packages) and whether the config would run."""
    import json

    from edge.doctor import run_doctor

    report = run_doctor(Path(args.config) if args.config else None, bench_crops=args.bench_crops)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return report.exit_code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trapcam",
        description="Automated insect monitoring: run the camera trap, check configs, make synthetic nights.",
    )
    parser.add_argument("--version", action="version", version=f"trapcam {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run the trap: capture, detect, classify, track and store")
    p.add_argument("--config", required=True, help="YAML configuration file")
    p.add_argument(
        "--source",
        help="override the source: folder, video file, camera index, URL, 'synthetic' or 'picamera2'",
    )
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument(
        "--from-start",
        action="store_true",
        help="replays: process every frame again into a new run that supersedes the earlier runs of this "
        "source (default: resume after the last frame already stored, so nothing is counted twice)",
    )
    p.add_argument("--data-dir", help="override data_dir (database and crops)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "validate-config",
        help="check a configuration file and open what `run` would (model, labels, replay folder)",
    )
    p.add_argument("config", nargs="?", help="YAML configuration file")
    p.add_argument("-c", "--config", dest="config_file", help="the same, as every other command takes it")
    p.add_argument(
        "--file-only",
        action="store_true",
        help="check the file alone (a template whose model and folders are on another machine)",
    )
    p.set_defaults(func=cmd_validate_config)

    p = sub.add_parser("synth", help="write a synthetic trap night (frames or video) with ground truth")
    p.add_argument("--out", required=True, help="output folder (frames) or file (with --video)")
    p.add_argument("--scene", choices=["sheet", "flowers"], default="sheet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--insects", type=int, default=12)
    p.add_argument(
        "--interval",
        type=float,
        default=5.0,
        help="seconds between frames (between steps with --snapshot-every)",
    )
    p.add_argument(
        "--snapshot-every",
        type=int,
        default=1,
        help="a time-lapse camera: every n-th simulated step is a frame (--interval 5 --snapshot-every 12: "
        "one frame a minute); visits between two frames are never seen and not in the ground truth",
    )
    p.add_argument("--start", default="2026-07-01T21:30:00+00:00", help="ISO time of the first frame")
    p.add_argument("--format", choices=["jpg", "png"], default="jpg")
    p.add_argument("--video", action="store_true", help="write one video file instead of frames")
    p.add_argument("--fps", type=float, default=10.0)
    p.set_defaults(func=cmd_synth)
    p = sub.add_parser("export", help="write the daily CSV files (and a Camtrap DP package) for past days")
    p.add_argument("-c", "--config", required=True, help="YAML configuration file")
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--date",
        help="one day, YYYY-MM-DD (default: the last finished day the trap watched, named on screen)",
    )
    when.add_argument(
        "--since", help="first day, YYYY-MM-DD (with --until: a range, inclusive; unwatched days skipped)"
    )
    when.add_argument(
        "--pending",
        action="store_true",
        help="every finished day with data not yet exported to the output folder (the daily timer's choice)",
    )
    p.add_argument("--until", help="last day, YYYY-MM-DD (default: the last day that has ended)")
    p.add_argument("--out", help="output folder (default: export.directory, else <data_dir>/export)")
    p.add_argument("--camtrap-dp", action="store_true", help="also write a Camtrap DP 1.0 data package")
    p.add_argument("--validate", action="store_true", help="write and validate the Camtrap DP package")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("report", help="plots and one HTML page for ecologists from the database")
    p.add_argument("-c", "--config", required=True, help="YAML configuration file")
    p.add_argument("--since", help="first night, YYYY-MM-DD (default: the first night with data)")
    p.add_argument("--until", help="last night, YYYY-MM-DD, inclusive (default: the last night with data)")
    p.add_argument("--level", help="taxon level of the table and plots (default: the finest with labels)")
    p.add_argument("--out", help="output folder (default: <data_dir>/report)")
    p.add_argument("--top", type=int, default=8, help="taxa drawn by name in the plots; the rest is 'other'")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser(
        "evaluate",
        help="measure the trap on annotated frames: detection, tracking, counts, classification",
        description="Runs the detector, classifier and tracker of --config on frames with ground truth and "
        "writes report.md and report.json: detection precision/recall, MOTA and IDF1, count error per "
        "taxon, classification F1 per level. The trap's own data is not touched: the run uses a fresh "
        "database <out>/evaluate.db, saves no crops, publishes nothing over MQTT and does not switch the "
        "light; the schedule's windows still apply (frames outside them are not looked at).",
    )
    p.add_argument(
        "ground_truth", metavar="GROUND_TRUTH", help="synthetic folder, COCO .json, or MOT gt.txt / sequence"
    )
    p.add_argument("-c", "--config", required=True, help="YAML configuration of the trap to evaluate")
    p.add_argument(
        "--format", choices=["synthetic", "coco", "mot"], help="ground-truth format (default: detected)"
    )
    p.add_argument(
        "--images", help="folder of the images (COCO: default the JSON's folder; MOT: default img1)"
    )
    p.add_argument(
        "--fps", type=float, help="frames per second when the annotations carry no times (default 1)"
    )
    p.add_argument("--start", help="ISO time of the first frame when the annotations carry none")
    p.add_argument("--classes", help="MOT: labels.txt, line n names class n")
    p.add_argument(
        "--iou", type=float, default=0.5, help="IoU a box needs to match an annotation (default 0.5)"
    )
    p.add_argument("--out", help="output folder (default: <data_dir>/evaluate-<UTC time>)")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser(
        "install-service", help="write systemd units (trap loop with watchdog, daily export timer)"
    )
    p.add_argument("-c", "--config", required=True, help="YAML configuration file the service runs")
    p.add_argument("--user", default="trapcam", help="dedicated user the service runs as (default trapcam)")
    p.add_argument("--out", default="/etc/systemd/system", help="where to write the unit files")
    p.add_argument("--print", action="store_true", help="print the rendered units instead of writing them")
    p.set_defaults(func=cmd_install_service)
    p = sub.add_parser(
        "doctor", help="check cameras, Coral, GPU, system and packages; would the configured trap run here?"
    )
    p.add_argument("-c", "--config", help="YAML configuration file to check (backend, model, benchmark)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--bench-crops", type=int, default=32, help="crops per benchmark run of the model (0: no benchmark)"
    )
    p.set_defaults(func=cmd_doctor)
    _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Commands from the desktop packages (`train`, `convert`), found through entry points.

    `edge` must not import them (the trap installs no TensorFlow), so they register
    themselves under the `trapcam.commands` entry-point group; each `register(sub)` adds its
    parser and imports its heavy modules only when its command runs.
    """
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group="trapcam.commands"), key=lambda e: e.name):
        try:
            register = entry.load()
        except Exception as exc:  # a broken plugin must not take down the trap's own commands
            log.warning("command %s could not be loaded: %s", entry.name, exc)
            continue
        register(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except TrapcamError as exc:
        print(f"trapcam: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
