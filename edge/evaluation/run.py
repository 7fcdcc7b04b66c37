"""Run the trap's own pipeline on annotated frames and measure it (`trapcam evaluate`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# Labels are compared by scientific name: an annotated "Apis mellifera" is the model's "Apis mellifera
# (Honey Bee)" (iNaturalist-style labels, edge.classify.names).
from edge.classify.names import scientific_name
from edge.config import TrapConfig
from edge.evaluation.counting import EvaluationError, evaluate_counts
from edge.evaluation.ground_truth import GroundTruth, TruthObject, merge_levels
from edge.evaluation.metrics import classification_scores, detection_scores, match_boxes, taxon_counts
from edge.evaluation.report import EvaluationReport, LevelClassification
from edge.evaluation.source import GroundTruthFrameSource
from edge.pipeline import Pipeline, RunResult

__all__ = ["build_report", "evaluate_frames", "isolated_config", "require_motmetrics"]

NO_IDS = "the annotations have no track ids"


def require_motmetrics() -> None:
    """MOTA and IDF1 need motmetrics: say how to get it instead of skipping them silently."""
    try:
        import motmetrics  # noqa: F401
    except ImportError:
        raise EvaluationError(
            "tracking metrics (MOTA, IDF1, id switches) need the motmetrics package: "
            "pip install 'trapcam[evaluate]'"
        ) from None


def evaluate_frames(
    cfg: TrapConfig,
    truth: GroundTruth,
    *,
    iou_threshold: float = 0.5,
    on_frame: Callable[[int], None] | None = None,
    config_path: Path | None = None,
) -> tuple[EvaluationReport, RunResult]:
    """Run `Pipeline(cfg)` over the annotated frames (cfg as given: database, MQTT and classifier
    are the caller's choice) and compare what it found with the ground truth.

    on_frame(n) is called after each frame is read; config_path only labels the report.
    """
    if not (isinstance(iou_threshold, (int, float)) and 0.0 < iou_threshold <= 1.0):
        raise EvaluationError(f"iou threshold: got {iou_threshold!r}; expected a number in (0, 1]")
    if truth.has_ids:
        require_motmetrics()  # before a long run, not after it
    source = GroundTruthFrameSource(truth, on_frame)
    pipeline = Pipeline(cfg, source=source, record_tracks=True)
    model: dict[str, Any] | None = None
    if pipeline.classifier is not None:
        describe = pipeline.classifier.describe()
        model = {
            "name": describe.get("name"),
            "sha256": describe.get("sha256"),
            "levels": list(describe.get("levels") or ()),
            "backend": describe.get("backend"),
            "path": describe.get("model_path"),
        }
    result = pipeline.run()
    lineages = {tid: pipeline.lineage(track) for tid, track in result.finished_tracks.items()}
    report = build_report(
        truth,
        result,
        iou_threshold=iou_threshold,
        lineages=lineages,
        model=model,
        run_info={
            "config": str(config_path) if config_path is not None else None,
            "device_id": cfg.device_id,
            "detector": cfg.detector.kind,
            "database": str(cfg.database_path),
            "unreadable_frames": list(source.unreadable),
        },
        boxes_outside=source.boxes_outside,
    )
    return report, result


def build_report(
    truth: GroundTruth,
    result: RunResult,
    *,
    iou_threshold: float,
    lineages: Mapping[int, Mapping[str, str] | None],
    model: Mapping[str, Any] | None,
    run_info: Mapping[str, Any],
    boxes_outside: int = 0,
) -> EvaluationReport:
    """The report from a finished run (needs `record_tracks=True`) and the ground truth.

    lineages: counted track id -> {level: label} (Pipeline.lineage); model: None when no
    classifier ran, else at least its name, sha256 and levels.
    """
    processed = set(result.frame_detections)
    frames = [f for f in truth.frames if f.index in processed]
    unreadable = list(run_info.get("unreadable_frames", ()))
    skipped_boxes = sum(len(f.objects) for f in truth.frames if f.index not in processed)
    notes = list(truth.notes)
    if len(frames) < len(truth.frames):
        notes.append(
            f"{len(truth.frames) - len(frames)} of {len(truth.frames)} frames were not processed "
            f"({len(unreadable)} unreadable, {result.inactive_frames} outside the schedule's windows"
            f"{'' if result.exit_reason == 'end-of-source' else ', run ended: ' + result.exit_reason}); "
            f"their {skipped_boxes} annotated boxes are not scored"
        )
    if unreadable:
        shown = ", ".join(str(i) for i in unreadable[:10]) + (" ..." if len(unreadable) > 10 else "")
        notes.append(f"unreadable frames (index): {shown}")
    if boxes_outside:
        notes.append(
            f"{boxes_outside} annotated boxes reach outside their image: were the annotations made on images "
            "of another size?"
        )

    # ---------------------------------------------------------------- detection
    ious: list[float] = []
    matched: list[tuple[TruthObject, Any]] = []  # (annotated object, classification of its detection)
    n_truth = n_found = 0
    for frame in frames:
        found = result.frame_detections.get(frame.index, [])
        n_truth += len(frame.objects)
        n_found += len(found)
        for ti, fi, iou in match_boxes([o.box for o in frame.objects], [d[0] for d in found], iou_threshold):
            ious.append(iou)
            matched.append((frame.objects[ti], found[fi][1]))
    detection = detection_scores(len(frames), n_truth, n_found, ious)

    report = EvaluationReport(
        ground_truth={
            "source": str(truth.source),
            "format": truth.fmt,
            "frames": len(truth.frames),
            "boxes": truth.box_count,
            "insects": truth.insect_count,
            "levels": list(truth.levels),
            "has_ids": truth.has_ids,
            "clock": truth.clock,
        },
        run={
            "config": run_info.get("config"),
            "device_id": run_info.get("device_id"),
            "detector": run_info.get("detector"),
            "model": dict(model) if model is not None else None,
            "run_id": result.run_id,
            "exit_reason": result.exit_reason,
            "frames_processed": len(frames),
            "frames_unreadable": len(unreadable),
            "frames_inactive": result.inactive_frames,
            "boxes_not_scored": skipped_boxes,
            "detections": result.detections,
            "not_counted_partial": result.partial_tracks,
            "not_counted_not_insect": result.not_insects,
            "elapsed_s": round(result.elapsed_s, 3),
            "database": run_info.get("database"),
        },
        iou_threshold=float(iou_threshold),
        detection=detection,
        notes=notes,
    )

    # ---------------------------------------------------------------- tracking and counts
    track_to_gt: dict[int, int | None] = {}
    insects: dict[int, dict[str, str]] = {}
    finest = truth.levels[-1] if truth.levels else None
    if not truth.has_ids:
        report.tracking_note = NO_IDS
        report.counts_note = NO_IDS
    else:
        ground_truth = {
            f.index: [
                (o.insect_id, scientific_name(o.taxa.get(finest)) if finest else None, o.box)
                for o in f.objects
            ]
            for f in frames
        }
        for f in frames:
            for o in f.objects:
                assert o.insect_id is not None
                insects[o.insect_id] = {level: scientific_name(label) for level, label in o.taxa.items()}
        tracks = {i: boxes for i, boxes in result.track_boxes.items() if i in processed}
        counted = set(result.finished_tracks)
        report.tracking = evaluate_counts(ground_truth, tracks, counted, iou_threshold=iou_threshold)
        track_to_gt = dict(report.tracking.track_to_gt)
        if not truth.levels:
            report.counts_note = "the annotations have no taxa"
        else:
            for level in truth.levels:
                labels = {tid: scientific_name((lineages.get(tid) or {}).get(level)) for tid in counted}
                report.counts_per_taxon[level] = taxon_counts(level, insects, labels, track_to_gt)

    # ---------------------------------------------------------------- classification
    if model is None:
        report.classification_note = "no classifier ran (classifier.enabled is false)"
    elif not truth.levels:
        report.classification_note = "the annotations have no taxa"
    else:
        model_levels = tuple(model.get("levels") or ())
        for level in merge_levels([list(model_levels), list(truth.levels)]):
            if level not in model_levels:
                report.classification[level] = LevelClassification(
                    level, None, None, f"the model has no {level} head"
                )
                continue
            if level not in truth.levels:
                report.classification[level] = LevelClassification(
                    level, None, None, f"the annotations have no {level} labels"
                )
                continue
            crops = classification_scores(
                (scientific_name(o.taxa[level]), _crop_label(c, level)) for o, c in matched if level in o.taxa
            )
            tracks = None
            note = None
            if truth.has_ids:
                tracks = classification_scores(
                    (insects[gid][level], scientific_name((lineages.get(tid) or {}).get(level)))
                    for tid, gid in track_to_gt.items()
                    if gid is not None and level in insects[gid]
                )
            else:
                note = f"tracks view not available: {NO_IDS}"
            if crops.n and not {c.label for c in crops.per_class} & _predicted(matched, level):
                mismatch = "no label the model gave at this level occurs in the annotations (other names?)"
                note = f"{note}; {mismatch}" if note else mismatch
            report.classification[level] = LevelClassification(level, crops, tracks, note)
    return report


def _predicted(matched: list[tuple[TruthObject, Any]], level: str) -> set[str]:
    labels = (_crop_label(c, level) for _, c in matched)
    return {label for label in labels if label is not None}


def _crop_label(classification: Any, level: str) -> str | None:
    """The crop's own answer at `level` (None: abstained, or no classification)."""
    if classification is None:
        return None
    prediction = classification.levels.get(level)
    return scientific_name(prediction.label) if prediction is not None else None


def isolated_config(cfg: TrapConfig, out_dir: Path) -> TrapConfig:
    """`cfg` made safe to evaluate with: it must not touch the trap's own data.

    Database `<out_dir>/evaluate.db`, no crops saved (crops_dir `<out_dir>/crops`), MQTT off,
    the light relay not switched, and data_dir `<out_dir>` (the disk reserve, a kept detector
    background, a lamp-on sheet go there, never into the trap's folder); TensorRT engines are still
    read from (and cached in) the trap's engine folder, so an evaluation on a Jetson does not rebuild
    them. Detector, classifier, tracker and the schedule's windows stay as configured (frames outside
    the windows are not looked at, as on the trap).
    """
    from pydantic import ValidationError

    from edge.errors import ConfigError

    out_dir = Path(out_dir)
    storage = cfg.storage.model_copy(
        update={"database": out_dir / "evaluate.db", "crops_dir": out_dir / "crops", "save_crops": False}
    )
    classifier = cfg.classifier
    if classifier.backend == "tensorrt" and classifier.engine_cache_dir is None:
        classifier = classifier.model_copy(update={"engine_cache_dir": cfg.data_dir / "engines"})
    changed = cfg.model_copy(
        update={
            "data_dir": out_dir,
            "classifier": classifier,
            "storage": storage,
            "mqtt": cfg.mqtt.model_copy(update={"enabled": False}),
            "schedule": cfg.schedule.model_copy(update={"light": None}),
        }
    )
    try:
        return TrapConfig.model_validate(changed.model_dump())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"evaluation config: {where}: {first['msg']}") from None
