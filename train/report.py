"""The run report: every number as JSON (for scripts and the model bundle) and as Markdown (for people).

`write_report(run_dir, report)` takes one dict assembled by the training run. Known keys (all
optional except the metrics; unknown keys are kept in the JSON as they are):

    title          str
    levels         {level: level_metrics(...) result}  - in coarse-to-fine order
                   (or: levels = [level, ...] and metrics = {level: level_metrics(...) result})
    consistency    float | None  (hierarchical_consistency; also read from `hierarchical_consistency`)
    thresholds     {level: threshold_summary(...) result, plus "k"}
    model          {"backbone": str, "params": count_params(...) dict, ...}  (or top-level `parameters`)
    training       {"seconds": float, "images_per_s": float, "epochs": int, "best_val_loss": float, ...}
    dataset        {"splits": {split: n}, "class_counts": [row dicts]}  (or just {split: n})
    figures        {"history": path, "confusion": {level: path}, "gradcam": [paths]}; when absent,
                   found in run_dir: training_curves.png, confusion_<level>.png, gradcam/*.png
    notes          [str]  (e.g. why Grad-CAM was skipped)
    config         the TrainConfig as a JSON-able dict

Figure paths are written relative to `run_dir` (the Markdown links work from there), so the run
folder can be moved or zipped as a whole.
Numbers are written unrounded in the JSON; the Markdown rounds them for reading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from train.evaluate import EvaluationError, _atomic_write, plot_history, write_confusion

# The figure writers live with the metrics; re-exported here because they belong to the report too.
__all__ = ["plot_history", "render_markdown", "write_confusion", "write_report"]


def _plain(value: Any, key: str) -> Any:
    """numpy scalars/arrays, Paths and tuples -> JSON types; NaN/inf -> None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist(), key)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str):
        return value
    raise EvaluationError(
        f"report key '{key}' has a value of type {type(value).__name__} that JSON cannot hold"
    )


def _relative(value: Any, run_dir: Path) -> Any:
    """Paths (and strings naming files under run_dir) made relative to run_dir."""
    if isinstance(value, Mapping):
        return {k: _relative(v, run_dir) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_relative(v, run_dir) for v in value]
    if isinstance(value, (str, Path)):
        p = Path(value)
        if p.is_absolute():
            try:
                return p.resolve().relative_to(run_dir.resolve()).as_posix()
            except ValueError:
                return str(p)
        return p.as_posix() if isinstance(value, Path) else value
    return value


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def _canonical(report: Mapping[str, Any]) -> dict[str, Any]:
    """The documented shape, from either accepted shape (see the module docstring)."""
    out = dict(report)
    if isinstance(report.get("metrics"), Mapping):
        metrics = report["metrics"]
        order = report.get("levels")
        order = list(order) if isinstance(order, (list, tuple)) else list(metrics)
        out["levels"] = {lv: metrics[lv] for lv in order if lv in metrics}
    if not isinstance(out.get("levels"), Mapping):
        raise EvaluationError("report needs 'levels': {level: level_metrics result} (or 'metrics')")
    for level, m in out["levels"].items():
        if not isinstance(m, Mapping) or "accuracy" not in m:
            raise EvaluationError(f"report metrics for level '{level}' are not a level_metrics result")
    if out.get("consistency") is None:
        out["consistency"] = report.get("hierarchical_consistency")
    model = dict(out.get("model") or {})
    if "params" not in model and isinstance(report.get("parameters"), Mapping):
        model["params"] = report["parameters"]
    out["model"] = model
    dataset = dict(out.get("dataset") or {})
    if "splits" not in dataset:
        splits = {k: v for k, v in dataset.items() if isinstance(v, int) and not isinstance(v, bool)}
        if splits:
            dataset["splits"] = splits
    out["dataset"] = dataset
    return out


def _find_figures(run_dir: Path, levels: Sequence[str]) -> dict[str, Any]:
    """Figures that the run wrote under their usual names (used when the report names none)."""
    figures: dict[str, Any] = {}
    if (run_dir / "training_curves.png").exists():
        figures["history"] = "training_curves.png"
    confusion = {lv: f"confusion_{lv}.png" for lv in levels if (run_dir / f"confusion_{lv}.png").exists()}
    if confusion:
        figures["confusion"] = confusion
    gradcam = sorted(p.relative_to(run_dir).as_posix() for p in (run_dir / "gradcam").glob("*.png"))
    if gradcam:
        figures["gradcam"] = gradcam
    return figures


