"""Config masks (`detector.mask`) drawn at detection resolution, where detectors ignore foreground.

A camera's timestamp overlay changes every frame and a static-screen detector would count it all
night; the trap's frame or a lamp at the edge of a flower camera moves with the light. Masked pixels
are never foreground, so a blob that reaches into a mask keeps only its unmasked part, and the
masked area is not part of the "how much of the frame changed" test either.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edge.config import MaskRegion, mask_outside_frame
from edge.errors import ConfigError


def check_mask(regions: Sequence[MaskRegion], width: int, height: int) -> None:
    """ConfigError (one line) when a region reaches outside a width x height frame."""
    problem = mask_outside_frame(list(regions), width, height)
    if problem:
        raise ConfigError(problem)


class DetectionMask:
    """The regions rasterised for one detection size (255 = ignore), built on first use.

    full_size / small_size: (width, height) of the camera frame and of the downscaled frame the
    detector works on. Regions are scaled like the frame; a region partly outside the frame is
    clipped here (the pipeline refuses such a config on its first frame, see `check_mask`).
    """

    def __init__(self, regions: Sequence[MaskRegion]) -> None:
        self.regions = tuple(regions)
        self._key: tuple[int, int, int, int] | None = None
        self._mask: np.ndarray | None = None

    def at(self, full_size: tuple[int, int], small_size: tuple[int, int]) -> np.ndarray | None:
        """uint8 mask of small_size (H x W), 255 inside any region; None without regions."""
        if not self.regions:
            return None
        key = (*full_size, *small_size)
        if key != self._key:
            self._mask = self._draw(full_size, small_size)
            self._key = key
        return self._mask

    def apply(self, foreground: np.ndarray, full_size: tuple[int, int]) -> np.ndarray:
        """`foreground` (detection resolution, 0/255) with the masked pixels set to 0 (in place)."""
        mask = self.at(full_size, (foreground.shape[1], foreground.shape[0]))
        if mask is not None:
            foreground[mask > 0] = 0
        return foreground

    def _draw(self, full_size: tuple[int, int], small_size: tuple[int, int]) -> np.ndarray:
        full_w, full_h = full_size
        small_w, small_h = small_size
        sx, sy = small_w / full_w, small_h / full_h
        out = np.zeros((small_h, small_w), dtype=np.uint8)
        for region in self.regions:
            if region.rect is not None:
                x0, y0, x1, y1 = region.rect
                # every small pixel that a masked full-resolution pixel falls into
                cv2.rectangle(
                    out,
                    (int(x0 * sx), int(y0 * sy)),
                    (int(np.ceil(x1 * sx)) - 1, int(np.ceil(y1 * sy)) - 1),
                    255,
                    thickness=-1,
                )
            else:
                corners = np.array([[x * sx, y * sy] for x, y in region.polygon or ()], dtype=np.float64)
                points = np.round(corners).astype(np.int32)
                cv2.fillPoly(out, [points], 255)
                cv2.polylines(out, [points], True, 255, thickness=1)
        return out
