"""One taxon per track: a confidence-weighted vote over the classifications of its detections.

A single crop is often blurred, half out of the light or caught mid-flight; a track sees the
insect many times. Summing the top-1 scores of the confident (non-abstained) answers per
level lets many good views outvote a few bad ones, and weighting by confidence lets one
sharp view outweigh several doubtful ones. A level whose winner holds less than `min_share`
of that level's weight abstains rather than guess, and the taxonomy then keeps the final
answer consistent (a species is only reported if its family agrees with the family vote).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.classify.taxonomy import Taxonomy
from edge.classify.types import UNKNOWN, Classification
from edge.track import TrackingError


@dataclass(frozen=True)
class VoteResult:
    """The track's answer.

    level / label: the deepest level whose winner is clear and consistent with the coarser
        winners; None when nothing was voted or every level abstained; label `unknown` (level
        None) when most measured crops were unlike every class the model knows (open set).
    score: the mean confidence of the winning label's votes at that level (0.0 when None).
    votes: per level, {label: summed top-1 score}.
    """

    level: str | None
    label: str | None
    score: float
    votes: dict[str, dict[str, float]] = field(default_factory=dict)


class TaxonVote:
    """Accumulates one track's classifications; `result()` may be called at any time."""

    def __init__(self, taxonomy: Taxonomy | None = None, min_share: float = 0.5) -> None:
        if not 0.0 < min_share <= 1.0:
            raise TrackingError(f"vote min_share: got {min_share!r}; expected a number in (0, 1]")
        self.taxonomy = taxonomy
        self.min_share = min_share
        self._weights: dict[str, dict[str, float]] = {}
        self._counts: dict[str, dict[str, int]] = {}
        self._levels: list[str] = []  # first-seen order (coarse to fine) when there is no taxonomy
        # Open set: crops the classifier measured against its classes, and those it called unknown.
        self._open_set_crops = 0
        self._unknown_crops = 0

    def add(self, classification: Classification) -> None:
        """Count every non-abstained level prediction of one crop, weighted by its score, and
        whether the open-set rule called the crop unknown."""
        if classification.open_set_distance is not None:
            self._open_set_crops += 1
            self._unknown_crops += int(classification.unknown)
        for level, prediction in classification.levels.items():
            if self.taxonomy is not None and level not in self.taxonomy.levels:
                raise TrackingError(
                    f"vote: classification level {level!r} is not in the taxonomy levels "
                    f"{list(self.taxonomy.levels)}"
                )
            if level not in self._levels:
                self._levels.append(level)
            label = prediction.label
            if label is None:  # abstained: below its class's threshold, no vote
                continue
            score = float(prediction.score)
            if not 0.0 <= score <= 1.0:
                raise TrackingError(f"vote: level {level!r} score {score!r} is not a probability in [0, 1]")
            weights = self._weights.setdefault(level, {})
            counts = self._counts.setdefault(level, {})
            weights[label] = weights.get(label, 0.0) + score
            counts[label] = counts.get(label, 0) + 1

    def merge(self, other: TaxonVote) -> None:
        """Add another tally's votes (when two tracks turn out to be one insect)."""
        for level in other._levels:
            if level not in self._levels:
                self._levels.append(level)
        for level, weights in other._weights.items():
            mine, counts = self._weights.setdefault(level, {}), self._counts.setdefault(level, {})
            for label, weight in weights.items():
                mine[label] = mine.get(label, 0.0) + weight
                counts[label] = counts.get(label, 0) + other._counts[level][label]
        self._open_set_crops += other._open_set_crops
        self._unknown_crops += other._unknown_crops

    def state(self) -> dict[str, Any]:
        """The whole tally as plain JSON-able data, so a restarted trap continues the same vote."""
        return {
            "levels": list(self._levels),
            "weights": self.votes,
            "counts": {level: dict(counts) for level, counts in self._counts.items()},
            "open_set": [self._open_set_crops, self._unknown_crops],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue a tally `state()` saved (the running trap was stopped or killed meanwhile)."""
        try:
            levels = [str(level) for level in state["levels"]]
            weights = {
                str(lv): {str(k): float(v) for k, v in w.items()} for lv, w in state["weights"].items()
            }
            counts = {str(lv): {str(k): int(v) for k, v in c.items()} for lv, c in state["counts"].items()}
            measured, unknown = (int(v) for v in state.get("open_set", (0, 0)))  # absent before the open set
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TrackingError(f"vote state: expected levels, weights and counts, got {exc!r}") from None
        if any(set(weights[lv]) != set(counts.get(lv, {})) for lv in weights):
            raise TrackingError("vote state: weights and counts name different labels")
        self._levels, self._weights, self._counts = levels, weights, counts
        self._open_set_crops, self._unknown_crops = measured, unknown

    @property
    def votes(self) -> dict[str, dict[str, float]]:
        """A copy of {level: {label: summed top-1 score}}."""
        return {level: dict(weights) for level, weights in self._weights.items()}

    def _winner(self, level: str) -> str | None:
        """The level's top label if it holds at least `min_share` of the level's weight."""
        weights = self._weights.get(level)
        if not weights:
            return None
        total = sum(weights.values())
        counts = self._counts[level]
        # Ties: more votes first, then the label name, so the answer never depends on dict order.
        label = max(weights, key=lambda lab: (weights[lab], counts[lab], lab))
        if total <= 0.0 or weights[label] / total < self.min_share - 1e-12:
            return None
        return label

    def result(self) -> VoteResult:
        """Per-level winners, reduced to the deepest answer the taxonomy finds consistent; or
        `unknown` when more than half of the crops the open-set rule measured were unlike every
        class (one odd view does not make a known insect unknown, nor one typical view a foreign one)."""
        if self._open_set_crops and self._unknown_crops * 2 > self._open_set_crops:
            return VoteResult(None, UNKNOWN, self._unknown_crops / self._open_set_crops, self.votes)
        taxonomy = self.taxonomy or Taxonomy(levels=tuple(self._levels))
        answers = {level: self._winner(level) for level in taxonomy.levels}
        level, label = taxonomy.deepest_consistent(answers)
        if level is None or label is None:
            return VoteResult(None, None, 0.0, self.votes)
        score = self._weights[level][label] / self._counts[level][label]
        return VoteResult(level, label, score, self.votes)


def vote(
    classifications: Iterable[Classification | None],
    taxonomy: Taxonomy | None = None,
    min_share: float = 0.5,
) -> VoteResult:
    """Vote over a track's classifications at once (None entries: no classifier ran)."""
    tally = TaxonVote(taxonomy, min_share)
    for classification in classifications:
        if classification is not None:
            tally.add(classification)
    return tally.result()
