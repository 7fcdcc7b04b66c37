"""Background-difference detector for a light-trap sheet, sticky board or yellow board.

The camera and the screen do not move; insects land and mostly sit still. So the detector
keeps a reference image of the empty screen and reports what differs from it. The hard
part is keeping that reference right for a whole night:

* Light drifts (lamp warming up, dusk, dawn, colour shift). Each frame a per-channel gain
  (median of frame/background over pixels that are not foreground) is applied to the whole
  background, including under insects, so a global change never becomes foreground. Slow
  local changes are followed by blending the frame in at `background_rate`.
* Insects that sit still for hours must not fade into the background (a moth on the sheet
  for an hour is one track, not 180 counts). Pixels under foreground (dilated) are never
  blended, so a still insect stays exactly as different from the background as on arrival.
  Only blobs larger than `max_area_px` (a shadow, a fold: not an insect) are blended away.
* Insects may already sit on the screen in the first frame. The first background is the
  (median of the) warm-up frame(s) with insect-like blobs painted out: each blob that
  differs from a large median blur of the frame (kernel about twice `init_insect_px`)
  is replaced by that blur. A smooth screen becomes correct at once; the first frame's
  insects are detected in that same frame. (A per-pixel median over frames would not remove
  an insect that sits through all of them.)
* A real permanent change (lamp moved, camera bumped, a light switched on beside the
  trap) covers much of the frame with foreground. After `reinit_after_frames` such frames
  in a row the background is rebuilt as at start, a warning is logged and `reinits` counts
  it; a single flash frame is skipped (no detections, background untouched).

Detection runs at `detect_width` (INTER_AREA downscale: averages noise, keeps thin parts);
boxes and areas are reported at full resolution. The threshold rises above `threshold`
on noisy frames (`noise_factor` x the median difference). Blobs grow by hysteresis over
pixels above `grow_fraction` x threshold, are opened (noise specks) and closed (wings
split by pale patterns), and filtered by area, aspect and solidity. A blob that holds
several insects touching at a wingtip, a leg or through faint haze is split into one
detection per insect (`split_blob`). The functions that turn a foreground mask into
detections are shared with the motion detector.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from edge.config import DetectorConfig
from edge.detect.base import Box, Detection, touches_border
from edge.detect.crop import check_frame
from edge.detect.mask import DetectionMask
from edge.errors import ConfigError

log = logging.getLogger(__name__)

# Morphology at detection resolution. Opening with 3x3 removes one- and two-pixel noise;
# closing with 5x5 joins an insect's parts separated by pale wing patches; the 9x9 guard
# keeps an insect's soft edge (and its shadow) out of the background blend.
_OPEN = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
_CLOSE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
_GUARD = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
_RING = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (13, 13))
# Splitting touching insects (see split_blob). Weak pixels within 3 px of a strong one belong to
# an insect (_NEAR); distance levels from _MIN_LEVEL px up, _LEVEL_STEP apart, are tried for cores
# (on a max-pooled map when the blob is thicker than _POOL_PEAK); a part beside a
# larger one needs _MIN_PART of its strong pixels, and any part _STRONG_SHARE of the smallest
# insect's area in strong pixels, and its core _CORE_SHARE of that area; parts are split again up
# to _MAX_DEPTH times.
_NEAR = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
_MIN_LEVEL = 2.5
_LEVEL_STEP = 1.1
_POOL_PEAK = 8.0
_MIN_PART = 0.05
_STRONG_SHARE = 0.5
_CORE_SHARE = 0.1
_MAX_DEPTH = 3
_TRIES = 2
_HEAL_EVERY = 5  # frames between checks for ghosts (see _heal_ghosts)
_SAMPLE_STEP = 6  # gain and noise are estimated on every 6th pixel in each direction
_MIN_SAMPLES = 64  # fewer background samples than this: keep the gain at 1
_MIN_CELL_SAMPLES = 16  # a light cell with fewer background samples takes the frame's gain
_MAX_LIGHT_SPREAD = 1.15  # cell gains further apart than this (brightest / darkest) are not a smooth shift
# A lit sheet or a sticky board is smooth at detection size; a natural scene is not. Median local
# contrast (grey std in 9x9 windows) of real frames at 960 px: AMI light-trap sheets 1.2-4.8, a crowded
# tropical sheet 9.8-11.5, a Raspberry Pi flower camera 30.6. Above this, static_screen takes every leaf
# that moves for an insect (11,432 detections in 35 flower frames): the loop says so and names `motion`.
SCREEN_TEXTURE_MAX = 20.0
_MAX_CARRIED_SHIFT = 1.0  # detection px: a carried-over background further off is not used
_MIN_SHIFT_RESPONSE = 0.05  # a phase-correlation peak weaker than this is no evidence of a shift
# A camera knocked mid-night (someone checking the trap, wind on the stand) moves the whole view: with
# polarity "both" every mark on the sheet becomes two detections (where it is and where it was), held
# all night, and no rebuild (under reinit_fraction). `python -m bench.knocked`: the real AMI
# sequential frames gave 176 detections in the 3 frames after a 10 x 6 px knock and 285 after
# 50 x 30 px, against 65 still. So when new foreground appears, the view's shift against the
# background is measured and the background moved with it: the unmoved real sets read 0.53 px at
# most (sequential, panama), a 10 x 6 px knock 3.8 px (at detection size).
# Measured only when something new appeared (one FFT of the detection-size frame, ~12 ms at 1280 px
# against ~70 ms for the frame's detection): foreground more than 2 px from the last frame's ...
_SHIFT_CHECK_MIN = 0.001  # ... on more than this share of the frame
_NEAR_LAST = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
_MIN_VIEW_SHIFT = 1.5  # detection px: a view moved further than this takes the background with it
_AGREE_PX = 1.0  # a quadrant shows the whole frame's shift within this many pixels


def downscale(image: np.ndarray, detect_width: int) -> tuple[np.ndarray, float]:
    """Shrink to `detect_width` with INTER_AREA; return it and the scale (small / full), <= 1."""
    h, w = image.shape[:2]
    if w <= detect_width:
        return image, 1.0
    scale = detect_width / w
    small_h = max(1, round(h * scale))
    return cv2.resize(image, (detect_width, small_h), interpolation=cv2.INTER_AREA), scale


def scene_texture(small: np.ndarray) -> float:
    """Median local contrast of a BGR image: the grey level's standard deviation in 9x9 windows."""
    grey = cv2.cvtColor(np.asarray(small, np.float32), cv2.COLOR_BGR2GRAY)
    mean = cv2.blur(grey, (9, 9))
    var = cv2.blur(grey * grey, (9, 9)) - mean * mean
    return float(np.median(np.sqrt(np.maximum(var, 0.0))))


