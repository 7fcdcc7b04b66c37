"""A trained TFLite object detector as the trap's detector (`detector.kind: tflite`).

Background models find whatever differs from the sheet: dust, marks and legs of insects outside the
frame as well as insects. A detector trained on insects (the AMI data companion's and Bjerge's
pipelines use one) finds insects. This module runs such a model and hands back the same
`Detection` boxes, in full-resolution coordinates, as the other detectors, so cropping,
classification, tracking and storage do not change.

Two output layouts are read:

- **SSD-style, post-processed**: boxes [1, N, 4] as (ymin, xmin, ymax, xmax) fractions of the
  input, classes [1, N], scores [1, N] and a count [1] - TensorFlow's object-detection exports and
  the TFLite_Detection_PostProcess op. Outputs are found by name (box, class, score, num/count)
  when the names say it, else in that op's order.
- **YOLO-style, raw**: one [1, 4 + C, N] (or [1, N, 4 + C]) tensor of box centre, size and C class
  scores per candidate, as Ultralytics exports it; boxes as fractions of the input or in its pixels
  (`box_units`). Non-maximum suppression (OpenCV's `NMSBoxes`) runs here.

A 4K frame shrunk to a 320 px input leaves a small moth a few pixels wide, so the frame can be cut
into overlapping tiles (`tiles`), each run at the model's size; boxes from all tiles go through
one class-agnostic suppression (an insect in the overlap is found twice and kept once).
Config masks drop boxes whose centre lies in a masked region. TensorFlow is never imported.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge.classify.interpreter import make_interpreter, tensor_dtype_name
from edge.config import DetectorConfig, LearnedDetectorConfig
from edge.detect.base import Box, Detection, touches_border
from edge.detect.crop import check_frame
from edge.detect.mask import DetectionMask
from edge.errors import ModelError

log = logging.getLogger(__name__)

# Grey of letterbox bars (the value YOLO exports are trained with).
_PAD_VALUE = 114
# Box coordinates at most this large are taken as fractions of the input (box_units: auto).
_NORMALIZED_MAX = 1.5


@dataclass(frozen=True, slots=True)
class _Fit:
    """How one tile was fitted into the model's input: scale and offset per axis (letterbox bars)."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float


@dataclass(frozen=True, slots=True)
class Candidate:
    """A box the model proposed (floats): in the model's input pixels as decoded, then in
    full-resolution frame pixels."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    label: int


def tile_grid(
    width: int, height: int, columns: int, rows: int, overlap: float
) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of `columns` x `rows` tiles covering the frame, neighbours sharing `overlap`."""

    def spans(size: int, count: int) -> list[tuple[int, int]]:
        if count == 1:
            return [(0, size)]
        step = size / (count - overlap * (count - 1))  # tile length so that count tiles cover size
        out = []
        for i in range(count):
            start = round(i * step * (1 - overlap))
            out.append((start, min(size, round(start + step))))
        out[-1] = (max(0, size - (out[-1][1] - out[-1][0])), size)
        return out

    return [(x0, y0, x1, y1) for (y0, y1) in spans(height, rows) for (x0, x1) in spans(width, columns)]


def suppress(candidates: Sequence[Candidate], iou: float) -> list[Candidate]:
    """Class-agnostic non-maximum suppression (OpenCV): of boxes overlapping more than `iou`, the best."""
    if not candidates:
        return []
    rects = [(c.x0, c.y0, c.x1 - c.x0, c.y1 - c.y0) for c in candidates]
    scores = [c.score for c in candidates]
    keep = cv2.dnn.NMSBoxes(rects, scores, score_threshold=0.0, nms_threshold=iou)
    order = sorted((int(i) for i in np.asarray(keep).reshape(-1)), key=lambda i: -scores[i])
    return [candidates[i] for i in order]


