"""The trap's configuration: one YAML file, validated by a typed schema.

Unknown keys are errors (a typo such as `treshold` must not silently fall back to a
default for a whole season). Every error names the file, the line, the key path, the bad
value and what was expected, on one line. `trapcam validate-config FILE` runs exactly this
code without starting anything.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edge.errors import ConfigError
from edge.schedule import Schedule

# What a stored config holds in place of a secret (runs.config_json, and what migration 6 scrubs).
SECRET_MARK = "(hidden)"


class Section(BaseModel):
    """Base for every config section: unknown keys forbidden, values validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ---------------------------------------------------------------- sources


class CaptureSettings(Section):
    """How the capture thread feeds the pipeline."""

    queue_size: int = Field(4, ge=1, le=256, description="frames buffered; the oldest is dropped when full")
    queue_mb: float = Field(
        16.0,
        gt=0,
        description="memory the buffered frames may hold (MiB), so a big camera buffers fewer than "
        "queue_size: a 4K frame is 24 MiB (one is buffered), a full-HD one 6 MiB (two are); at "
        "least one frame always is. Two frames keep decoding beside the loop; more only hold memory "
        "(at full HD each further frame is 6 MiB of the trap's 200 MiB goal)",
    )
    stall_timeout_s: float = Field(
        300.0, gt=0, description="no frame for this long: exit non-zero so systemd restarts the service"
    )
    reopen_backoff_s: tuple[float, float] = Field(
        (1.0, 60.0), description="first and longest wait between attempts to reopen a failing camera"
    )
    interval_s: float = Field(
        0.0, ge=0, description="seconds between captures for live cameras (0 = as fast as possible)"
    )


class SyntheticSource(CaptureSettings):
    """A generated trap night with ground truth (tests, demo, benchmarks)."""

    kind: Literal["synthetic"]
    scene: Literal["sheet", "flowers"] = "sheet"
    seed: int = 0
    width: int = Field(1280, ge=160, le=8192)
    height: int = Field(720, ge=120, le=8192)
    frames: int = Field(300, ge=1)
    frame_interval_s: float = Field(5.0, gt=0, description="simulated seconds between frames (steps)")
    snapshot_every: int = Field(
        1,
        ge=1,
        description="a time-lapse camera: every n-th simulated step is a frame, so frames are "
        "n * frame_interval_s apart (12: one a minute at 5 s steps)",
    )
    insects: int = Field(12, ge=0, description="insects that visit during the night")
    start: str = Field("2026-07-01T21:30:00+00:00", description="ISO time of the first frame")
    realtime: bool = Field(False, description="pace frames at frame_interval_s like a real camera")


class FolderSource(CaptureSettings):
    """Replay of a folder of images (a recorded night)."""

    kind: Literal["folder"]
    path: Path
    pattern: str = Field("*.jpg", description="glob, matched case-insensitively, e.g. '*.jpg'")
    recursive: bool = False
    timestamps: Literal["exif", "filename", "exif_then_filename", "mtime"] = "exif_then_filename"
    filename_format: str | None = Field(
        None, description="strptime format found in the file name, e.g. '%Y%m%d-%H%M%S'"
    )
    timezone: str = Field("UTC", description="zone of EXIF/file-name times, which carry none (IANA name)")
    loop: bool = False


class OpenCVSource(CaptureSettings):
    """USB camera index, RTSP/HTTP URL, or a video file."""

    kind: Literal["opencv"]
    device: int | str = Field(0, description="USB index, rtsp://... / http://... URL, or video file path")
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    timeout_s: float = Field(
        10.0, gt=0, description="longest wait for a network stream to open or to deliver a frame"
    )
    start: AwareDatetime | None = Field(
        None,
        description="ISO time, with UTC offset, of a video file's first frame (default: mtime - duration)",
    )


class Picamera2Source(CaptureSettings):
    """The Raspberry Pi camera through picamera2 (from the OS: apt install python3-picamera2)."""

    kind: Literal["picamera2"]
    width: int = 2028
    height: int = 1520
    camera_index: int = 0
    autofocus: Literal["continuous", "manual", "none"] = "none"
    lens_position: float | None = Field(None, description="dioptres for manual focus")
    exposure_us: int | None = None
    analogue_gain: float | None = None


SourceConfig = Annotated[
    SyntheticSource | FolderSource | OpenCVSource | Picamera2Source, Field(discriminator="kind")
]

# ---------------------------------------------------------------- detection


class MaskRegion(Section):
    """A part of every frame where nothing is ever detected: the camera's timestamp overlay, the
    trap's own frame or lamp, a label on the sheet. Full-resolution pixels of the camera's frames
    (the coordinates an image viewer shows); give either `rect` or `polygon`.
    """

    name: str | None = Field(None, description="what it hides, for messages (e.g. 'timestamp')")
    rect: tuple[int, int, int, int] | None = Field(
        None, description="x0, y0, x1, y1 in full-resolution pixels (x1 and y1 exclusive)"
    )
    polygon: list[tuple[int, int]] | None = Field(
        None, min_length=3, description="[[x, y], ...] corners in full-resolution pixels"
    )

    @model_validator(mode="after")
    def _one_shape(self) -> MaskRegion:
        if (self.rect is None) == (self.polygon is None):
            raise ValueError(
                "a mask region needs exactly one of rect: [x0, y0, x1, y1] or polygon: [[x, y], ...]"
            )
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            if min(self.rect) < 0 or x1 <= x0 or y1 <= y0:
                raise ValueError(
                    f"rect {list(self.rect)}: expected x0, y0, x1, y1 with 0 <= x0 < x1 and 0 <= y0 < y1"
                )
        if self.polygon is not None and min(min(p) for p in self.polygon) < 0:
            raise ValueError(f"polygon {[list(p) for p in self.polygon]}: expected corners >= 0")
        return self

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """x0, y0, x1, y1 (exclusive) of the region."""
        if self.rect is not None:
            return self.rect
        xs = [p[0] for p in self.polygon or ()]
        ys = [p[1] for p in self.polygon or ()]
        return min(xs), min(ys), max(xs) + 1, max(ys) + 1

    def describe(self, index: int) -> str:
        """`detector.mask[i] (name): rect [...]` for messages."""
        shape = (
            f"rect {list(self.rect)}"
            if self.rect is not None
            else f"polygon {[list(p) for p in self.polygon or ()]}"
        )
        named = f" ({self.name})" if self.name else ""
        return f"detector.mask[{index}]{named}: {shape}"


