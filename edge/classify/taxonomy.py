"""Taxonomy: ordered levels (coarse to fine) and each label's parent one level up.

Used to keep hierarchical answers consistent: when the species head names a species
whose family is not the family the family head chose, the answer falls back to the
deepest level on which every confident head agrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Known taxonomic ranks, coarse to fine: orders lineage columns and levels when the data alone cannot tell.
RANKS = (
    "kingdom",
    "phylum",
    "class",
    "order",
    "suborder",
    "superfamily",
    "family",
    "subfamily",
    "tribe",
    "genus",
    "species",
    "subspecies",
)


@dataclass(frozen=True)
class Taxonomy:
    """levels: e.g. ("order", "family", "species"), or ("species",) for a flat model.

    parents: for each level but the first, {label: parent label at the level above}.
    """

    levels: tuple[str, ...]
    parents: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def parent(self, level: str, label: str) -> str | None:
        """The label's parent one level up, or None at the top level or when unknown."""
        return self.parents.get(level, {}).get(label)

    def ancestors(self, level: str, label: str) -> dict[str, str]:
        """{level: label} for `label` and every known ancestor above it."""
        out = {level: label}
        index = self.levels.index(level)
        current = label
        for i in range(index, 0, -1):
            up = self.parent(self.levels[i], current)
            if up is None:
                break
            out[self.levels[i - 1]] = up
            current = up
        return out

    def deepest_consistent(self, answers: Mapping[str, str | None]) -> tuple[str | None, str | None]:
        """The finest (level, label) that agrees with every confident coarser answer.

        answers: {level: label or None (abstained)}. Returns (None, None) when every level
        abstained or nothing is consistent.
        """
        for level in reversed(self.levels):
            label = answers.get(level)
            if label is None:
                continue
            lineage = self.ancestors(level, label)
            agrees = all(
                answers.get(up) is None or up not in lineage or lineage[up] == answers[up]
                for up in self.levels[: self.levels.index(level)]
            )
            if agrees:
                return level, label
        return None, None


def lineage_of(taxonomy: Taxonomy | None, level: str, label: str) -> dict[str, str]:
    """{level: label} for an answer and, where the taxonomy knows its level, every ancestor above it:
    one rule for a finished track's stored lineage and a time-lapse crop's counts."""
    if taxonomy is None or level not in taxonomy.levels:
        return {level: label}
    return taxonomy.ancestors(level, label)
