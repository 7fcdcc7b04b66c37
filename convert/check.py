"""The quantization check: Keras float predictions vs each TFLite variant run through the edge runtime.

Every variant is written as a temporary bundle and run by `edge.classify.classifier.Classifier`,
the code the trap runs (BGR uint8 crops, its own input quantization and output dequantization),
so what is measured here is what the device will do. Per variant and level: accuracy, macro F1,
top-1 agreement with Keras, mean absolute probability difference; per variant: file size and
latency per crop.

`check_budget` is the gate: the int8 model may lose at most `budget_pp` percentage points of
accuracy and must agree with Keras on top-1 at least `min_agreement` at every level.

A test split of n crops measures in steps of one crop = 100/n percentage points (the check's
resolution). Where one crop is worth more than half of the budget (or of the allowed disagreement),
the split is too small to measure the budget: one crop near a tie, which another CPU's float
training flips, would decide between certifying and refusing. Then the verdict is "unmeasured":
the figures are recorded, the bundle is neither certified nor refused, and only a miss of more than
`CLEAR_MISS_CROPS` crops beyond the budget, which no single crop explains, is still refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from convert.tflite import ConvertError

# On a test split too small to measure the budget, a miss by more than this many crops is refused all the
# same: a broken int8 model must not slip through because its test split was small.
CLEAR_MISS_CROPS = 3
# The smallest test split that measures convert's default bar (1 pp, 99%): one crop = 0.5 pp.
DEFAULT_MEASURABLE_CROPS = 200


@dataclass(frozen=True)
class LevelFigures:
    """One level of one model: against the truth, and against the Keras float model."""

    accuracy: float
    macro_f1: float
    agreement: float  # top-1 agreement with Keras (1.0 for Keras itself)
    mean_abs_prob_diff: float  # mean |p - p_keras| over crops and classes


@dataclass
class VariantFigures:
    """One model (a TFLite variant, or "keras") on the test split."""

    variant: str
    levels: dict[str, LevelFigures]
    size_bytes: int = 0
    invoke_ms_per_crop: float = 0.0
    classify_ms_per_crop: float = 0.0
    input: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["levels"] = {k: asdict(v) for k, v in self.levels.items()}
        return out


@dataclass
class CheckResult:
    """The check's figures: Keras first, then every variant, plus the budget it was held to."""

    images: int
    keras: VariantFigures
    variants: dict[str, VariantFigures] = field(default_factory=dict)
    budget_pp: float = 1.0
    min_agreement: float = 0.99
    gated_variant: str | None = "int8"
    passed: bool = True
    verdict: str = "passed"  # "passed", "failed" or "unmeasured" (test split too small for the budget)

    @property
    def resolution_pp(self) -> float:
        """One test crop, in percentage points of accuracy or agreement."""
        return resolution_pp(self.images)

    @property
    def measurable(self) -> bool:
        return budget_measurable(self.images, self.budget_pp, self.min_agreement)

    def to_json(self) -> dict[str, Any]:
        return {
            "split": "test",
            "images": self.images,
            "runtime": "edge.classify.classifier.Classifier",
            "budget_pp": self.budget_pp,
            "min_agreement": self.min_agreement,
            "resolution_pp": round(self.resolution_pp, 4),
            "measurable": self.measurable,
            "verdict": self.verdict,
            "gated_variant": self.gated_variant,
            "passed": self.passed,
            "keras": {k: asdict(v) for k, v in self.keras.levels.items()},
            "variants": {name: v.to_json() for name, v in self.variants.items()},
        }

    def table(self) -> str:
        return format_table(self)


# ---------------------------------------------------------------- pure figures