def mask_outside_frame(regions: list[MaskRegion], width: int, height: int) -> str | None:
    """The first region that reaches outside a width x height frame, as one line; None if all fit.

    A region outside the frame is a mistake (coordinates of another camera, or of a downscaled
    preview), not something to clip quietly: the overlay it was meant to hide would still count.
    """
    for index, region in enumerate(regions):
        _, _, x1, y1 = region.bounds
        if x1 > width or y1 > height:
            return (
                f"{region.describe(index)} reaches x {x1}, y {y1}, outside the {width}x{height} frame; "
                f"expected full-resolution pixel coordinates within 0..{width} x 0..{height}"
            )
    return None


class LearnedDetectorConfig(Section):
    """`detector.kind: tflite`: a trained TFLite object detector instead of a background model.

    Two output layouts are read: SSD-style post-processed outputs (boxes, classes, scores and a
    count, as TensorFlow's object-detection exports and the TFLite_Detection_PostProcess op give
    them) and YOLO-style raw outputs (one [1, 4 + classes, N] tensor of centre, size and class
    scores, as Ultralytics exports it), which get non-maximum suppression here.
    """

    model: Path = Field(description="the detector's .tflite file")
    format: Literal["auto", "ssd", "yolo"] = Field(
        "auto", description="output layout; auto: one 3-D output is YOLO, a boxes/scores/count set is SSD"
    )
    input_size: tuple[int, int] | None = Field(
        None,
        description="[width, height] to resize the model's input to (models exported with a dynamic "
        "input); default: the size in the model",
    )
    input_range: tuple[float, float] | None = Field(
        None,
        description="float range the model expects pixels 0..255 as, e.g. [0, 1] (YOLO) or [-1, 1] "
        "(SSD MobileNet); required for a float model; a quantized one takes raw pixels without it",
    )
    resize: Literal["stretch", "letterbox"] = Field(
        "stretch",
        description="fit a frame (or tile) to the input: stretch it, or keep its aspect with grey bars",
    )
    box_units: Literal["auto", "normalized", "pixels"] = Field(
        "auto",
        description="YOLO boxes as fractions of the input or in input pixels; auto: fractions when no "
        "coordinate exceeds 1.5",
    )
    score_threshold: float = Field(0.4, gt=0, lt=1, description="a box needs at least this score")
    nms_iou: float = Field(
        0.5, gt=0, le=1, description="boxes overlapping more than this (IoU) are one insect (the best kept)"
    )
    classes: list[int] | None = Field(
        None, description="the detector's class indices that are insects (default: every class)"
    )
    tiles: tuple[int, int] = Field(
        (1, 1),
        description="[columns, rows]: the frame is cut into this many overlapping tiles, each run at "
        "the model's input size (a 4K frame shrunk to 320 px leaves a small moth a few pixels)",
    )
    tile_overlap: float = Field(
        0.15, ge=0, le=0.5, description="tiles overlap by this share of their size, so no insect is only cut"
    )
    num_threads: int = Field(2, ge=1, le=64)

    @field_validator("tiles")
    @classmethod
    def _tiles(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1 or max(value) > 16:
            raise ValueError(f"[columns, rows] between 1 and 16 each, got {list(value)}")
        return value

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 16:
            raise ValueError(f"[width, height] of at least 16 px, got {list(value)}")
        return value

    @field_validator("input_range")
    @classmethod
    def _input_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] >= value[1]:
            raise ValueError(f"[low, high] with low < high, got {list(value)}")
        return value


# The motion detector's first background: the per-pixel median of this many frames. From one frame,
# a bee on a flower when the camera starts stays in the background as a ghost that makes a track
# and later takes the bee's detections (real flower frames, bench/real: 7 tracks for 2 bees with
# 1 frame, 6 with 5); the median of frames in which it moved leaves the flower.
MOTION_WARMUP_FRAMES = 5


