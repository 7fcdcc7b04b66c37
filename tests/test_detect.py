"""Detectors on rendered trap frames written as JPEG files and read back.

Frames are a lit sheet (lamp vignette, fabric fibres, grain) with insect-like shapes drawn
at known places (a dark body and two wings with pale spots), plus fresh sensor noise per
frame. Every frame goes through a real JPEG file, so compression artefacts are part of it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.config import DetectorConfig
from edge.detect.base import Box, Detection
from edge.detect.crop import FrameError
from edge.detect.factory import make_detector
from edge.detect.motion import MotionDetector
from edge.detect.static_screen import StaticScreenDetector

# ---------------------------------------------------------------- rendering


def render_sheet(w: int, h: int, seed: int, base: tuple[int, int, int] = (222, 226, 230)) -> np.ndarray:
    """An empty lit sheet (float32 BGR): vignette from the lamp, horizontal fibres, grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    img = np.stack([c * (1.0 - 0.18 * r2) for c in base], axis=2)
    fibres = rng.normal(0, 3.0, (h, 1)).astype(np.float32)
    grain = cv2.GaussianBlur(rng.normal(0, 4, (h, w)).astype(np.float32), (0, 0), 1.2)
    return img + (fibres + grain)[:, :, None]


def draw_insect(
    img: np.ndarray,
    cx: float,
    cy: float,
    length: float,
    angle: float,
    body: tuple[int, int, int] = (40, 60, 90),
    wing: tuple[int, int, int] = (90, 120, 150),
) -> Box:
    """Draw a moth-like shape (body, two wings with pale spots); return its true box."""
    h, w = img.shape[:2]
    body_mask = np.zeros((h, w), np.uint8)
    wing_mask = np.zeros((h, w), np.uint8)
    a = np.deg2rad(angle)
    along, across = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
    centre = np.array([cx, cy])
    for side in (-1, 1):
        wc = centre + side * across * length * 0.28 - along * length * 0.05
        axes = (int(length * 0.42), int(length * 0.22))
        cv2.ellipse(wing_mask, (int(wc[0]), int(wc[1])), axes, angle + side * 25, 0, 360, 255, -1)
    axes = (int(length / 2), max(2, int(length * 0.12)))
    cv2.ellipse(body_mask, (int(cx), int(cy)), axes, angle, 0, 360, 255, -1)
    img[wing_mask > 0] = wing
    for side in (-1, 1):  # pale wing patches that split a thresholded wing in two
        pc = centre + side * across * length * 0.3
        cv2.circle(img, (int(pc[0]), int(pc[1])), max(1, int(length * 0.07)), (200, 205, 210), -1)
    img[body_mask > 0] = body
    ys, xs = np.nonzero(cv2.bitwise_or(body_mask, wing_mask))
    return Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


class Camera:
    """Adds sensor noise and light gain, writes a JPEG file and reads it back.

    Files are frame_NNNNN.jpg; with `start`, named by their time like a trap's files
    (`%Y%m%d-%H%M%S`, frames `step_s` apart), for replay with `timestamps: filename`.
    """

    def __init__(
        self, folder: Path, seed: int, noise: float = 2.5, start: datetime | None = None, step_s: float = 5.0
    ) -> None:
        self.folder = folder
        self.rng = np.random.default_rng(seed)
        self.noise = noise
        self.count = 0
        self.start, self.step_s = start, step_s

    def shoot(self, scene: np.ndarray, gain: float | np.ndarray = 1.0) -> np.ndarray:
        noisy = scene * gain + self.rng.normal(0, self.noise, scene.shape).astype(np.float32)
        if self.start is None:
            path = self.folder / f"frame_{self.count:05d}.jpg"
        else:
            path = (
                self.folder / f"{self.start + timedelta(seconds=self.step_s * self.count):%Y%m%d-%H%M%S}.jpg"
            )
        self.count += 1
        assert cv2.imwrite(str(path), np.clip(noisy, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 85])
        frame = cv2.imread(str(path))
        assert frame is not None
        return frame

    def pool(self, scene: np.ndarray, n: int) -> list[np.ndarray]:
        """n independently noisy JPEG frames of one scene, for long still sequences."""
        return [self.shoot(scene) for _ in range(n)]


