"""The scenes' empty backgrounds: a lit sheet of a light trap, and flowers in a meadow.

Both the night generator (`scene`) and the training crops (`species`) draw on these textures, so
they live here, below both: neither of the two needs the other to get a background.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from edge.errors import ConfigError

# Species sizes are given for a frame this wide; scenes scale them with their own width so that
# a 1280-pixel night looks like a 1920-pixel one seen through a shorter lens.
REFERENCE_WIDTH = 1920


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise with features about `cell` pixels wide (unit variance before interpolation)."""
    gh, gw = max(2, round(h / cell)) + 1, max(2, round(w / cell)) + 1
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _sheet(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    s = w / REFERENCE_WIDTH
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = np.zeros((h, w), np.float32)
    # Weave: uneven threads (row/column streaks) and the fine cross pattern of the cloth.
    rows = cv2.GaussianBlur(rng.standard_normal((h, 1), dtype=np.float32), (1, 0), 0.8).ravel()
    cols = cv2.GaussianBlur(rng.standard_normal((1, w), dtype=np.float32), (0, 1), 0.8).ravel()
    shade += 0.006 * (rows[:, None] + cols[None, :])
    period = max(2.5, 3.2 * s)
    shade += 0.005 * np.cos(2 * np.pi * xx / period) * np.cos(2 * np.pi * yy / period)
    # Folds of a hanging sheet: mostly vertical ridges, one side lit and one shaded.
    for _ in range(int(rng.integers(4, 8))):
        theta = math.radians(90 + rng.uniform(-30, 30))
        px, py = rng.uniform(0, w), rng.uniform(0, h)
        d = (xx - px) * math.sin(theta) - (yy - py) * math.cos(theta)
        # a fold fades out along its length
        along = ((xx - px) * math.cos(theta) + (yy - py) * math.sin(theta)) / (rng.uniform(0.3, 0.8) * h)
        width = rng.uniform(25, 110) * max(s, 0.2)
        u = d / width
        shade += rng.uniform(0.05, 0.11) * u * np.exp(-u * u - along * along)
    # Wrinkles and uneven tension.
    shade += 0.007 * smooth_noise(rng, h, w, 60 * max(s, 0.2)) + 0.004 * smooth_noise(
        rng, h, w, 12 * max(s, 0.2)
    )
    base = np.array([238, 236, 232], np.float32) * rng.uniform(0.97, 1.0)
    texture = base[None, None, :] * (1.0 + shade)[:, :, None]
    # The lamp above the sheet: a wide hotspot, and lens vignetting towards the corners.
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.2, 0.4)
    r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (0.6 * w) ** 2
    rc2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    light = (0.78 + 0.22 * np.exp(-r2 / 2)) * (1.0 - 0.16 * rc2)
    return texture, light.astype(np.float32)


def _flowers(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    s = max(w / REFERENCE_WIDTH, 0.15)
    area = w * h / (REFERENCE_WIDTH * 1080)
    f = 0.55 * smooth_noise(rng, h, w, 90 * s) + 0.3 * smooth_noise(rng, h, w, 25 * s)
    f = np.clip(0.5 + 0.25 * f, 0, 1)[:, :, None]
    dark, light_green = np.array([28, 62, 30], np.float32), np.array([70, 150, 95], np.float32)
    img = dark + (light_green - dark) * f
    # Leaves of several greens, each with a midrib; the far ones are blurred (depth of field).
    for layer in range(2):
        for _ in range(max(8, int(160 * area))):
            c = (rng.uniform(0.5, 1.6) * np.array([35, 95, 50])).tolist()
            cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            a, b, ang = rng.uniform(35, 90) * s, rng.uniform(12, 30) * s, float(rng.uniform(0, 180))
            cv2.ellipse(img, ((cx, cy), (2 * a, 2 * b), ang), c, -1, cv2.LINE_AA)
            dx, dy = a * math.cos(math.radians(ang)), a * math.sin(math.radians(ang))
            mid = [round(cx - dx), round(cy - dy)], [round(cx + dx), round(cy + dy)]
            cv2.line(img, mid[0], mid[1], [v * 1.25 for v in c], max(1, round(2 * s)), cv2.LINE_AA)
        if layer == 0:
            img = cv2.GaussianBlur(img, (0, 0), max(0.8, 3 * s))
    # Yellow composite flowers (and a few white ones) with an orange-brown disc.
    for _ in range(max(3, int(28 * area))):
        cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        r = rng.uniform(30, 70) * s
        petal = [30, 205, 240] if rng.random() < 0.8 else [225, 230, 235]
        petal = (np.array(petal) * rng.uniform(0.85, 1.05)).tolist()
        n = int(rng.integers(10, 16))
        rot = rng.uniform(0, 360)
        for k in range(n):
            ang = rot + 360 * k / n
            px = cx + 0.55 * r * math.cos(math.radians(ang))
            py = cy + 0.55 * r * math.sin(math.radians(ang))
            cv2.ellipse(img, ((px, py), (0.9 * r, 0.28 * r), ang), petal, -1, cv2.LINE_AA)
        cv2.circle(img, (round(cx), round(cy)), max(1, round(0.3 * r)), (20, 90, 160), -1, cv2.LINE_AA)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rc2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    light = (1.0 - 0.15 * rc2) * (0.97 + 0.03 * yy / h)
    return img, light.astype(np.float32)


@functools.lru_cache(maxsize=4)
def background_texture(scene: str, width: int, height: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(unlit texture BGR uint8 HxWx3, light falloff float32 HxW in (0, 1]) for a scene; cached, read-only."""
    rng = np.random.default_rng([seed, 7])
    if scene == "sheet":
        texture, light = _sheet(rng, height, width)
    elif scene == "flowers":
        texture, light = _flowers(rng, height, width)
    else:
        raise ConfigError(f"synthetic scene={scene!r}: expected 'sheet' or 'flowers'")
    texture8 = np.clip(texture + 0.5, 0, 255).astype(np.uint8)
    texture8.setflags(write=False)
    light.setflags(write=False)
    return texture8, light


def periodic_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise that wraps around at the edges (features about `cell` px), unit std."""
    white = rng.standard_normal((h, w))
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    smooth = np.fft.ifft2(np.fft.fft2(white) * np.exp(-((fx * fx + fy * fy) * (cell * np.pi) ** 2) / 2)).real
    return ((smooth - smooth.mean()) / max(float(smooth.std()), 1e-9)).astype(np.float32)