class DetectorConfig(Section):
    """Finding insects. `static_screen` for a sheet or board, `motion` for natural scenes, `tflite` for
    a trained object detector."""

    kind: Literal["static_screen", "motion", "tflite"] = "static_screen"
    tflite: LearnedDetectorConfig | None = Field(
        None, description="the trained detector, for kind: tflite (model file, output layout, tiles)"
    )
    detect_width: int = Field(960, ge=160, description="frames are downscaled to this width to detect")
    polarity: Literal["dark", "bright", "both"] = Field(
        "both", description="insects darker/brighter than the screen, or either"
    )
    threshold: float = Field(18.0, gt=0, description="minimum difference from the background (0-255 scale)")
    min_area_px: int = Field(150, ge=1, description="smallest insect, in full-resolution pixels")
    max_area_px: int = Field(400_000, ge=1, description="largest insect, in full-resolution pixels")
    max_aspect: float = Field(6.0, ge=1, description="longest/shortest side of an insect's box")
    min_solidity: float = Field(0.3, ge=0, le=1, description="blob area / convex hull area")
    light_cells: int = Field(
        8,
        ge=1,
        le=64,
        description="static_screen: the background follows the light in this many cells across the frame "
        "(rows to match), interpolated smoothly: a camera's exposure lifts dark borders more than a "
        "bright centre; 1 = one gain for the whole frame",
    )
    background_rate: float = Field(
        0.02, gt=0, le=1, description="how fast the background follows light where no insect is"
    )
    warmup_frames: int | None = Field(
        None,
        ge=1,
        description="frames whose per-pixel median is the first background (default by kind: 1 for "
        "static_screen, which paints the insects already on the sheet out of its first frame; "
        f"{MOTION_WARMUP_FRAMES} for motion, so a pollinator that moves during them is not baked into the "
        "background and left behind as a ghost)",
    )
    grow_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a blob grows over pixels above this fraction of the threshold (faint wings, legs)",
    )
    noise_factor: float = Field(
        4.0,
        ge=0,
        description="threshold rises to this many times the frame's median background difference "
        "on noisy frames (0 = fixed threshold)",
    )
    init_insect_px: int | None = Field(
        None,
        ge=8,
        description="widest insect (full-resolution pixels) that may already sit on the screen when "
        "the background is built (after a restart mid-night the sheet is full); such insects are "
        "painted out of it. Default: the side of a square of max_area_px",
    )
    reinit_fraction: float = Field(
        0.3,
        gt=0,
        le=1,
        description="foreground covering more of the frame than this means the scene changed "
        "(light moved, camera bumped): the background is rebuilt (motion: also foreground in "
        "nearly every part of the frame, what a bumped camera over a textured scene leaves, or "
        "the whole view shifted further than sway_px)",
    )
    reinit_after_frames: int = Field(
        2, ge=1, description="consecutive such frames before rebuilding (a single flash is skipped)"
    )
    split_touching: bool = Field(
        True,
        description="static_screen: split a blob that holds several touching insects (wingtip, leg, "
        "antenna, or a faint halo between them) into one detection per insect",
    )
    split_neck_ratio: float = Field(
        0.8,
        gt=0,
        le=1,
        description="two parts of a blob stay one insect when the narrowest passage between them is at "
        "least this fraction as thick as the thinner part (higher splits more readily)",
    )
    sway_px: float = Field(
        4.0,
        ge=0,
        description="motion: vegetation that shifts by up to this many full-resolution pixels between "
        "frames (wind) is not foreground; each pixel is compared with the range of the background "
        "within this distance",
    )
    flicker_factor: float = Field(
        2.0,
        ge=0,
        description="motion: a pixel's threshold rises by this many times how much it usually changes "
        "from frame to frame (grass, shimmering leaves); 0 = off",
    )
    flicker_rate: float = Field(
        0.05, gt=0, le=1, description="motion: how fast that per-pixel change level is learned"
    )
    light_cell_px: int = Field(
        192,
        ge=16,
        description="motion: size (full-resolution pixels) of the cells over which the background follows "
        "uneven light changes (cloud shadows) by a smooth gain; larger than an insect",
    )
    hold_frames: int = Field(
        720,
        ge=1,
        description="motion: an object that stays put is kept as foreground (a sitting pollinator) for at "
        "most this many frames; then it becomes background (a bent stem, a moved leaf)",
    )

    mask: list[MaskRegion] = Field(
        default_factory=list,
        description="regions never searched for insects (timestamp overlay, the trap's frame), in "
        "full-resolution pixels; checked against the frame size",
    )
    sheet_reference: Path | Literal["lamp_on"] | None = Field(
        None,
        description="static_screen: the empty lit sheet, so a mark, stain or scale bar on it is never an "
        "insect: a photo of it from this camera (a file), or 'lamp_on': the first frame after the "
        "schedule switched the lamp on, stored per night in <data_dir>/sheet/ (a restart that night "
        "uses it again). Without it, whatever sits on the sheet in the first frame is taken for insects (a "
        "restart that night continues from the background the earlier run kept instead)",
    )
    sheet_shift_px: float = Field(
        3.0,
        ge=0,
        description="with a sheet_reference: how far (full-resolution pixels) the hanging sheet may lie "
        "from where the reference saw it; its marks' edges within this are not differences",
    )
    sheet_reference_within_s: float = Field(
        600.0,
        gt=0,
        description="lamp_on: a run's first frame is the empty sheet only this soon after the lamp went on",
    )
    sliver_max_px: float | None = Field(
        None,
        gt=0,
        description="a track only ever cut by the frame's border that the model cannot name is a sliver "
        "(partial, not counted) only while its longest side stays within this many full-resolution "
        "pixels; larger, it is an insect half outside the frame and counts (default: 4 x the side of "
        "min_area_px, ~100 px at min_area_px 600)",
    )

    @property
    def warmup_frame_count(self) -> int:
        """warmup_frames, or the kind's default (motion: MOTION_WARMUP_FRAMES, otherwise 1)."""
        if self.warmup_frames is not None:
            return self.warmup_frames
        return MOTION_WARMUP_FRAMES if self.kind == "motion" else 1

    @property
    def sliver_limit_px(self) -> float:
        """sliver_max_px, or four times the side of the smallest insect (min_area_px)."""
        return self.sliver_max_px if self.sliver_max_px is not None else 4.0 * self.min_area_px**0.5

    @property
    def initial_insect_px(self) -> int:
        """init_insect_px, or the largest insect the area filter lets through."""
        return self.init_insect_px or max(8, round(self.max_area_px**0.5))

    @model_validator(mode="after")
    def _areas_ordered(self) -> DetectorConfig:
        if self.min_area_px >= self.max_area_px:
            raise ValueError(
                f"min_area_px ({self.min_area_px}) must be below max_area_px ({self.max_area_px})"
            )
        if self.kind == "tflite" and self.tflite is None:
            raise ValueError(
                "kind 'tflite' needs a tflite section with at least the model file (tflite.model)"
            )
        if self.kind != "tflite" and self.tflite is not None:
            raise ValueError(f"the tflite section is for kind 'tflite'; kind is {self.kind!r}")
        if self.sheet_reference is not None and self.kind != "static_screen":
            raise ValueError(f"sheet_reference is for kind 'static_screen' (a sheet); kind is {self.kind!r}")
        return self


