"""Evaluation of a trained classifier on the test split: metrics, consistency, thresholds, plots.

Metrics are plain numpy (no scikit-learn: the training extra stays small and the numbers are
easy to check by hand). Conventions, chosen to match scikit-learn's `zero_division=0`:

- precision of a class that is never predicted is 0 (0/0 -> 0), recall of a class with no true
  samples is 0, and F1 is 0 whenever precision + recall is 0;
- macro averages run over the classes that occur in `y_true` or in the predictions (the label
  set scikit-learn uses by default). A class that is in neither has no evidence either way; it
  is reported per class with support 0 and `in_macro: false` and does not dilute the average.
  A class that has samples but is never predicted counts with F1 = 0, as it should.

Plots use matplotlib with the Agg backend (no display on a training server); it is imported
lazily so that metric code works without it.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.classify.taxonomy import Taxonomy
from edge.errors import TrapcamError


class EvaluationError(TrapcamError):
    """Inputs to evaluation do not fit together (shapes, labels, taxonomy, history file)."""


# No class gets a threshold above this (see threshold_details); training configs may lower it.
DEFAULT_MAX_THRESHOLD = 0.9


# ---------------------------------------------------------------- prediction


def predict(model: Any, images: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per-level probabilities {level: (N, C) float32} of a Keras model on raw 0-255 RGB images.

    Accepts models whose outputs are a dict (the multitask model), a list (named by
    `model.output_names`) or a single tensor (a flat model: keyed by its one output name), so
    the evaluation does not depend on how the model was put together.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise EvaluationError(f"predict expects images of shape (N, H, W, 3), got {images.shape}")
    if len(images) == 0:
        raise EvaluationError("predict got no images (the test split is empty)")
    raw = model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    names = list(getattr(model, "output_names", None) or [])
    if isinstance(raw, Mapping):
        out = dict(raw)
    elif isinstance(raw, (list, tuple)):
        if len(names) != len(raw):
            names = [f"output_{i}" for i in range(len(raw))]
        out = dict(zip(names, raw, strict=True))
    else:
        out = {names[0] if names else "output": raw}
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


# ---------------------------------------------------------------- metrics


def _check_level(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], what: str = "") -> None:
    where = f" ({what})" if what else ""
    if probs.ndim != 2:
        raise EvaluationError(f"probabilities{where} must be (N, classes), got shape {probs.shape}")
    if y_true.ndim != 1 or len(y_true) != len(probs):
        raise EvaluationError(
            f"y_true{where} has shape {y_true.shape} but there are {len(probs)} rows of probabilities"
        )
    if probs.shape[1] != len(labels):
        raise EvaluationError(
            f"model output{where} has {probs.shape[1]} classes but {len(labels)} labels were given"
        )
    if len(y_true) and (y_true.min() < 0 or y_true.max() >= len(labels)):
        bad = int(y_true[(y_true < 0) | (y_true >= len(labels))][0])
        raise EvaluationError(f"y_true{where} has class index {bad}; valid are 0..{len(labels) - 1}")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (the zero_division=0 convention)."""
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def level_metrics(
    y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], top_k: int = 3
) -> dict[str, Any]:
    """Accuracy, macro and per-class precision/recall/F1 and the confusion matrix of one level.

    Returns plain Python numbers and lists (ready for JSON): accuracy, top_k_accuracy (when there
    are more than k classes), macro_precision, macro_recall, macro_f1, weighted_f1, n,
    labels, per_class [{label, precision, recall, f1, support, predicted, in_macro}],
    confusion (list of rows, true x predicted). See the module docstring for zero division.
    """
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    _check_level(y_true, probs, labels)
    n, c = probs.shape
    if n == 0:
        raise EvaluationError("level_metrics got no samples")
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, c)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    present = (support > 0) | (predicted > 0)
    out: dict[str, Any] = {
        "n": int(n),
        "accuracy": float(tp.sum() / n),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "weighted_f1": float((f1 * support).sum() / support.sum()),
        "labels": list(labels),
        "per_class": [
            {
                "label": labels[i],
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "predicted": int(predicted[i]),
                "in_macro": bool(present[i]),
            }
            for i in range(c)
        ],
        "confusion": cm.tolist(),
    }
    if c > top_k >= 1:
        top = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        out["top_k"] = int(top_k)
        out["top_k_accuracy"] = float((top == y_true[:, None]).any(axis=1).mean())
    return out


