"""Touching insects are split into one detection each; a single insect is never cut in two.

Frames are the synthetic sheet with insects from the species renderer composited on it at
chosen places, written as JPEG files and read back (compression artefacts included). Moths
are pushed together until their visible pixels touch, and every test checks that the scene
really is a hard one (the moths do touch; without splitting the detector reports one blob),
so it cannot pass on an easy scene.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import DetectorConfig, parse_config
from edge.detect.base import Box, Detection
from edge.detect.static_screen import StaticScreenDetector, colour_distance, split_blob
from edge.errors import ConfigError
from edge.synth.scene import SceneParams, SyntheticNight
from edge.synth.species import species_by_name

WIDTH, HEIGHT = 960, 540
TOUCH_ALPHA = 0.5  # pixels at least this opaque are what the camera sees of an insect


class Insect:
    """One rendered individual: straight BGR colour and alpha, placed by its top-left corner."""

    def __init__(self, species: str, seed: int, length_px: float, angle_deg: float) -> None:
        from edge.synth.species import render_insect

        rng = np.random.default_rng(seed)
        self.bgr, self.alpha = render_insect(species_by_name(species), rng, length_px, angle_deg)
        self.x, self.y = 0, 0

    @property
    def box(self) -> Box:
        """The box of its visible pixels (the ground truth the detector must match)."""
        ys, xs = np.nonzero(self.alpha > 0)
        return Box(
            self.x + int(xs.min()),
            self.y + int(ys.min()),
            self.x + int(xs.max()) + 1,
            self.y + int(ys.max()) + 1,
        )

    def solid(self) -> np.ndarray:
        """Frame-sized boolean mask of its opaque pixels at the current place."""
        mask = np.zeros((HEIGHT, WIDTH), bool)
        h, w = self.alpha.shape
        mask[self.y : self.y + h, self.x : self.x + w] = self.alpha >= TOUCH_ALPHA
        return mask


def place_touching(fixed: Insect, moving: Insect, direction: tuple[int, int], overlap_px: int = 6) -> None:
    """Slide `moving` along `direction` towards `fixed` until `overlap_px` opaque pixels overlap."""
    dx, dy = direction
    for _ in range(400):
        if int((fixed.solid() & moving.solid()).sum()) >= overlap_px:
            return
        moving.x += dx
        moving.y += dy
    raise AssertionError("the insects never met")


def composite(background: np.ndarray, insects: list[Insect]) -> np.ndarray:
    """Alpha-blend the insects (later ones on top) onto a float copy of the background."""
    frame = background.astype(np.float32)
    for insect in insects:
        h, w = insect.alpha.shape
        roi = frame[insect.y : insect.y + h, insect.x : insect.x + w]
        a = insect.alpha[:, :, None]
        roi[:] = roi * (1.0 - a) + insect.bgr.astype(np.float32) * a
    return frame


def shoot(folder: Path, name: str, frame: np.ndarray) -> np.ndarray:
    """Write the frame as a JPEG file and read it back, as a camera folder would deliver it."""
    path = folder / f"{name}.jpg"
    assert cv2.imwrite(
        str(path), np.clip(frame + 0.5, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90]
    )
    image = cv2.imread(str(path))
    assert image is not None
    return image


def detect_on_sheet(folder: Path, insects: list[Insect], seed: int, **cfg: object) -> list[Detection]:
    """Empty sheet first (the background), then the sheet with the insects; their detections."""
    night = SyntheticNight(
        SceneParams(scene="sheet", width=WIDTH, height=HEIGHT, frames=2, insects=0, seed=seed)
    )
    detector = StaticScreenDetector(DetectorConfig(detect_width=480, **cfg))  # type: ignore[arg-type]
    assert detector.detect(shoot(folder, "empty", night.render_background(0).astype(np.float32))) == []
    return detector.detect(shoot(folder, "insects", composite(night.render_background(1), insects)))


def assert_one_each(detections: list[Detection], insects: list[Insect]) -> None:
    assert len(detections) == len(insects), [d.box for d in detections]
    for insect in insects:
        best = max(d.box.iou(insect.box) for d in detections)
        assert best >= 0.5, f"insect at {insect.box}: best IoU {best:.2f} among {[d.box for d in detections]}"


# ---------------------------------------------------------------- whole detector on rendered frames


@pytest.mark.parametrize(
    ("species", "angles", "seed"),
    [
        ("Agrotis exclamationis", (-60.0, 60.0), 1),  # folded moths in a V: wingtips meet
        ("Agrotis exclamationis", (30.0, -30.0), 4),  # heads and antennae meet
        ("Noctua pronuba", (90.0, 270.0), 2),  # head to head
        ("Opisthograptis luteolata", (0.0, 20.0), 3),  # spread wings, tip to tip
    ],
)
def test_two_touching_moths_give_two_detections(
    tmp_path: Path, species: str, angles: tuple[float, float], seed: int
) -> None:
    left = Insect(species, seed, 72.0, angles[0])
    right = Insect(species, seed + 100, 66.0, angles[1])
    left.x, left.y = 380, 220
    right.x, right.y = 380 + 200, 220 + (left.alpha.shape[0] - right.alpha.shape[0]) // 2
    place_touching(left, right, (-1, 0))
    assert left.solid().any() and (left.solid() & right.solid()).any()  # they really touch

    merged = detect_on_sheet(tmp_path, [left, right], seed, split_touching=False)
    assert len(merged) == 1, "without splitting the pair must come out as one blob (a hard scene)"
    assert_one_each(detect_on_sheet(tmp_path, [left, right], seed), [left, right])


def test_three_moths_in_a_row_give_three_detections(tmp_path: Path) -> None:
    moths = [
        Insect("Agrotis exclamationis", 10 + k, 70.0 - 4 * k, 60.0 if k % 2 else -60.0) for k in range(3)
    ]
    moths[0].x, moths[0].y = 200, 200
    for prev, moth in itertools.pairwise(moths):
        moth.x, moth.y = prev.x + 220, prev.y + 4
        place_touching(prev, moth, (-1, 0))
    assert len(detect_on_sheet(tmp_path, moths, 7, split_touching=False)) == 1
    assert_one_each(detect_on_sheet(tmp_path, moths, 7), moths)


def test_small_beetle_touching_a_large_moth_is_split(tmp_path: Path) -> None:
    moth = Insect("Smerinthus ocellata", 21, 110.0, 90.0)
    beetle = Insect("Pterostichus melanarius", 22, 50.0, 180.0)
    moth.x, moth.y = 300, 180
    beetle.x, beetle.y = 300 + moth.alpha.shape[1] + 40, 200
    place_touching(moth, beetle, (-1, 0))
    assert len(detect_on_sheet(tmp_path, [moth, beetle], 8, split_touching=False)) == 1
    assert_one_each(detect_on_sheet(tmp_path, [moth, beetle], 8), [moth, beetle])


@pytest.mark.parametrize("seed", [4, 5])
def test_single_moth_with_pale_band_across_its_wings_stays_one(tmp_path: Path, seed: int) -> None:
    """The band is paler than the threshold: the moth's strong pixels fall in two pieces."""
    moth = Insect("Opisthograptis luteolata", seed, 90.0, 0.0)
    moth.x, moth.y = 400, 200
    night = SyntheticNight(
        SceneParams(scene="sheet", width=WIDTH, height=HEIGHT, frames=2, insects=0, seed=seed)
    )
    sheet = night.render_background(1).astype(np.float32)
    h, w = moth.alpha.shape
    sheet_colour = sheet[moth.y : moth.y + h, moth.x : moth.x + w].reshape(-1, 3).mean(axis=0)
    band = np.zeros((h, w), bool)
    band[:, w // 2 - 12 : w // 2 - 4] = True  # 8 px (4 detection px) across both wings, left of the body
    band &= moth.alpha > 0
    pale = sheet_colour * 0.94  # 6% darker than the sheet: below the 18-level threshold
    moth.bgr = moth.bgr.copy()
    moth.bgr[band] = pale.astype(np.uint8)
    assert float(colour_distance(pale[None, None, :], sheet_colour[None, None, :], "both").max()) < 18.0
    detections = detect_on_sheet(tmp_path, [moth], seed)
    assert len(detections) == 1, [d.box for d in detections]
    assert detections[0].box.iou(moth.box) >= 0.5


# ---------------------------------------------------------------- split_blob on drawn masks


def _discs(gap_bar: int, bar_width: int, radii: tuple[int, int] = (20, 14)) -> np.ndarray:
    mask = np.zeros((60, 110), np.uint8)
    cv2.circle(mask, (25, 30), radii[0], 255, -1)
    cv2.circle(mask, (80, 30), radii[1], 255, -1)
    if bar_width:
        cv2.line(mask, (25, 30), (80, 30), 255, bar_width)
    return mask


def test_split_blob_cuts_at_a_thin_bridge_but_not_a_thick_one() -> None:
    strength = np.full((60, 110), 60.0, np.float32)
    thin = split_blob(_discs(0, 3), strength, 18.0, 50.0, 0.8)
    assert len(thin) == 2
    assert sorted(cv2.countNonZero(p) for p in thin)[0] > 0.8 * np.pi * 14 * 14
    thick = _discs(0, 30)  # a bridge as thick as the smaller disc: one body
    assert len(split_blob(thick, strength, 18.0, 50.0, 0.8)) == 1


def test_split_blob_cuts_a_wide_bridge_of_faint_haze() -> None:
    """Geometry alone would keep these together; the bridge is below the seed threshold."""
    mask = _discs(0, 24)
    strength = np.full(mask.shape, 60.0, np.float32)
    strength[:, 47:58] = 12.0  # faint haze between the two (11 px: wider than the 3 px reach)
    parts = split_blob(mask, strength, 18.0, 50.0, 0.8)
    assert len(parts) == 2
    assert len(split_blob(mask, np.full(mask.shape, 60.0, np.float32), 18.0, 50.0, 0.8)) == 1


def test_split_blob_keeps_a_blob_whose_second_part_is_too_small() -> None:
    mask = _discs(0, 3, radii=(20, 4))  # the small disc is below min_area: a leg's end, not an insect
    strength = np.full(mask.shape, 60.0, np.float32)
    assert len(split_blob(mask, strength, 18.0, 400.0, 0.8)) == 1
    assert len(split_blob(mask, strength, 18.0, 50.0, 0.8)) == 2  # an insect when small ones count


def test_neck_ratio_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="split_neck_ratio"):
        parse_config("detector: {split_neck_ratio: 1.5}\n", "trap.yaml")