class CropConfig(Section):
    """Cutting insects out at full resolution."""

    padding: float = Field(0.15, ge=0, le=2, description="margin around the box, as a fraction of its size")
    square: bool = True
    min_size_px: int = Field(32, ge=1, description="crops are at least this large before resizing")


# ---------------------------------------------------------------- classification


class ClassifierConfig(Section):
    """The model bundle (or a plain model.tflite + labels.txt) and how to run it."""

    enabled: bool = True
    model: Path | None = Field(None, description="bundle directory, model.json, or a .tflite file")
    labels: Path | None = Field(None, description="labels.txt for a plain .tflite (one label per line)")
    backend: Literal["cpu", "edgetpu", "tensorrt"] = Field(
        "cpu",
        description="cpu (TFLite with XNNPACK), edgetpu (Coral, the bundle's model_edgetpu.tflite) or "
        "tensorrt (Jetson, an engine built on the device from the bundle's model.onnx)",
    )
    edgetpu_device: str = Field(
        "usb", description="which Edge TPU: 'usb', 'usb:0', 'pci', 'pci:0' or ':0' (the N-th of any kind)"
    )
    tensorrt_precision: Literal["fp16", "int8", "fp32"] = Field(
        "fp16", description="TensorRT engine precision; int8 uses the bundle's model_int8.onnx"
    )
    allow_cpu_fallback: bool = Field(
        False,
        description="a configured accelerator that is missing runs the CPU model instead (health says "
        "'degraded: cpu fallback'); false: it is a start-up error",
    )
    engine_cache_dir: Path | None = Field(
        None, description="TensorRT engines, cached by the ONNX file's sha256 (default <data_dir>/engines)"
    )
    num_threads: int = Field(2, ge=1, le=64)
    top_k: int = Field(3, ge=1, le=20)
    threshold: float = Field(
        0.5, ge=0, le=1, description="abstain below this score when the bundle gives no per-class threshold"
    )
    not_insect_labels: list[str] = Field(
        [],
        description="labels that mean 'no insect here', e.g. ['background'] for the background class of "
        "many third-party models: a track voted to one of them is stored as discarded and not counted. "
        "Off by default: a model that does not know the local fauna calls real moths 'background'",
    )
    level: str | None = Field(
        None,
        min_length=1,
        description="level name of a plain .tflite's single head (default 'species'); not for bundles",
    )
    input_range: tuple[float, float] | None = Field(
        None,
        description="float range a plain .tflite expects pixels 0..255 as, e.g. [-1, 1]; required for a plain"
        " float model, optional for a quantized one (default: raw pixels); not for bundles",
    )
    colour_order: Literal["RGB", "BGR"] | None = Field(
        None, description="channel order a plain .tflite expects (default RGB); not for bundles"
    )

    @field_validator("edgetpu_device")
    @classmethod
    def _edgetpu_device(cls, value: str) -> str:
        if not re.fullmatch(r"(usb|pci)(:\d+)?|:\d+", value):
            raise ValueError("an Edge TPU device: 'usb', 'usb:0', 'pci', 'pci:0' or ':0'")
        return value

    @model_validator(mode="after")
    def _model_when_enabled(self) -> ClassifierConfig:
        if self.enabled and self.model is None:
            raise ValueError("model is required when the classifier is enabled (or set enabled: false)")
        return self


# ---------------------------------------------------------------- tracking


# The tracker settings that depend on `tracker.mode`, where the config leaves them unset (null).
# Video: frames seconds apart. Time-lapse: every detection is an insect at once (a snapshot has no
# second frame to confirm it), a track links only to the next snapshot or the one after (never
# lost by elapsed time: snapshots may be an hour apart), no motion is predicted, and no hop or
# re-identification waits for a lost insect.
VIDEO_DEFAULTS: dict[str, float] = {
    "confirm_hits": 2,
    "max_misses": 5,
    "max_gap_s": 60.0,
    "max_distance": 1.5,
    "reid_window_s": 300.0,
    "hop_max_distance": 3.0,
}
TIMELAPSE_DEFAULTS: dict[str, float] = {
    "confirm_hits": 1,
    "max_misses": 2,
    "max_gap_s": 1e9,
    "max_distance": 3.0,
    "reid_window_s": 0.0,
    "hop_max_distance": 0.0,
}


