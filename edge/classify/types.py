"""What the classifier says about one crop."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

UNSURE = "unsure"
# An insect unlike every taxon the model knows (the open set; DESIGN.md's outcome table).
UNKNOWN = "unknown"
# The no-insect class of many third-party models (the iNaturalist insect model's last label). What
# that model says, not a decision (DESIGN.md: counted as unsure unless listed in not_insect_labels).
BACKGROUND = "background"
# The class a trapcam model learns from crops labelled `not_insect` (dust, sheet marks, leaves,
# shadows): at every level of the taxonomy, and declared in model.json as `not_insect_label`, so the
# device stores a track voted to it as discarded ('not_insect') instead of counting it.
NOT_INSECT = "not_insect"
# Labels that name no taxon (besides no label at all); the store's SQL settles tracks by them too.
UNNAMED_LABELS = (UNSURE, BACKGROUND, UNKNOWN)


def names_a_taxon(label: str | None) -> bool:
    """Did the model name something: a label that is neither missing, `unsure`, `background` nor `unknown`?"""
    return label is not None and label not in UNNAMED_LABELS


def count_key(label: str | None) -> str:
    """Where a finished track is counted: its taxon, else `unknown` (open set), else `unsure`
    (no level confident, or a third-party model's `background`): DESIGN.md's outcome table."""
    if names_a_taxon(label):
        assert label is not None
        return label
    return UNKNOWN if label == UNKNOWN else UNSURE


@dataclass(frozen=True, slots=True)
class LevelPrediction:
    """The answer of one output head (e.g. "species").

    label: the top-1 label, or None when the score is below that class's abstention
        threshold ("unsure").
    top_label / score: the top-1 label and its probability, kept even when abstaining.
    top_k: the k best (label, probability) pairs, best first.
    """

    level: str
    label: str | None
    top_label: str
    score: float
    top_k: tuple[tuple[str, float], ...]

    @property
    def abstained(self) -> bool:
        return self.label is None


@dataclass(frozen=True, slots=True)
class Classification:
    """All heads for one crop plus the deepest answer consistent with the taxonomy.

    levels: per level name, ordered from coarse to fine (e.g. order, family, species).
    level / label / score: the deepest level whose answer is confident and consistent with
        every coarser confident answer; level is None when every head abstained.
    probs: per level, the full probability vector (float32 numpy array, in label order); kept as
        an array because turning 1,000 classes into a Python list per crop cost more than the
        rest of the classifier's own work.
    embedding: the model's penultimate features for the crop, L2-normalised (float32), when the
        bundle declares that output (model.json `embedding`); None otherwise.
    unknown: the embedding lies beyond the chosen class's limit (model.json `open_set`,
        edge/classify/open_set.py): an insect unlike every taxon the model knows. The answers
        above stay as the model gave them; what a track makes of it is the tracker's vote.
    open_set_distance: that distance (None without an open-set rule).
    """

    levels: dict[str, LevelPrediction]
    level: str | None
    label: str | None
    score: float
    probs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)
    unknown: bool = False
    open_set_distance: float | None = None
