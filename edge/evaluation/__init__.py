"""Measuring the trap against ground truth (synthetic nights, annotated recordings).

`counting`: do the tracks count each insect once? Count error, double counts, misses, false
tracks, id switches, MOTA and IDF1.
`ground_truth`: annotated frames in the synthetic, COCO or MOT Challenge format.
`source`: plays those frames to the pipeline. `metrics`: detection, counts per taxon and
classification scores. `run`: `evaluate_frames` runs the trap's pipeline on the frames and
builds the `report` (Markdown and JSON) of `trapcam evaluate`.

Only `counting` is imported here: the other modules pull in OpenCV and the pipeline, and are
imported by their full names (e.g. `from edge.evaluation.run import evaluate_frames`).
"""

from edge.evaluation.counting import CountReport, EvaluationError, SpeciesCount, evaluate_counts

__all__ = ["CountReport", "EvaluationError", "SpeciesCount", "evaluate_counts"]