def render_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown page: summary tables per level, per-class F1 of the finest level, figures."""
    report = _canonical(report)
    levels: Mapping[str, Any] = report["levels"]
    md = [f"# {report.get('title') or 'Training report'}", ""]
    md += ["## Test metrics per level", ""]
    md += _table(
        [
            "level",
            "classes",
            "n",
            "accuracy",
            "macro precision",
            "macro recall",
            "macro F1",
            "top-k accuracy",
        ],
        [
            [
                lv,
                len(m.get("labels", [])),
                m.get("n"),
                m.get("accuracy"),
                m.get("macro_precision"),
                m.get("macro_recall"),
                m.get("macro_f1"),
                m.get("top_k_accuracy"),
            ]
            for lv, m in levels.items()
        ],
    )
    if report.get("consistency") is not None:
        md += [
            f"Hierarchical consistency (predicted species lie in the predicted family and order): "
            f"**{_fmt(report['consistency'])}**",
            "",
        ]
    if levels:
        finest = list(levels)[-1]
        thresholds = (report.get("thresholds") or {}).get(finest, {}).get("per_class", {})
        md += [f"## Per class, {finest}", ""]
        rows = [
            [c["label"], c["support"], c["precision"], c["recall"], c["f1"], thresholds.get(c["label"])]
            for c in levels[finest].get("per_class", [])
        ]
        md += _table(["class", "support", "precision", "recall", "F1", "abstention threshold"], rows)
    if report.get("thresholds"):
        md += ["## Abstention thresholds (mean - k*std of the top score of correct training samples)", ""]
        md += _table(
            ["level", "k", "min", "mean", "max", "classes on fallback"],
            [
                [
                    lv,
                    t.get("k"),
                    t.get("min"),
                    t.get("mean"),
                    t.get("max"),
                    ", ".join(t.get("fallback", [])) or "-",
                ]
                for lv, t in report["thresholds"].items()
            ],
        )
    model = report.get("model") or {}
    training = report.get("training") or {}
    if model or training:
        md += ["## Model and training", ""]
        rows = [[k, v] for k, v in model.items() if not isinstance(v, (Mapping, list))]
        rows += [[f"params.{k}", v] for k, v in (model.get("params") or {}).items()]
        rows += [[k, v] for k, v in training.items() if not isinstance(v, (Mapping, list))]
        md += _table(["quantity", "value"], rows)
    dataset = report.get("dataset") or {}
    if dataset.get("splits"):
        md += ["## Data", ""]
        md += _table(["split", "images"], list(dataset["splits"].items()))
    figures = report.get("figures") or {}
    if figures:
        md += ["## Figures", ""]
        if figures.get("history"):
            md += [f"![training curves]({figures['history']})", ""]
        for lv, path in (figures.get("confusion") or {}).items():
            md += [f"![confusion matrix, {lv}]({path})", ""]
        for path in figures.get("gradcam") or []:
            md += [f"![Grad-CAM]({path})", ""]
    if report.get("notes"):
        md += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(md).rstrip() + "\n"


def write_report(run_dir: Path, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write run_dir/report.md and run_dir/report.json; return (md_path, json_path)."""
    run_dir = Path(run_dir)
    if not isinstance(report, Mapping):
        raise EvaluationError(f"report must be a mapping, got {type(report).__name__}")
    levels = list(_canonical(report)["levels"])
    body = dict(report)
    if "figures" in body:
        body["figures"] = _relative(body["figures"], run_dir)
    else:
        body["figures"] = _find_figures(run_dir, levels)
    plain = _plain(body, "report")
    md_path, json_path = run_dir / "report.md", run_dir / "report.json"
    _atomic_write(json_path, json.dumps(plain, indent=2, allow_nan=False) + "\n")
    _atomic_write(md_path, render_markdown(plain))
    return md_path, json_path