def hierarchical_consistency(
    pred_idx: Mapping[str, np.ndarray], labels: Mapping[str, Sequence[str]], taxonomy: Taxonomy
) -> float:
    """Fraction of samples whose predictions agree across levels (species in the predicted family...).

    A sample is consistent when, for every pair of adjacent predicted levels (in taxonomy order),
    the finer prediction's parent is the coarser prediction. With fewer than two levels every
    answer is trivially consistent (1.0). A predicted label missing from the taxonomy is a data
    error (the model and its taxonomy do not belong together) and raises EvaluationError.
    """
    levels = [lv for lv in taxonomy.levels if lv in pred_idx]
    unknown = set(pred_idx) - set(taxonomy.levels)
    if unknown:
        raise EvaluationError(f"predictions for level(s) {sorted(unknown)} not in taxonomy {taxonomy.levels}")
    for lv in levels:
        if lv not in labels:
            raise EvaluationError(f"no labels given for level '{lv}'")
    if not levels:
        raise EvaluationError("hierarchical_consistency got no predictions")
    arrays = {lv: np.asarray(pred_idx[lv]).astype(np.int64).reshape(-1) for lv in levels}
    n = len(arrays[levels[0]])
    for lv, a in arrays.items():
        if len(a) != n:
            raise EvaluationError(f"level '{lv}' has {len(a)} predictions, level '{levels[0]}' has {n}")
        if n and (a.min() < 0 or a.max() >= len(labels[lv])):
            raise EvaluationError(f"level '{lv}' has a class index outside 0..{len(labels[lv]) - 1}")
    if n == 0:
        raise EvaluationError("hierarchical_consistency got no samples")
    ok = np.ones(n, dtype=bool)
    for coarse, fine in itertools.pairwise(levels):
        # Map each fine class index to its parent's index at the coarse level once, then compare.
        coarse_index = {label: i for i, label in enumerate(labels[coarse])}
        parent_of = np.empty(len(labels[fine]), dtype=np.int64)
        for i, label in enumerate(labels[fine]):
            # The parent may sit more than one level up when a level is missing from pred_idx.
            lineage = taxonomy.ancestors(fine, label)
            parent = lineage.get(coarse)
            if parent is None:
                raise EvaluationError(f"{fine} '{label}' has no {coarse} in the taxonomy")
            parent_of[i] = coarse_index.get(parent, -1)
        ok &= parent_of[arrays[fine]] == arrays[coarse]
    return float(ok.mean())


# ---------------------------------------------------------------- abstention thresholds


