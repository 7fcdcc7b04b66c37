"""The evaluation report: one object, written as Markdown (for people) and JSON (for programs)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.classify.types import UNSURE
from edge.evaluation.counting import CountReport
from edge.evaluation.metrics import NOT_ANNOTATED, DetectionScores, LevelScores, TaxonCount
from edge.export.csvsafe import atomic_write

REPORT_VERSION = 1
TRACKING_KEYS = (
    "true_insects",
    "counted",
    "count_error",
    "double_counted",
    "extra_tracks",
    "missed",
    "false_tracks",
    "id_switches",
    "mota",
    "idf1",
    "missed_insects",
    "double_counted_insects",
    "false_track_ids",
)
VIEWS = {
    "crops": "crops (detections matched to an annotated box)",
    "tracks": "tracks (counted tracks matched to an annotated insect)",
}


@dataclass(frozen=True)
class LevelClassification:
    """Classification at one level in both views; None where a view cannot be scored (see note)."""

    level: str
    crops: LevelScores | None
    tracks: LevelScores | None
    note: str | None = None


@dataclass
class EvaluationReport:
    """Everything `trapcam evaluate` measured against one ground truth.

    ground_truth / run: the header (what was evaluated, with which config and model, how the run went).
    detection: box-level figures at `iou_threshold`.
    tracking: counting and tracking figures (None when the annotations have no track ids; see
        tracking_note). counts_per_taxon: level -> rows (empty with counts_note when unavailable).
    classification: level -> both views (empty with classification_note when unavailable).
    notes: what the reader must know to trust the figures (assumed frame rate, skipped frames, ...).
    """

    ground_truth: dict[str, Any]
    run: dict[str, Any]
    iou_threshold: float
    detection: DetectionScores
    tracking: CountReport | None = None
    tracking_note: str | None = None
    counts_per_taxon: dict[str, list[TaxonCount]] = field(default_factory=dict)
    counts_note: str | None = None
    classification: dict[str, LevelClassification] = field(default_factory=dict)
    classification_note: str | None = None
    notes: list[str] = field(default_factory=list)

    # ------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with the same keys on every report (null where a figure does not exist)."""
        tracking: dict[str, Any] = {"available": self.tracking is not None, "reason": self.tracking_note}
        tracking |= dict.fromkeys(TRACKING_KEYS)
        t = self.tracking
        if t is not None:
            tracking |= {
                "true_insects": t.true_count,
                "counted": t.counted,
                "count_error": t.count_error,
                "double_counted": t.double_counted,
                "extra_tracks": t.extra_tracks,
                "missed": t.missed,
                "false_tracks": t.false_tracks,
                "id_switches": t.id_switches,
                "mota": t.mota,
                "idf1": t.idf1,
                "missed_insects": sorted(k for k, v in t.gt_to_tracks.items() if not v),
                "double_counted_insects": {str(k): v for k, v in t.gt_to_tracks.items() if len(v) > 1},
                "false_track_ids": sorted(k for k, v in t.track_to_gt.items() if v is None),
            }
        counts = {
            "available": bool(self.counts_per_taxon),
            "reason": self.counts_note,
            "levels": {level: [asdict(r) for r in rows] for level, rows in self.counts_per_taxon.items()},
        }
        classification = {
            "available": bool(self.classification),
            "reason": self.classification_note,
            "levels": {
                level: {
                    "crops": _level_dict(c.crops),
                    "tracks": _level_dict(c.tracks),
                    "note": c.note,
                }
                for level, c in self.classification.items()
            },
        }
        return _clean(
            {
                "report_version": REPORT_VERSION,
                "ground_truth": self.ground_truth,
                "run": self.run,
                "iou_threshold": self.iou_threshold,
                "detection": asdict(self.detection),
                "tracking": tracking,
                "counts_per_taxon": counts,
                "classification": classification,
                "notes": list(self.notes),
            }
        )

    # ------------------------------------------------------------ Markdown

    def to_markdown(self) -> str:
        """Tables an ecologist can read (and paste into a lab notebook)."""
        gt, run, d = self.ground_truth, self.run, self.detection
        out: list[str] = ["# Evaluation against ground truth", ""]
        insects = f", {gt['insects']} insects" if gt.get("insects") is not None else ""
        model = run.get("model")
        model_text = (
            f"{model['name']} (sha256 {str(model['sha256'])[:12]}…; levels {', '.join(model['levels'])})"
            if model
            else "none (classifier off: detection, tracking and counts only)"
        )
        header = [
            (
                "ground truth",
                f"`{gt['source']}` ({gt['format']}: {gt['frames']} frames, {gt['boxes']} boxes{insects})",
            ),
            ("taxonomic levels", ", ".join(gt["levels"]) or "none annotated"),
            ("config", f"`{run['config']}`" if run.get("config") else "(given in code)"),
            ("detector", str(run.get("detector"))),
            ("model", model_text),
            ("IoU threshold", f"{self.iou_threshold:g}"),
            (
                "run",
                f"{run['frames_processed']} frames processed, {run['frames_unreadable']} unreadable, "
                f"{run['frames_inactive']} outside the schedule; "
                f"{run['exit_reason']}, {run['elapsed_s']:.1f} s",
            ),
            (
                "not counted",
                f"{run.get('not_counted_partial', 0)} partial (slivers at the frame's border), "
                f"{run.get('not_counted_not_insect', 0)} voted not an insect",
            ),
        ]
        out += ["| | |", "|---|---|", *[f"| {k} | {_esc(v)} |" for k, v in header], ""]

        out += ["## Detection", ""]
        out += _table(
            [
                "frames",
                "annotated boxes",
                "detections",
                "TP",
                "FP",
                "FN",
                "precision",
                "recall",
                "F1",
                "mean IoU",
            ],
            [
                [
                    d.frames,
                    d.truth_boxes,
                    d.detections,
                    d.tp,
                    d.fp,
                    d.fn,
                    _f(d.precision),
                    _f(d.recall),
                    _f(d.f1),
                    _f(d.mean_iou),
                ]
            ],
        )
        out += [
            "",
            f"Boxes are paired per frame (Hungarian, IoU ≥ {self.iou_threshold:g}). "
            "One insect cut into two boxes counts as one TP and one FP; "
            "two touching insects found as one box as one TP and one FN.",
            "",
        ]

        out += ["## Tracking and counts", ""]
        t = self.tracking
        if t is None:
            out += [f"Not available: {self.tracking_note}", ""]
        else:
            out += _table(
                [
                    "true insects",
                    "counted",
                    "count error",
                    "double-counted",
                    "missed",
                    "false tracks",
                    "id switches",
                    "MOTA",
                    "IDF1",
                ],
                [
                    [
                        t.true_count,
                        t.counted,
                        _pct(t.count_error),
                        f"{t.double_counted} (+{t.extra_tracks} tracks)",
                        t.missed,
                        t.false_tracks,
                        _i(t.id_switches),
                        _f(t.mota),
                        _f(t.idf1),
                    ]
                ],
            )
            out += [
                "",
                "Counted = finished, confirmed tracks (what the trap reports). "
                "A track belongs to the insect it overlaps in most frames.",
                "",
            ]
        if self.counts_per_taxon and model is None:
            # Without a classifier no track has a taxon: show what was there, not rows of -100%.
            n = t.counted if t is not None else 0
            out += [
                f"No classifier ran: the {n} counted tracks are not split by taxon. Annotated insects:",
                "",
            ]
            for level, rows in self.counts_per_taxon.items():
                out += [f"### Annotated insects per {level}", ""]
                out += _table(["label", "true"], [[r.label, r.true] for r in rows if r.label != UNSURE])
                out.append("")
        elif self.counts_per_taxon:
            for level, rows in self.counts_per_taxon.items():
                out += [f"### Counts per {level}", ""]
                out += _table(
                    ["label", "true", "counted", "correct", "count error"],
                    [
                        [
                            r.label,
                            r.true if r.label != UNSURE else "",
                            r.counted,
                            _i(r.correct) if r.label not in (UNSURE, NOT_ANNOTATED) else "",
                            _pct(r.count_error),
                        ]
                        for r in rows
                    ],
                )
                out.append("")
        elif self.counts_note and t is not None:
            out += [f"Counts per taxon not available: {self.counts_note}", ""]

        out += ["## Classification", ""]
        if not self.classification:
            out += [f"Not available: {self.classification_note}", ""]
        else:
            rows = []
            for level, c in self.classification.items():
                for view in ("crops", "tracks"):
                    s: LevelScores | None = getattr(c, view)
                    if s is None:
                        continue
                    rows.append(
                        [level, VIEWS[view], s.n, _f(s.accuracy), _share(s.abstained_share), _f(s.macro_f1)]
                    )
            if rows:
                out += _table(["level", "view", "n", "accuracy", "abstained", "macro F1"], rows)
                out += [
                    "",
                    "Abstentions (unsure) count as wrong; "
                    "macro F1 is the mean F1 over the annotated classes.",
                    "",
                ]
            for level, c in self.classification.items():
                if c.note:
                    out.append(f"- {level}: {c.note}")
            if any(c.note for c in self.classification.values()):
                out.append("")
            scored = [
                lv for lv, c in self.classification.items() if c.crops is not None or c.tracks is not None
            ]
            if scored:
                finest = scored[-1]
                c = self.classification[finest]
                out += [f"### Per class: {finest}", ""]
                table_rows = []
                for view in ("crops", "tracks"):
                    s = getattr(c, view)
                    if s is None:
                        continue
                    for k in s.per_class:
                        table_rows.append(
                            [
                                k.label,
                                view,
                                k.support,
                                k.predicted,
                                k.correct,
                                _f(k.precision),
                                _f(k.recall),
                                _f(k.f1),
                            ]
                        )
                out += _table(
                    ["class", "view", "annotated", "predicted", "correct", "precision", "recall", "F1"],
                    table_rows,
                )
                out.append("")

        if self.notes:
            out += ["## Notes", "", *[f"- {_esc(n)}" for n in self.notes], ""]
        return "\n".join(out)

    # ------------------------------------------------------------ files

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """Write report.md and report.json into `out_dir` (created), each replaced atomically."""
        out_dir = Path(out_dir)
        md, js = out_dir / "report.md", out_dir / "report.json"
        atomic_write(md, self.to_markdown().encode("utf-8"))
        atomic_write(js, (json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        return md, js


# ---------------------------------------------------------------- helpers


def _level_dict(scores: LevelScores | None) -> dict[str, Any] | None:
    return None if scores is None else asdict(scores)


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats -> None, tuples -> lists, Paths -> str."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _f(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _pct(value: float | None) -> str:
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return "∞"
    return f"{value:+.1%}" if value else "0.0%"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _i(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def _esc(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_esc(c) for c in row) + " |" for row in rows]
    return lines