class TrackerConfig(Section):
    """Following each insect across frames so it is counted once (see edge/track/tracker.py)."""

    mode: Literal["video", "timelapse"] = Field(
        "video",
        description="video: frames seconds apart, a track confirms after confirm_hits; timelapse: snapshots "
        "minutes apart, every detection counts and links to the next snapshot by place, size and looks "
        "(the fields marked 'by mode' take the mode's value unless set here)",
    )
    confirm_hits: int | None = Field(
        None, ge=1, description="detections before a track counts (by mode: 2 video, 1 timelapse)"
    )
    max_misses: int | None = Field(
        None,
        ge=1,
        description="a track is lost at this many consecutive frames without a detection "
        "(by mode: 5 video, 2 timelapse)",
    )
    tentative_max_misses: int = Field(
        1, ge=1, description="an unconfirmed track is discarded at this many consecutive misses"
    )
    max_gap_s: float | None = Field(
        None,
        gt=0,
        description="a track is also lost after this long unseen (by mode: 60 video, never timelapse)",
    )
    max_cost: float = Field(0.8, gt=0, le=1, description="matches costlier than this start a new track")
    max_distance: float | None = Field(
        None,
        gt=0,
        description="largest jump between frames, in box diagonals (by mode: 1.5 video, 3 timelapse)",
    )
    weight_iou: float = Field(0.4, ge=0)
    weight_distance: float = Field(0.3, ge=0)
    weight_size: float = Field(0.15, ge=0)
    weight_appearance: float = Field(0.15, ge=0)
    velocity_smoothing: float = Field(
        0.5, gt=0, le=1, description="weight of the newest step in the velocity estimate (1 = no smoothing)"
    )
    velocity_decay: float = Field(
        0.7, ge=0, le=1, description="the predicted velocity shrinks by this factor per missed frame"
    )
    occlusion_overlap: float = Field(
        0.6, gt=0, le=1, description="share of an unmatched track's box inside another detection: occluded"
    )
    occluded_miss_weight: float = Field(
        0.1, ge=0, le=1, description="a missed frame while occluded counts as this fraction of a miss"
    )
    reid_window_s: float | None = Field(
        None,
        ge=0,
        description="a lost track can be revived at its place for this long (0 = off; by mode: 300 video, "
        "0 timelapse)",
    )
    reid_max_distance: float = Field(
        0.5, gt=0, description="a revived track's detection is at most this far away, in box diagonals"
    )
    hop_max_distance: float | None = Field(
        None,
        ge=0,
        description="a counted insect that vanishes as a new one appears this far away (box diagonals) "
        "keeps its track when they are each other's only candidate (0 = off; by mode: 3 video, 0 timelapse)",
    )
    hop_wait_frames: int = Field(
        3,
        ge=1,
        description="a hop is linked once the old place stayed empty this many frames "
        "(and the new insect appeared at most this many frames after the old one vanished)",
    )
    fragment_overlap: float = Field(
        0.8,
        gt=0,
        le=1,
        description="a detection lying this much inside the box of a track that matched another "
        "detection is a piece of that insect (the detector cut it in two), not a new one (1 = off)",
    )
    link_max_appearance: float = Field(
        0.45,
        ge=0,
        le=1,
        description="re-identification and hop linking need colour histograms closer than this "
        "(Bhattacharyya distance): a different insect landing on a lost one's spot is a new count",
    )
    link_max_embedding: float = Field(
        0.25,
        ge=0,
        le=1,
        description="time-lapse: where the model gives embeddings, linking two snapshots needs a cosine "
        "distance (1 - cos) of the insect's features below this",
    )
    reid_max_tracks: int = Field(
        256, ge=1, description="lost tracks kept for re-identification (bounds memory)"
    )
    vote_min_share: float = Field(
        0.5, gt=0, le=1, description="a level's winning label needs this share of the vote, else it abstains"
    )

    def effective(self) -> TrackerConfig:
        """The settings the tracker runs with: the mode's values where this config leaves them null."""
        defaults = TIMELAPSE_DEFAULTS if self.mode == "timelapse" else VIDEO_DEFAULTS
        return self.model_copy(update={k: v for k, v in defaults.items() if getattr(self, k) is None})


# ---------------------------------------------------------------- storage and logging


class StorageConfig(Section):
    """SQLite database and crop images."""

    database: Path | None = Field(None, description="default: <data_dir>/trapcam.db")
    crops_dir: Path | None = Field(None, description="default: <data_dir>/crops")
    save_crops: bool = True
    jpeg_quality: int = Field(90, ge=10, le=100)
    batch_size: int = Field(200, ge=1, description="rows per write transaction")
    flush_interval_s: float = Field(1.0, gt=0, description="longest time a row waits before it is written")
    max_queue_items: int = Field(
        100_000, ge=1, description="rows kept in memory while the disk is unusable; then the pipeline waits"
    )
    max_queue_mb: float = Field(
        64.0, gt=0, description="memory for queued rows and crops; then the pipeline waits"
    )
    max_db_mb: float | None = Field(
        None, gt=0, description="cap on the database file (room for the OS); reaching it acts as a full disk"
    )
    startup_check: Literal["full", "quick"] = Field(
        "full", description="integrity_check at start ('quick' is faster on databases of many GB)"
    )
    fsync_crops: bool = Field(
        False, description="fsync every crop file (survives power loss; slower on SD cards)"
    )
    crop_every_s: float = Field(
        10.0, ge=0, description="besides a track's first and better-scored crops, save one at most this often"
    )
    save_snapshots: bool = Field(
        True,
        description="tracker.mode timelapse (with save_crops): keep each snapshot as a JPEG under "
        "<crops_dir>/snapshots/, the media of Camtrap DP's per-snapshot observations; retention deletes "
        "these first",
    )
    snapshot_width: int = Field(
        1920, ge=160, le=8192, description="kept snapshots are scaled down to this width (never up)"
    )
    reserve_mb: float = Field(
        16.0,
        ge=0,
        description="space held back in <data_dir>/.trapcam-reserve and given up when the disk is full, so "
        "the database opens, the writer finishes and a stop ends cleanly (0 = none)",
    )


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "text"
    stats_interval_s: float = Field(
        60.0, gt=0, description="how often frame rate, queue and timings are logged"
    )


# ---------------------------------------------------------------- field operations (site, MQTT, ...)

_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
# A window edge: clock time "21:30", or a sun event with an optional offset, e.g. "sunset",
# "sunset+30m", "sunrise-1h", "dusk+15m" (astral's dawn/dusk are civil twilight).
_EDGE = r"^(([01]\d|2[0-3]):[0-5]\d|(sunrise|sunset|dawn|dusk|noon)([+-]\d+(\.\d+)?[hm])?)$"


def _check_zone(name: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"a time zone such as 'Europe/Berlin' or 'UTC' (unknown zone {name!r})") from None
    return name


