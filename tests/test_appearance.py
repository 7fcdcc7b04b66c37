"""The appearance cue's definition: what it describes (the insect, not the sheet), how it bins
colours, how far two descriptors are, and the one-line refusals of what it cannot describe."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from edge.track import TrackingError
from edge.track.appearance import (
    DESCRIPTOR_SIZE,
    HUE_BINS,
    SAT_BINS,
    VAL_BINS,
    appearance_descriptor,
    appearance_distance,
    appearance_distances,
)

SHAPE = "appearance crop: expected H x W x 3 uint8 BGR"
BINS = "histogram has negative or non-finite bins"
ZEROS = "appearance descriptor is all zeros; expected a histogram of a non-empty crop"


def uniform(bgr: tuple[int, int, int], shape: tuple[int, int] = (6, 6)) -> np.ndarray:
    return np.full((*shape, 3), bgr, np.uint8)


def expected_bin(bgr: tuple[int, int, int]) -> int:
    """OpenCV's 8-bit HSV of the colour, binned over the full ranges (hue 0-180, the others 0-256)."""
    h, s, v = (int(x) for x in cv2.cvtColor(uniform(bgr, (1, 1)), cv2.COLOR_BGR2HSV)[0, 0])
    return (
        (h * HUE_BINS // 180) * SAT_BINS * VAL_BINS + (s * SAT_BINS // 256) * VAL_BINS + v * VAL_BINS // 256
    )


def test_a_uniform_crop_falls_in_the_one_bin_of_its_colour() -> None:
    """Every colour of a grid (which holds the bin edges' neighbours) in exactly its own bin."""
    levels = [*range(0, 256, 17), 63, 64, 127, 128, 191, 192]
    for bgr in itertools.product(levels, repeat=3):
        descriptor = appearance_descriptor(uniform(bgr))
        assert descriptor.dtype == np.float32 and descriptor.shape == (DESCRIPTOR_SIZE,)
        assert descriptor[expected_bin(bgr)] == 1.0, bgr


def test_it_describes_the_insect_not_the_sheet_and_sensor_noise_is_sheet() -> None:
    """The same insect on a white and on a black sheet describes the same; a patch 10 levels off
    the sheet (noise) is not insect; a crop where nothing stands out is described whole."""
    insect = (40, 60, 120)
    for sheet in ((235, 235, 235), (20, 20, 20)):
        crop = uniform(sheet, (24, 32))  # not shrunk: no blended edge pixels
        crop[8:16, 14:26] = insect
        noise = tuple(min(255, c + 10) for c in sheet)
        crop[2:5, 2:5] = noise
        assert appearance_distance(appearance_descriptor(crop), appearance_descriptor(uniform(insect))) < 1e-6
    assert appearance_descriptor(uniform((235, 235, 235)))[expected_bin((235, 235, 235))] == 1.0


def test_a_large_crop_is_shrunk_first_and_described_alike() -> None:
    """Crops above 32 px on either side are shrunk (cheap); the description stays the insect's."""
    for shape in ((20, 300), (300, 20), (300, 300)):
        crop = uniform((230, 230, 230), shape)
        h, w = shape
        crop[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (30, 140, 60)
        descriptor = appearance_descriptor(crop)
        assert descriptor[expected_bin((30, 140, 60))] > 0.9, shape


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        ([[1, 2, 3]], "appearance crop: expected a numpy array, got list"),
        (
            np.zeros((4, 4), np.uint8),
            "appearance crop: expected H x W x 3 uint8 BGR, got shape (4, 4) dtype uint8",
        ),
        (
            np.zeros((4, 4, 3), np.float32),
            "appearance crop: expected H x W x 3 uint8 BGR, got shape (4, 4, 3) dtype float32",
        ),
        (
            np.zeros((4, 4, 4), np.uint8),
            "appearance crop: expected H x W x 3 uint8 BGR, got shape (4, 4, 4) dtype uint8",
        ),
        (np.zeros((0, 4, 3), np.uint8), "appearance crop: the crop is empty (shape (0, 4, 3))"),
        (np.zeros((4, 0, 3), np.uint8), "appearance crop: the crop is empty (shape (4, 0, 3))"),
    ],
)
def test_a_crop_it_cannot_describe_is_refused_in_one_line(crop: object, message: str) -> None:
    with pytest.raises(TrackingError) as raised:
        appearance_descriptor(crop)  # type: ignore[arg-type]
    assert str(raised.value) == message


def test_distance_is_zero_for_the_same_colours_at_any_scale_and_one_for_disjoint_ones() -> None:
    brown = appearance_descriptor(uniform((40, 60, 120)))
    green = appearance_descriptor(uniform((30, 140, 60)))
    assert appearance_distance(brown, brown) < 1e-7
    assert appearance_distance(brown, 3 * brown) < 1e-7
    assert appearance_distance(5 * brown, brown) < 1e-7
    assert appearance_distance(brown, green) == 1.0
    half = (brown + green) / 2
    assert appearance_distance(brown, half) == pytest.approx(np.sqrt(1 - np.sqrt(0.5)), abs=1e-6)
    assert appearance_distance(half, 3 * brown) == pytest.approx(np.sqrt(1 - np.sqrt(0.5)), abs=1e-6)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.zeros((2, 3)), np.ones(3), "appearance descriptor a: expected a 1-D histogram, got shape (2, 3)"),
        (np.ones(3), np.zeros(0), "appearance descriptor b: expected a 1-D histogram, got shape (0,)"),
        (
            np.array([1.0, -1.0]),
            np.ones(2),
            "appearance descriptor a: histogram has negative or non-finite bins",
        ),
        (
            np.ones(2),
            np.array([1.0, np.nan]),
            "appearance descriptor b: histogram has negative or non-finite bins",
        ),
        (np.ones(2), np.ones(3), "appearance descriptors differ in size: 2 and 3 bins"),
        (
            np.zeros(2),
            np.ones(2),
            "appearance descriptor is all zeros; expected a histogram of a non-empty crop",
        ),
        (
            np.ones(2),
            np.zeros(2),
            "appearance descriptor is all zeros; expected a histogram of a non-empty crop",
        ),
    ],
)
def test_descriptors_it_cannot_compare_are_refused_naming_which(
    a: np.ndarray, b: np.ndarray, message: str
) -> None:
    with pytest.raises(TrackingError) as raised:
        appearance_distance(a, b)
    assert str(raised.value) == message


def test_the_tracker_s_batched_distances_are_the_pairwise_ones_and_never_nan() -> None:
    rng = np.random.default_rng(5)
    rows = rng.random((6, DESCRIPTOR_SIZE)) * (rng.random((6, DESCRIPTOR_SIZE)) < 0.3)
    rows[0] = 0.0
    rows[0, :9] = 1.0  # nine equal bins: float32 rounding puts its coefficient with itself above 1
    rows = (rows / rows.sum(axis=1, keepdims=True)).astype(np.float32)
    batched = appearance_distances(rows, rows)
    assert not np.isnan(batched).any()
    assert batched[0, 0] == 0.0
    for i, j in itertools.product(range(6), repeat=2):
        assert batched[i, j] == pytest.approx(appearance_distance(rows[i], rows[j]), abs=1e-3)