def threshold_details(
    probs: np.ndarray,
    y_true: np.ndarray,
    k: float,
    max_threshold: float = DEFAULT_MAX_THRESHOLD,
    min_threshold: float = 0.0,
) -> list[dict[str, Any]]:
    """Per class: n correct, mean and std of their top score, threshold, and whether it fell back.

    The threshold follows Bjerge et al.: from the training samples of class c that the model
    classifies correctly, take the top score; threshold = clamp(mean - k * std, 0, max_threshold).
    std is the sample standard deviation (ddof=1), the estimate of the spread of new samples.
    The cap matters for a class the model has learnt by heart: its training scores are all ~1.0
    with no spread, and a threshold of ~1.0 is one that no new crop reaches (an int8 model's
    largest probability is 255/256), so the class would never be named on the trap.

    Fallback, for a class with fewer than 2 correctly classified samples (no spread to
    measure): the same formula over the correct samples of all classes of this level pooled;
    if the level has fewer than 2 correct samples too, 0.0 (never abstain: with no evidence,
    abstaining would discard every answer of that class).

    Floor: no threshold is below `min_threshold` (`evaluation.threshold_min`). A class whose
    training scores spread widely, or a pooled fallback on a small dataset, got thresholds down to
    0.15, and the model then named a taxon for insects it had never seen at scores of 0.18 (issue 25).
    """
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise EvaluationError(f"probabilities must be (N, classes), got shape {probs.shape}")
    _check_level(y_true, probs, [str(i) for i in range(probs.shape[1])], "thresholds")
    if k < 0 or not math.isfinite(k):
        raise EvaluationError(f"threshold k must be a finite number >= 0, got {k}")
    if not 0.0 <= max_threshold <= 1.0:
        raise EvaluationError(f"max_threshold must be in 0..1, got {max_threshold}")
    if not 0.0 <= min_threshold <= max_threshold:
        raise EvaluationError(f"min_threshold must be in 0..{max_threshold} (the cap), got {min_threshold}")
    top = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = probs.argmax(axis=1) == y_true if len(probs) else np.zeros(0, bool)

    def rule(scores: np.ndarray) -> tuple[float, float, float]:
        mean = float(scores.mean())
        std = float(scores.std(ddof=1))
        return mean, std, float(min(max_threshold, max(min_threshold, mean - k * std)))

    pooled = top[correct]
    pooled_threshold = rule(pooled)[2] if len(pooled) >= 2 else min_threshold
    out = []
    for c in range(probs.shape[1]):
        scores = top[correct & (y_true == c)]
        if len(scores) >= 2:
            mean, std, thr = rule(scores)
            out.append(
                {"n_correct": len(scores), "mean": mean, "std": std, "threshold": thr, "fallback": False}
            )
        else:
            mean = float(scores.mean()) if len(scores) else None
            out.append(
                {
                    "n_correct": len(scores),
                    "mean": mean,
                    "std": None,
                    "threshold": pooled_threshold,
                    "fallback": True,
                }
            )
    return out


def abstention_thresholds(
    probs: np.ndarray, y_true: np.ndarray, k: float, max_threshold: float = DEFAULT_MAX_THRESHOLD
) -> list[float]:
    """Per-class thresholds in label order (see `threshold_details` for the rule and fallback)."""
    return [d["threshold"] for d in threshold_details(probs, y_true, k, max_threshold)]


def threshold_summary(details: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """min / mean / max threshold, which classes fell back, and the full per-class list for the report."""
    values = [float(d["threshold"]) for d in details]
    if len(values) != len(labels):
        raise EvaluationError(f"{len(values)} thresholds for {len(labels)} labels")
    return {
        "min": min(values) if values else None,
        "mean": float(np.mean(values)) if values else None,
        "max": max(values) if values else None,
        "fallback": [labels[i] for i, d in enumerate(details) if d["fallback"]],
        "per_class": {labels[i]: values[i] for i in range(len(values))},
    }


def write_thresholds(
    path: Path, thresholds: Mapping[str, Sequence[float]], labels: Mapping[str, Sequence[str]], k: float
) -> Path:
    """thresholds.json for the model bundle: {k, levels: {level: {labels, thresholds}}} in label order.

    `convert` copies these into model.json's per-head `thresholds` (which must be in 0..1 and
    as many as the labels), so both are checked here, where the mistake would be made.
    """
    levels = {}
    for level, values in thresholds.items():
        if level not in labels:
            raise EvaluationError(f"thresholds for level '{level}' but no labels for it")
        vals = [float(v) for v in values]
        if len(vals) != len(labels[level]):
            raise EvaluationError(
                f"level '{level}' has {len(vals)} thresholds for {len(labels[level])} labels"
            )
        bad = [v for v in vals if not 0.0 <= v <= 1.0]
        if bad:
            raise EvaluationError(f"level '{level}' threshold {bad[0]} is outside 0..1")
        levels[level] = {"labels": list(labels[level]), "thresholds": vals}
    _atomic_write(Path(path), json.dumps({"k": float(k), "levels": levels}, indent=2) + "\n")
    return Path(path)


# ---------------------------------------------------------------- files and figures


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a killed run never leaves half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise EvaluationError("plots need matplotlib: pip install 'trapcam[train]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_confusion(
    cm: np.ndarray | list, labels: Sequence[str], csv_path: Path, png_path: Path | None
) -> None:
    """Confusion matrix as CSV (header row and first column are labels) and as a PNG heat map.

    CSV rows are true classes, columns predicted classes, cells are counts. The PNG colours each
    row by its fraction (so rare classes are as visible as common ones) and prints the counts
    when the matrix is small enough to read.
    """
    cm = np.asarray(cm)
    c = len(labels)
    if cm.shape != (c, c):
        raise EvaluationError(f"confusion matrix has shape {cm.shape} but there are {c} labels")
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *labels])
        for label, row in zip(labels, cm, strict=True):
            w.writerow([label, *(int(v) for v in row)])
    if png_path is None:
        return
    plt = _pyplot()
    frac = _safe_div(cm, cm.sum(axis=1, keepdims=True).repeat(c, axis=1))
    side = min(30.0, max(4.0, 0.45 * c + 2.5))
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    try:
        im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(c), labels=labels, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(c), labels=labels, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if c <= 30:
            for i in range(c):
                for j in range(c):
                    if cm[i, j]:
                        colour = "white" if frac[i, j] > 0.5 else "black"
                        ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7, color=colour)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
        fig.tight_layout()
        Path(png_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png_path, dpi=100)
    finally:
        plt.close(fig)