class SiteConfig(Section):
    """Where the trap stands: for the schedule (sunset/sunrise), day boundaries and Camtrap DP."""

    name: str | None = Field(None, description="location name for exports, e.g. 'Meadow plot 3'")
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    elevation_m: float | None = None
    timezone: str = Field("UTC", description="IANA zone for clock-time windows and daily files")

    @model_validator(mode="after")
    def _check(self) -> SiteConfig:
        _check_zone(self.timezone)
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("latitude and longitude together (or neither)")
        return self


class SizeConfig(Section):
    """Body length per track, and size classes (a biomass proxy ecologists count by).

    The length is the long side of the box of the track's best detection, in full-resolution
    pixels, and in millimetres where `mm_per_px` (the camera's scale at the sheet or the flowers,
    measured once with a ruler in the frame) is given. `classes` name the lower bounds of each
    class in `unit`, smallest first and starting at 0.
    """

    mm_per_px: float | None = Field(None, gt=0, description="millimetres per full-resolution pixel")
    unit: Literal["px", "mm"] = Field("px", description="the unit of the class bounds")
    classes: list[tuple[str, float]] = Field(
        default_factory=lambda: [("small", 0.0), ("large", 100.0)],
        min_length=1,
        description="[[name, lowest length], ...] smallest first, the first at 0",
    )

    @model_validator(mode="after")
    def _check(self) -> SizeConfig:
        if self.unit == "mm" and self.mm_per_px is None:
            raise ValueError("unit mm needs mm_per_px (the camera's millimetres per pixel)")
        names = [name for name, _ in self.classes]
        bounds = [bound for _, bound in self.classes]
        if len(set(names)) != len(names) or any(not name.strip() for name in names):
            raise ValueError(f"classes {names}: expected distinct, non-empty names")
        if bounds[0] != 0 or any(later <= earlier for earlier, later in pairwise(bounds)):
            raise ValueError(
                f"classes bounds {bounds}: expected the first 0 and each larger than the one before"
            )
        return self

    def measure(self, length_px: float) -> tuple[float | None, str]:
        """(length in mm or None, size class) of a body `length_px` long."""
        length_mm = length_px * self.mm_per_px if self.mm_per_px is not None else None
        length = length_mm if self.unit == "mm" and length_mm is not None else length_px
        name = self.classes[0][0]
        for candidate, bound in self.classes:
            if length >= bound:
                name = candidate
        return length_mm, name


class MqttTlsConfig(Section):
    """TLS to the broker: the CA that signed it, and optionally our client certificate."""

    ca_file: Path | None = Field(None, description="CA certificate (PEM); default: the system's CAs")
    cert_file: Path | None = Field(None, description="client certificate (PEM) for mutual TLS")
    key_file: Path | None = Field(None, description="client private key (PEM)")
    insecure: bool = Field(False, description="skip the broker host name check (testing only)")

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file together (or neither)")
        return self


class HomeAssistantConfig(Section):
    """Home Assistant discovery: a sensor for today's total always, and one per taxon for a few taxa."""

    enabled: bool = True
    discovery_prefix: str = "homeassistant"
    taxa: list[str] = Field(
        default_factory=list,
        description="labels that get a 'today' sensor each; default: every label of a model with at most "
        "64, else the top_taxa labels counted most so far",
    )
    top_taxa: int = Field(
        10, ge=0, le=64, description="with a larger model and no taxa listed: sensors for this many taxa"
    )


class MqttConfig(Section):
    """Publishing to an MQTT broker through the SQLite outbox (nothing is lost while it is away)."""

    enabled: bool = False
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    topic_prefix: str = Field("trapcam", pattern=r"^[^#+]+$", description="topics: <prefix>/<device_id>/...")
    client_id: str | None = Field(None, description="default: trapcam-<device_id>")
    username: str | None = None
    password: str | None = Field(None, description="better: password_env or password_file (not in the YAML)")
    password_env: str | None = Field(None, description="name of an environment variable holding the password")
    password_file: Path | None = Field(None, description="file whose first line is the password")
    tls: MqttTlsConfig | None = None
    keepalive_s: int = Field(60, ge=5, le=3600)
    reconnect_backoff_s: tuple[float, float] = Field(
        (1.0, 120.0), description="first and longest wait between reconnect attempts"
    )
    max_inflight: int = Field(20, ge=1, le=1000, description="messages sent but not yet acknowledged")
    outbox_max_rows: int = Field(
        100_000, ge=100, description="undelivered messages kept; beyond it old health samples go first"
    )
    delivered_keep_days: float = Field(7.0, ge=0, description="delivered messages are deleted after this")
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        given = [k for k in ("password", "password_env", "password_file") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"one of password, password_env, password_file (got {', '.join(given)})")
        if given and self.username is None:
            raise ValueError(f"a username with {given[0]}")
        low, high = self.reconnect_backoff_s
        if not 0 < low <= high:
            raise ValueError("reconnect_backoff_s: 0 < first <= longest")
        return self


class SummaryConfig(Section):
    """Interval summaries: finished tracks per taxon, effort, frames."""

    interval_s: float = Field(900.0, ge=10, le=86400, description="length of one summary interval")
    max_frame_gap_s: float = Field(
        300.0, gt=0, description="a gap between frames longer than this is not counted as watching (effort)"
    )


