"""Synthetic trap nights with ground truth: species sprites, scenes, and writers.

Tests, the demo, the training-data generator and the benchmarks use these deterministic
(seeded) nights; the detector and tracker are judged against their ground truth.
"""

from edge.synth.background import REFERENCE_WIDTH, background_texture
from edge.synth.scene import GroundTruthObject, SceneParams, SyntheticNight, Visit
from edge.synth.species import (
    SPECIES,
    SyntheticSpecies,
    render_crop,
    render_insect,
    species_by_name,
    taxonomy,
)
from edge.synth.writer import GroundTruthRow, SyntheticDataError, read_ground_truth, write_night, write_video

__all__ = [
    "REFERENCE_WIDTH",
    "SPECIES",
    "GroundTruthObject",
    "GroundTruthRow",
    "SceneParams",
    "SyntheticDataError",
    "SyntheticNight",
    "SyntheticSpecies",
    "Visit",
    "background_texture",
    "read_ground_truth",
    "render_crop",
    "render_insect",
    "species_by_name",
    "taxonomy",
    "write_night",
    "write_video",
]
