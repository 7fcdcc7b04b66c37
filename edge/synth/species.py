"""Synthetic insect species and their sprites.

The catalogue stands in for what a trap really sees: moths of three families, beetles of three,
a hoverfly and a bumblebee. Each species is drawn with a body plan, colours and a wing pattern
chosen so that a small CNN can tell them apart at 96-128 px (a later issue trains one on crops of
these), while individuals of one species still differ (colour, brightness, how far the wings are
spread), as real ones do.

Sprites are drawn at 4x resolution in premultiplied colour and averaged down, so every edge is
antialiased like a real lens image: a detector that only sees hard 1-pixel edges would learn the
wrong thing. Drawing happens once per individual ("look"); rotations reuse the upright drawing.
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from edge.classify.taxonomy import Taxonomy
from edge.errors import ConfigError
from edge.synth.background import background_texture

BGR = tuple[int, int, int]
BodyPlan = Literal["moth_folded", "moth_spread", "moth_hawk", "beetle", "fly", "bee"]
Background = Literal["sheet", "flowers"]

# Alpha below this is dropped: the box of an insect is the box of its visible pixels.
ALPHA_MIN = 0.02
_SS = 4  # supersampling factor of the drawing
_KEEP = 2  # resolution factor at which the upright drawing is kept for rotations


@dataclass(frozen=True)
class SyntheticSpecies:
    """One species: its taxon and the traits the renderer draws.

    colour / accent / body: BGR of the main surface (wings, elytra), of the pattern, and of
        head/thorax/abdomen.
    pattern: which marks the renderer adds (see `_PATTERNS`).
    length_px: (min, max) body length in pixels in a REFERENCE_WIDTH-wide frame.
    span: width of the resting insect relative to its length (wings or elytra).
    abundance: relative chance to visit a ("sheet", "flowers") scene.
    mottle: strength of the scale/hair texture.
    """

    name: str
    common_name: str
    family: str
    order: str
    body_plan: BodyPlan
    colour: BGR
    accent: BGR
    body: BGR
    pattern: str
    length_px: tuple[float, float]
    span: float
    abundance: tuple[float, float]
    mottle: float = 0.08


SPECIES: tuple[SyntheticSpecies, ...] = (
    SyntheticSpecies(
        "Noctua pronuba", "Large Yellow Underwing", "Noctuidae", "Lepidoptera", "moth_folded",
        colour=(52, 82, 112), accent=(24, 36, 52), body=(48, 74, 100), pattern="stigma",
        length_px=(84, 100), span=0.56, abundance=(3.0, 0.3),
    ),
    SyntheticSpecies(
        "Agrotis exclamationis", "Heart and Dart", "Noctuidae", "Lepidoptera", "moth_folded",
        colour=(104, 138, 160), accent=(30, 34, 40), body=(60, 70, 84), pattern="dart",
        length_px=(64, 78), span=0.48, abundance=(3.0, 0.2),
    ),
    SyntheticSpecies(
        "Autographa gamma", "Silver Y", "Noctuidae", "Lepidoptera", "moth_folded",
        colour=(92, 96, 100), accent=(214, 220, 222), body=(70, 74, 80), pattern="gamma",
        length_px=(60, 74), span=0.62, abundance=(2.0, 1.0),
    ),
    SyntheticSpecies(
        "Opisthograptis luteolata", "Brimstone Moth", "Geometridae", "Lepidoptera", "moth_spread",
        colour=(40, 205, 235), accent=(40, 70, 120), body=(60, 170, 200), pattern="costal_spots",
        length_px=(46, 56), span=1.7, abundance=(2.0, 0.2),
    ),
    SyntheticSpecies(
        "Cabera pusaria", "Common White Wave", "Geometridae", "Lepidoptera", "moth_spread",
        colour=(196, 200, 204), accent=(140, 148, 156), body=(170, 176, 182), pattern="wave_lines",
        length_px=(44, 54), span=1.8, abundance=(2.0, 0.1), mottle=0.04,
    ),
    SyntheticSpecies(
        "Smerinthus ocellata", "Eyed Hawk-moth", "Sphingidae", "Lepidoptera", "moth_hawk",
        colour=(110, 118, 150), accent=(50, 50, 70), body=(80, 90, 115), pattern="eyespots",
        length_px=(100, 120), span=0.95, abundance=(1.0, 0.1),
    ),
    SyntheticSpecies(
        "Pterostichus melanarius", "Rain Beetle", "Carabidae", "Coleoptera", "beetle",
        colour=(30, 28, 28), accent=(12, 12, 12), body=(26, 24, 24), pattern="striae",
        length_px=(50, 60), span=0.42, abundance=(1.2, 0.4), mottle=0.03,
    ),
    SyntheticSpecies(
        "Coccinella septempunctata", "Seven-spot Ladybird", "Coccinellidae", "Coleoptera", "beetle",
        colour=(30, 40, 205), accent=(20, 20, 20), body=(20, 20, 20), pattern="ladybird",
        length_px=(30, 36), span=0.86, abundance=(0.5, 1.5), mottle=0.03,
    ),
    SyntheticSpecies(
        "Melolontha melolontha", "Cockchafer", "Scarabaeidae", "Coleoptera", "beetle",
        colour=(40, 80, 140), accent=(230, 230, 230), body=(30, 30, 34), pattern="chafer",
        length_px=(74, 88), span=0.5, abundance=(1.2, 0.2), mottle=0.06,
    ),
    SyntheticSpecies(
        "Episyrphus balteatus", "Marmalade Hoverfly", "Syrphidae", "Diptera", "fly",
        colour=(170, 170, 165), accent=(20, 24, 28), body=(40, 140, 225), pattern="bands",
        length_px=(38, 46), span=0.9, abundance=(0.4, 2.5),
    ),
    SyntheticSpecies(
        "Bombus terrestris", "Buff-tailed Bumblebee", "Apidae", "Hymenoptera", "bee",
        colour=(120, 110, 100), accent=(40, 190, 230), body=(24, 24, 26), pattern="stripes",
        length_px=(52, 62), span=0.75, abundance=(0.3, 3.0), mottle=0.16,
    ),
)  # fmt: skip

_BY_NAME = {s.name: s for s in SPECIES}


def species_by_name(name: str) -> SyntheticSpecies:
    """The catalogue entry called `name` (scientific name), or ConfigError naming the choices."""
    try:
        return _BY_NAME[name]
    except KeyError:
        choices = ", ".join(sorted(_BY_NAME))
        raise ConfigError(f"unknown synthetic species {name!r}; expected one of: {choices}") from None


def taxonomy() -> Taxonomy:
    """order > family > species for the catalogue, as a trained model bundle would carry it."""
    return Taxonomy(
        levels=("order", "family", "species"),
        parents={
            "family": {s.family: s.order for s in SPECIES},
            "species": {s.name: s.family for s in SPECIES},
        },
    )


# ---------------------------------------------------------------- individuals


@dataclass(frozen=True)
class InsectLook:
    """What makes one individual look like itself for its whole visit.

    colours are the species' colours after this individual's hue/brightness jitter; `spread`
    scales how far wings or elytra open; `seed` drives its scale texture.
    """

    species: SyntheticSpecies
    colour: BGR
    accent: BGR
    body: BGR
    spread: float
    wing_sweep: float
    seed: int


def _jitter_colour(bgr: BGR, dh: float, ds: float, dv: float) -> BGR:
    b, g, r = (c / 255.0 for c in bgr)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    h = (h + dh) % 1.0
    s = min(1.0, max(0.0, s * ds))
    v = min(1.0, max(0.0, v * dv))
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(b * 255), round(g * 255), round(r * 255))


def sample_look(species: SyntheticSpecies, rng: np.random.Generator) -> InsectLook:
    """Draw one individual's variation: hue +-2%, saturation +-12%, brightness +-10%, wing spread."""
    dh = float(rng.uniform(-0.02, 0.02))
    ds = float(rng.uniform(0.88, 1.12))
    dv = float(rng.uniform(0.9, 1.1))
    return InsectLook(
        species=species,
        colour=_jitter_colour(species.colour, dh, ds, dv),
        accent=_jitter_colour(species.accent, dh, ds, float(rng.uniform(0.92, 1.08))),
        body=_jitter_colour(species.body, dh, ds, dv),
        spread=float(rng.uniform(0.88, 1.12)),
        wing_sweep=float(rng.uniform(-1.0, 1.0)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


# ---------------------------------------------------------------- drawing


def _ellipse(cx: float, cy: float, ax: float, ay: float, angle_deg: float = 0.0, n: int = 40) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    x, y = ax * np.cos(t), ay * np.sin(t)
    a = math.radians(angle_deg)
    return np.stack([cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a)], axis=1)


def _mirror(pts: np.ndarray) -> np.ndarray:
    out = np.array(pts, dtype=np.float64)
    out[:, 0] = -out[:, 0]
    return out


class _Canvas:
    """A supersampled premultiplied RGBA canvas in body-length units (head at y=-0.5, tail +0.5)."""

    def __init__(self, side_px: int, length_px: float) -> None:
        self.n = side_px * _SS
        self.scale = length_px * _SS
        self.premult = np.zeros((self.n, self.n, 3), np.float32)
        self.alpha = np.zeros((self.n, self.n), np.float32)

    def _px(self, pts: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
        return np.asarray(pts, np.float64) * self.scale + self.n / 2.0

    def _roi(self, px: np.ndarray, pad: float) -> tuple[int, int, int, int] | None:
        x0 = max(0, math.floor(px[:, 0].min() - pad))
        y0 = max(0, math.floor(px[:, 1].min() - pad))
        x1 = min(self.n, math.ceil(px[:, 0].max() + pad) + 1)
        y1 = min(self.n, math.ceil(px[:, 1].max() + pad) + 1)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def shape(
        self, pts: np.ndarray, width: float | None = None
    ) -> tuple[tuple[int, int, int, int], np.ndarray]:
        """Mask of a filled polygon (width None) or of a polyline `width` body-lengths thick."""
        px = self._px(pts)
        thick = 0 if width is None else max(1, round(width * self.scale))
        roi = self._roi(px, thick + 2) or (0, 0, 1, 1)
        x0, y0, x1, y1 = roi
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        ipts = np.round((px - (x0, y0)) * 16).astype(np.int32).reshape(-1, 1, 2)
        if width is None:
            cv2.fillPoly(mask, [ipts], 1, cv2.LINE_8, 4)
        else:
            cv2.polylines(mask, [ipts], False, 1, thick, cv2.LINE_8, 4)
        return roi, mask

    def paint(
        self,
        pts: np.ndarray,
        colour: BGR,
        opacity: float = 1.0,
        width: float | None = None,
        clip: np.ndarray | None = None,
    ) -> None:
        """Paint colour over the shape with `opacity`, only where `clip` (full-canvas mask) is set."""
        (x0, y0, x1, y1), mask = self.shape(pts, width)
        sel = mask.astype(bool)
        if clip is not None:
            sel &= clip[y0:y1, x0:x1]
        if not sel.any():
            return
        p = self.premult[y0:y1, x0:x1]
        a = self.alpha[y0:y1, x0:x1]
        c = np.asarray(colour, np.float32) / 255.0
        p[sel] = p[sel] * (1.0 - opacity) + c * opacity
        a[sel] = a[sel] * (1.0 - opacity) + opacity

    def mask_of(self, pts: np.ndarray) -> np.ndarray:
        """Full-canvas boolean mask of a polygon, to clip patterns to a wing."""
        (x0, y0, x1, y1), mask = self.shape(pts)
        full = np.zeros((self.n, self.n), bool)
        full[y0:y1, x0:x1] = mask.astype(bool)
        return full


def _darker(c: BGR, f: float) -> BGR:
    return (round(c[0] * f), round(c[1] * f), round(c[2] * f))


def _lighter(c: BGR, f: float) -> BGR:
    return (round(255 - (255 - c[0]) * f), round(255 - (255 - c[1]) * f), round(255 - (255 - c[2]) * f))


def _antennae(cv: _Canvas, colour: BGR, spread: float, length: float = 0.16) -> None:
    for sgn in (-1, 1):
        pts = [
            (sgn * 0.03, -0.46),
            (sgn * 0.08 * spread, -0.46 - length * 0.6),
            (sgn * 0.15 * spread, -0.46 - length),
        ]
        cv.paint(np.array(pts), colour, width=0.014)


def _legs(cv: _Canvas, colour: BGR, reach: float, width: float = 0.02) -> None:
    for sgn in (-1, 1):
        for base, knee, foot in (
            ((0.08, -0.22), (0.26, -0.30), (0.30, -0.42)),
            ((0.10, -0.05), (0.34, 0.02), (0.40, 0.14)),
            ((0.10, 0.08), (0.30, 0.30), (0.34, 0.48)),
        ):
            pts = np.array([base, knee, foot]) * (1.0, 1.0)
            pts[1:, 0] *= reach
            pts[:, 0] *= sgn
            cv.paint(pts, colour, width=width)


def _draw_moth_folded(cv: _Canvas, lk: InsectLook) -> None:
    sp = lk.species
    half = sp.span / 2 * lk.spread
    _antennae(cv, _darker(lk.body, 0.8), 1.0, 0.10)
    cv.paint(_ellipse(0, -0.42, 0.07, 0.06), _darker(lk.body, 0.85))
    cv.paint(_ellipse(0, -0.31, 0.11, 0.11), lk.body)
    for sgn in (-1, 1):
        wing = np.array(
            [
                (0.02, -0.36),
                (0.12, -0.34),
                (half * 0.92, 0.22),
                (half, 0.40),
                (half * 0.75, 0.50),
                (-0.03, 0.47),
            ]
        )
        wing[:, 0] *= sgn
        cv.paint(wing, lk.colour)
        clip = cv.mask_of(wing)
        if sp.pattern == "stigma":
            cv.paint(_ellipse(sgn * 0.13, -0.05, 0.045, 0.05), _darker(lk.colour, 0.6), clip=clip)
            cv.paint(_ellipse(sgn * 0.18, 0.10, 0.05, 0.07, 20 * sgn), lk.accent, clip=clip)
            cv.paint(_ellipse(sgn * half * 0.8, 0.44, 0.045, 0.04), lk.accent, clip=clip)
            line = np.array([(sgn * 0.04, 0.30), (sgn * half * 0.6, 0.33), (sgn * half, 0.35)])
            cv.paint(line, _lighter(lk.colour, 0.7), width=0.02, clip=clip)
        elif sp.pattern == "dart":
            cv.paint(np.array([(sgn * 0.09, -0.14), (sgn * 0.14, 0.06)]), lk.accent, width=0.045, clip=clip)
            cv.paint(_ellipse(sgn * 0.19, 0.14, 0.05, 0.045), lk.accent, clip=clip)
            cv.paint(_ellipse(sgn * 0.11, 0.02, 0.035, 0.03), _darker(lk.colour, 0.75), clip=clip)
            edge = np.array([(sgn * 0.03, 0.40), (sgn * half * 0.9, 0.42)])
            cv.paint(edge, _darker(lk.colour, 0.7), width=0.03, clip=clip)
        elif sp.pattern == "gamma":
            cv.paint(_ellipse(sgn * 0.16, 0.05, 0.11, 0.16), _darker(lk.colour, 0.75), clip=clip)
            y_mark = np.array([(sgn * 0.10, -0.04), (sgn * 0.15, 0.08), (sgn * 0.21, -0.02)])
            cv.paint(y_mark, lk.accent, width=0.03, clip=clip)
            cv.paint(np.array([(sgn * 0.15, 0.08), (sgn * 0.16, 0.18)]), lk.accent, width=0.03, clip=clip)
            cv.paint(np.array([(sgn * 0.05, 0.34), (sgn * half, 0.38)]), _lighter(lk.colour, 0.8), width=0.02)
        # the outer wing edge darker, like the fringe of scales
        edge = np.array([(sgn * half, 0.40), (sgn * half * 0.75, 0.50), (sgn * 0.0, 0.47)])
        cv.paint(edge, _darker(lk.colour, 0.7), width=0.025, clip=clip)
    cv.paint(np.array([(0.0, -0.30), (0.0, 0.47)]), _darker(lk.colour, 0.55), width=0.015)


def _draw_moth_spread(cv: _Canvas, lk: InsectLook) -> None:
    sp = lk.species
    half = sp.span / 2 * lk.spread
    sweep = 0.05 * lk.wing_sweep
    _antennae(cv, _darker(lk.body, 0.7), 1.0, 0.16)
    cv.paint(_ellipse(0, 0.10, 0.055, 0.34), lk.body)
    for sgn in (-1, 1):
        hind = np.array(
            [(0.04, -0.06), (half * 0.78, 0.08 + sweep), (half * 0.62, 0.34), (0.22, 0.44), (0.04, 0.30)]
        )
        fore = np.array(
            [
                (0.04, -0.32),
                (half * 0.55, -0.30 + sweep),
                (half, -0.22 + sweep),
                (half * 0.82, 0.10 + sweep),
                (0.05, -0.04),
            ]
        )
        hind[:, 0] *= sgn
        fore[:, 0] *= sgn
        cv.paint(hind, _lighter(lk.colour, 0.92))
        hclip = cv.mask_of(hind)
        cv.paint(fore, lk.colour)
        fclip = cv.mask_of(fore)
        if sp.pattern == "costal_spots":
            for k in range(3):
                t = 0.25 + 0.25 * k
                cx = sgn * (0.05 + (half - 0.05) * t)
                cy = -0.32 + (0.10 + sweep) * t + 0.02
                cv.paint(_ellipse(cx, cy, 0.04, 0.03), lk.accent, clip=fclip)
            cv.paint(_ellipse(sgn * half * 0.45, -0.10 + sweep, 0.035, 0.03), (235, 235, 240), clip=fclip)
            cv.paint(
                _ellipse(sgn * half * 0.45, -0.10 + sweep, 0.055, 0.045), lk.accent, opacity=0.5, clip=fclip
            )
            cv.paint(
                np.array([(sgn * half, -0.22 + sweep), (sgn * half * 0.82, 0.10 + sweep)]),
                lk.accent,
                width=0.025,
                clip=fclip,
            )
        elif sp.pattern == "wave_lines":
            for k, y in enumerate((-0.20, -0.05, 0.10)):
                line = np.array(
                    [(sgn * 0.05, y - 0.06), (sgn * half * 0.5, y + 0.03 * (k - 1)), (sgn * half, y)]
                )
                cv.paint(line + np.array([0.0, sweep]), lk.accent, width=0.022, clip=fclip)
            for y in (0.14, 0.28):
                line = np.array([(sgn * 0.05, y), (sgn * half * 0.5, y + 0.02), (sgn * half * 0.8, y + 0.04)])
                cv.paint(line, lk.accent, width=0.022, clip=hclip)
    cv.paint(_ellipse(0, -0.30, 0.075, 0.09), lk.body)
    cv.paint(_ellipse(0, -0.42, 0.055, 0.05), _darker(lk.body, 0.7))


def _eyespot(cv: _Canvas, cx: float, cy: float, r: float, clip: np.ndarray) -> None:
    cv.paint(_ellipse(cx, cy, r, r), (25, 25, 30), clip=clip)
    cv.paint(_ellipse(cx, cy, r * 0.72, r * 0.72), (190, 120, 70), clip=clip)
    cv.paint(_ellipse(cx, cy, r * 0.35, r * 0.35), (20, 20, 25), clip=clip)


def _draw_moth_hawk(cv: _Canvas, lk: InsectLook) -> None:
    half = lk.species.span / 2 * lk.spread
    sweep = 0.04 * lk.wing_sweep
    _antennae(cv, _lighter(lk.body, 0.8), 1.0, 0.10)
    for sgn in (-1, 1):
        hind = _ellipse(sgn * 0.17, 0.16, 0.15, 0.2, -25 * sgn)
        cv.paint(hind, (120, 110, 215))  # pink hindwing
        _eyespot(cv, sgn * 0.20, 0.22, 0.075, cv.mask_of(hind))
    cv.paint(_ellipse(0, 0.16, 0.08, 0.32), lk.body)
    for k in range(4):
        y = 0.04 + 0.09 * k
        cv.paint(np.array([(-0.07, y), (0.07, y)]), _darker(lk.body, 0.8), width=0.012)
    for sgn in (-1, 1):
        fore = np.array(
            [
                (0.05, -0.32),
                (0.16, -0.30),
                (half, 0.10 + sweep),
                (half * 0.96, 0.24 + sweep),
                (half * 0.6, 0.16 + sweep),
                (0.10, 0.04),
            ]
        )
        fore[:, 0] *= sgn
        cv.paint(fore, lk.colour)
        clip = cv.mask_of(fore)
        band = np.array([(sgn * 0.12, -0.12), (sgn * half * 0.8, 0.14 + sweep)])
        cv.paint(band, lk.accent, width=0.06, clip=clip)
        cv.paint(
            np.array([(sgn * half * 0.6, 0.18 + sweep), (sgn * half, 0.20 + sweep)]),
            _lighter(lk.colour, 0.7),
            width=0.03,
            clip=clip,
        )
    cv.paint(_ellipse(0, -0.30, 0.09, 0.11), lk.body)
    cv.paint(_ellipse(0, -0.30, 0.05, 0.08), lk.accent)
    cv.paint(_ellipse(0, -0.43, 0.06, 0.05), _darker(lk.body, 0.8))


def _draw_beetle(cv: _Canvas, lk: InsectLook) -> None:
    sp = lk.species
    half = sp.span / 2 * (0.96 + 0.04 * lk.spread)
    leg = _darker(lk.body, 0.8) if sp.pattern != "chafer" else _darker(lk.colour, 0.8)
    _legs(cv, leg, reach=0.9 + 0.2 * (lk.spread - 0.88) / 0.24, width=0.025)
    if sp.pattern == "chafer":
        for sgn in (-1, 1):  # fan antennae, white side triangles, pointed tail
            cv.paint(np.array([(sgn * 0.04, -0.44), (sgn * 0.12, -0.54)]), lk.colour, width=0.02)
            cv.paint(_ellipse(sgn * 0.15, -0.57, 0.05, 0.03, 40 * sgn), _darker(lk.colour, 0.8))
            for k in range(4):
                y = 0.05 + 0.09 * k
                tri = np.array(
                    [
                        (sgn * (half - 0.02), y),
                        (sgn * (half + 0.04), y + 0.03),
                        (sgn * (half - 0.02), y + 0.07),
                    ]
                )
                cv.paint(tri, lk.accent)
        cv.paint(np.array([(-0.06, 0.40), (0.0, 0.58), (0.06, 0.40)]), _darker(lk.colour, 0.7))
    else:
        for sgn in (-1, 1):
            cv.paint(
                np.array([(sgn * 0.04, -0.44), (sgn * 0.12, -0.56), (sgn * 0.2, -0.62)]), leg, width=0.018
            )
    elytra_cy, elytra_ay = 0.14, 0.36 if sp.pattern != "ladybird" else 0.34
    cv.paint(_ellipse(0, -0.42, 0.09, 0.07), lk.body)
    pron_ay = 0.12 if sp.pattern != "ladybird" else 0.1
    pron_ax = half * (0.78 if sp.pattern != "ladybird" else 0.72)
    cv.paint(_ellipse(0, -0.24, pron_ax, pron_ay), lk.body)
    if sp.pattern == "ladybird":
        for sgn in (-1, 1):
            cv.paint(_ellipse(sgn * pron_ax * 0.65, -0.25, 0.06, 0.05), (235, 235, 235))
    if sp.pattern == "striae":
        cv.paint(np.array([(0.0, -0.34), (0.0, -0.14)]), _darker(lk.body, 0.6), width=0.015)
    elytra = _ellipse(0, elytra_cy, half, elytra_ay)
    elytra = elytra[elytra[:, 1] > -0.16]
    cv.paint(elytra, lk.colour)
    clip = cv.mask_of(elytra)
    if sp.pattern == "ladybird":
        spots = [
            (0.0, -0.1, 0.09),
            (0.2, 0.0, 0.08),
            (-0.2, 0.0, 0.08),
            (0.22, 0.24, 0.08),
            (-0.22, 0.24, 0.08),
            (0.12, 0.36, 0.06),
            (-0.12, 0.36, 0.06),
        ]
        for x, y, r in spots:
            cv.paint(_ellipse(x * lk.spread, y, r, r), lk.accent, clip=clip)
    elif sp.pattern == "striae":
        for sgn in (-1, 1):
            for k in (0.3, 0.55, 0.8):
                x = sgn * half * k
                cv.paint(
                    np.array([(x, -0.12), (x * 1.05, elytra_cy + 0.2), (x * 0.7, 0.45)]),
                    lk.accent,
                    width=0.012,
                    clip=clip,
                )
    elif sp.pattern == "chafer":
        for sgn in (-1, 1):
            cv.paint(
                np.array([(sgn * half * 0.5, -0.1), (sgn * half * 0.55, 0.42)]),
                _darker(lk.colour, 0.8),
                width=0.02,
                clip=clip,
            )
    cv.paint(
        np.array([(0.0, -0.14), (0.0, elytra_cy + elytra_ay)]),
        _darker(lk.colour, 0.45),
        width=0.016,
        clip=clip,
    )
    for sgn in (-1, 1):  # glossy highlight on each elytron
        cv.paint(
            _ellipse(sgn * half * 0.45, 0.0, half * 0.16, 0.12, 15 * sgn),
            (245, 245, 245),
            opacity=0.28,
            clip=clip,
        )


def _draw_fly(cv: _Canvas, lk: InsectLook) -> None:
    sweep = 24 + 8 * lk.wing_sweep  # degrees the wings open from the body axis
    _legs(cv, (30, 60, 90), reach=0.8, width=0.018)
    for sgn in (-1, 1):
        a = math.radians(sweep) * sgn
        cx, cy = 0.28 * math.sin(a), -0.12 + 0.28 * math.cos(a)
        wing = _ellipse(cx, cy, 0.11 * lk.spread, 0.3, -sweep * sgn)
        cv.paint(wing, lk.colour, opacity=0.38)
        clip = cv.mask_of(wing)
        for off in (-0.04, 0.03):
            vein = np.array([(sgn * 0.06, -0.16), (cx + off, cy), (2 * cx - sgn * 0.04 + off, 2 * cy + 0.12)])
            cv.paint(vein, (70, 70, 70), opacity=0.45, width=0.012, clip=clip)
    abdomen = _ellipse(0, 0.16, 0.12, 0.3)
    cv.paint(abdomen, lk.body)
    clip = cv.mask_of(abdomen)
    for y, w in ((-0.02, 0.035), (0.10, 0.05), (0.135, 0.018), (0.25, 0.05), (0.285, 0.018), (0.38, 0.04)):
        cv.paint(np.array([(-0.2, y), (0.2, y)]), lk.accent, width=w, clip=clip)
    cv.paint(_ellipse(0, -0.22, 0.12, 0.13), (40, 60, 70))
    cv.paint(_ellipse(0, -0.22, 0.1, 0.1), (60, 90, 110), opacity=0.5)
    cv.paint(_ellipse(0, -0.40, 0.13, 0.08), (40, 60, 140))  # big red-brown eyes
    cv.paint(np.array([(0.0, -0.47), (0.0, -0.33)]), (30, 40, 60), width=0.02)


def _draw_bee(cv: _Canvas, lk: InsectLook) -> None:
    sweep = 18 + 8 * lk.wing_sweep
    _legs(cv, lk.body, reach=0.75, width=0.035)
    abdomen = _ellipse(0, 0.17, 0.23 * lk.spread**0.5, 0.30)
    cv.paint(abdomen, lk.body)
    clip = cv.mask_of(abdomen)
    cv.paint(np.array([(-0.3, 0.05), (0.3, 0.05)]), lk.accent, width=0.09, clip=clip)
    cv.paint(_ellipse(0, 0.45, 0.2, 0.12), (225, 230, 235), clip=clip)  # buff/white tail
    thorax = _ellipse(0, -0.2, 0.2, 0.16)
    cv.paint(thorax, lk.body)
    cv.paint(
        np.array([(-0.22, -0.31), (0.0, -0.335), (0.22, -0.31)]),
        lk.accent,
        width=0.07,
        clip=cv.mask_of(thorax),
    )
    cv.paint(_ellipse(0, -0.40, 0.11, 0.08), _darker(lk.body, 0.9))
    _antennae(cv, lk.body, 0.8, 0.09)
    for sgn in (-1, 1):
        a = math.radians(sweep) * sgn
        cx, cy = 0.22 * math.sin(a), -0.05 + 0.22 * math.cos(a)
        wing = _ellipse(cx, cy, 0.08 * lk.spread, 0.24, -sweep * sgn)
        cv.paint(wing, lk.colour, opacity=0.42)


_DRAW = {
    "moth_folded": _draw_moth_folded,
    "moth_spread": _draw_moth_spread,
    "moth_hawk": _draw_moth_hawk,
    "beetle": _draw_beetle,
    "fly": _draw_fly,
    "bee": _draw_bee,
}
# Furthest a drawn point gets from the body centre, in body lengths (sets the canvas size).
_REACH = {
    "moth_folded": 0.66,
    "moth_spread": 1.0,
    "moth_hawk": 0.66,
    "beetle": 0.72,
    "fly": 0.66,
    "bee": 0.62,
}


@dataclass(frozen=True)
class UprightSprite:
    """An individual drawn once, head up, kept at `_KEEP`x resolution for rotations.

    premult: premultiplied BGR in [0, 1]; alpha in [0, 1]; side: output sprite side in pixels.
    """

    premult: np.ndarray
    alpha: np.ndarray
    side: int


def draw_upright(look: InsectLook, length_px: float) -> UprightSprite:
    """Draw `look` head-up at `length_px`, with its scale texture; deterministic in `look.seed`."""
    if not (4.0 <= length_px <= 2000.0):
        raise ConfigError(f"insect length_px={length_px!r}: expected 4..2000 pixels")
    side = 2 * math.ceil(length_px * _REACH[look.species.body_plan] * 1.42) + 4  # room for any rotation
    cv = _Canvas(side, length_px)
    _DRAW[look.species.body_plan](cv, look)
    # Scale/hair texture: smooth multiplicative noise, stronger for hairy species.
    rng = np.random.default_rng(look.seed)
    cells = max(4, round(length_px / 3))
    noise = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    noise = cv2.resize(noise, (cv.n, cv.n), interpolation=cv2.INTER_CUBIC)
    tex = np.clip(1.0 + look.species.mottle * noise, 0.5, 1.5)
    premult = cv.premult * tex[:, :, None]
    np.clip(premult, 0.0, cv.alpha[:, :, None], out=premult)
    k = _SS // _KEEP
    small = (cv.n // k, cv.n // k)
    premult = cv2.resize(premult, small, interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(cv.alpha, small, interpolation=cv2.INTER_AREA)
    if look.species.body_plan == "bee":  # fuzzy outline of a hairy body
        premult = cv2.GaussianBlur(premult, (0, 0), _KEEP * 0.6)
        alpha = cv2.GaussianBlur(alpha, (0, 0), _KEEP * 0.6)
    return UprightSprite(premult=premult, alpha=alpha, side=side)


@dataclass(frozen=True)
class Sprite:
    """A rotated, trimmed sprite ready to composite.

    premult: premultiplied BGR float32 in [0, 1]; alpha: float32 in [0, 1] (0 below ALPHA_MIN);
    dx, dy: offset of the sprite's top-left corner from the insect's centre pixel.
    """

    premult: np.ndarray
    alpha: np.ndarray
    dx: int
    dy: int


def rotate_sprite(upright: UprightSprite, angle_deg: float) -> Sprite:
    """Rotate the kept drawing (head towards `angle_deg`, clockwise from up) and trim it."""
    n = upright.alpha.shape[0]
    m = cv2.getRotationMatrix2D((n / 2.0 - 0.5, n / 2.0 - 0.5), -angle_deg, 1.0)
    rgba = np.dstack([upright.premult, upright.alpha])
    rot = cv2.warpAffine(
        rgba, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    side = upright.side
    rot = cv2.resize(rot, (side, side), interpolation=cv2.INTER_AREA)
    alpha = rot[:, :, 3]
    keep = alpha >= ALPHA_MIN
    ys, xs = np.nonzero(keep)
    if len(ys) == 0:
        raise ConfigError(f"insect sprite at angle {angle_deg} is empty; the length is too small to draw")
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    a = np.where(keep, alpha, 0.0)[y0:y1, x0:x1].astype(np.float32)
    p = (rot[y0:y1, x0:x1, :3] * (a / np.maximum(alpha[y0:y1, x0:x1], 1e-6))[:, :, None]).astype(np.float32)
    return Sprite(
        premult=np.ascontiguousarray(p), alpha=np.ascontiguousarray(a), dx=x0 - side // 2, dy=y0 - side // 2
    )


def render_insect(
    species: SyntheticSpecies, rng: np.random.Generator, length_px: float, angle_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """One new individual of `species`: (BGR uint8 HxWx3, alpha float32 HxW in [0, 1]).

    The individual's variation (colour, brightness, wing spread) comes from `rng`. The head
    points towards `angle_deg`, clockwise from up. The colour is straight (not premultiplied);
    composite as `bg * (1 - alpha) + bgr * alpha`.
    """
    sprite = rotate_sprite(draw_upright(sample_look(species, rng), length_px), angle_deg)
    colour = sprite.premult / np.maximum(sprite.alpha, 1e-6)[:, :, None]
    bgr = np.clip(colour * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return bgr, sprite.alpha


# ---------------------------------------------------------------- training crops


@functools.lru_cache(maxsize=8)
def _crop_texture(background: str, variant: int) -> np.ndarray:
    texture, _light = background_texture(background, 960, 720, 1000 + variant)
    return texture


def render_crop(
    species: SyntheticSpecies, rng: np.random.Generator, size: int = 128, background: str = "sheet"
) -> np.ndarray:
    """One training crop (BGR uint8 size x size x 3): an insect centred on a patch of background.

    Made the way the trap makes its crops, so a model trained on these sees what it will see
    in the field: the insect is drawn at frame scale (tens of pixels), on a random patch of sheet
    or foliage under random light, with sensor noise and JPEG compression, cut out square with
    15-25% padding (the cropper's default is 15%) and resized to `size`.
    """
    if background not in ("sheet", "flowers"):
        raise ConfigError(f"render_crop background={background!r}: expected 'sheet' or 'flowers'")
    if not (16 <= size <= 1024):
        raise ConfigError(f"render_crop size={size!r}: expected 16..1024 pixels")
    lo, hi = species.length_px
    length = float(rng.uniform(lo, hi) * rng.uniform(0.6, 1.05))
    bgr, alpha = render_insect(species, rng, length, float(rng.uniform(0.0, 360.0)))
    h, w = alpha.shape
    side = max(32, round(max(h, w) * (1.0 + 2.0 * rng.uniform(0.12, 0.25))))
    texture = _crop_texture(background, int(rng.integers(0, 4)))
    ty = int(rng.integers(0, texture.shape[0] - side))
    tx = int(rng.integers(0, texture.shape[1] - side))
    patch = texture[ty : ty + side, tx : tx + side].astype(np.float32)
    light = rng.uniform(0.7, 1.05) * (1.0 + rng.uniform(-0.04, 0.04) * np.array([1.0, 0.0, -1.0]))
    jitter = round(side * 0.04)
    oy = (side - h) // 2 + int(rng.integers(-jitter, jitter + 1))
    ox = (side - w) // 2 + int(rng.integers(-jitter, jitter + 1))
    oy, ox = min(max(oy, 0), side - h), min(max(ox, 0), side - w)
    roi = patch[oy : oy + h, ox : ox + w]
    a = alpha[:, :, None]
    roi[:] = roi * (1.0 - a) + bgr.astype(np.float32) * a
    patch = patch * light.astype(np.float32) + rng.normal(0.0, rng.uniform(1.0, 3.0), patch.shape).astype(
        np.float32
    )
    crop = np.clip(patch + 0.5, 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(80, 96))])
    crop = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else crop
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)