def match(detections: list[Detection], truth: list[Box], min_iou: float = 0.5) -> list[float]:
    """Best IoU of a detection for every true box."""
    return [max((d.box.iou(t) for d in detections), default=0.0) for t in truth]


def small_cfg(**changes: object) -> DetectorConfig:
    """Defaults, except detection at 320 px wide for the 640 x 360 test frames."""
    return DetectorConfig(detect_width=320, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------- static screen


def test_finds_every_insect_with_good_boxes(tmp_path: Path) -> None:
    scene = render_sheet(960, 540, seed=1)
    truth = [
        draw_insect(scene, 150, 120, 60, 20),
        draw_insect(scene, 700, 400, 40, -60),
        draw_insect(scene, 480, 270, 24, 90, body=(60, 70, 80), wing=(140, 150, 160)),  # small, pale
        draw_insect(scene, 880, 90, 36, 0, body=(30, 150, 40), wing=(60, 190, 90)),  # green
        draw_insect(scene, 60, 480, 30, 45, body=(250, 250, 250), wing=(252, 252, 252)),  # brighter
    ]
    camera = Camera(tmp_path, seed=2)
    detector = StaticScreenDetector(DetectorConfig(detect_width=480))
    for i in range(4):  # the insects sit there from the very first frame
        detections = detector.detect(camera.shoot(scene))
        ious = match(detections, truth)
        assert min(ious) >= 0.5, f"frame {i}: IoUs {ious}"
        assert len(detections) == len(truth), detections
        assert all(0.5 < d.score <= 1.0 for d in detections)


def test_empty_noisy_sequence_gives_nothing(tmp_path: Path) -> None:
    scene = render_sheet(640, 360, seed=4)
    camera = Camera(tmp_path, seed=5, noise=4.0)
    detector = StaticScreenDetector(small_cfg())
    found = [detector.detect(camera.shoot(scene)) for _ in range(40)]
    assert sum(len(f) for f in found) == 0


def test_insect_sitting_still_500_frames_is_still_detected(tmp_path: Path) -> None:
    """The key property: a resting moth never fades into the background."""
    empty = render_sheet(640, 360, seed=6)
    with_moth = empty.copy()
    truth = draw_insect(with_moth, 300, 200, 40, 30)
    camera = Camera(tmp_path, seed=7)
    empty_frames, moth_frames = camera.pool(empty, 5), camera.pool(with_moth, 12)
    detector = StaticScreenDetector(small_cfg())
    for i in range(10):
        assert detector.detect(empty_frames[i % 5]) == []
    scores = []
    for i in range(500):
        detections = detector.detect(moth_frames[i % 12])
        assert len(detections) == 1 and detections[0].box.iou(truth) >= 0.5, f"frame {i}: {detections}"
        scores.append(detections[0].score)
    assert scores[-1] >= 0.95 * scores[0]  # as different from the background as on arrival
    # it leaves: no ghost where it sat
    assert all(detector.detect(empty_frames[i % 5]) == [] for i in range(10))


def test_still_insect_survives_slow_drift_and_insect_from_first_frame_leaves_no_ghost(tmp_path: Path) -> None:
    scene = render_sheet(640, 360, seed=8)
    sitter = draw_insect(scene, 200, 150, 36, 10)  # there from frame 0, all along
    leaver_scene = scene.copy()
    leaver = draw_insect(leaver_scene, 480, 260, 30, 70)  # there from frame 0, leaves at frame 30
    camera = Camera(tmp_path, seed=9)
    detector = StaticScreenDetector(small_cfg())
    for i in range(300):
        gain = 1.0 - 0.1 * i / 300  # the lamp dims by 10% over the night
        frame = camera.shoot(leaver_scene if i < 30 else scene, gain)
        detections = detector.detect(frame)
        truth = [sitter, leaver] if i < 30 else [sitter]
        assert min(match(detections, truth)) >= 0.5, f"frame {i}: {detections}"
        assert len(detections) == len(truth), f"frame {i}: {detections}"


def test_slow_drift_of_light_gives_no_false_detections(tmp_path: Path) -> None:
    """10% brighter and a slight colour shift over 300 frames, plus a slowly moving hot spot."""
    scene = render_sheet(640, 360, seed=10)
    yy, xx = np.mgrid[0:360, 0:640].astype(np.float32)
    camera = Camera(tmp_path, seed=11)
    detector = StaticScreenDetector(small_cfg())
    false = 0
    for i in range(300):
        t = i / 300
        colour = np.array([1.0 + 0.08 * t, 1.0 + 0.1 * t, 1.0 + 0.12 * t], np.float32)
        spot = 1.0 + 0.04 * t * np.exp(-(((xx - 100 - 300 * t) / 150) ** 2 + ((yy - 180) / 150) ** 2))
        frame = camera.shoot(np.clip(scene * spot[:, :, None], 0, 240), colour)
        false += len(detector.detect(frame))
    assert false == 0
    assert detector.reinits == 0


def test_sudden_change_rebuilds_background(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A light switched on beside the trap: part of the frame brighter, for good."""
    scene = render_sheet(640, 360, seed=12)
    truth = draw_insect(scene, 160, 180, 36, 0)
    camera = Camera(tmp_path, seed=13)
    detector = StaticScreenDetector(small_cfg())
    for _ in range(10):
        assert len(detector.detect(camera.shoot(scene))) == 1
    lit = scene.copy()
    lit[:, 380:] = np.minimum(lit[:, 380:] + 50.0, 255)  # 40% of the frame
    with caplog.at_level(logging.WARNING, logger="edge.detect.static_screen"):
        first = detector.detect(camera.shoot(lit))
        assert first == [] and detector.reinits == 0 and detector.skipped_frames == 1
        second = detector.detect(camera.shoot(lit))
    assert detector.reinits == 1
    assert any("rebuilding the background" in r.getMessage() for r in caplog.records)
    # the insect sitting on the sheet at the moment of the rebuild is still found
    assert len(second) == 1 and second[0].box.iou(truth) >= 0.5
    for _ in range(20):
        detections = detector.detect(camera.shoot(lit))
        assert len(detections) == 1 and detections[0].box.iou(truth) >= 0.5


def test_single_flash_is_skipped_and_sudden_global_dimming_is_followed(tmp_path: Path) -> None:
    scene = render_sheet(640, 360, seed=14)
    truth = draw_insect(scene, 400, 100, 36, 50)
    camera = Camera(tmp_path, seed=15)
    detector = StaticScreenDetector(small_cfg())
    for _ in range(5):
        detector.detect(camera.shoot(scene))
    flash = scene.copy()
    flash[:, :260] += 50  # a car's headlights across 40% of the frame, one frame
    assert detector.detect(camera.shoot(flash)) == []
    for gain in [1.0] * 5 + [0.7] * 20:  # the lamp's supply sags: everything 30% darker at once
        detections = detector.detect(camera.shoot(scene, gain))
        assert len(detections) == 1 and detections[0].box.iou(truth) >= 0.5
    assert detector.reinits == 0 and detector.skipped_frames == 1


def test_boxes_are_in_full_resolution_coordinates(tmp_path: Path) -> None:
    scene = render_sheet(1920, 1080, seed=16)
    truth = [draw_insect(scene, 1700, 900, 70, 30), draw_insect(scene, 300, 200, 50, -20)]
    camera = Camera(tmp_path, seed=17)
    detector = StaticScreenDetector(DetectorConfig(detect_width=480))
    detections = detector.detect(camera.shoot(scene))
    assert min(match(detections, truth)) >= 0.5
    far = max(detections, key=lambda d: d.box.x1)
    assert far.box.x1 > 1700 and far.box.y1 > 900  # not at 480-px coordinates
    # area_px is the blob's full-resolution pixel count: near the drawn moth's, not a quarter-scale one
    drawn = truth[0].area
    assert 0.3 * drawn < far.area_px < 1.2 * drawn
    assert detector.foreground_mask is not None and detector.foreground_mask.shape == (270, 480)


def test_area_and_shape_filters(tmp_path: Path) -> None:
    scene = render_sheet(640, 360, seed=18)
    moth = draw_insect(scene, 320, 180, 40, 0)
    cv2.line(scene, (40, 40), (240, 60), (60, 60, 60), 3)  # a thread: far too elongated
    cv2.circle(scene, (560, 300), 2, (40, 40, 40), -1)  # a speck: too small
    camera = Camera(tmp_path, seed=19)
    detector = StaticScreenDetector(small_cfg(min_area_px=80))
    detections = detector.detect(camera.shoot(scene))
    assert len(detections) == 1 and detections[0].box.iou(moth) >= 0.5
    strict = StaticScreenDetector(small_cfg(max_area_px=200))
    assert strict.detect(camera.shoot(scene)) == []


def test_polarity_dark_ignores_bright_objects(tmp_path: Path) -> None:
    scene = render_sheet(640, 360, seed=20, base=(170, 175, 180))
    dark = draw_insect(scene, 200, 180, 40, 0)
    draw_insect(scene, 450, 180, 40, 0, body=(250, 250, 250), wing=(240, 240, 240))
    camera = Camera(tmp_path, seed=21)
    frame = camera.shoot(scene)
    dark_only = StaticScreenDetector(small_cfg(polarity="dark")).detect(frame)
    assert len(dark_only) == 1 and dark_only[0].box.iou(dark) >= 0.5
    assert len(StaticScreenDetector(small_cfg(polarity="both")).detect(frame)) == 2


def test_warmup_frames_and_reset(tmp_path: Path) -> None:
    scene = render_sheet(640, 360, seed=22)
    draw_insect(scene, 300, 200, 40, 0)
    camera = Camera(tmp_path, seed=23)
    detector = StaticScreenDetector(small_cfg(warmup_frames=3))
    assert detector.detect(camera.shoot(scene)) == []
    assert detector.detect(camera.shoot(scene)) == []
    assert len(detector.detect(camera.shoot(scene))) == 1
    detector.reset()
    assert detector.background is None
    assert detector.detect(camera.shoot(scene)) == []


def test_frame_size_change_rebuilds_and_bad_frames_raise(tmp_path: Path) -> None:
    camera = Camera(tmp_path, seed=24)
    detector = StaticScreenDetector(small_cfg())
    detector.detect(camera.shoot(render_sheet(640, 360, seed=25)))
    assert detector.detect(camera.shoot(render_sheet(800, 600, seed=25))) == []
    assert detector.background is not None and detector.background.shape == (240, 320, 3)
    with pytest.raises(FrameError, match="uint8"):
        detector.detect(np.zeros((360, 640, 3), np.float32))
    with pytest.raises(FrameError, match="H x W x 3"):
        detector.detect(np.zeros((360, 640), np.uint8))


# ---------------------------------------------------------------- motion


def test_motion_finds_moving_blob_not_static_texture(tmp_path: Path) -> None:
    rng = np.random.default_rng(26)
    # a busy, static flower-bed texture: strong edges everywhere
    texture = cv2.resize(rng.integers(0, 255, (36, 64, 3)).astype(np.uint8), (640, 360), cv2.INTER_NEAREST)
    scene = cv2.GaussianBlur(texture, (0, 0), 2).astype(np.float32)
    camera = Camera(tmp_path, seed=27)
    detector = MotionDetector(small_cfg(kind="motion"))
    for _ in range(30):
        assert detector.detect(camera.shoot(scene)) == []
    hits = 0
    for i in range(15):
        frame_scene = scene.copy()
        truth = draw_insect(frame_scene, 80 + 30 * i, 150 + 5 * i, 40, 0)
        detections = detector.detect(camera.shoot(frame_scene))
        assert len(detections) <= 1, f"frame {i}: {detections}"
        if detections and detections[0].box.iou(truth) >= 0.5:
            hits += 1
            assert detections[0].score == 1.0
    assert hits >= 13


def test_factory_builds_the_configured_detector() -> None:
    assert isinstance(make_detector(DetectorConfig(kind="static_screen")), StaticScreenDetector)
    assert isinstance(make_detector(DetectorConfig(kind="motion")), MotionDetector)


# ---------------------------------------------------------------- synthetic nights


def _covered(det: Box, truth: Box) -> float:
    """Fraction of the true box inside the detection's box."""
    ix = max(0, min(det.x1, truth.x1) - max(det.x0, truth.x0))
    iy = max(0, min(det.y1, truth.y1) - max(det.y0, truth.y0))
    return ix * iy / max(1, truth.area)


def night_recall_precision(seed: int, frames: int = 150) -> tuple[float, float]:
    """Per-frame recall and precision of the static detector over a synthetic sheet night.

    An insect is found when a detection has IoU >= 0.3 with it, or when one detection
    holds several overlapping insects (covers each by >= 70%): one blob for a cluster is
    what a background detector can give. The first frame is left out of the figures.
    """
    from edge.synth.scene import SceneParams, SyntheticNight

    night = SyntheticNight(SceneParams(scene="sheet", width=1280, height=720, frames=frames, seed=seed))
    detector = StaticScreenDetector(DetectorConfig())
    found = insects = good = reported = 0
    for i in range(frames):
        frame, objects = night.render(i)
        detections = detector.detect(frame)
        truth = [o.box for o in objects]
        ok = [False] * len(detections)
        for t in truth:
            hit = False
            for j, d in enumerate(detections):
                cluster = sum(_covered(d.box, o) >= 0.5 for o in truth) >= 2
                if d.box.iou(t) >= 0.3 or (cluster and _covered(d.box, t) >= 0.7):
                    hit = ok[j] = True
            if i > 0:
                insects += 1
                found += hit
        if i > 0:
            reported += len(detections)
            good += sum(ok)
    return found / max(1, insects), good / max(1, reported)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_synthetic_sheet_night_recall_and_precision(seed: int) -> None:
    recall, precision = night_recall_precision(seed)
    assert recall >= 0.95, f"seed {seed}: recall {recall:.3f}"
    assert precision >= 0.95, f"seed {seed}: precision {precision:.3f}"


def test_restart_mid_night_finds_every_insect_already_on_the_sheet() -> None:
    """After a restart the first frame is full of moths: none may vanish into the background.

    4K frames as on AMI traps, so the large moths are 150-250 px wide.
    """
    from datetime import datetime, timezone

    from edge.synth.scene import SceneParams, SyntheticNight

    night = SyntheticNight(
        SceneParams(
            scene="sheet",
            width=1920,
            height=1080,
            frames=300,
            frame_interval_s=5.0,
            insects=24,
            seed=11,
            start=datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc),
        )
    )
    busiest = max(range(len(night)), key=lambda i: len(night.ground_truth(i)))
    detector = StaticScreenDetector(DetectorConfig())
    for offset in range(3):  # the restart frame and the two after it
        image, truth = night.render(busiest + offset)
        found = detector.detect(image)
        assert len(truth) >= 8
        for insect in truth:
            assert any(d.box.iou(insect.box) >= 0.3 or _contains(d.box, insect.box) for d in found), (
                f"frame {busiest + offset}: insect {insect.insect_id} ({insect.box.width} px wide) missed"
            )


def _contains(outer, inner) -> bool:
    return outer.x0 <= inner.x0 and outer.y0 <= inner.y0 and outer.x1 >= inner.x1 and outer.y1 >= inner.y1


def _exposure_shift(tmp_path: Path, light_cells: int) -> tuple[list[list[Detection]], Box]:
    """A bright sheet whose centre is clipped white (227, as a real light trap's 4K frames) and whose
    corners are darker (vignetting), a moth in one corner; from frame 4 the camera's
    exposure rises 6%: the clipped centre stays as it was, the borders get brighter (between two
    real frames a minute apart: +4.4% at the borders, 0 in the centre)."""
    scene = render_sheet(640, 360, seed=21, base=(280, 280, 280))  # clipped inside the lamp's circle
    truth = draw_insect(scene, 60, 310, 40, 60)  # in the dark bottom-left corner
    tmp_path.mkdir()
    camera = Camera(tmp_path, seed=22)
    detector = StaticScreenDetector(small_cfg(light_cells=light_cells))
    frames = []
    for i in range(10):
        exposed = np.minimum(scene * (1.0 if i < 4 else 1.06), 227.0)
        frames.append(detector.detect(camera.shoot(exposed)))
    return frames, truth


def test_exposure_that_lifts_the_borders_is_followed_cell_by_cell(tmp_path: Path) -> None:
    one_gain, truth = _exposure_shift(tmp_path / "one", light_cells=1)
    # the premise: with one gain for the frame the lifted borders become foreground
    assert sum(len(f) > 1 or any(d.box.iou(truth) < 0.5 for d in f) for f in one_gain[4:]) >= 3
    cells, truth = _exposure_shift(tmp_path / "cells", light_cells=8)
    for frame in cells[4:]:
        assert len(frame) == 1 and frame[0].box.iou(truth) >= 0.6, frame
