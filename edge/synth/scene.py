"""A synthetic trap night: a planned sequence of insect visits rendered frame by frame.

The whole night is planned from the seed when the night is made: which insects come, when they
arrive and leave, and where each one is on every frame (they sit for long stretches, crawl a
few pixels a frame while turning, sometimes hop, sometimes crawl over a sitter, then leave).
Any frame can then be rendered on its own, in any order, with the same pixels every time: a
benchmark can render frame 500 without frames 0-499, and a test can render a frame twice.

Rendering is built for speed (the benchmarks render full-HD nights): the background, the lamp's
light falloff and a sensor-noise field are made once per (scene, size, seed); a frame is the lit
background scaled by the night's slow light drift (one cv2.transform), the insects composited in
their own small regions from cached sprites, and the noise field added at a per-frame offset.

The flower scene is outdoors, so its background is not still (see `FlowerWeather`): wind sways
leaves and flower heads by a few pixels (one cv2.remap through a smooth displacement field) and
passing clouds dim it unevenly (their soft shadows drift across the frame). Both are functions of
the frame's time only, so any frame still renders alone and identically. Insects do not sway and
the ground truth holds insects only: a detector has to tell their motion from the scene's.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

import cv2
import numpy as np

from edge.detect.base import Box
from edge.errors import ConfigError
from edge.synth.background import REFERENCE_WIDTH, background_texture, periodic_noise, smooth_noise
from edge.synth.species import (
    _REACH,
    SPECIES,
    InsectLook,
    Sprite,
    SyntheticSpecies,
    UprightSprite,
    draw_upright,
    rotate_sprite,
    sample_look,
    species_by_name,
)

SceneKind = Literal["sheet", "flowers"]
ANGLE_STEP_DEG = 2  # poses are quantised so sprites can be cached
_NOISE_PAD = 64  # the noise field is this much larger than the frame; frames read it at an offset
_NOISE_SIGMA = 2.2  # sensor noise, grey levels


@dataclass(frozen=True)
class SceneParams:
    """What to generate. `start` must be timezone-aware; it is converted to UTC.

    insects: number of visits over the night (each visit is one insect, counted once).
    snapshot_every: a time-lapse camera: the night is simulated in steps of frame_interval_s and
        every n-th step is a frame (frames are n * frame_interval_s apart). Insects behave as in
        a filmed night between the frames; a visit that falls between two snapshots is never seen
        and not part of the ground truth. 1: every step is a frame (a filmed night).
    """

    scene: SceneKind = "sheet"
    width: int = 1280
    height: int = 720
    frames: int = 300
    frame_interval_s: float = 5.0
    insects: int = 12
    seed: int = 0
    start: datetime = field(default_factory=lambda: datetime(2026, 7, 1, 21, 30, tzinfo=timezone.utc))
    species: tuple[str, ...] | None = None  # None: the whole catalogue, by the scene's abundances
    snapshot_every: int = 1

    def __post_init__(self) -> None:
        if self.scene not in ("sheet", "flowers"):
            raise ConfigError(f"synthetic scene={self.scene!r}: expected 'sheet' or 'flowers'")
        for name, value, lo in (
            ("width", self.width, 64),
            ("height", self.height, 48),
            ("frames", self.frames, 1),
            ("snapshot_every", self.snapshot_every, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < lo:
                raise ConfigError(f"synthetic scene {name}={value!r}: expected an integer >= {lo}")
        if max(self.width, self.height) > 8192:
            raise ConfigError(
                f"synthetic scene size {self.width}x{self.height}: expected at most 8192 per side"
            )
        if not isinstance(self.insects, int) or self.insects < 0:
            raise ConfigError(f"synthetic scene insects={self.insects!r}: expected an integer >= 0")
        if not (isinstance(self.frame_interval_s, (int, float)) and self.frame_interval_s > 0):
            raise ConfigError(
                f"synthetic scene frame_interval_s={self.frame_interval_s!r}: expected seconds > 0"
            )
        if not isinstance(self.start, datetime) or self.start.tzinfo is None:
            raise ConfigError(
                f"synthetic scene start={self.start!r}: expected a timezone-aware datetime (e.g. with +00:00)"
            )
        object.__setattr__(self, "start", self.start.astimezone(timezone.utc))
        if self.species is not None:
            if not self.species:
                raise ConfigError("synthetic scene species=(): name at least one species or leave it out")
            for name in self.species:
                species_by_name(name)  # ConfigError naming the catalogue


@dataclass(frozen=True, slots=True)
class GroundTruthObject:
    """One insect visible in one frame.

    box: the box of its visible pixels (alpha >= ALPHA_MIN), clipped to the frame.
    moving: its position or pose changed since the previous frame (False on arrival and
        while it sits: then its box is identical frame to frame).
    """

    insect_id: int
    species: str
    family: str
    order: str
    box: Box
    moving: bool


@dataclass(frozen=True, slots=True)
class Visit:
    """One insect's stay: visible on frames arrival_frame .. departure_frame - 1."""

    insect_id: int
    species: str
    arrival_frame: int
    departure_frame: int

    @property
    def last_frame(self) -> int:
        return self.departure_frame - 1