class ViewConfig(Section):
    """Is the camera still seeing the sheet? (edge/view.py) Readings are compared with the run's first."""

    enabled: bool = True
    every_s: float = Field(60.0, gt=0, description="seconds of frame time between two readings of the view")
    baseline_readings: int = Field(
        3, ge=1, description="the run's first readings (while active) set the baseline"
    )
    hold: int = Field(
        2, ge=1, description="readings in a row that must agree before a flag is raised or cleared"
    )
    dark_fraction: float = Field(
        0.4, gt=0, lt=1, description="view-dark below this fraction of the baseline brightness (lamp off?)"
    )
    blur_fraction: float = Field(
        0.35,
        gt=0,
        lt=1,
        description="view-blurred below this fraction of the baseline sharpness (focus, dew)",
    )
    fog_fraction: float = Field(
        0.5, gt=0, lt=1, description="view-fogged below this fraction of the baseline contrast (fog, frost)"
    )
    cover_fraction: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="view-covered when more of the frame than this looks unlike the baseline "
        "(a leaf, a fallen sheet)",
    )


class HealthConfig(Section):
    interval_s: float = Field(300.0, ge=5, description="how often a health sample is stored and published")
    view: ViewConfig = ViewConfig()


class RetentionConfig(Section):
    """Keeping the disk from filling: oldest crops go first, database rows never."""

    max_crops_gb: float | None = Field(None, gt=0, description="byte budget for crop images")
    min_free_gb: float = Field(1.0, ge=0, description="free-space watermark on the data disk")
    keep_best_crop: bool = Field(True, description="keep each track's best crop as long as possible")
    check_interval_s: float = Field(600.0, ge=1)
    warn_days_left: float = Field(7.0, ge=0, description="warn (health, MQTT) when fewer days of room remain")
    checkpoint_interval_s: float = Field(3600.0, ge=10, description="WAL checkpoint(TRUNCATE) interval")
    vacuum_interval_days: float | None = Field(30.0, gt=0, description="incremental vacuum; null = never")


class WindowConfig(Section):
    """One active window; `end` before `start` means it runs past midnight."""

    start: str = Field(..., pattern=_EDGE, description="'21:00', 'sunset', 'sunset-30m', 'dusk+1h'")
    end: str = Field(..., pattern=_EDGE, description="'05:00', 'sunrise', 'sunrise+15m'")


class LightConfig(Section):
    """Attractant light on a GPIO relay, switched with the schedule (gpiozero, imported only here)."""

    gpio_pin: int = Field(..., ge=0, le=40, description="BCM pin number of the relay input")
    active_high: bool = True


class ScheduleConfig(Section):
    """When the trap watches. No windows: always active."""

    windows: list[WindowConfig] = Field(default_factory=list)
    light: LightConfig | None = None


class ExportConfig(Section):
    directory: Path | None = Field(None, description="default: <data_dir>/export")
    day_starts_at: str = Field(
        "12:00",
        pattern=_HHMM,
        description="local time a 'day' file starts: 12:00 keeps a night in one file; when not set and "
        "every schedule window lies within a calendar day (a day camera), 00:00",
    )


