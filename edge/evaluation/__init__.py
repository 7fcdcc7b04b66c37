"""Measuring the trap against ground truth (synthetic nights, annotated recordings).

`counting`: do the tracks count each insect once? Count error, double counts, misses, false
tracks, id switches, MOTA and IDF1.
"""

from edge.evaluation.counting import CountReport, EvaluationError, SpeciesCount, evaluate_counts

__all__ = ["CountReport", "EvaluationError", "SpeciesCount", "evaluate_counts"]
