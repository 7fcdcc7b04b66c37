"""The summary `trapcam run` prints at the end: what was counted, and against ground truth
when the night was synthetic (so the demo shows whether the counts can be trusted)."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from edge.classify.types import UNSURE
from edge.config import TrapConfig

if TYPE_CHECKING:
    from edge.evaluation.counting import CountReport
    from edge.pipeline import Pipeline, RunResult


def synthetic_count_report(pipeline: Pipeline, result: RunResult) -> CountReport | None:
    """Compare the run's confirmed tracks with the synthetic night's ground truth."""
    night = getattr(pipeline.source, "night", None)
    if night is None or not result.track_boxes:
        return None
    from edge.evaluation.counting import evaluate_counts

    processed = sorted(result.track_boxes)
    ground_truth = {
        i: [(o.insect_id, o.species, o.box) for o in night.ground_truth(i)]
        for i in range(processed[0], processed[-1] + 1)  # a resumed replay starts later
    }
    confirmed = {t.track_id for t in result.confirmed_tracks}
    labels = {t.track_id: t.label for t in result.confirmed_tracks}
    return evaluate_counts(
        ground_truth,
        result.track_boxes,
        confirmed,
        labels=labels,
        mot_metrics=importlib.util.find_spec("motmetrics") is not None,
    )


def print_run_summary(cfg: TrapConfig, pipeline: Pipeline, result: RunResult) -> None:
    """Human-readable end-of-run report on stdout."""
    fps = result.frames / result.elapsed_s if result.elapsed_s > 0 else 0.0
    print()
    print(f"run {result.run_id} on {cfg.device_id}: {result.exit_reason}")
    print(
        f"  frames {result.frames} ({fps:.1f}/s), dropped {result.dropped}, corrupt {result.corrupt}, "
        f"detections {result.detections}"
    )
    if result.first_frame_s is not None:
        since = (
            f"{result.first_frame_process_s:.2f} s after the process started ("
            if result.first_frame_process_s is not None
            else "("
        )
        print(f"  first frame {since}{result.first_frame_s:.2f} s after the run began)")
    if result.inactive_frames:
        print(f"  outside the schedule's windows: {result.inactive_frames} frames not looked at")
    if result.skipped_frames:
        print(
            f"  already processed by an earlier run: {result.skipped_frames} frames, not counted again"
            + ("" if result.frames else " (nothing new; --from-start re-processes them)")
        )
    if result.carried_tracks:
        print(
            f"  tracks continued from the previous run: {result.continued_tracks} of {result.carried_tracks} "
            "(insects that sat through the restart, one count each)"
        )
    counts = result.counts()
    print(f"  insects counted (finished tracks): {sum(counts.values())}")
    if not cfg.classifier.enabled:
        print("    (no classifier configured: counts are not split by taxon)")
    else:
        for label, n in counts.items():
            background = result.named_background() if label == UNSURE else 0
            said = f" (of them {background} the model called background)" if background else ""
            print(f"    {n:5d}  {label}{said}")
    if result.not_insects:
        labels = ", ".join(sorted(pipeline.not_insect_labels))
        print(f"  not counted: {result.not_insects} track(s) the model called {labels}")
    silent_zero = result.why_nothing_counted(cfg.tracker)
    if silent_zero:
        print(f"  nothing counted: {silent_zero}")
    if result.partial_tracks:
        print(
            f"  not counted: {result.partial_tracks} partial track(s), only ever a nameless sliver at the "
            "frame's border (tracks.discard_reason = 'partial')"
        )
    report = synthetic_count_report(pipeline, result)
    if report is not None:
        print(f"  against ground truth: {report.summary()}")
    ops = result.operations or {}
    counters = ops.get("counters") or {}
    if counters:
        print(
            f"  summaries {counters.get('summaries', 0)}, health samples {counters.get('health_samples', 0)},"
            f" crops deleted for space {counters.get('crops_deleted', 0)}"
        )
    if counters.get("crops_paused") or counters.get("rows_thinned"):
        print(
            f"  disk full: {counters.get('crops_paused', 0)} crops not saved, "
            f"{counters.get('rows_thinned', 0)} detection rows of sitting insects left out "
            "(tracks and summaries all written)"
        )
    publisher, outbox = ops.get("publisher"), ops.get("outbox")
    if publisher and outbox:
        error = f" ({publisher['last_error']})" if publisher.get("last_error") else ""
        print(
            f"  mqtt {cfg.mqtt.host}:{cfg.mqtt.port}: {publisher['state']}{error};"
            f" outbox: {outbox['pending']} waiting, {outbox['delivered_total']} delivered"
        )
    print(f"  database: {cfg.database_path}")
    print(f"  crops:    {cfg.crops_path}")