class LearnedDetector:
    """Runs a TFLite object detector over a frame (or its tiles) and returns insect detections."""

    def __init__(self, cfg: DetectorConfig) -> None:
        if cfg.tflite is None:  # DetectorConfig's validator makes this impossible for kind tflite
            raise ModelError("detector.tflite: missing (kind 'tflite' needs the model file)")
        self.cfg = cfg
        self.spec: LearnedDetectorConfig = cfg.tflite
        self.path = self.spec.model
        if not self.path.is_file():
            raise ModelError(f"detector.tflite.model {self.path}: file not found")
        self.interpreter = make_interpreter(self.path, self.spec.num_threads)
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or int(inputs[0]["shape"][-1]) != 3:
            shapes = [list(map(int, d["shape"])) for d in inputs]
            raise ModelError(f"{self.path}: expected one [1, height, width, 3] image input, got {shapes}")
        self._input = inputs[0]
        if self.spec.input_size is not None:
            width, height = self.spec.input_size
            self.interpreter.resize_tensor_input(self._input["index"], [1, height, width, 3])
        try:
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: cannot allocate the detector at its input size: {exc}") from None
        self._input = self.interpreter.get_input_details()[0]
        _, self.input_h, self.input_w, _ = (int(v) for v in self._input["shape"])
        self.input_dtype = tensor_dtype_name(self._input["dtype"], self.path)
        if self.input_dtype == "float32" and self.spec.input_range is None:
            raise ModelError(
                f"{self.path}: a float detector needs detector.tflite.input_range, the range it expects "
                "pixels in (e.g. [0, 1] for YOLO exports, [-1, 1] for SSD MobileNet)"
            )
        self._outputs = self.interpreter.get_output_details()
        self.format = self._layout()
        self._ssd_order = self._ssd_outputs() if self.format == "ssd" else None
        self.exclude = DetectionMask(cfg.mask)
        self._units_said = False
        self.invokes = 0
        log.info(
            "detector: %s (%s outputs, input %dx%d %s, %d x %d tiles)",
            self.path.name,
            self.format,
            self.input_w,
            self.input_h,
            self.input_dtype,
            *self.spec.tiles,
        )

    # ------------------------------------------------------------ model layout

    def _shapes(self) -> list[list[int]]:
        return [list(map(int, d["shape"])) for d in self._outputs]

    def _layout(self) -> str:
        shapes = self._shapes()
        boxes_like = [s for s in shapes if len(s) == 3 and s[-1] == 4]
        ssd = len(shapes) >= 3 and len(boxes_like) == 1
        yolo = len(shapes) == 1 and len(shapes[0]) == 3 and min(shapes[0][1:]) >= 5
        wanted = self.spec.format
        if wanted == "auto":
            if yolo:
                return "yolo"
            if ssd:
                return "ssd"
        elif (wanted == "yolo" and yolo) or (wanted == "ssd" and ssd):
            return wanted
        expect = {
            "auto": "SSD outputs (boxes [1, N, 4], classes, scores, count) or one YOLO output [1, 4 + C, N]",
            "ssd": "SSD outputs (boxes [1, N, 4], classes [1, N], scores [1, N], count [1])",
            "yolo": "one YOLO output [1, 4 + C, N] or [1, N, 4 + C]",
        }[wanted]
        raise ModelError(f"{self.path}: outputs {shapes} are not {expect} (detector.tflite.format: {wanted})")

    def _output_names(self) -> list[str]:
        """Each output's name: its signature name where the model has a signature, else the tensor's."""
        names = [str(d.get("name", "")) for d in self._outputs]
        try:
            signatures = self.interpreter.get_signature_list()
        except (AttributeError, ValueError, RuntimeError):
            signatures = {}
        if len(signatures) == 1:
            runner = self.interpreter.get_signature_runner(next(iter(signatures)))
            by_index = {details["index"]: name for name, details in runner.get_output_details().items()}
            names = [by_index.get(d["index"], names[i]) for i, d in enumerate(self._outputs)]
        return [name.lower() for name in names]

    def _ssd_outputs(self) -> tuple[int, int, int, int | None]:
        """Indices (into the output list) of boxes, classes, scores and count."""
        shapes = self._shapes()
        names = self._output_names()
        boxes = next(i for i, s in enumerate(shapes) if len(s) == 3 and s[-1] == 4)
        pairs = [i for i, s in enumerate(shapes) if len(s) == 2]
        counts = [i for i, s in enumerate(shapes) if len(s) <= 1]
        if len(pairs) != 2:
            raise ModelError(f"{self.path}: SSD outputs need classes and scores [1, N]; got shapes {shapes}")
        by_name = {key: next((i for i in pairs if key in names[i]), None) for key in ("class", "score")}
        if (
            by_name["class"] is not None
            and by_name["score"] is not None
            and by_name["class"] != by_name["score"]
        ):
            classes, scores = by_name["class"], by_name["score"]
        else:  # TFLite_Detection_PostProcess order: boxes, classes, scores, count
            classes, scores = pairs
        return boxes, classes, scores, counts[0] if counts else None

    # ------------------------------------------------------------ per frame

    def reset(self) -> None:
        """Nothing is remembered between frames (the protocol's reset, for sources that restart)."""

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Return the insects in `image` (H x W x 3 uint8 BGR) in full-resolution coordinates."""
        check_frame(image, "tflite detector")
        height, width = image.shape[:2]
        columns, rows = self.spec.tiles
        candidates: list[Candidate] = []
        for x0, y0, x1, y1 in tile_grid(width, height, columns, rows, self.spec.tile_overlap):
            candidates.extend(self._run_tile(image[y0:y1, x0:x1], x0, y0))
        kept = suppress(candidates, self.spec.nms_iou)
        mask = self.exclude.at((width, height), (width, height)) if self.cfg.mask else None
        out: list[Detection] = []
        for c in kept:
            box = Box(
                max(0, math.floor(c.x0)),
                max(0, math.floor(c.y0)),
                min(width, math.ceil(c.x1)),
                min(height, math.ceil(c.y1)),
            )
            if box.width <= 0 or box.height <= 0:
                continue
            if not self.cfg.min_area_px <= box.area <= self.cfg.max_area_px:
                continue
            cx, cy = box.center
            if mask is not None and mask[min(height - 1, int(cy)), min(width - 1, int(cx))]:
                continue
            out.append(Detection(box, box.area, float(c.score), touches_border(box, width, height)))
        return out

    def _run_tile(self, tile: np.ndarray, off_x: int, off_y: int) -> list[Candidate]:
        model_input, fit = self._fit(tile)
        self.interpreter.set_tensor(self._input["index"], model_input)
        self.interpreter.invoke()
        self.invokes += 1
        outputs = [self._dequantized(d) for d in self._outputs]
        found = self._ssd(outputs) if self.format == "ssd" else self._yolo(outputs[0])
        wanted = self.spec.classes
        out = []
        for c in found:  # in model input pixels
            if c.score < self.spec.score_threshold or (wanted is not None and c.label not in wanted):
                continue
            # model input pixels -> tile pixels -> frame pixels
            out.append(
                Candidate(
                    off_x + (c.x0 - fit.pad_x) / fit.scale_x,
                    off_y + (c.y0 - fit.pad_y) / fit.scale_y,
                    off_x + (c.x1 - fit.pad_x) / fit.scale_x,
                    off_y + (c.y1 - fit.pad_y) / fit.scale_y,
                    c.score,
                    c.label,
                )
            )
        return out

    def _fit(self, tile: np.ndarray) -> tuple[np.ndarray, _Fit]:
        """The tile as the model's input tensor, and how its pixels map into that input."""
        rgb = cv2.cvtColor(tile, cv2.COLOR_BGR2RGB)
        th, tw = rgb.shape[:2]
        if self.spec.resize == "stretch":
            fitted = cv2.resize(rgb, (self.input_w, self.input_h), interpolation=cv2.INTER_AREA)
            fit = _Fit(self.input_w / tw, self.input_h / th, 0.0, 0.0)
        else:
            scale = min(self.input_w / tw, self.input_h / th)
            nw, nh = max(1, round(tw * scale)), max(1, round(th * scale))
            fitted = np.full((self.input_h, self.input_w, 3), _PAD_VALUE, np.uint8)
            px, py = (self.input_w - nw) // 2, (self.input_h - nh) // 2
            fitted[py : py + nh, px : px + nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA)
            fit = _Fit(scale, scale, float(px), float(py))
        return self._as_input(fitted)[None, ...], fit

    def _as_input(self, rgb: np.ndarray) -> np.ndarray:
        """Pixels as the input tensor wants them.

        A quantized model without `input_range` takes the raw pixels as its integers (uint8; int8
        shifted by 128), the convention of quantized SSD and YOLO exports. With `input_range`, the
        pixels are mapped to that float range and quantized with the input's scale and zero point.
        """
        quantized = self.input_dtype in ("uint8", "int8")
        if quantized and self.spec.input_range is None:
            if self.input_dtype == "uint8":
                return rgb
            return (rgb.astype(np.int16) - 128).astype(np.int8)
        assert self.spec.input_range is not None  # a float model without it was refused at load
        low, high = self.spec.input_range
        values = rgb.astype(np.float32) * ((high - low) / 255.0) + low
        if not quantized:
            return values.astype(np.float32)
        scale, zero_point = self._input.get("quantization", (0.0, 0))
        if not scale:
            raise ModelError(f"{self.path}: the {self.input_dtype} input has no quantization scale")
        info = np.iinfo(np.uint8 if self.input_dtype == "uint8" else np.int8)
        q = np.clip(np.round(values / scale + zero_point), info.min, info.max)
        return q.astype(np.uint8 if self.input_dtype == "uint8" else np.int8)

    def _dequantized(self, details: dict[str, Any]) -> np.ndarray:
        raw = self.interpreter.get_tensor(details["index"])
        scale, zero_point = details.get("quantization", (0.0, 0))
        if raw.dtype in (np.uint8, np.int8) and scale:
            return (raw.astype(np.float32) - zero_point) * scale
        return raw.astype(np.float32)

    def _ssd(self, outputs: list[np.ndarray]) -> list[Candidate]:
        assert self._ssd_order is not None
        b, c, s, n = self._ssd_order
        boxes, classes, scores = outputs[b][0], outputs[c][0], outputs[s][0]
        count = len(scores) if n is None else int(np.asarray(outputs[n]).reshape(-1)[0])
        count = max(0, min(count, len(scores)))
        out = []
        for i in range(count):
            ymin, xmin, ymax, xmax = (float(v) for v in boxes[i])
            out.append(
                Candidate(
                    xmin * self.input_w,
                    ymin * self.input_h,
                    xmax * self.input_w,
                    ymax * self.input_h,
                    float(scores[i]),
                    round(float(classes[i])),
                )
            )
        return out

    def _yolo(self, raw: np.ndarray) -> list[Candidate]:
        rows = raw[0]
        if rows.shape[0] < rows.shape[1]:  # [4 + C, N]: one column per candidate
            rows = rows.T
        class_scores = rows[:, 4:]
        labels = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(rows)), labels]
        keep = scores >= self.spec.score_threshold
        if not keep.any():
            return []
        cx, cy, w, h = (rows[keep, i] for i in range(4))
        units = self.spec.box_units
        if units == "auto":
            units = "normalized" if float(np.max(np.abs(rows[keep, :4]))) <= _NORMALIZED_MAX else "pixels"
            if not self._units_said:
                log.info("detector: YOLO boxes are %s of the input (detector.tflite.box_units: auto)", units)
                self._units_said = True
        sx, sy = (self.input_w, self.input_h) if units == "normalized" else (1.0, 1.0)
        x0, x1 = (cx - w / 2) * sx, (cx + w / 2) * sx
        y0, y1 = (cy - h / 2) * sy, (cy + h / 2) * sy
        candidates = [
            Candidate(float(a), float(b), float(c), float(d), float(e), int(f))
            for a, b, c, d, e, f in zip(x0, y0, x1, y1, scores[keep], labels[keep], strict=True)
        ]
        # suppression per tile first keeps the candidate list short; the frame-wide pass follows
        return suppress(candidates, self.spec.nms_iou)