class TrapConfig(Section):
    """The whole configuration file."""

    device_id: str = Field("trap-01", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    data_dir: Path = Path("trapcam-data")
    source: SourceConfig
    detector: DetectorConfig = DetectorConfig()
    crop: CropConfig = CropConfig()
    classifier: ClassifierConfig = ClassifierConfig(enabled=False)
    tracker: TrackerConfig = TrackerConfig()
    storage: StorageConfig = StorageConfig()
    logging: LoggingConfig = LoggingConfig()
    site: SiteConfig = SiteConfig()
    size: SizeConfig = SizeConfig()
    mqtt: MqttConfig = MqttConfig()
    summary: SummaryConfig = SummaryConfig()
    health: HealthConfig = HealthConfig()
    retention: RetentionConfig = RetentionConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _mask_inside_the_frame(self) -> TrapConfig:
        """Where the source declares its frame size, a mask outside it is an error now, not at night."""
        if isinstance(self.source, (SyntheticSource, Picamera2Source)):
            problem = mask_outside_frame(self.detector.mask, self.source.width, self.source.height)
            if problem:
                raise ValueError(f"{problem} ({self.source.kind} source)")
        return self

    @model_validator(mode="after")
    def _lamp_on_needs_a_schedule(self) -> TrapConfig:
        if self.detector.sheet_reference == "lamp_on" and not self.schedule.windows:
            raise ValueError(
                "detector.sheet_reference 'lamp_on' needs schedule.windows (when the lamp goes on); "
                "without a schedule give a photo of the empty sheet instead"
            )
        return self

    @model_validator(mode="after")
    def _sun_needs_a_place(self) -> TrapConfig:
        uses_sun = any(not w.start[0].isdigit() or not w.end[0].isdigit() for w in self.schedule.windows)
        if uses_sun and self.site.latitude is None:
            raise ValueError("site.latitude and site.longitude for schedule windows relative to the sun")
        return self

    @model_validator(mode="after")
    def _day_follows_the_schedule(self) -> TrapConfig:
        """A day camera's export day starts at midnight, a night trap's at noon (unless set).

        The default 12:00 keeps a night in one file; for a camera whose every window lies within a
        calendar day (a flower camera from 08:00 to 18:00, or sunrise to sunset) it cut each day at
        noon and filed the morning under the day before.
        """
        if "day_starts_at" in self.export.model_fields_set or not self.schedule.windows:
            return self
        schedule = Schedule(self.schedule, self.site)
        zone = ZoneInfo(self.site.timezone)
        for reference in (date(2026, 3, 20), date(2026, 6, 21), date(2026, 12, 21)):  # equinox, solstices
            for day in (reference, reference + timedelta(days=1)):
                midnight = datetime.combine(day, time(0), tzinfo=zone)
                if schedule.is_active(midnight):
                    return self  # a window runs across midnight: a night trap
        self.export.day_starts_at = "00:00"
        return self

    def stored_json(self) -> str:
        """The config as the database keeps it (runs.config_json): secrets replaced by SECRET_MARK.

        The database, its backups and exports travel (a USB stick, a colleague, a data paper);
        a broker password must not travel with them. password_env / password_file only name
        where the secret is, so they stay.
        """
        data = self.model_dump(mode="json")
        if data.get("mqtt", {}).get("password") is not None:
            data["mqtt"]["password"] = SECRET_MARK
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @property
    def database_path(self) -> Path:
        return self.storage.database or self.data_dir / "trapcam.db"

    @property
    def crops_path(self) -> Path:
        return self.storage.crops_dir or self.data_dir / "crops"

    @property
    def export_path(self) -> Path:
        return self.export.directory or self.data_dir / "export"


# ---------------------------------------------------------------- loading with line numbers


def _line_index(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    """Record the 1-based line of every key path in a composed YAML tree."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_index(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)


def _expected(error: dict[str, Any]) -> str:
    """Turn one pydantic error into 'what was expected' words."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "no such key (check its spelling and the section it is in)"
    if kind == "missing":
        return "this key is required"
    if kind == "literal_error":
        return f"one of {ctx.get('expected')}"
    if kind == "union_tag_invalid":
        return f"kind must be one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"a '{ctx.get('discriminator', 'kind').strip(chr(39))}' key"
    return str(error["msg"]).removeprefix("Value error, ")


def _lookup(value: Any, loc: tuple[Any, ...]) -> tuple[bool, Any]:
    for part in loc:
        in_dict = isinstance(value, dict) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and part < len(value)
        if in_dict or in_list:
            value = value[part]
        else:
            return False, None
    return True, value


def _clean_loc(loc: tuple[Any, ...], raw: Any) -> tuple[Any, ...]:
    """Drop pydantic's union branch names (e.g. 'folder') that are not keys in the file."""
    out: list[Any] = []
    for part in loc:
        found, _ = _lookup(raw, (*out, part))
        parent_found, parent = _lookup(raw, tuple(out))
        if found or not parent_found or not isinstance(parent, dict) or part in parent:
            out.append(part)
        elif isinstance(part, str) and part not in parent and isinstance(parent, dict):
            # Either a missing key (keep it) or a union tag (skip it).
            is_tag = isinstance(parent.get("kind"), str) and parent.get("kind") == part
            if not is_tag:
                out.append(part)
    return tuple(out)


def format_validation_error(
    exc: ValidationError, raw: Any, lines: dict[tuple[Any, ...], int], filename: str
) -> str:
    """One line per problem: `file:line: key.path: got X; expected Y`."""
    messages = []
    for error in exc.errors():
        loc = _clean_loc(tuple(error["loc"]), raw)
        if error["type"] == "union_tag_invalid":
            loc = (*loc, "kind")  # point at the bad tag itself, not the whole section
        key_path = ".".join(str(p) for p in loc) or "(top level)"
        line = lines.get(loc)
        probe = loc
        while line is None and probe:
            probe = probe[:-1]
            line = lines.get(probe)
        found, value = _lookup(raw, loc)
        if not found or error["type"] == "missing":
            got = "not set"
        elif error["type"] == "extra_forbidden":  # a misspelled 'passwrd' would echo the password
            got = "got a key this section does not have (its value is not shown)"
        elif isinstance(value, (dict, list)):  # a whole section: never echo it (it may hold a password)
            got = "a problem in this section"
        elif any(secret in key_path for secret in ("password", "secret", "token")):
            got = "got (hidden)"
        else:
            got = f"got {value!r}"
        where = f"{filename}:{line}" if line else filename
        messages.append(f"{where}: {key_path}: {got}; expected {_expected(error)}")
    return messages[0] if len(messages) == 1 else " | ".join(messages)


def read_yaml(text: str, filename: str) -> tuple[dict[str, Any], dict[tuple[Any, ...], int]]:
    """Parse a YAML mapping and the 1-based line of every key path (for error messages)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{filename}{line}: not valid YAML: {problem}") from None
    if raw is None:
        raise ConfigError(f"{filename}: the file is empty")
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{filename}:1: expected a mapping of keys at the top level, got {type(raw).__name__}"
        )
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    return raw, lines


def validate(model: type[BaseModel], text: str, filename: str) -> Any:
    """Validate YAML text against a schema; ConfigError with file, line, key path and value."""
    raw, lines = read_yaml(text, filename)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, raw, lines, filename)) from None


def planned_frame_gap_s(source: Any) -> float | None:
    """Seconds between frames the source is set up for: a live camera's interval_s, a synthetic
    night's step x snapshot_every; None when unknown (as fast as possible, a folder, a stream)."""
    if isinstance(source, SyntheticSource):
        return source.frame_interval_s * source.snapshot_every
    interval = getattr(source, "interval_s", 0.0)
    return float(interval) if interval else None


def timelapse_advice(cfg: TrapConfig) -> str | None:
    """One line when the video tracker is set up for frames further apart than it can link, else None."""
    gap = planned_frame_gap_s(cfg.source)
    settings = cfg.tracker.effective()
    if cfg.tracker.mode != "video" or gap is None or gap <= (settings.max_gap_s or 0.0):
        return None
    return (
        f"source: frames {gap:g} s apart, longer than tracker.max_gap_s ({settings.max_gap_s:g} s): "
        "the video tracker would count nothing; for a time-lapse camera set tracker.mode: timelapse"
    )


def parse_config(text: str, filename: str = "<config>") -> TrapConfig:
    """Validate YAML text into a TrapConfig; raise ConfigError with file, line, key and value."""
    return validate(TrapConfig, text, filename)


def read_config_text(path: Path, what: str = "config file") -> str:
    """The file's text, or one ConfigError line saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc}") from None


def load_config(path: str | Path) -> TrapConfig:
    """Read and validate a config file. Relative paths inside stay relative to the working dir."""
    path = Path(path)
    return parse_config(read_config_text(path), str(path))