def read_history(history_csv: Path) -> list[dict[str, Any]]:
    """Rows of a Keras CSVLogger-style history (numbers as float, other cells as text)."""
    history_csv = Path(history_csv)
    try:
        with open(history_csv, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise EvaluationError(f"{history_csv}: training history not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"{history_csv}: cannot read training history: {exc}") from None
    if not rows:
        raise EvaluationError(f"{history_csv}: training history has no epochs")
    out = []
    for row in rows:
        parsed: dict[str, Any] = {}
        for key, value in row.items():
            if key is None:
                raise EvaluationError(f"{history_csv}: a row has more cells than the header")
            try:
                parsed[key] = float(value)
            except (TypeError, ValueError):
                parsed[key] = value
        out.append(parsed)
    return out


def plot_history(history_csv: Path, png_path: Path) -> Path:
    """Training curves: loss and val_loss, and per-level accuracy (train solid, validation dashed).

    The x axis counts epochs over both stages in file order (Keras restarts `epoch` at each
    fit call); where the `stage` column changes, a vertical line marks the start of fine-tuning.
    """
    rows = read_history(history_csv)
    columns = list(rows[0])
    if "loss" not in columns:
        raise EvaluationError(f"{history_csv}: training history has no 'loss' column (columns: {columns})")
    acc = [
        col
        for col in columns
        if not col.startswith("val_") and (col.endswith("accuracy") or col.endswith("_acc") or col == "acc")
    ]
    x = np.arange(1, len(rows) + 1)

    def series(col: str) -> np.ndarray:
        return np.array([r.get(col) if isinstance(r.get(col), float) else np.nan for r in rows])

    boundaries = []
    if "stage" in columns:
        stages = [r["stage"] for r in rows]
        boundaries = [i + 0.5 for i in range(1, len(stages)) if stages[i] != stages[i - 1]]
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    try:
        ax = axes[0]
        ax.plot(x, series("loss"), "-o", ms=3, label="loss")
        if "val_loss" in columns:
            ax.plot(x, series("val_loss"), "--o", ms=3, label="val_loss")
        ax.set_title("loss")
        ax = axes[1]
        for i, col in enumerate(acc):
            colour = f"C{i % 10}"
            ax.plot(x, series(col), "-", color=colour, label=col)
            if f"val_{col}" in columns:
                ax.plot(x, series(f"val_{col}"), "--", color=colour, label=f"val_{col}")
        ax.set_title("accuracy")
        ax.set_ylim(0.0, 1.02)
        for ax in axes:
            for b in boundaries:
                ax.axvline(b, color="grey", linestyle=":", linewidth=1.2)
                ax.text(b, ax.get_ylim()[1], " fine-tune", va="top", fontsize=8, color="grey")
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        Path(png_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png_path, dpi=100)
    finally:
        plt.close(fig)
    return Path(png_path)