def macro_f1(truth: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Unweighted mean of per-class F1 over all `classes` (a class never seen nor predicted scores 0)."""
    scores = []
    for c in range(classes):
        tp = int(np.sum((predicted == c) & (truth == c)))
        fp = int(np.sum((predicted == c) & (truth != c)))
        fn = int(np.sum((predicted != c) & (truth == c)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores)) if scores else 0.0


def level_figures(truth: np.ndarray, keras_probs: np.ndarray, probs: np.ndarray) -> LevelFigures:
    """Figures of `probs` (N x C) against the true class indices and the Keras probabilities (N x C)."""
    truth = np.asarray(truth).reshape(-1)
    keras_probs = np.asarray(keras_probs, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape != keras_probs.shape or probs.shape[0] != truth.shape[0]:
        raise ConvertError(
            f"quantization check: predictions {probs.shape} vs Keras {keras_probs.shape}"
            f" vs {truth.shape[0]} labels"
        )
    predicted = np.argmax(probs, axis=1)
    reference = np.argmax(keras_probs, axis=1)
    return LevelFigures(
        accuracy=float(np.mean(predicted == truth)),
        macro_f1=macro_f1(truth, predicted, probs.shape[1]),
        agreement=float(np.mean(predicted == reference)),
        mean_abs_prob_diff=float(np.mean(np.abs(probs - keras_probs))),
    )


def figures_for(
    variant: str,
    truth: Mapping[str, np.ndarray],
    keras_probs: Mapping[str, np.ndarray],
    probs: Mapping[str, np.ndarray],
) -> VariantFigures:
    """VariantFigures from per-level arrays (no timing): also what tests build by hand."""
    return VariantFigures(
        variant, {level: level_figures(truth[level], keras_probs[level], probs[level]) for level in truth}
    )


def resolution_pp(images: int) -> float:
    """What one test crop is worth in percentage points (accuracy drop or agreement)."""
    return 100.0 / images if images > 0 else float("inf")


def budget_measurable(images: int, budget_pp: float, min_agreement: float) -> bool:
    """True when one crop is worth at most half of the budget and of the allowed disagreement.

    A zero tolerance (budget 0 pp, agreement 1.0) is an exact demand and is always measured.
    """
    one = resolution_pp(images)
    tolerances = [t for t in (budget_pp, 100.0 * (1.0 - min_agreement)) if t > 1e-9]
    return all(one <= t / 2 + 1e-9 for t in tolerances)


def crops_needed(budget_pp: float, min_agreement: float) -> int:
    """The smallest test split on which one crop is worth at most half of both tolerances."""
    tolerances = [t for t in (budget_pp, 100.0 * (1.0 - min_agreement)) if t > 1e-9]
    return max((math.ceil(200.0 / t - 1e-9) for t in tolerances), default=1)


def unmeasured_note(images: int, budget_pp: float, min_agreement: float) -> str:
    """The one line said when the test split cannot measure the budget."""
    needed = crops_needed(budget_pp, min_agreement)
    return (
        f"the test split is too small to measure the budget: one crop of {images} is"
        f" {resolution_pp(images):.2f} pp, more than half of {budget_pp:g} pp / {1 - min_agreement:.2%}"
        f" disagreement; the int8 figures are recorded, neither certified nor refused"
        f" (hold out at least {needed} test crops to measure it)"
    )


def check_budget(
    keras: VariantFigures,
    candidate: VariantFigures,
    budget_pp: float = 1.0,
    min_agreement: float = 0.99,
    *,
    slack_crops: int = 0,
    images: int | None = None,
) -> None:
    """ConvertError naming the worst level and both numbers when `candidate` misses the budget.

    The accuracy budget is judged first, then the agreement; of the levels that miss, the one
    that misses most is named (a species drop of 8 pp says more than a family drop of 2).
    slack_crops / images: tolerate a miss of up to `slack_crops` crops of `images` beyond the budget
    (the "unmeasured" case of a too small test split refuses only clear misses).
    """
    slack_pp = 100.0 * slack_crops / images if slack_crops and images else 0.0
    drops: dict[str, float] = {}
    for level, ref in keras.levels.items():
        drops[level] = 100.0 * (ref.accuracy - candidate.levels[level].accuracy)
    over = {level: drop for level, drop in drops.items() if drop > budget_pp + slack_pp + 1e-9}
    if over:
        level = max(over, key=lambda k: over[k])
        ref, got = keras.levels[level], candidate.levels[level]
        raise ConvertError(
            f"{candidate.variant} model loses {over[level]:.2f} percentage points of accuracy at level"
            f" '{level}' (Keras {100 * ref.accuracy:.2f}%,"
            f" {candidate.variant} {100 * got.accuracy:.2f}%);"
            f" the budget is {budget_pp:g}"
            + (f" (+{slack_crops} crops on this small test split)" if slack_pp else "")
        )
    agreements = {level: candidate.levels[level].agreement for level in keras.levels}
    short = {level: a for level, a in agreements.items() if a < min_agreement - slack_pp / 100.0 - 1e-12}
    if short:
        level = min(short, key=lambda k: short[k])
        raise ConvertError(
            f"{candidate.variant} model agrees with Keras on top-1 for {100 * short[level]:.2f}% of"
            f" test crops at level '{level}'; at least {100 * min_agreement:.2f}% is required"
            + (f" (less {slack_crops} crops on this small test split)" if slack_pp else "")
        )


def hold_to_budget(result: CheckResult, figures: VariantFigures) -> None:
    """ConvertError when `figures` miss result's budget under the split's rule: the exact budget on a
    split that measures it, only a clear miss (more than CLEAR_MISS_CROPS crops beyond) on one too small."""
    slack = 0 if result.measurable else CLEAR_MISS_CROPS
    try:
        check_budget(
            result.keras,
            figures,
            result.budget_pp,
            result.min_agreement,
            slack_crops=slack,
            images=result.images,
        )
    except ConvertError as exc:
        if result.measurable:
            raise
        needed = crops_needed(result.budget_pp, result.min_agreement)
        raise ConvertError(
            f"{exc}; the test split ({result.images} crops, one = {result.resolution_pp:.2f} pp) is too small"
            f" to measure the budget, but this miss is beyond what a few crops explain"
            f" (hold out at least {needed} test crops to measure it)"
        ) from None


def gate(result: CheckResult, variant: str) -> None:
    """Set result.verdict for `variant` against the budget; ConvertError when it is refused.

    On a split that measures the budget: passed or failed (raises). On a split too small: refused only
    for a clear miss, otherwise "unmeasured".
    """
    try:
        hold_to_budget(result, result.variants[variant])
    except ConvertError:
        result.verdict, result.passed = "failed", False
        raise
    result.verdict = "passed" if result.measurable else "unmeasured"
    result.passed = result.measurable


def format_table(result: CheckResult) -> str:
    """A fixed-width table: one row per model and level."""
    head = (
        f"{'model':9s} {'size KB':>8s} {'ms/crop':>8s} {'level':9s} {'accuracy':>9s} {'drop pp':>8s}"
        f" {'macro F1':>9s} {'agree':>7s} {'|dp|':>7s}"
    )
    lines = [
        f"quantization check on {result.images} test crops (edge runtime);"
        f" one crop = {result.resolution_pp:.2f} pp",
        head,
        "-" * len(head),
    ]
    for name, figures in [("keras", result.keras), *result.variants.items()]:
        for i, (level, fig) in enumerate(figures.levels.items()):
            ref = result.keras.levels[level]
            size = f"{figures.size_bytes / 1024:8.1f}" if i == 0 and figures.size_bytes else " " * 8
            ms = f"{figures.invoke_ms_per_crop:8.3f}" if i == 0 and name != "keras" else " " * 8
            label = name if i == 0 else ""
            drop = 100.0 * (ref.accuracy - fig.accuracy)
            lines.append(
                f"{label:9s} {size} {ms} {level:9s} {fig.accuracy:9.3f} {drop:8.2f}"
                f" {fig.macro_f1:9.3f} {fig.agreement:7.3f} {fig.mean_abs_prob_diff:7.4f}"
            )
    if any(name.startswith("onnx") for name in result.variants):
        lines.append("onnx rows: onnxruntime on the CPU (the TensorRT engine is built from these files)")
    verdict = {"passed": "passed", "failed": "FAILED", "unmeasured": "not measured"}[result.verdict]
    if result.gated_variant:
        lines.append(
            f"budget ({result.gated_variant}): accuracy drop <= {result.budget_pp:g} pp, top-1 agreement"
            f" >= {result.min_agreement:g}: {verdict}"
        )
        if result.verdict == "unmeasured":
            lines.append(unmeasured_note(result.images, result.budget_pp, result.min_agreement))
    return "\n".join(lines)


# ---------------------------------------------------------------- running variants on the edge runtime


def truth_indices(samples: Sequence[Any], labels: Mapping[str, Sequence[str]]) -> dict[str, np.ndarray]:
    """True class index per level for split samples (train.dataset.Sample)."""
    out = {}
    for level, names in labels.items():
        index = {name: i for i, name in enumerate(names)}
        out[level] = np.array([index[s.label(level)] for s in samples], dtype=np.int64)
    return out


def keras_predict(model: Any, images_rgb: np.ndarray, levels: Sequence[str], batch: int = 32) -> dict:
    """Keras float probabilities per level from uint8 RGB images (the model takes RGB 0-255 floats)."""
    out = model.predict(images_rgb.astype(np.float32), batch_size=batch, verbose=0)
    if not isinstance(out, dict):
        out = {levels[0]: out}
    return {level: np.asarray(out[level], dtype=np.float64) for level in levels}


@dataclass(frozen=True)
class EdgeRun:
    """What the device's Classifier made of a set of crops."""

    probs: dict[str, np.ndarray]  # {level: N x C probabilities}
    timing: dict[str, float]  # Classifier.timing(): invoke and classify time per crop
    embeddings: np.ndarray | None  # N x D unit vectors; None when the bundle declares no embedding


def run_on_edge(bundle_dir: Any, images_rgb: np.ndarray, num_threads: int = 1) -> EdgeRun:
    """A bundle run by the device's Classifier on the crops (RGB here, BGR to it), one per call."""
    from edge.classify.bundle import load_bundle
    from edge.classify.classifier import Classifier

    classifier = Classifier(load_bundle(bundle_dir), num_threads=num_threads)
    crops = np.ascontiguousarray(images_rgb[..., ::-1])  # the device's crops are BGR (OpenCV order)
    classifier.reset_timing()
    results = []
    for crop in crops:  # one at a time, as the trap does; latency per crop from the classifier
        results.extend(classifier.classify(crop[None]))
    probs = {level: np.stack([r.probs[level] for r in results]) for level in classifier.levels}
    vectors = [r.embedding for r in results]
    embeddings = np.stack(vectors) if vectors and all(v is not None for v in vectors) else None
    return EdgeRun(probs, classifier.timing(), embeddings)
