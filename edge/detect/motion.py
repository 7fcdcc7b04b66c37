"""Motion detector for natural scenes (a flower camera): swaying plants, passing clouds, sitters.

A flower camera looks at a scene that is never still: wind shifts leaves and flower heads by a
few pixels, grass flickers, cloud shadows sweep across. Pollinators land, sit on a flower for
seconds to minutes, walk and fly off. OpenCV's MOG2 was tried first and fails both ways: it
learns at one rate everywhere, so an insect that sits still fades into the background and comes
back as a new track when it moves (counted twice), and with frames seconds apart sway never
repeats often enough for its mixture modes to learn it (dozens of false tracks per night).

So this detector keeps its own background and separates the three kinds of change:

* Sway: a pixel is compared with the *range* of the background within `sway_px` (per channel
  the minimum and maximum over that neighbourhood: grey erosion and dilation). An edge that
  moved by a few pixels stays inside that range; an insect's body does not.
* Flicker: each pixel learns (at `flicker_rate`) how much it usually changes from frame to
  frame, measured the same sway-tolerant way, and its threshold rises by `flicker_factor`
  times that. Grass that keeps moving raises its own threshold; a sitting insect does not
  flicker, so where it sits nothing rises. A moving insect leaves only a faint, fading trail.
* Light: the background is scaled each frame by a smooth gain field, the per-cell median of
  frame / background over cells of `light_cell_px` (pixels held under insects left out), so a
  cloud shadow drifting across the frame is followed at once, not learned slowly.

Sitting insects: pixels under blobs (dilated) are held: never blended into the background, so a
pollinator that stops stays exactly as different as on arrival, one track for the whole visit.
A pixel held longer than `hold_frames` frames becomes background (a bent stem, a moved leaf,
or an insect that was already there when the background was made and has since left). Blobs
covering more than `reinit_fraction` of the frame, or foreground in nearly every part of it (a
textured scene shifted: the sway tolerance hides most of the change, not where it is), or a whole
view that moved further than `sway_px` (phase correlation with the background finds the shift even
where half the frame is sky that cannot show it), for `reinit_after_frames` frames mean the camera
moved or the exposure jumped: the background is rebuilt as at the start, from the median of
`warmup_frames` frames (no detections meanwhile).

Runs at `detect_width` (INTER_AREA downscale) and shares the static detector's hysteresis,
morphology and shape filters. Every score is 1.0, as the Detection contract says for motion
(contrast here is relative to each pixel's own threshold, not comparable with the static
detector's). The first `warmup_frames` frames only build the background and return no
detections.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from edge.config import DetectorConfig
from edge.detect.base import Box, Detection
from edge.detect.crop import check_frame
from edge.detect.mask import DetectionMask
from edge.detect.static_screen import blobs, clean_mask, downscale, extract_detections, view_shift

log = logging.getLogger(__name__)

_GUARD = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))  # held pixels: an insect's soft edge too
_SAMPLE_STEP = 6  # the noise floor is estimated on every 6th pixel in each direction
_LIGHT_STEP = 4  # the light field is estimated on a 4x smaller copy
_RING = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (13, 13))  # the ring a blob is compared with
_RING_PX = 8  # room around a blob's box for that ring
_MIN_RING_PX = 16  # fewer ring pixels than this: no ghost test
_OUTLINE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))  # the band along a blob's outline
_GHOST_MIN_AGE = 3  # only blobs held this many frames are tested for ghosts
_GHOST_EDGE = 0.7  # a ghost's outline is this much weaker in the frame than in the background
_LIGHT_EXPLAINED = 0.1  # a blob is light when less than this share of it is left after one gain
_SPREAD_COLS = 8  # foreground spread is judged on a grid this many cells wide (rows to match)
_SPREAD_CELL_SHARE = 0.01  # a cell with more foreground than this share of its pixels has some
# A camera that moved changes the whole frame, but on a textured scene the sway tolerance hides most
# of it: a 3 x 5 px shift of a drawn meadow left 6% of the pixels foreground, another meadow 28%,
# both under reinit_fraction, and merge_close made one frame-wide "insect" of them, every frame for
# hold_frames frames. What gives it away is the spread: foreground in every cell (100% of the 8 x 5
# grid; the synthetic flower nights reach 41% at most, the real flower-pi frames 12%).
_REINIT_SPREAD = 0.9
_REINIT_MIN_SHARE = 0.02  # ... with at least this much of the frame foreground (not a fine drizzle)
# Where part of the view cannot show a shift (sky, a wall, a flat sheet), the spread stays low: a
# 3 x 5 px or 18 x 30 px bump of that meadow with sky in its top 40% left foreground in 75% of the
# cells, no rebuild, and one "insect" across the meadow half for hold_frames frames. So the frame is
# also compared with the background by phase correlation (static_screen.view_shift): it found those
# shifts within 0.2 px (peak response 0.73 to 1.2), and under 0.1 px on the real flower-pi frames.
# The whole frame's shift, not static_screen's quadrant vote: sky or a plain wall in a quadrant reads
# as "not moved" (a drawn sky in the top 40% voted 0 px with response 0.91) and outvoted the meadow.
_LIGHT_TOLERANCE = 0.08  # pixels whose frame/background ratio is further than this from the rough
# light field (insects, sway) are left out of the final estimate


class MotionDetector:
    """Sway-, flicker- and light-tolerant background difference that holds still insects.

    After each frame: `foreground_mask` is the cleaned foreground (0/255 uint8 at detection
    resolution), `background` the reference (float32 BGR), `flicker` the per-pixel usual change,
    `held` the pixels kept out of learning (0/255), and `reinits` how many times the background
    was rebuilt.
    """

    def __init__(self, cfg: DetectorConfig) -> None:
        self.cfg = cfg
        self.exclude = DetectionMask(cfg.mask)
        self.reinits = 0
        self.light_fixes = 0
        self.ghosts_healed = 0
        self.reset()

    def reset(self) -> None:
        """Forget the scene: the next `warmup_frames` frames build a new background."""
        self.background: np.ndarray | None = None
        self.flicker: np.ndarray | None = None
        self.held: np.ndarray | None = None
        self.foreground_mask: np.ndarray | None = None
        self._age: np.ndarray | None = None
        self._prev_range: tuple[np.ndarray, np.ndarray] | None = None
        self._warmup: list[np.ndarray] = []
        self._full_size: tuple[int, int] | None = None
        self._learned = 0
        self._changed_run = 0
        self._kernel: np.ndarray | None = None
        self._threshold: np.ndarray | None = None

    # ------------------------------------------------------------ per frame

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Return the insects in `image` (H x W x 3 uint8 BGR), boxes at full resolution."""
        check_frame(image, "motion detector")
        full_size = (image.shape[1], image.shape[0])
        if self._full_size is not None and full_size != self._full_size:
            log.warning(
                "frame size changed from %dx%d to %dx%d: restarting the motion background",
                *self._full_size,
                *full_size,
            )
            self.reset()
        self._full_size = full_size
        small, scale = downscale(image, self.cfg.detect_width)
        small = cv2.GaussianBlur(small, (3, 3), 0)
        radius = round(self.cfg.sway_px * scale)
        self._kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))
        frame_range = self._range(small)

        if self.background is None:
            self._warm_up(small)
            self._prev_range = frame_range
            return []
        assert self.flicker is not None and self.held is not None

        self._follow_light(small)
        dist = self._outside(small, self._range(self._background8()))
        ratio = self._relative(dist)
        _, low = cv2.threshold(ratio, self.cfg.grow_fraction, 255, cv2.THRESH_BINARY)
        mask = self.exclude.apply(clean_mask(low.astype(np.uint8)), full_size)
        changed = self._scene_changed(small, mask, scale)
        if changed is not None:
            self._changed_run += 1
            self.foreground_mask = mask
            if self._changed_run >= self.cfg.reinit_after_frames:
                self.reinits += 1
                log.warning(
                    "motion: %s for %d frames (camera moved or exposure jumped): rebuilding the background "
                    "(rebuild #%d)",
                    changed,
                    self._changed_run,
                    self.reinits,
                )
                # Rebuilt like the first background: the median of warm-up frames from this one
                # on, not this frame alone, in which a pollinator would stay as a ghost once it moved on.
                self.background = None
                self._changed_run = 0
                self._warm_up(small)
            self._prev_range = frame_range
            return []
        self._changed_run = 0

        mask = self._explain_away(small, mask)
        detections, held = extract_detections(mask, scale, full_size, self.cfg, ratio, 1.0)
        # Scores stay 1.0 as the Detection contract says for motion (contrast is relative here).
        merged = merge_close(detections, round(2 * self.cfg.sway_px))
        detections = [Detection(d.box, d.area_px, 1.0, d.at_edge) for d in merged]
        for det in detections:  # parts of an insect the sway tolerance missed are not learned either
            b = det.box
            rows = slice(int(b.y0 * scale), math.ceil(b.y1 * scale))
            held[rows, int(b.x0 * scale) : math.ceil(b.x1 * scale)] = 255
        self._learn(small, frame_range, cv2.dilate(held, _GUARD))
        self.foreground_mask = mask
        return detections

    def _scene_changed(self, small: np.ndarray, mask: np.ndarray, scale: float) -> str | None:
        """Why this frame shows a changed scene rather than insects (for the log), or None.

        The view shift is computed only when some foreground is there to explain (one FFT of the
        detection-size frame), so a quiet frame costs nothing more.
        """
        share, spread = foreground_share(mask)
        if share > self.cfg.reinit_fraction:
            return f"{100.0 * share:.0f}% of the frame differs from the background"
        if share <= _REINIT_MIN_SHARE:
            return None
        if spread >= _REINIT_SPREAD:
            return (
                f"{100.0 * share:.0f}% of the frame, in {100.0 * spread:.0f}% of its cells, "
                "differs from the background"
            )
        dx, dy = view_shift(self._background8(), small)
        # Beyond the sway range each pixel is compared with, the shift shows as foreground.
        if max(abs(dx), abs(dy)) > self.cfg.sway_px * scale:
            moved = f"{dx / scale:+.0f}, {dy / scale:+.0f} px"
            return f"the whole view moved by {moved} (further than sway_px {self.cfg.sway_px:g})"
        return None

    # ------------------------------------------------------------ model

    def _warm_up(self, small: np.ndarray) -> None:
        """Add a frame to the warm-up; with `warmup_frames` of them, start from their per-pixel median."""
        self._warmup.append(small)
        if len(self._warmup) < self.cfg.warmup_frame_count:
            return
        first = np.median(np.stack(self._warmup), axis=0) if len(self._warmup) > 1 else small
        self._start(first.astype(np.float32))
        self._warmup = []

    def _start(self, background: np.ndarray) -> None:
        """A new background (float32 BGR); flicker is learned from scratch over the next frames."""
        self.background = background
        self.flicker = np.zeros(background.shape[:2], np.float32)
        self.held = np.zeros(background.shape[:2], np.uint8)
        self._age = np.zeros(background.shape[:2], np.uint16)
        self._learned = 0

    def _background8(self) -> np.ndarray:
        assert self.background is not None
        return cv2.convertScaleAbs(self.background)

    def _range(self, image8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel minimum and maximum of a uint8 image within the sway radius."""
        assert self._kernel is not None
        if self._kernel.shape[0] == 1:
            return image8, image8
        return cv2.erode(image8, self._kernel), cv2.dilate(image8, self._kernel)

    def _outside(self, frame8: np.ndarray, value_range: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """How far (uint8 levels) each pixel lies outside a per-channel range: the largest channel's excess.

        uint8 subtraction saturates at 0, so each side gives exactly the excess beyond it;
        `polarity` keeps only darker, brighter or either changes.
        """
        lo, hi = value_range
        polarity = self.cfg.polarity
        if polarity == "dark":
            diff = cv2.subtract(lo, frame8)
        elif polarity == "bright":
            diff = cv2.subtract(frame8, hi)
        else:
            diff = cv2.max(cv2.subtract(lo, frame8), cv2.subtract(frame8, hi))
        b, g, r = cv2.split(diff)
        return cv2.max(cv2.max(b, g), r)

    def _relative(self, dist: np.ndarray) -> np.ndarray:
        """Distance divided by each pixel's threshold (fixed floor, noise floor, own flicker), float32."""
        assert self.flicker is not None
        base = self.cfg.threshold
        if self.cfg.noise_factor > 0:
            noise = float(np.median(dist[::_SAMPLE_STEP, ::_SAMPLE_STEP]))
            base = max(base, self.cfg.noise_factor * noise)
        threshold = cv2.addWeighted(self.flicker, self.cfg.flicker_factor, self.flicker, 0.0, base)
        self._threshold = threshold
        return cv2.divide(dist.astype(np.float32), threshold)

    def _follow_light(self, small: np.ndarray) -> None:
        """Scale the background by a smooth gain field: local frame / background, robustly averaged.

        On a 4x smaller copy: a Gaussian-weighted mean of the ratio over about `light_cell_px`
        (held pixels and dark ones left out), then again over only the pixels within
        `_LIGHT_TOLERANCE` of that first estimate, so insects and swaying edges do not bend it.
        """
        assert self.background is not None and self.held is not None and self._full_size is not None
        h, w = small.shape[:2]
        size = (max(1, w // _LIGHT_STEP), max(1, h // _LIGHT_STEP))
        frame_s = cv2.resize(small, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        bg_s = cv2.resize(self.background, size, interpolation=cv2.INTER_AREA)
        ratio = frame_s / np.maximum(bg_s, 1.0)
        usable = (bg_s.min(axis=2) > 8.0) & (cv2.resize(self.held, size, interpolation=cv2.INTER_AREA) == 0)
        sigma = max(1.0, self.cfg.light_cell_px * (w / self._full_size[0]) / _LIGHT_STEP / 4.0)
        weight = usable.astype(np.float32)
        gain = _weighted_blur(ratio, weight, sigma)
        if gain is None:
            return  # nothing usable (all dark or held): keep the background as it is
        close = np.abs(ratio - gain).max(axis=2) < _LIGHT_TOLERANCE
        refined = _weighted_blur(ratio, weight * close, sigma)
        if refined is not None:
            gain = refined
        gain = np.clip(gain, 0.2, 5.0)
        cv2.multiply(
            self.background, cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR), dst=self.background
        )

    def _explain_away(self, small: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Drop blobs that are errors of the background, not insects, and repair it there.

        Two errors would otherwise be held for `hold_frames` (a held blob is never learned):

        * Light: a cloud edge or sun fleck the smooth gain field missed makes a bright flower
          (and the leaves around it) uniformly brighter or darker than its background. If one
          per-channel gain over the blob and a ring around it leaves (almost) nothing of the
          blob above its threshold, it was light: an insect and the ring around it need
          different gains.
        * Ghost: an insect that sat in the frames the background was built from, and has left.
          Then the frame inside the blob looks like its surroundings and the background does
          not (the static screen's test): colour distance to the ring's median colour, in the
          frame, less than half of that in the background.
        """
        assert self.background is not None and self._threshold is not None
        height, width = mask.shape
        out = mask
        for bx, by, bw, bh, component in blobs(mask):
            x0, y0 = max(0, bx - _RING_PX), max(0, by - _RING_PX)
            x1, y1 = min(width, bx + bw + _RING_PX), min(height, by + bh + _RING_PX)
            blob = np.zeros((y1 - y0, x1 - x0), np.uint8)
            blob[by - y0 : by - y0 + bh, bx - x0 : bx - x0 + bw] = component
            region = cv2.dilate(blob, _RING) > 0
            ring = region & (mask[y0:y1, x0:x1] == 0)
            frame8 = small[y0:y1, x0:x1]
            frame_roi = frame8.astype(np.float32)
            bg_roi = self.background[y0:y1, x0:x1]
            gain = np.median(frame_roi[region] / np.maximum(bg_roi[region], 1.0), axis=0)
            repaired = bg_roi * gain.astype(np.float32)
            rest = self._outside(frame8, self._range(cv2.convertScaleAbs(repaired)))
            residual = cv2.divide(rest.astype(np.float32), self._threshold[y0:y1, x0:x1])
            inside = blob > 0
            explained = (residual[inside] > self.cfg.grow_fraction).mean() < _LIGHT_EXPLAINED
            if explained:
                self.light_fixes += 1
            elif self._settled(x0, y0, inside) and int(ring.sum()) >= _MIN_RING_PX:
                outline = cv2.morphologyEx(blob, cv2.MORPH_GRADIENT, _OUTLINE) > 0
                edge_frame = _edge_strength(frame_roi, outline)
                edge_bg = _edge_strength(bg_roi, outline)
                explained = edge_frame < _GHOST_EDGE * edge_bg
                if explained:
                    repaired = frame_roi
                    self.ghosts_healed += 1
            if explained:
                np.copyto(bg_roi, repaired, where=region[:, :, None])
                if out is mask:
                    out = mask.copy()
                out[y0:y1, x0:x1][inside] = 0
        return out

    def _settled(self, x0: int, y0: int, inside: np.ndarray) -> bool:
        """Whether most of a blob was held `_GHOST_MIN_AGE` frames (a fresh blob may be an arrival)."""
        assert self._age is not None
        h, w = inside.shape
        ages = self._age[y0 : y0 + h, x0 : x0 + w][inside]
        return ages.size > 0 and float(np.median(ages)) >= _GHOST_MIN_AGE

    def _learn(self, small: np.ndarray, frame_range: tuple[np.ndarray, np.ndarray], held: np.ndarray) -> None:
        """Learn flicker and the background outside held pixels; let go of pixels held too long.

        The background follows the frame as an approximate running median (a step of at most
        `background_rate` x 255 levels per frame towards it): a median keeps the edges of swaying
        leaves sharp where a mean would smear them, and an insect passing by hardly moves it.
        """
        assert self.background is not None and self.flicker is not None and self._age is not None
        assert self._prev_range is not None
        free = cv2.bitwise_not(held)
        change = self._outside(small, self._prev_range).astype(np.float32)
        self._learned += 1
        rate = max(self.cfg.flicker_rate, 1.0 / self._learned)
        cv2.accumulateWeighted(change, self.flicker, rate, mask=free)
        # Held pixels age; those held too long are let go into the background at once.
        self._age = cv2.min(cv2.add(self._age, 1), held.astype(np.uint16) * np.uint16(257))
        expired = cv2.compare(self._age, self.cfg.hold_frames, cv2.CMP_GT)
        if cv2.countNonZero(expired):
            np.copyto(self.background, small, where=expired[:, :, None] > 0, casting="unsafe")
            self._age[expired > 0] = 0
            free = cv2.bitwise_or(free, expired)
            log.info(
                "motion: %d pixels held for %d frames let go into the background",
                cv2.countNonZero(expired),
                self.cfg.hold_frames,
            )
        step = self.cfg.background_rate * 255.0
        towards = cv2.subtract(small.astype(np.float32), self.background)
        np.clip(towards, -step, step, out=towards)
        cv2.add(self.background, towards, dst=self.background, mask=free)
        self.held = cv2.bitwise_not(free)
        self._prev_range = frame_range


def foreground_share(mask: np.ndarray) -> tuple[float, float]:
    """(share of the mask's pixels that are foreground, share of the `_SPREAD_COLS`-wide grid's cells
    that hold some): how much of the frame changed, and how evenly over it."""
    height, width = mask.shape
    rows = max(1, round(_SPREAD_COLS * height / width))
    cells = cv2.resize(mask, (_SPREAD_COLS, rows), interpolation=cv2.INTER_AREA)  # mean 0..255 per cell
    share = cv2.countNonZero(mask) / mask.size
    return share, float((cells > 255 * _SPREAD_CELL_SHARE).mean())


def merge_close(detections: list[Detection], gap: int) -> list[Detection]:
    """Merge detections whose boxes come within `gap` full-resolution pixels of each other.

    Sway tolerance blinds the detector along high-contrast edges of the background (anything
    between a petal's white and a leaf's green lies inside their range), so an insect sitting
    across a petal's edge can fall apart into two blobs a few pixels apart: one insect, one box.
    The merged box is the union, its area the sum, its score the larger.
    """
    merged = list(detections)
    changed = True
    while changed and len(merged) > 1:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i].box, merged[j].box
                if a.x0 - gap < b.x1 and b.x0 - gap < a.x1 and a.y0 - gap < b.y1 and b.y0 - gap < a.y1:
                    box = Box(min(a.x0, b.x0), min(a.y0, b.y0), max(a.x1, b.x1), max(a.y1, b.y1))
                    merged[i] = Detection(
                        box=box,
                        area_px=merged[i].area_px + merged[j].area_px,
                        score=max(merged[i].score, merged[j].score),
                        at_edge=merged[i].at_edge or merged[j].at_edge,
                    )
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged


def _edge_strength(image: np.ndarray, where: np.ndarray) -> float:
    """Mean gradient magnitude (largest channel, Sobel) of a float32 BGR image over the pixels `where`."""
    gx = np.abs(cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)).max(axis=2)
    gy = np.abs(cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)).max(axis=2)
    return float((gx + gy)[where].mean())


def _weighted_blur(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray | None:
    """Gaussian-weighted mean of `values` (H x W x C) with per-pixel `weight`; None if no weight anywhere."""
    total = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    if float(total.max()) <= 1e-6:
        return None
    summed = cv2.GaussianBlur(values * weight[:, :, None], (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    mean = summed / np.maximum(total, 1e-6)[:, :, None]
    empty = total < 1e-3  # far from any usable pixel: the overall weighted mean
    if empty.any():
        mean[empty] = (values * weight[:, :, None]).sum(axis=(0, 1)) / max(float(weight.sum()), 1e-6)
    return mean.astype(np.float32)