def view_shift(reference: np.ndarray, frame: np.ndarray) -> tuple[float, float]:
    """(dx, dy) pixels by which `frame` shows the scene of `reference` moved (same-size BGR images):
    phase correlation of the grey images under a Hann window.

    Insects add or remove small patches and barely move the peak; a knocked camera or a sheet
    hung again moves everything. A featureless or unrelated pair (no peak) reads as (0, 0):
    nothing to misalign.
    """
    dx, dy, response = _phase_shift(reference, frame)
    return (0.0, 0.0) if response < _MIN_SHIFT_RESPONSE else (dx, dy)


def whole_view_shift(reference: np.ndarray, frame: np.ndarray) -> tuple[float, float]:
    """`view_shift`, if most quadrants of the frame that show any shift show that one, else (0, 0).

    A knocked camera moves every part of the view; an insect that moved moves one or two quadrants.
    Where the background still holds an insect (a painted-out miss) on a plain sheet, the insect is
    the strongest feature: a drawn walking moth read as a 70 px move of the whole view (response
    0.94) that 2 of 4 quadrants showed, the other two reading 0 px (response 0.995); the real knocks
    of the AMI sequential frames (6 x 10 and 30 x 50 px) showed in all four within 0.8 px. A
    quadrant with no peak (a dark corner beyond the sheet) has no say.
    """
    dx, dy = view_shift(reference, frame)
    if (dx, dy) == (0.0, 0.0):
        return 0.0, 0.0
    h, w = reference.shape[:2]
    agree = say = 0
    for rows in (slice(0, h // 2), slice(h // 2, h)):
        for cols in (slice(0, w // 2), slice(w // 2, w)):
            qx, qy, response = _phase_shift(reference[rows, cols], frame[rows, cols])
            if response >= _MIN_SHIFT_RESPONSE:
                say += 1
                agree += math.hypot(qx - dx, qy - dy) <= _AGREE_PX
    return (dx, dy) if agree > say / 2 else (0.0, 0.0)


def _phase_shift(reference: np.ndarray, frame: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, peak response) of the phase correlation of two same-size BGR images' grey levels."""
    grey = [cv2.cvtColor(np.asarray(im, np.float32), cv2.COLOR_BGR2GRAY) for im in (reference, frame)]
    window = cv2.createHanningWindow(grey[0].shape[::-1], cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(grey[0], grey[1], window)
    return float(dx), float(dy), float(response)


def colour_distance(frame: np.ndarray, background: np.ndarray, polarity: str) -> np.ndarray:
    """Per-pixel difference (float32, 0-255 scale): the largest change in any colour channel.

    Taking the largest channel change (not the grey-level change) finds a green insect on a
    yellow board as well as a dark moth on a white sheet. `polarity` keeps only darker
    ("dark"), brighter ("bright") or either ("both") changes.
    """
    if polarity == "both":
        diff = cv2.absdiff(frame, background)
    elif polarity == "dark":
        diff = cv2.subtract(background, frame)
    elif polarity == "bright":
        diff = cv2.subtract(frame, background)
    else:
        raise ValueError(f"polarity must be 'dark', 'bright' or 'both', got {polarity!r}")
    b, g, r = cv2.split(diff)
    dist = cv2.max(cv2.max(b, g), r)
    if polarity != "both":
        dist = cv2.max(dist, 0.0)
    return dist


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Open (remove specks) then close (join an insect's parts) a 0/255 uint8 mask."""
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _OPEN)
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _CLOSE)


def to_full_box(x: int, y: int, w: int, h: int, scale: float, full_w: int, full_h: int) -> Box:
    """Map a box at detection resolution to full resolution (outward rounding, clamped)."""
    x0 = max(0, math.floor(x / scale))
    y0 = max(0, math.floor(y / scale))
    x1 = min(full_w, math.ceil((x + w) / scale))
    y1 = min(full_h, math.ceil((y + h) / scale))
    return Box(x0, y0, x1, y1)


def blobs(mask: np.ndarray) -> list[tuple[int, int, int, int, np.ndarray]]:
    """Outer blobs of a 0/255 mask as (x, y, w, h, filled 0/255 ROI of its own pixels).

    Contours rather than connectedComponentsWithStats: on a mostly empty mask tracing the few
    blob outlines is dozens of times faster than labelling every pixel.
    """
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        roi = np.zeros((h, w), np.uint8)
        cv2.drawContours(roi, [contour], -1, 255, cv2.FILLED, offset=(-x, -y))
        cv2.bitwise_and(roi, mask[y : y + h, x : x + w], dst=roi)  # holes stay holes
        out.append((x, y, w, h, roi))
    return out


def shape_ok(component: np.ndarray, area: int, cfg: DetectorConfig) -> bool:
    """Aspect (of the rotated bounding rectangle) and solidity checks of one 0/255 blob ROI."""
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return False
    contour = max(contours, key=cv2.contourArea)
    (_, _), (rw, rh), _ = cv2.minAreaRect(contour)
    short, long = sorted((max(rw, 1.0), max(rh, 1.0)))
    if long / short > cfg.max_aspect:
        return False
    hull_area = cv2.contourArea(cv2.convexHull(contour))
    if hull_area <= 0:
        return True  # a blob a pixel or two thick: its area filter decides
    return area / hull_area >= cfg.min_solidity


def _support(
    component: np.ndarray, strength_roi: np.ndarray | None, seed_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """(support, strong): the part of a blob that belongs to insects, and its pixels above the seed.

    Hysteresis lets a blob grow over faint pixels, which is what keeps a pale wing or a leg with
    its insect; but in a crowded patch of sheet the faint pixels can also form a haze that fills
    the gaps between neighbours (a first background painted from a blur that the crowd darkened,
    a shadow). Weak pixels farther than `_NEAR` from any pixel above the seed threshold are that
    haze, not insect: dropping them keeps pale patches inside a wing and cuts the haze bridges.
    """
    if strength_roi is None or seed_threshold <= 0:
        return component, component
    _, strong = cv2.threshold(strength_roi, seed_threshold, 255, cv2.THRESH_BINARY)
    strong = cv2.bitwise_and(strong.astype(np.uint8), component)
    return cv2.bitwise_and(component, cv2.dilate(strong, _NEAR)), strong


def _cores(dist: np.ndarray, neck_ratio: float, min_core: float) -> list[tuple[np.ndarray, int]]:
    """Candidate (labels, count): one core per insect the distance map shows, the thick middle of each.

    Two parts are two insects when the passage between them is thinner than `neck_ratio` times
    the thinner part: a wing joins its body along its whole base and a pale band leaves a
    wing's outline whole, while two moths touch at a wingtip, a leg or an antenna. In terms of
    the distance to the edge: at some level L the pixels farther than L from the edge fall into
    pieces, and two pieces that each reach L / neck_ratio are two insects. Levels are tried
    `_LEVEL_STEP` apart (a pair that clears the ratio by that much is always found); the level
    with the most such pieces comes first (up to `_TRIES` levels are returned, best first, for
    the caller to check). A single insect is one piece at every level (no candidates). Pieces
    under `min_core` pixels do not count: near the edge every bump of the outline and every
    speck of haze is a piece of its own.

    A thick blob is searched on a max-pooled map (cells of k x k pixels, k about peak /
    _POOL_PEAK): pooling keeps every connection, so it can miss a split but never invent one.
    """
    peak = float(dist.max())
    k = max(1, int(peak // _POOL_PEAK))
    coarse = dist
    if k > 1:  # cell (i, j) holds the largest distance in rows i*k.. and columns j*k..
        coarse = cv2.dilate(dist, np.ones((k, k), np.uint8), anchor=(0, 0))[::k, ::k]
    found = []
    level = _MIN_LEVEL
    while level / neck_ratio <= peak:
        above = cv2.compare(coarse, level, cv2.CMP_GT)
        n, pieces = cv2.connectedComponents(above, connectivity=8)
        if n > 2:
            reach = np.unique(pieces[coarse >= level / neck_ratio])
            reach = reach[np.bincount(pieces.ravel(), minlength=n)[reach] * (k * k) >= min_core]
            if len(reach) > 1:
                found.append((len(reach), level, pieces, reach))
        level *= _LEVEL_STEP
    found.sort(key=lambda item: (-item[0], item[1]))
    out = []
    for count, level, pieces, reach in found[:_TRIES]:
        lut = np.zeros(int(pieces.max()) + 1, np.int32)
        lut[reach] = np.arange(1, count + 1, dtype=np.int32)
        cores = lut[pieces]
        if k > 1:
            cores = np.repeat(np.repeat(cores, k, axis=0), k, axis=1)[: dist.shape[0], : dist.shape[1]]
            cores[dist <= level] = 0
        out.append((cores, count))
    return out


def _nearest(support: np.ndarray, cores: np.ndarray, count: int) -> np.ndarray:
    """Give every support pixel to its nearest core (labels 1..count, 0 outside the support).

    The cores are the insects shrunk by the same distance, so the line half-way between two
    of them runs through the place where the insects touch.
    """
    _, nearest = cv2.distanceTransformWithLabels(
        np.where(cores > 0, 0, 255).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_CCOMP
    )
    lut = np.zeros(int(nearest.max()) + 1, np.int32)
    lut[nearest[cores > 0]] = cores[cores > 0]
    owner = lut[nearest]
    owner[support == 0] = 0
    return owner


def _split_support(
    support: np.ndarray, strong: np.ndarray, min_strong: float, neck_ratio: float, depth: int
) -> list[np.ndarray]:
    """The insects in a support mask, one 0/255 mask each (recursing into each part found).

    Separate pieces of the support are judged one by one. Within one piece, `_cores` finds the
    insects and `_nearest` shares the pixels out. A part is an insect only with at least
    `min_strong` pixels above the seed threshold and, beside a larger one, `_MIN_PART` of its
    strong pixels (else it is a lobe of a wing or a speck of haze): such cores are withdrawn and
    the pixels shared out again. Three moths in a row that part at different levels are found
    by splitting the parts again, up to `depth` times.
    """
    n, pieces = cv2.connectedComponents(support, connectivity=8)
    if n > 2:
        strong_of = np.bincount(pieces[strong > 0], minlength=n)
        out = []
        for k in np.flatnonzero(strong_of[1:] >= min_strong) + 1:
            piece = np.where(pieces == k, 255, 0).astype(np.uint8)
            out.extend(_split_support(piece, strong, min_strong, neck_ratio, depth) if depth else [piece])
        return out
    dist = cv2.distanceTransform(support, cv2.DIST_L2, 3)
    for cores, count in _cores(dist, neck_ratio, _CORE_SHARE * min_strong / _STRONG_SHARE):
        while count >= 2:
            owner = _nearest(support, cores, count)
            strong_of = np.bincount(owner[strong > 0], minlength=count + 1)[1:]
            small = strong_of < max(min_strong, _MIN_PART * float(strong_of.max()))
            if not small.any():
                break
            keep = np.zeros(count + 1, np.int32)
            keep[1:][~small] = np.arange(1, int((~small).sum()) + 1)
            cores, count = keep[cores], int((~small).sum())
        if count >= 2:
            break
    else:
        return [support]
    out = []
    for k in range(1, count + 1):
        part = np.where(owner == k, 255, 0).astype(np.uint8)
        out.extend(_split_support(part, strong, min_strong, neck_ratio, depth - 1) if depth > 1 else [part])
    return out


def split_blob(
    component: np.ndarray,
    strength_roi: np.ndarray | None,
    seed_threshold: float,
    min_area: float,
    neck_ratio: float,
) -> list[np.ndarray]:
    """One 0/255 mask per insect in a blob (detection pixels), or `[component]` if it is one.

    The blob is first trimmed to its insect support (`_support`: haze between neighbours cut
    away), then split where its distance map shows two or more thick parts joined by thin
    passages (`_split_support`). Only when two or more insects remain are the parts returned,
    without the haze; a single insect keeps its whole blob, faint wing edges included.
    `min_area` is the smallest insect in detection pixels; a part needs `_STRONG_SHARE` of it
    above the seed threshold.
    """
    support, strong = _support(component, strength_roi, seed_threshold)
    parts = _split_support(support, strong, _STRONG_SHARE * min_area, neck_ratio, _MAX_DEPTH)
    return parts if len(parts) > 1 else [component]


def _detection(
    part: np.ndarray,
    x: int,
    y: int,
    strength_roi: np.ndarray | None,
    seed_threshold: float,
    scale: float,
    full_size: tuple[int, int],
    cfg: DetectorConfig,
) -> Detection | None:
    """The detection of one insect's 0/255 mask (ROI at x, y), or None if the filters reject it."""
    area = cv2.countNonZero(part)
    full_area = area / (scale * scale)
    if full_area < cfg.min_area_px or full_area > cfg.max_area_px or not shape_ok(part, area, cfg):
        return None
    score = 1.0
    if strength_roi is not None and seed_threshold > 0:
        mean = float(cv2.mean(strength_roi, mask=part)[0])
        score = mean / (mean + seed_threshold)
    bx, by, bw, bh = cv2.boundingRect(part)
    box = to_full_box(x + bx, y + by, bw, bh, scale, full_size[0], full_size[1])
    return Detection(
        box=box, area_px=round(full_area), score=round(score, 4), at_edge=touches_border(box, *full_size)
    )


def extract_detections(
    mask: np.ndarray,
    scale: float,
    full_size: tuple[int, int],
    cfg: DetectorConfig,
    strength: np.ndarray | None = None,
    seed_threshold: float = 0.0,
) -> tuple[list[Detection], np.ndarray]:
    """Turn a cleaned foreground mask (detection resolution) into full-resolution detections.

    With `strength` (the colour distance) a blob must contain a pixel above `seed_threshold`
    (hysteresis) and its score is its mean strength s mapped to s / (s + seed_threshold):
    0.5 at the threshold, towards 1 for strong contrast. Without it every score is 1.0.

    For the static screen (`cfg.kind`), with `strength` and `cfg.split_touching`, a blob large
    enough to hold two insects is split into one detection per insect (`split_blob`): on a
    crowded sheet, moths that touch at a wingtip or a leg would otherwise be counted and
    classified as one. The motion detector's blobs are not split (not measured on flower scenes).

    Also returns the "held" mask: every blob that is real foreground (has a seed, is not
    larger than max_area_px), whatever its shape. The static detector never blends those
    pixels into its background, so an insect that is sometimes rejected by a shape filter
    is not slowly absorbed either.
    """
    px_per_small = 1.0 / (scale * scale)  # full-resolution pixels per detection pixel
    min_area = cfg.min_area_px / px_per_small
    split = cfg.split_touching and cfg.kind == "static_screen" and strength is not None
    held = mask.copy()
    detections: list[Detection] = []
    for x, y, w, h, component in blobs(mask):
        area = cv2.countNonZero(component)
        full_area = area * px_per_small
        roi = strength[y : y + h, x : x + w] if strength is not None else None
        seeded = roi is None or cv2.minMaxLoc(roi, mask=component)[1] > seed_threshold
        if not seeded or full_area > cfg.max_area_px:
            held_roi = held[y : y + h, x : x + w]
            held_roi[component > 0] = 0
            continue
        parts = [component]
        if split and area >= 2 * min_area:
            parts = split_blob(component, roi, seed_threshold, min_area, cfg.split_neck_ratio)
        for part in parts:
            detection = _detection(part, x, y, roi, seed_threshold, scale, full_size, cfg)
            if detection is not None:
                detections.append(detection)
    return detections, held


class StaticScreenDetector:
    """Detector for a fixed screen (sheet or board) against a drift-following background.

    `foreground_mask` is the last frame's cleaned foreground at detection resolution (0/255
    uint8), `background` the current reference (float32 BGR at detection resolution), and
    `reinits` how many times the background was rebuilt after a sudden change, `view_moves` how
    many times it was moved with a knocked camera.
    `background_version` grows whenever the background is built, rebuilt or repaired (not by the
    slow drift blend), so a caller that keeps a copy for the next run knows when it is stale.
    """

    def __init__(self, cfg: DetectorConfig, sheet: np.ndarray | None = None) -> None:
        """sheet: the empty lit sheet (full resolution, BGR), the first background as it is."""
        self.cfg = cfg
        self.exclude = DetectionMask(cfg.mask)
        self.reinits = 0
        self.view_moves = 0
        self.skipped_frames = 0
        self.background_version = 0
        self.texture: float | None = None  # scene_texture of the first frame (see SCREEN_TEXTURE_MAX)
        self.sheet: np.ndarray | None = None
        self.reset()
        if sheet is not None:
            self.use_sheet(sheet)

    def use_sheet(self, sheet: np.ndarray) -> None:
        """Start from the empty sheet instead of the first frame with insect-like blobs painted out.

        Evidence, not a guess: what the sheet showed with no insect on it (marks, stains, a scale
        bar, the trap's frame) is background and never a detection, while a moth that lands later
        and sits all night still differs from it all night. Call before the first frame.
        """
        self.sheet = check_frame(sheet, "detector.sheet_reference")
        self.reset()

    def continue_from(self, background: np.ndarray, image: np.ndarray) -> str | None:
        """Start from the background an earlier run left (edge/sheet.py `CarriedBackground`).

        Why: without it a run started mid-night builds its background from its first frame, and an
        insect that sits perfectly still there is painted out as far as the blur allows, or, when it
        is small, is taken for sheet until it moves (then it is a second track of one insect). The
        earlier run's background never held an insect (they are not blended in), so it is the
        empty sheet as that run knew it. `image` is this run's first frame: the background is
        taken only when it has the same size at detection resolution and the view has not moved
        (a camera knocked during the downtime would turn every mark on the sheet into a
        detection). Returns None when taken, else why not (for the log). Call before the first
        frame.
        """
        small, _ = downscale(check_frame(image, "static_screen detector"), self.cfg.detect_width)
        if background.shape != small.shape:
            return (
                f"it is {background.shape[1]}x{background.shape[0]} at detection size and this camera's "
                f"frames give {small.shape[1]}x{small.shape[0]}"
            )
        shift = math.hypot(*view_shift(background, small))
        if shift > _MAX_CARRIED_SHIFT:
            return f"the view moved by {shift:.1f} px (at detection size) since it was saved"
        self.reset()
        self.background = background.astype(np.float32)
        self._full_size = (image.shape[1], image.shape[0])
        self.background_version += 1
        return None

    def reset(self) -> None:
        """Forget the background: the next `warmup_frames` frames build a new one."""
        self.background: np.ndarray | None = None
        self.foreground_mask: np.ndarray | None = None
        self._held: np.ndarray | None = None
        self._warmup: list[np.ndarray] = []
        self._full_size: tuple[int, int] | None = None
        self._changed_run = 0
        self._since_init = 0
        self.healed = 0
        self.last_threshold = self.cfg.threshold
        self.last_gain = np.ones(3, dtype=np.float32)

    # ------------------------------------------------------------ per frame

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Return the insects in `image` (H x W x 3 uint8 BGR) in full-resolution coordinates."""
        check_frame(image, "static_screen detector")
        full_size = (image.shape[1], image.shape[0])
        if self._full_size is not None and full_size != self._full_size:
            log.warning(
                "frame size changed from %dx%d to %dx%d: rebuilding the background",
                *self._full_size,
                *full_size,
            )
            self.reset()
        self._full_size = full_size
        small, scale = downscale(image, self.cfg.detect_width)
        if self.texture is None:
            self.texture = scene_texture(small)
        small = cv2.GaussianBlur(small, (3, 3), 0).astype(np.float32)

        if self.background is None and self.sheet is not None:
            sheet_size = (self.sheet.shape[1], self.sheet.shape[0])
            if sheet_size != full_size:
                raise ConfigError(
                    f"detector.sheet_reference: the empty-sheet image is {sheet_size[0]}x{sheet_size[1]}, "
                    f"the camera's frames are {full_size[0]}x{full_size[1]}; take it with this camera"
                )
            sheet_small, _ = downscale(self.sheet, self.cfg.detect_width)
            self.background = cv2.GaussianBlur(sheet_small, (3, 3), 0).astype(np.float32)
            self._held = None
        if self.background is None:
            self._warmup.append(small)
            if len(self._warmup) < self.cfg.warmup_frame_count:
                return []
            self.background = self._initial_background(np.median(np.stack(self._warmup), axis=0))
            self._warmup = []
            self._held = None
            self.background_version += 1

        self._follow_gain(small)
        dist, threshold, mask = self._foreground(small)
        if self._new_foreground(mask) > _SHIFT_CHECK_MIN and self._follow_view(small):
            dist, threshold, mask = self._foreground(small)
        if cv2.countNonZero(mask) > self.cfg.reinit_fraction * mask.size:
            self._changed_run += 1
            self.foreground_mask = mask
            if self._changed_run < self.cfg.reinit_after_frames:
                self.skipped_frames += 1
                return []
            self.reinits += 1
            log.warning(
                "static_screen: %.0f%% of the frame differs from the background for %d frames "
                "(light or camera changed): rebuilding the background (rebuild #%d)",
                100.0 * cv2.countNonZero(mask) / mask.size,
                self._changed_run,
                self.reinits,
            )
            self.background = self._initial_background(small)
            self.background_version += 1
            self._since_init = 0
            self.last_gain = np.ones(3, dtype=np.float32)
            dist, threshold, mask = self._foreground(small)
        self._changed_run = 0

        detections, held = extract_detections(mask, scale, full_size, self.cfg, dist, threshold)
        self._since_init += 1
        if self._since_init % _HEAL_EVERY == 1 and self._heal_ghosts(small, held) > 0:
            dist, threshold, mask = self._foreground(small)
            detections, held = extract_detections(mask, scale, full_size, self.cfg, dist, threshold)
        held = cv2.dilate(held, _GUARD)
        cv2.accumulateWeighted(small, self.background, self.cfg.background_rate, mask=cv2.bitwise_not(held))
        self.foreground_mask = mask
        self._held = held
        return detections

    def _new_foreground(self, mask: np.ndarray) -> float:
        """Share of the frame that is foreground now and was not near any in the last frame.

        All of it on the first frame against a background: a sheet photo taken before the camera
        was knocked (or a restart's stored lamp-on frame) is checked once before it is trusted.
        """
        last = self.foreground_mask
        if last is None or last.shape != mask.shape:
            return 1.0
        return cv2.countNonZero(cv2.subtract(mask, cv2.dilate(last, _NEAR_LAST))) / mask.size

    def _follow_view(self, small: np.ndarray) -> bool:
        """Move the background with the view when the camera was knocked; True if it moved.

        Moved rather than rebuilt: the background keeps what it knew (the empty sheet under every
        sitting insect, the marks of `sheet_reference`), which a rebuild from this frame would
        lose; only the strip the camera sees for the first time comes from this frame.
        """
        assert self.background is not None and self._full_size is not None  # set by detect()
        dx, dy = whole_view_shift(self.background, small)
        if math.hypot(dx, dy) < _MIN_VIEW_SHIFT:
            return False
        h, w = self.background.shape[:2]
        # Whole pixels: the background's grain copied exactly (a sub-pixel move would blur it and
        # raise the noise floor); what is left, half a pixel at most, lies within sheet_shift_px.
        move = np.float32([[1, 0, round(dx)], [0, 1, round(dy)]])
        moved = cv2.warpAffine(
            self.background, move, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0
        )
        # The strip the camera sees for the first time is taken from this frame, insects painted out
        # as at the start (a 50 x 30 px knock of the real AMI frames: 112 detections in 3 frames with
        # that strip copied from the old edge, 66 this way, 65 unknocked).
        unseen = moved[:, :, 0] < 0
        moved[unseen] = self._initial_background(small)[unseen]
        self.background = moved
        self.background_version += 1
        self.view_moves += 1
        full = self._full_size[0] / w
        log.warning(
            "static_screen: the view moved by %+.0f, %+.0f px (camera knocked or sheet rehung): the "
            "background moved with it (move #%d)",
            dx * full,
            dy * full,
            self.view_moves,
        )
        return True

    def _follow_gain(self, small: np.ndarray) -> None:
        """Scale the background to the frame's light, judged on background pixels, cell by cell.

        Per channel, the median frame/background ratio in each of `light_cells` cells across the
        frame (rows to match), interpolated smoothly between cell centres. A lamp that dims scales
        every cell alike; a camera whose exposure shifts lifts the dark vignetted borders more than
        the clipped centre (+4.4% at the borders, 0% in the centre, between two real light-trap
        frames a minute apart), which one gain for the whole frame turned into border-wide blobs
        that swallowed the insects there. A cell with too few background samples (covered by
        insects) takes the frame's median instead.
        """
        assert self.background is not None
        step = _SAMPLE_STEP
        frame_s = small[::step, ::step]
        bg_s = self.background[::step, ::step]
        usable = (bg_s > 8.0).all(axis=2)
        if self._held is not None:
            usable &= self._held[::step, ::step] == 0
        if int(usable.sum()) < _MIN_SAMPLES:
            return
        ratio = frame_s / np.maximum(bg_s, 1.0)
        overall = np.median(ratio[usable], axis=0).astype(np.float32)
        self.last_gain = overall
        h, w = small.shape[:2]
        cols = self.cfg.light_cells
        rows = max(1, round(cols * h / w))
        if cols == 1 and rows == 1:
            g = overall
            cv2.multiply(self.background, (float(g[0]), float(g[1]), float(g[2]), 0.0), self.background)
            return
        sh, sw = ratio.shape[:2]
        grid = np.empty((rows, cols, 3), dtype=np.float32)
        for r in range(rows):
            for c in range(cols):
                cell = (
                    slice(r * sh // rows, (r + 1) * sh // rows),
                    slice(c * sw // cols, (c + 1) * sw // cols),
                )
                ok = usable[cell]
                enough = int(ok.sum()) >= max(_MIN_CELL_SAMPLES, ok.size // 4)
                grid[r, c] = np.median(ratio[cell][ok], axis=0) if enough else overall
        if float((grid.max(axis=(0, 1)) / np.maximum(grid.min(axis=(0, 1)), 1e-3)).max()) > _MAX_LIGHT_SPREAD:
            # not a smooth shift of exposure but part of the frame lit or shaded at once (a lamp
            # beside the trap): one gain, so that the sudden-change rule rebuilds the background
            # instead of a cell field that leaves a band of foreground along the light's edge
            grid[:] = overall
        field = cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)
        cv2.multiply(self.background, field, dst=self.background)

    def _foreground(self, small: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """Colour distance, this frame's threshold and the cleaned (hysteresis-low) mask."""
        assert self.background is not None
        reference = self.background
        if self.sheet is not None and self._full_size is not None:
            # A photo of the sheet is never pixel-aligned with tonight's frames (the cloth hangs
            # and moves: 2 px between two evenings of a real AMI trap), and the edges of its marks
            # would differ. Within sheet_shift_px, a frame pixel between the darkest and brightest
            # background around it is no difference (the frame projected onto that envelope).
            radius = math.ceil(self.cfg.sheet_shift_px * small.shape[1] / self._full_size[0])
            if radius > 0:
                kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
                low, high = cv2.erode(self.background, kernel), cv2.dilate(self.background, kernel)
                reference = np.clip(small, low, high)
        dist = colour_distance(small, reference, self.cfg.polarity)
        threshold = self.cfg.threshold
        if self.cfg.noise_factor > 0:
            noise = float(np.median(dist[::_SAMPLE_STEP, ::_SAMPLE_STEP]))
            threshold = max(threshold, self.cfg.noise_factor * noise)
        self.last_threshold = threshold
        _, low = cv2.threshold(dist, threshold * self.cfg.grow_fraction, 255, cv2.THRESH_BINARY)
        mask = clean_mask(low.astype(np.uint8))
        if self._full_size is not None:  # set by detect() before any foreground is computed
            self.exclude.apply(mask, self._full_size)
        return dist, threshold, mask

    def _heal_ghosts(self, small: np.ndarray, held: np.ndarray) -> int:
        """Repair the background where a held blob is not an object in the current frame.

        A still insect always stands out from the screen around it; a "ghost" does not: an
        insect that sat in the first frame and left, or a spot the first background got
        wrong. For each held blob the frame inside it is compared with the median colour of
        a ring around it (in the frame). If the blob differs from its ring less than half as
        much as from the background (and less than the threshold), the background there is
        wrong and is replaced by the frame. Returns how many blobs were repaired.
        """
        assert self.background is not None
        height, width = held.shape
        repaired = 0
        for bx, by, bw, bh, component in blobs(held):
            x0, y0 = max(0, bx - 8), max(0, by - 8)
            x1, y1 = min(width, bx + bw + 8), min(height, by + bh + 8)
            blob = np.zeros((y1 - y0, x1 - x0), np.uint8)
            blob[by - y0 : by - y0 + bh, bx - x0 : bx - x0 + bw] = component
            outer = cv2.dilate(blob, _RING)
            ring = cv2.bitwise_and(outer, cv2.bitwise_not(cv2.dilate(held[y0:y1, x0:x1], _OPEN)))
            if cv2.countNonZero(ring) < 16:
                continue
            frame_roi = small[y0:y1, x0:x1]
            ring_colour = np.median(frame_roi[ring > 0], axis=0)
            vs_ring = cv2.mean(
                colour_distance(frame_roi, np.full_like(frame_roi, ring_colour), "both"), blob
            )[0]
            bg_roi = self.background[y0:y1, x0:x1]
            vs_bg = cv2.mean(colour_distance(frame_roi, bg_roi, "both"), blob)[0]
            if vs_ring < 0.5 * vs_bg and vs_ring < self.last_threshold:
                np.copyto(bg_roi, frame_roi, where=outer[:, :, None] > 0)
                repaired += 1
        if repaired:
            self.healed += repaired
            self.background_version += 1
            log.info("static_screen: repaired the background under %d ghost blob(s)", repaired)
        return repaired

    # ------------------------------------------------------------ background building

    def _initial_background(self, small: np.ndarray) -> np.ndarray:
        """The frame with insect-like blobs painted out by a large median blur (see module doc).

        Blobs are found against the blur with the detector's own threshold and shape rules,
        then each (dilated) is replaced by the blur. Larger structures (sheet edges, folds)
        keep the frame's own pixels, so they never show up as differences later.
        """
        assert self._full_size is not None
        scale = small.shape[1] / self._full_size[0]
        k = round(2 * self.cfg.initial_insect_px * scale) | 1
        # A kernel much larger than the frame's features would flatten the lamp's light falloff
        # itself (the median of a curved surface is biased): keep it below a quarter of the frame.
        k = max(3, min(k, (min(small.shape[:2]) // 4) | 1))
        # Odd reflection continues brightness gradients (the lamp's vignette) past the frame
        # edge, so the median near edges and corners is not biased towards the centre.
        r = k // 2
        padded = np.pad(small, ((r, r), (r, r), (0, 0)), mode="reflect", reflect_type="odd")
        padded8 = np.clip(padded + 0.5, 0, 255).astype(np.uint8)
        smooth = cv2.medianBlur(padded8, k)[r:-r, r:-r].astype(np.float32)
        dist = colour_distance(small, smooth, self.cfg.polarity)
        _, low = cv2.threshold(dist, self.cfg.threshold * self.cfg.grow_fraction, 255, cv2.THRESH_BINARY)
        mask = clean_mask(low.astype(np.uint8))
        detections, _ = extract_detections(
            mask, 1.0, (small.shape[1], small.shape[0]), self._init_rules(scale), dist, self.cfg.threshold
        )
        # Paint only blobs whose mean contrast reaches the threshold (score >= 0.5): the
        # blur's small errors along sharp edges of the screen are faint, insects are not.
        detections = [d for d in detections if d.score >= 0.5]
        background = small.copy()
        if detections:
            paint = np.zeros(mask.shape, dtype=np.uint8)
            for det in detections:
                b = det.box
                paint[b.y0 : b.y1, b.x0 : b.x1] = mask[b.y0 : b.y1, b.x0 : b.x1]
            paint = cv2.dilate(paint, _GUARD)
            np.copyto(background, smooth, where=paint[:, :, None] > 0)
        log.info("static_screen: background built, %d insect-like blob(s) painted out", len(detections))
        return background

    def _init_rules(self, scale: float) -> DetectorConfig:
        """Filters for painting out: the detector's, in detection pixels, capped at init_insect_px."""
        px = 1.0 / (scale * scale)
        max_area = min(self.cfg.max_area_px, self.cfg.initial_insect_px**2) / px
        min_area = max(1, int(self.cfg.min_area_px / px))
        return self.cfg.model_copy(
            update={"min_area_px": min_area, "max_area_px": max(min_area + 1, math.ceil(max_area))}
        )