@dataclass
class _Track:
    """The planned pose of one insect on each step of its visit (index = step - arrival; a step is a
    frame unless the night is a time-lapse, see SceneParams.snapshot_every)."""

    visit: Visit
    species: SyntheticSpecies
    look: InsectLook
    length_px: float
    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    moving: np.ndarray


class FlowerWeather:
    """Wind sway and cloud shadows of the flower scene as pure functions of time.

    Outdoors nothing stands still: a detector built for a fixed screen sees swaying leaves and
    drifting shadows as foreground. Both are computed on a coarse grid (one cell per `_CELL` px,
    they are smooth) and upsampled per frame:

    * Sway: each region shifts by up to `sway_px` (a few px) along x and y, as two sinusoids
      whose phases vary smoothly over the frame (neighbouring flowers sway out of step) and
      whose strength follows slow gusts. `remap` moves the lit background through it.
    * Clouds: a wrap-around noise field drifts with the wind; where it rises above a threshold
      a soft shadow dims the scene by up to `cloud_depth`. Its edges sweep across the frame
      over a few frames, so the light changes unevenly, not by one global gain.
    """

    _CELL = 8

    def __init__(self, rng: np.random.Generator, width: int, height: int) -> None:
        s = max(width / REFERENCE_WIDTH, 0.15)
        self.width, self.height = width, height
        lw, lh = max(2, -(-width // self._CELL)), max(2, -(-height // self._CELL))
        cell = 180 * s / self._CELL  # sway regions about 180 px wide at 1920
        amp = np.clip(0.55 + 0.35 * smooth_noise(rng, lh, lw, cell), 0.15, 1.0)
        self.sway_px = float(rng.uniform(2.5, 4.0) * max(s, 0.5))
        phases = [2 * np.pi * (0.5 + 0.5 * np.tanh(smooth_noise(rng, lh, lw, cell))) for _ in range(2)]
        self._amp = (self.sway_px * amp).astype(np.float32)
        self._cos = [np.cos(p).astype(np.float32) for p in phases]
        self._sin = [np.sin(p).astype(np.float32) for p in phases]
        self._omega = 2 * np.pi / rng.uniform(6.0, 20.0, 2)  # sway periods, seconds
        self._gust = (2 * np.pi / rng.uniform(60.0, 240.0, 2), rng.uniform(0, 2 * np.pi, 2))
        # Clouds: a field three frames wide and two high, drifting about one frame width per 4-10 min.
        self._cloud = periodic_noise(rng, 2 * lh, 3 * lw, 0.35 * lw)
        speed = lw / rng.uniform(240.0, 600.0)  # coarse cells per second
        heading = rng.uniform(-0.4, 0.4)
        self._cloud_v = (speed * math.cos(heading), speed * math.sin(heading))
        self.cloud_depth = float(rng.uniform(0.15, 0.3))
        self._cloud_level = float(rng.uniform(0.0, 0.6))
        self._size = (lw, lh)
        grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
        self._grid = (grid_x, grid_y)

    def gust(self, t: float) -> float:
        """Wind strength in [0.25, 1] at time t (s): slow gusts."""
        (w1, w2), (p1, p2) = self._gust
        return 0.625 + 0.375 * (0.6 * math.sin(w1 * t + p1) + 0.4 * math.sin(w2 * t + p2))

    def displacement(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Coarse-grid x and y shift (px, float32) of the background at time t."""
        g = self.gust(t)
        out = []
        for k in range(2):
            wt = self._omega[k] * t
            out.append(self._amp * g * (math.sin(wt) * self._cos[k] + math.cos(wt) * self._sin[k]))
        return out[0], out[1]

    def light(self, t: float) -> np.ndarray:
        """Coarse-grid brightness factor in [1 - cloud_depth, 1] at time t (cloud shadows)."""
        lw, lh = self._size
        vx, vy = self._cloud_v
        shift = np.float32([[1, 0, -vx * t], [0, 1, -vy * t]])
        field = cv2.warpAffine(
            self._cloud, shift, (self._cloud.shape[1], self._cloud.shape[0]), borderMode=cv2.BORDER_WRAP
        )[:lh, :lw]
        cover = np.clip((field - self._cloud_level) / 0.8, 0.0, 1.0)
        cover = cover * cover * (3.0 - 2.0 * cover)  # smoothstep: soft shadow edges
        return 1.0 - self.cloud_depth * cover

    def apply(self, lit: np.ndarray, t: float, gains: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The lit background swayed and shaded at time t, times per-channel `gains`.

        Returns (frame uint8, coarse light factor) so insects can be shaded by the same clouds.
        """
        dx, dy = self.displacement(t)
        size = (self.width, self.height)
        map_x = cv2.resize(dx, size, interpolation=cv2.INTER_LINEAR)
        map_y = cv2.resize(dy, size, interpolation=cv2.INTER_LINEAR)
        cv2.add(map_x, self._grid[0], dst=map_x)
        cv2.add(map_y, self._grid[1], dst=map_y)
        swayed = cv2.remap(lit, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        shade = self.light(t)
        factor = cv2.resize(shade[:, :, None] * gains[None, None, :], size, interpolation=cv2.INTER_LINEAR)
        return cv2.multiply(swayed, factor, dtype=cv2.CV_8U), shade

    def shade_at(self, shade: np.ndarray, x: float, y: float) -> float:
        """The coarse light factor `shade` (from `apply`) at full-resolution point (x, y)."""
        lh, lw = shade.shape
        return float(
            shade[min(lh - 1, max(0, int(y) // self._CELL)), min(lw - 1, max(0, int(x) // self._CELL))]
        )


@functools.lru_cache(maxsize=2)
def _noise_fields(width: int, height: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative parts of one Gaussian sensor-noise field, padded for offsets."""
    rng = np.random.default_rng([seed, 11])
    noise = rng.standard_normal((height + _NOISE_PAD, width + _NOISE_PAD, 3), dtype=np.float32) * _NOISE_SIGMA
    noise = np.rint(noise)
    pos = np.clip(noise, 0, 255).astype(np.uint8)
    neg = np.clip(-noise, 0, 255).astype(np.uint8)
    return pos, neg


# ---------------------------------------------------------------- the night


class SyntheticNight:
    """A whole trap night, planned from `params.seed` at construction and rendered on demand."""

    _SPRITE_CACHE = 256
    _UPRIGHT_CACHE = 32

    def __init__(self, params: SceneParams) -> None:
        self.params = params
        texture, light = background_texture(params.scene, params.width, params.height, params.seed)
        self._light = light
        lit = np.clip(texture.astype(np.float32) * light[:, :, None] + 0.5, 0, 255).astype(np.uint8)
        self._lit = lit
        self._noise_pos, self._noise_neg = _noise_fields(params.width, params.height, params.seed)
        rng = np.random.default_rng([params.seed, 3])
        self._gains = self._plan_light(rng)
        self._offsets = rng.integers(0, _NOISE_PAD + 1, (params.frames, 2))
        self._tracks: list[_Track] = []
        self._on_frame: list[list[int]] = [[] for _ in range(self.steps)]  # draw order per step
        self._plan_visits(rng)
        self._sprites: OrderedDict[tuple[int, int], Sprite] = OrderedDict()
        self._uprights: OrderedDict[int, UprightSprite] = OrderedDict()
        # Its own random stream, so the visit plan (and every sheet night) is unchanged by it.
        self.weather = (
            FlowerWeather(np.random.default_rng([params.seed, 13]), params.width, params.height)
            if params.scene == "flowers"
            else None
        )

    # ------------------------------------------------------------ planning

    def _plan_light(self, rng: np.random.Generator) -> np.ndarray:
        """Per-frame BGR gains: a slow drift of a few % in brightness and colour temperature."""
        t = np.arange(self.params.frames, dtype=np.float64) * self.params.frame_interval_s
        t *= self.params.snapshot_every
        p1, p2, p3 = rng.uniform(9000, 18000), rng.uniform(1200, 3000), rng.uniform(5000, 12000)
        ph = rng.uniform(0, 2 * np.pi, 3)
        bright = 1.0 + 0.025 * np.sin(2 * np.pi * t / p1 + ph[0]) + 0.01 * np.sin(2 * np.pi * t / p2 + ph[1])
        bright += rng.normal(0.0, 0.002, t.shape)  # lamp flicker
        temp = 0.015 * np.sin(2 * np.pi * t / p3 + ph[2])
        gains = bright[:, None] * (1.0 + temp[:, None] * np.array([1.0, 0.0, -1.0]))
        return gains.astype(np.float32)

    def _pick_species(self, rng: np.random.Generator) -> SyntheticSpecies:
        column = 0 if self.params.scene == "sheet" else 1
        chosen = self.params.species
        pool = SPECIES if chosen is None else tuple(s for s in SPECIES if s.name in chosen)
        weights = np.array([s.abundance[column] for s in pool], np.float64)
        return pool[int(rng.choice(len(pool), p=weights / weights.sum()))]

    def _plan_visits(self, rng: np.random.Generator) -> None:
        """Choose every visit, then simulate all insects together frame by frame."""
        p = self.params
        steps = self.steps
        scale = p.width / REFERENCE_WIDTH
        # let a background model see the empty screen first (a time-lapse camera: its first frame)
        first = min(3 if p.snapshot_every == 1 else p.snapshot_every, steps - 1)
        max_stay = max(1, min(steps - first, 720))
        sim = []
        for insect_id in range(p.insects):
            species = self._pick_species(rng)
            look = sample_look(species, rng)
            length = max(6.0, float(rng.uniform(*species.length_px)) * scale)
            lo = max(1.0, min(max_stay, max(20.0, 0.2 * max_stay)))
            stay = (
                round(math.exp(rng.uniform(math.log(lo), math.log(max_stay)))) if max_stay > lo else max_stay
            )
            arrival = int(rng.integers(first, max(first, steps - stay) + 1))
            stay = min(stay, steps - arrival)
            visit = Visit(insect_id, species.name, arrival, arrival + stay)
            reach = length * _REACH[species.body_plan] + 2
            bounds = (
                (reach, p.width - reach) if p.width > 2 * reach else (p.width / 2, p.width / 2),
                (reach, p.height - reach) if p.height > 2 * reach else (p.height / 2, p.height / 2),
            )
            sim.append(_Agent(insect_id, visit, reach - 2, bounds, max(1.0, 3 * scale)))
            self._tracks.append(
                _Track(
                    visit=visit,
                    species=species,
                    look=look,
                    length_px=length,
                    x=np.zeros(stay, np.int32),
                    y=np.zeros(stay, np.int32),
                    angle=np.zeros(stay, np.int16),
                    moving=np.zeros(stay, bool),
                )
            )
        _simulate(sim, self._tracks, self._on_frame, steps, rng)

    # ------------------------------------------------------------ public API

    def __len__(self) -> int:
        return self.params.frames

    @property
    def steps(self) -> int:
        """Simulated steps: frames * snapshot_every."""
        return self.params.frames * self.params.snapshot_every

    @property
    def visits(self) -> tuple[Visit, ...]:
        """One Visit per insect seen in at least one frame, in id order, in frame units."""
        n = self.params.snapshot_every
        if n == 1:
            return tuple(t.visit for t in self._tracks)
        out = []
        for t in self._tracks:
            first = -(-t.visit.arrival_frame // n)  # the first frame at or after its arrival step
            last = (t.visit.departure_frame - 1) // n
            if first <= last:
                out.append(Visit(t.visit.insect_id, t.visit.species, first, last + 1))
        return tuple(out)

    def ground_truth_counts(self) -> dict[str, int]:
        """Visits per species over the night (those seen in a frame): what a perfect trap would count."""
        counts: dict[str, int] = {}
        for visit in self.visits:
            counts[visit.species] = counts.get(visit.species, 0) + 1
        return counts

    def timestamp(self, i: int) -> datetime:
        """UTC time of frame `i`."""
        self._check(i)
        return self.params.start + timedelta(
            seconds=i * self.params.snapshot_every * self.params.frame_interval_s
        )

    def ground_truth(self, i: int) -> list[GroundTruthObject]:
        """The insects visible in frame `i`, without rendering the frame's pixels."""
        self._check(i)
        step = i * self.params.snapshot_every
        out = []
        for k in self._on_frame[step]:
            box, _sprite, moving = self._placed(k, step)
            if box is not None:
                t = self._tracks[k]
                out.append(
                    GroundTruthObject(k, t.species.name, t.species.family, t.species.order, box, moving)
                )
        return out

    def render(self, i: int) -> tuple[np.ndarray, list[GroundTruthObject]]:
        """(BGR uint8 HxWx3 frame, ground truth of the insects visible in it)."""
        self._check(i)
        frame, shade = self._background(i)
        gains = self._gains[i] * 255.0
        step = i * self.params.snapshot_every
        truth = []
        for k in self._on_frame[step]:
            box, sprite, moving = self._placed(k, step)
            if box is None:
                continue
            if shade is not None and self.weather is not None:
                cx, cy = box.center
                self._composite(frame, sprite, box, gains * self.weather.shade_at(shade, cx, cy))
            else:
                self._composite(frame, sprite, box, gains)
            t = self._tracks[k]
            truth.append(GroundTruthObject(k, t.species.name, t.species.family, t.species.order, box, moving))
        self._add_noise(frame, i)
        truth.sort(key=lambda o: o.insect_id)
        return frame, truth

    def render_background(self, i: int) -> np.ndarray:
        """Frame `i` exactly as `render` makes it, minus the insects (same light, same noise)."""
        self._check(i)
        frame, _shade = self._background(i)
        self._add_noise(frame, i)
        return frame

    # ------------------------------------------------------------ rendering internals

    def _background(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The lit background of frame `i` (and the flower scene's cloud shade, else None)."""
        if self.weather is None:
            return cv2.transform(self._lit, np.diag(self._gains[i]).astype(np.float32)), None
        seconds = i * self.params.snapshot_every * self.params.frame_interval_s
        return self.weather.apply(self._lit, seconds, self._gains[i])

    def _check(self, i: int) -> None:
        if not isinstance(i, (int, np.integer)) or not 0 <= i < self.params.frames:
            raise IndexError(f"frame index {i!r} out of range 0..{self.params.frames - 1}")

    def _placed(self, k: int, step: int) -> tuple[Box | None, Sprite, bool]:
        t = self._tracks[k]
        j = step - t.visit.arrival_frame
        x, y, angle = int(t.x[j]), int(t.y[j]), int(t.angle[j])
        sprite = self._sprite(k, angle)
        h, w = sprite.alpha.shape
        x0, y0 = x + sprite.dx, y + sprite.dy
        box = Box(max(0, x0), max(0, y0), min(self.params.width, x0 + w), min(self.params.height, y0 + h))
        box_or_none = box if box.width > 0 and box.height > 0 else None
        # keep the unclipped origin with the sprite for compositing
        n = self.params.snapshot_every
        if n == 1:
            moving = bool(t.moving[j])
        else:  # moved since the previous frame, n steps back
            moving = j >= n and (x, y, angle) != (int(t.x[j - n]), int(t.y[j - n]), int(t.angle[j - n]))
        return box_or_none, Sprite(sprite.premult, sprite.alpha, x0, y0), moving

    def _sprite(self, k: int, angle: int) -> Sprite:
        key = (k, angle)
        sprite = self._sprites.get(key)
        if sprite is not None:
            self._sprites.move_to_end(key)
            return sprite
        upright = self._uprights.get(k)
        if upright is None:
            t = self._tracks[k]
            upright = draw_upright(t.look, t.length_px)
            self._uprights[k] = upright
            if len(self._uprights) > self._UPRIGHT_CACHE:
                self._uprights.popitem(last=False)
        else:
            self._uprights.move_to_end(k)
        sprite = rotate_sprite(upright, float(angle))
        self._sprites[key] = sprite
        if len(self._sprites) > self._SPRITE_CACHE:
            self._sprites.popitem(last=False)
        return sprite

    def _composite(self, frame: np.ndarray, sprite: Sprite, box: Box, gains: np.ndarray) -> None:
        """Alpha-blend the sprite (origin sprite.dx/dy in frame pixels) inside `box` only."""
        sx0, sy0 = box.x0 - sprite.dx, box.y0 - sprite.dy
        sx1, sy1 = sx0 + box.width, sy0 + box.height
        a = sprite.alpha[sy0:sy1, sx0:sx1, None]
        colour = sprite.premult[sy0:sy1, sx0:sx1] * (
            self._light[box.y0 : box.y1, box.x0 : box.x1, None] * gains
        )
        roi = frame[box.y0 : box.y1, box.x0 : box.x1]
        out = roi * (1.0 - a) + colour + 0.5
        roi[:] = np.minimum(out, 255.0).astype(np.uint8)

    def _add_noise(self, frame: np.ndarray, i: int) -> None:
        oy, ox = (int(v) for v in self._offsets[i])
        h, w = frame.shape[:2]
        cv2.add(frame, self._noise_pos[oy : oy + h, ox : ox + w], dst=frame)
        cv2.subtract(frame, self._noise_neg[oy : oy + h, ox : ox + w], dst=frame)


# ---------------------------------------------------------------- simulation of behaviour


@dataclass
class _Agent:
    """Mutable behaviour state of one insect during planning."""

    insect_id: int
    visit: Visit
    radius: float  # half-side of a square holding it in any pose (its box never leaves it)
    bounds: tuple[tuple[float, float], tuple[float, float]]
    base_speed: float
    x: float = 0.0
    y: float = 0.0
    heading: float = 0.0
    mode: str = "sit"
    left: int = 0
    speed: float = 1.0
    extended: int = 0
    straight: bool = False


def _sit_frames(rng: np.random.Generator) -> int:
    return round(math.exp(rng.uniform(math.log(15), math.log(400))))  # tens to hundreds of frames


def _overlaps(a: _Agent, others: list[_Agent], x: float, y: float, factor: float = 1.0) -> bool:
    """Whether `a` at (x, y) could touch anyone's box: each insect fits a square of half-side radius."""
    return any(
        o is not a and max(abs(o.x - x), abs(o.y - y)) < factor * (o.radius + a.radius) for o in others
    )


def _free_spot(a: _Agent, others: list[_Agent], rng: np.random.Generator) -> tuple[float, float]:
    """A random position inside the bounds away from everyone on screen (best of 60 tries)."""
    (x0, x1), (y0, y1) = a.bounds
    best, best_d = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))), -1.0
    for _ in range(60):
        x, y = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
        d = min(
            (max(abs(o.x - x), abs(o.y - y)) - o.radius - a.radius for o in others if o is not a),
            default=math.inf,
        )
        if d > 0.15 * a.radius:
            return x, y
        if d > best_d:
            best, best_d = (x, y), d
    return best


def _start_move(a: _Agent, on_screen: list[_Agent], rng: np.random.Generator) -> None:
    """After sitting: crawl (sometimes straight over a nearby sitter) or hop."""
    if rng.random() < 0.2:
        a.mode = "hop"
        return
    a.mode, a.extended = "crawl", 0
    a.speed = a.base_speed * float(rng.uniform(0.4, 1.3))
    a.speed = max(1.0, a.speed)
    a.straight = False
    a.left = int(rng.integers(4, 26))
    if rng.random() < 0.35:
        sitters = [o for o in on_screen if o is not a and o.mode == "sit"]
        if sitters:
            near = min(sitters, key=lambda o: (o.x - a.x) ** 2 + (o.y - a.y) ** 2)
            dist = math.hypot(near.x - a.x, near.y - a.y)
            if dist < 12 * a.radius:
                # Head straight for it and on past it: a brief overlap, as on a busy sheet.
                a.heading = math.degrees(math.atan2(near.x - a.x, -(near.y - a.y)))
                a.speed = max(a.speed, (near.radius + a.radius) / 12)
                a.left = math.ceil((dist + 1.5 * (near.radius + a.radius)) / a.speed)
                a.straight = True
                return
    a.heading = (a.heading + float(rng.uniform(-90, 90))) % 360


def _step(a: _Agent, on_screen: list[_Agent], rng: np.random.Generator) -> None:
    (x0, x1), (y0, y1) = a.bounds
    if a.mode == "sit":
        a.left -= 1
        if a.left <= 0:
            _start_move(a, on_screen, rng)
        else:
            return
    if a.mode == "hop":
        a.x, a.y = _hop_target(a, on_screen, rng)
        a.heading = float(rng.uniform(0, 360))
        a.mode, a.left = "sit", _sit_frames(rng)
        return
    # crawl
    a.heading += float(rng.normal(0.0, 1.5 if a.straight else 9.0))
    rad = math.radians(a.heading)
    nx, ny = a.x + a.speed * math.sin(rad), a.y - a.speed * math.cos(rad)
    if not x0 <= nx <= x1:
        a.heading = -a.heading
        nx = min(max(nx, x0), x1)
    if not y0 <= ny <= y1:
        a.heading = 180.0 - a.heading
        ny = min(max(ny, y0), y1)
    a.x, a.y, a.heading = nx, ny, a.heading % 360
    a.left -= 1
    if a.left <= 0:
        if not _overlaps(a, on_screen, a.x, a.y, 1.05):
            a.mode, a.left = "sit", _sit_frames(rng)
        elif a.extended < 40:
            a.left, a.extended = 4, a.extended + 4  # do not settle on top of another insect
        else:
            a.mode = "hop"


def _hop_target(a: _Agent, on_screen: list[_Agent], rng: np.random.Generator) -> tuple[float, float]:
    """A short hop (about one body length) to a free spot; stays put when none is near."""
    (x0, x1), (y0, y1) = a.bounds
    for _ in range(20):
        d, ang = rng.uniform(1.2, 2.2) * a.radius, rng.uniform(0, 2 * np.pi)
        x = min(max(a.x + d * math.cos(ang), x0), x1)
        y = min(max(a.y + d * math.sin(ang), y0), y1)
        if not _overlaps(a, on_screen, x, y, 1.1):
            return x, y
    return a.x, a.y


def _simulate(
    agents: list[_Agent],
    tracks: list[_Track],
    on_frame: list[list[int]],
    frames: int,
    rng: np.random.Generator,
) -> None:
    """Run every insect's behaviour over the night; record integer poses and the draw order."""
    arrivals: dict[int, list[_Agent]] = {}
    for a in agents:
        if a.visit.departure_frame > a.visit.arrival_frame:
            arrivals.setdefault(a.visit.arrival_frame, []).append(a)
    on_screen: list[_Agent] = []
    for i in range(frames):
        on_screen = [a for a in on_screen if a.visit.departure_frame > i]
        for a in on_screen:
            _step(a, on_screen, rng)
        for a in arrivals.get(i, []):
            a.x, a.y = _free_spot(a, on_screen, rng)
            a.heading = float(rng.uniform(0, 360))
            a.mode, a.left = "sit", _sit_frames(rng)
            on_screen.append(a)
        for a in on_screen:
            t = tracks[a.insect_id]
            j = i - a.visit.arrival_frame
            t.x[j], t.y[j] = round(a.x), round(a.y)
            t.angle[j] = (round(a.heading / ANGLE_STEP_DEG) * ANGLE_STEP_DEG) % 360
            if j > 0:
                t.moving[j] = (t.x[j], t.y[j], t.angle[j]) != (t.x[j - 1], t.y[j - 1], t.angle[j - 1])
        # Movers are drawn last: a crawler passes over a sitter, not under it.
        order = sorted(
            on_screen,
            key=lambda a: (bool(tracks[a.insect_id].moving[i - a.visit.arrival_frame]), a.insect_id),
        )
        on_frame[i] = [a.insect_id for a in order]
