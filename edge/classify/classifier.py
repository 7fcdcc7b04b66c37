"""Classifying insect crops on the device with a TFLite model bundle.

Outputs are matched to heads by *signature output name* (converters reorder output tensors, so an
index would silently swap "family" and "species"). Pixels are converted with the input tensor's
own quantization and outputs dequantized with each output tensor's own parameters. Every check
that needs the interpreter runs once here at start-up, so a wrong bundle fails when the service
starts, not at the first insect of the night.

The interpreter comes from a backend (edge/classify/backends): the CPU and the Edge TPU hand over a
TFLite interpreter and share every check and conversion here; TensorRT runs whole batches itself
(NHWC float32 RGB 0..255, outputs named by level) and only the heads code is shared.

The per-crop path reuses its buffers (colour-swap and input buffer, a 256-entry lookup table for
pixel -> model value), so the cost beyond the interpreter's invoke() stays small and measurable
via `timing()`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.classify.backends import Backend, CpuBackend, InterpreterBackend, TensorBackend, open_backend
from edge.classify.bundle import LoadedBundle, OutputHead, load_bundle
from edge.classify.interpreter import tensor_dtype_name
from edge.classify.open_set import OpenSetRule
from edge.classify.types import Classification, LevelPrediction
from edge.config import ClassifierConfig
from edge.errors import ModelError

# TFLite's converter fixes a quantized softmax's output to these parameters: seeing them means
# the head already outputs probabilities.
_SOFTMAX_QUANT = {"uint8": (1.0 / 256.0, 0), "int8": (1.0 / 256.0, -128)}
_QUANT_RANGE = {"uint8": (0, 255), "int8": (-128, 127)}


@dataclass
class _Head:
    """One output head, resolved against the interpreter."""

    spec: OutputHead
    key: str | int  # signature output name, or output tensor index without a signature
    size: int
    scale: float  # 0.0: float output, no dequantization
    zero_point: int
    thresholds: np.ndarray
    softmax: bool = False


@dataclass(frozen=True, slots=True)
class _Features:
    """The embedding output, resolved against the interpreter."""

    key: str
    size: int
    scale: float  # 0.0: float output
    zero_point: int


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _tensor_quant(details: dict[str, Any]) -> tuple[float, int]:
    params = details.get("quantization_parameters") or {}
    scales = params.get("scales")
    if scales is not None and len(scales) > 1:
        raise ModelError(f"tensor '{details['name']}' is quantized per channel; expected one scale")
    scale, zero_point = details.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


class Classifier:
    """Runs a loaded bundle on batches of crops; one instance per thread (interpreters are not shared)."""

    def __init__(
        self,
        bundle: LoadedBundle,
        num_threads: int = 2,
        top_k: int = 3,
        default_threshold: float = 0.5,
        *,
        backend: Backend | None = None,
        backend_flags: Sequence[str] = (),
    ) -> None:
        """backend: what runs the model (default: the CPU); backend_flags: e.g. ["cpu fallback"]."""
        if top_k < 1:
            raise ModelError(f"top_k must be at least 1, got {top_k}")
        if not 0.0 <= default_threshold <= 1.0:
            raise ModelError(f"default_threshold must be within 0..1, got {default_threshold}")
        self.bundle = bundle
        self.top_k = top_k
        self.default_threshold = default_threshold
        self.num_threads = num_threads
        manifest = bundle.manifest
        self.backend = backend if backend is not None else CpuBackend(bundle, num_threads)
        self.backend_flags = list(backend_flags)
        self._model = self.backend.model_path
        self._source = bundle.describe_source()
        self._interpreter: Any = None
        self._tensor: TensorBackend | None = None
        self._runner: Any = None
        self._output_index = -1
        self._input_spec = manifest.input
        if isinstance(self.backend, TensorBackend):
            self._tensor = self.backend
            self._input_spec = self.backend.input_spec
            input_details, output_details = self._open_tensor(self.backend)
        elif isinstance(self.backend, InterpreterBackend):
            self._interpreter = self.backend.interpreter
            if manifest.signature is not None:
                input_details, output_details = self._open_signature(manifest.signature)
            else:
                input_details, output_details = self._open_plain()
        else:
            raise ModelError(f"classifier: unsupported backend {type(self.backend).__name__}")
        self._input_name = input_details["name"]
        self._input_index = int(input_details["index"])
        self._prepare_input(input_details)
        self._heads = [self._resolve_head(i, head, output_details) for i, head in enumerate(manifest.outputs)]
        self._embedding = self._resolve_embedding(output_details)
        self._open_set = self._resolve_open_set()
        self.last_invoke_s = 0.0
        self.reset_timing()
        try:
            self._detect_activations()
        except (RuntimeError, ValueError) as exc:  # e.g. an Edge TPU custom op on the CPU interpreter
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ModelError(
                f"{self._model}: the TFLite interpreter cannot run this model: {first_line}"
            ) from None
        self.reset_timing()

    @classmethod
    def from_config(cls, cfg: ClassifierConfig, data_dir: Path | None = None) -> Classifier:
        """Load the configured model on the configured backend (ModelError / AcceleratorError if not).

        data_dir: where the TensorRT engine cache lives by default (<data_dir>/engines).
        """
        if not cfg.enabled or cfg.model is None:
            raise ModelError(
                "classifier: disabled in the config (classifier.enabled is false); nothing to load"
            )
        bundle = load_bundle(
            cfg.model, cfg.labels, level=cfg.level, input_range=cfg.input_range, colour_order=cfg.colour_order
        )
        backend, flags = open_backend(cfg, bundle, data_dir)
        return cls(
            bundle,
            num_threads=cfg.num_threads,
            top_k=cfg.top_k,
            default_threshold=cfg.threshold,
            backend=backend,
            backend_flags=flags,
        )

    # ------------------------------------------------------------ start-up checks

    def _open_signature(self, name: str) -> tuple[dict[str, Any], dict[str | int, dict[str, Any]]]:
        signatures = self._interpreter.get_signature_list()
        if name not in signatures:
            raise ModelError(
                f"{self._model}: has no signature '{name}' (named in {self._source});"
                f" it has {sorted(signatures)}"
            )
        self._runner = self._interpreter.get_signature_runner(name)
        inputs = self._runner.get_input_details()
        if len(inputs) != 1:
            raise ModelError(
                f"{self._model}: signature '{name}' has {len(inputs)} inputs; expected one image"
            )
        input_name, details = next(iter(inputs.items()))
        details = dict(details, name=input_name)
        outputs = dict(self._runner.get_output_details().items())
        return details, outputs

    def _open_plain(self) -> tuple[dict[str, Any], dict[str | int, dict[str, Any]]]:
        inputs = self._interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelError(f"{self._model}: has {len(inputs)} inputs; expected one image")
        outputs = self._interpreter.get_output_details()
        if len(outputs) != 1 or len(self.bundle.manifest.outputs) != 1:
            raise ModelError(
                f"{self._model}: without a signature only one output can be matched safely; the model has"
                f" {len(outputs)} outputs and {self._source} {len(self.bundle.manifest.outputs)} heads"
                " (convert with a signature so outputs are matched by name)"
            )
        self._output_index = int(outputs[0]["index"])
        return inputs[0], {self._output_index: outputs[0]}

    def _open_tensor(self, backend: TensorBackend) -> tuple[dict[str, Any], dict[str | int, dict[str, Any]]]:
        """Tensor details in the interpreter's format, so input and head checks are shared."""
        spec = backend.input_spec
        details = {
            "name": backend.input_name,
            "index": -1,
            "shape": [1, spec.height, spec.width, 3],
            "shape_signature": [-1, spec.height, spec.width, 3],
            "dtype": np.float32,
        }
        outputs: dict[str | int, dict[str, Any]] = {
            name: {"name": name, "shape": [1, size], "dtype": np.float32}
            for name, size in backend.output_sizes.items()
        }
        return details, outputs

    def _prepare_input(self, details: dict[str, Any]) -> None:
        spec = self._input_spec
        want = (spec.height, spec.width)
        shape_sig = [int(v) for v in details.get("shape_signature", details["shape"])]
        ok = len(shape_sig) == 4 and shape_sig[0] in (1, -1) and shape_sig[3] == 3
        if ok:
            ok = all(got in (w, -1) for got, w in zip(shape_sig[1:3], want, strict=True))
        if not ok:
            shown = "x".join("?" if v == -1 else str(v) for v in shape_sig)
            raise ModelError(
                f"{self._model}: input shape {shown} does not match 1x{spec.height}x{spec.width}x3"
                f" ({self._source} input height x width, one RGB image)"
            )
        dtype = tensor_dtype_name(details["dtype"], self._model)
        if dtype != spec.dtype:
            raise ModelError(
                f"{self._model}: input type is {dtype} but {self._source} says input.dtype {spec.dtype}"
            )
        scale, zero_point = _tensor_quant(details) if dtype != "float32" else (0.0, 0)
        if dtype != "float32":
            assert spec.scale is not None and spec.zero_point is not None
            if scale <= 0 or abs(scale - spec.scale) > 1e-6 * spec.scale or zero_point != spec.zero_point:
                raise ModelError(
                    f"{self._model}: input quantization is scale {scale:g}, zero point {zero_point} but"
                    f" {self._source} says {spec.scale:g}, {spec.zero_point}"
                    " (the manifest is for another model)"
                )
        plain = self._runner is None and self._interpreter is not None
        if plain and -1 in shape_sig:
            self._interpreter.resize_tensor_input(self._input_index, [1, spec.height, spec.width, 3])
        if plain:
            try:
                self._interpreter.allocate_tensors()
            except RuntimeError as exc:
                first_line = (str(exc).strip().splitlines() or ["RuntimeError"])[0]
                raise ModelError(
                    f"{self._model}: the TFLite interpreter cannot prepare this model: {first_line}"
                ) from None
        # pixel p (0..255) -> float the model expects -> value of the input tensor's own type
        low, high = spec.pixel_range
        floats = low + np.arange(256, dtype=np.float64) * ((high - low) / 255.0)
        if dtype == "float32":
            lut = floats.astype(np.float32)
        else:
            qlow, qhigh = _QUANT_RANGE[dtype]
            lut = np.clip(np.round(floats / scale + zero_point), qlow, qhigh).astype(dtype)
        self._identity = dtype == "uint8" and bool(np.array_equal(lut, np.arange(256)))
        self._lut = lut.reshape(256, 1)
        self._swap = spec.colour_order == "RGB"  # crops arrive BGR (OpenCV's order)
        self._rgb = np.empty((spec.height, spec.width, 3), dtype=np.uint8)
        self._buffer = np.empty((1, spec.height, spec.width, 3), dtype=dtype)
        self.input_dtype = dtype
        self.input_quantization = (scale, zero_point)

    def _resolve_head(
        self, position: int, head: OutputHead, outputs: dict[str | int, dict[str, Any]]
    ) -> _Head:
        if self._tensor is not None:
            if head.level not in outputs:
                raise ModelError(
                    f"{self._model}: has no output '{head.level}' ({self._source} outputs[{position}]);"
                    f" it has {sorted(str(k) for k in outputs)} (ONNX outputs are named by level)"
                )
            key: str | int = head.level
        elif self._runner is not None:
            if head.signature_output not in outputs:
                raise ModelError(
                    f"{self._model}: signature '{self.bundle.manifest.signature}' has no output"
                    f" '{head.signature_output}' ({self._source} outputs[{position}], level '{head.level}');"
                    f" it has {sorted(str(k) for k in outputs)}"
                )
            key = head.signature_output
        else:
            key = next(iter(outputs))
        details = outputs[key]
        shape = [int(v) for v in details["shape"]]
        size = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        if len(shape) > 1 and shape[0] != 1:
            raise ModelError(
                f"{self._model}: output '{head.signature_output}' has batch {shape[0]}; expected 1"
            )
        if size != len(head.labels):
            raise ModelError(
                f"{self._source}: level '{head.level}' has {len(head.labels)} labels but the model's output"
                f" '{head.signature_output}' has {size} classes ({self._model.name})"
            )
        out_dtype = np.dtype(details["dtype"]).name
        scale, zero_point = (0.0, 0)
        if out_dtype in ("uint8", "int8"):
            scale, zero_point = _tensor_quant(details)
            if scale <= 0:
                raise ModelError(
                    f"{self._model}: output '{head.signature_output}' is {out_dtype} without a scale"
                )
        elif out_dtype != "float32":
            raise ModelError(
                f"{self._model}: output '{head.signature_output}' has unsupported type {out_dtype}"
            )
        thresholds = np.asarray(
            head.thresholds if head.thresholds is not None else [self.default_threshold] * size,
            dtype=np.float32,
        )
        return _Head(head, key, size, scale, zero_point, thresholds, softmax=head.activation == "softmax")

    def _resolve_embedding(self, outputs: dict[str | int, dict[str, Any]]) -> _Features | None:
        """The declared embedding output, dequantized like a head; None without one.

        Only the TFLite signature carries it (the ONNX files for TensorRT have the heads alone).
        """
        spec = self.bundle.manifest.embedding
        if spec is None or self._runner is None:
            return None
        if spec.signature_output not in outputs:
            raise ModelError(
                f"{self._model}: signature '{self.bundle.manifest.signature}' has no output"
                f" '{spec.signature_output}' (the embedding {self._source} declares);"
                f" it has {sorted(str(k) for k in outputs)}"
            )
        details = outputs[spec.signature_output]
        size = int(np.prod([int(v) for v in details["shape"]][1:]))
        if size != spec.size:
            raise ModelError(
                f"{self._source}: embedding has size {spec.size} but the model's output"
                f" '{spec.signature_output}' has {size} values ({self._model.name})"
            )
        scale, zero_point = (0.0, 0)
        if np.dtype(details["dtype"]).name in ("uint8", "int8"):
            scale, zero_point = _tensor_quant(details)
        return _Features(spec.signature_output, size, scale, zero_point)

    def _resolve_open_set(self) -> tuple[int, OpenSetRule] | None:
        """(head index, rule) when the bundle carries open-set statistics and the embedding runs."""
        spec = self.bundle.manifest.open_set
        if spec is None or self._embedding is None:
            return None
        index = next(i for i, head in enumerate(self._heads) if head.spec.level == spec.level)
        return index, OpenSetRule.from_spec(spec.centroids, spec.max_distance)

    @property
    def has_open_set(self) -> bool:
        """Can a classification be `unknown` (open-set statistics and the embedding they measure)?"""
        return self._open_set is not None

    @property
    def has_embedding(self) -> bool:
        """Does each classification carry the model's penultimate features?"""
        return self._embedding is not None

    def _features(self, raw: dict[str | int, np.ndarray]) -> np.ndarray | None:
        if self._embedding is None:
            return None
        vector = np.array(self._dequantize(self._embedding, raw[self._embedding.key]), dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def _detect_activations(self) -> None:
        """Decide per head whether outputs are logits, from a few probe images (also warms up).

        Probabilities: every probe's vector lies in [0, 1] and sums to ~1 (or the output carries
        TFLite's fixed softmax quantization). Logits that pass this on four different images are
        implausible; a bundle's explicit `activation` skips the guess altogether.
        """
        undecided = [h for h in self._heads if h.spec.activation is None]
        spec = self.bundle.manifest.input
        rng = np.random.default_rng(0)
        probes = [np.full((spec.height, spec.width, 3), v, np.uint8) for v in (0, 128, 255)]
        probes.append(rng.integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8))
        looks_like_logits = {id(h): False for h in undecided}
        for probe in probes:
            raw = self._run(probe)
            for head in undecided:
                dtype = np.dtype(raw[head.key].dtype).name
                if dtype in _SOFTMAX_QUANT:
                    expected_scale, expected_zp = _SOFTMAX_QUANT[dtype]
                    canonical = abs(head.scale - expected_scale) < 1e-9 and head.zero_point == expected_zp
                    if canonical:
                        continue
                values = self._dequantize(head, raw[head.key])
                # Loose on the sum: a quantized softmax behind a float output loses a little mass.
                tolerance = max(0.1, head.scale * head.size / 4)
                in_unit_range = values.min() >= -0.01 and values.max() <= 1.01
                if not in_unit_range or abs(float(values.sum()) - 1.0) > tolerance:
                    looks_like_logits[id(head)] = True
        for head in undecided:
            head.softmax = looks_like_logits[id(head)]

    # ------------------------------------------------------------ running

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) crops must be resized to before `classify`."""
        spec = self.bundle.manifest.input
        return spec.height, spec.width

    @property
    def not_insect_labels(self) -> tuple[str, ...]:
        """The bundle's declared no-insect label (model.json `not_insect_label`), if any."""
        label = self.bundle.manifest.not_insect_label
        return (label,) if label is not None else ()

    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(h.spec.level for h in self._heads)

    @property
    def label_counts(self) -> dict[str, int]:
        """Labels per head, by level (what `validate-config` reports of a model that loaded)."""
        return {h.spec.level: len(h.spec.labels) for h in self._heads}

    def _fill(self, crop: np.ndarray) -> None:
        source = crop
        if self._swap:
            cv2.cvtColor(crop, cv2.COLOR_BGR2RGB, dst=self._rgb)
            source = self._rgb
        if self._identity:
            np.copyto(self._buffer[0], source)
        else:
            cv2.LUT(source, self._lut, dst=self._buffer[0])

    def _run(self, crop: np.ndarray) -> dict[str | int, np.ndarray]:
        self._fill(crop)
        start = time.perf_counter()
        if self._tensor is not None:
            out: dict[str | int, np.ndarray] = dict(self._tensor.run(self._buffer))
        elif self._runner is not None:
            out = self._runner(**{self._input_name: self._buffer})
        else:
            self._interpreter.set_tensor(self._input_index, self._buffer)
            self._interpreter.invoke()
            out = {self._output_index: self._interpreter.get_tensor(self._output_index)}
        self.last_invoke_s = time.perf_counter() - start
        self._invoke_s += self.last_invoke_s
        return out

    def _run_all(self, crops: np.ndarray) -> list[dict[str | int, np.ndarray]]:
        """Raw outputs per crop: one invoke per crop on TFLite, one batched run on a tensor backend."""
        if self._tensor is None:
            return [self._run(crop) for crop in crops]
        source = crops[..., ::-1] if self._swap else crops
        batch = np.take(self._lut.reshape(-1), source)  # pixel -> model value, all crops at once
        start = time.perf_counter()
        out = self._tensor.run(batch)
        self.last_invoke_s = time.perf_counter() - start
        self._invoke_s += self.last_invoke_s
        return [{key: values[i] for key, values in out.items()} for i in range(len(crops))]

    @staticmethod
    def _dequantize(output: _Head | _Features, raw: np.ndarray) -> np.ndarray:
        values = raw.reshape(-1)
        if output.scale:
            return (values.astype(np.float32) - np.float32(output.zero_point)) * np.float32(output.scale)
        return values.astype(np.float32, copy=False)

    def _predict(self, head: _Head, raw: np.ndarray) -> tuple[LevelPrediction, np.ndarray]:
        probs = self._dequantize(head, raw)
        if head.softmax:
            probs = _softmax(probs)
        k = min(self.top_k, head.size)
        if head.size > 4 * k:
            best = np.argpartition(probs, -k)[-k:]
            best = best[np.argsort(-probs[best], kind="stable")]
        else:
            best = np.argsort(-probs, kind="stable")[:k]
        labels = head.spec.labels
        top = int(best[0])
        score = float(probs[top])
        confident = score >= float(head.thresholds[top])
        prediction = LevelPrediction(
            level=head.spec.level,
            label=labels[top] if confident else None,
            top_label=labels[top],
            score=score,
            top_k=tuple((labels[int(i)], float(probs[int(i)])) for i in best),
        )
        return prediction, probs

    def classify(self, crops: np.ndarray) -> list[Classification]:
        """Classify N crops (N x H x W x 3 uint8 BGR, already resized to `input_size`)."""
        start = time.perf_counter()
        height, width = self.input_size
        if (
            not isinstance(crops, np.ndarray)
            or crops.dtype != np.uint8
            or crops.ndim != 4
            or crops.shape[1:] != (height, width, 3)
        ):
            got = f"{crops.shape} {crops.dtype}" if isinstance(crops, np.ndarray) else type(crops).__name__
            raise ModelError(
                f"classify: crops must be an N x {height} x {width} x 3 uint8 BGR array"
                f" (the model's input size), got {got}"
            )
        results = []
        for raw in self._run_all(crops):
            levels: dict[str, LevelPrediction] = {}
            probs: dict[str, np.ndarray] = {}
            for head in self._heads:
                prediction, vector = self._predict(head, raw[head.key])
                levels[head.spec.level] = prediction
                probs[head.spec.level] = np.array(vector, dtype=np.float32)  # own copy, no list boxing
            level, label = self.bundle.taxonomy.deepest_consistent({k: v.label for k, v in levels.items()})
            score = levels[level].score if level is not None else 0.0
            embedding = self._features(raw)
            unknown, distance = False, None
            if self._open_set is not None and embedding is not None:
                index, rule = self._open_set
                chosen = int(np.argmax(probs[self._heads[index].spec.level]))
                unknown, distance = rule.unknown(embedding, chosen)
            results.append(
                Classification(
                    levels=levels,
                    level=level,
                    label=label,
                    score=score,
                    probs=probs,
                    embedding=embedding,
                    unknown=unknown,
                    open_set_distance=distance,
                )
            )
        self._crops += len(crops)
        self._calls += 1
        self._classify_s += time.perf_counter() - start
        return results

    # ------------------------------------------------------------ reporting

    def reset_timing(self) -> None:
        self._invoke_s = 0.0
        self._classify_s = 0.0
        self._crops = 0
        self._calls = 0

    def timing(self) -> dict[str, float]:
        """Counters since the last reset: compare per-crop classify time with the raw invoke() time."""
        crops = max(self._crops, 1)
        return {
            "crops": float(self._crops),
            "calls": float(self._calls),
            "invoke_s": self._invoke_s,
            "classify_s": self._classify_s,
            "invoke_ms_per_crop": 1000.0 * self._invoke_s / crops,
            "classify_ms_per_crop": 1000.0 * self._classify_s / crops,
            "last_invoke_s": self.last_invoke_s,
        }

    def describe(self) -> dict[str, Any]:
        """What ran, for the runs table and health messages."""
        manifest = self.bundle.manifest
        spec = manifest.input
        backend = self.backend.describe()
        return {
            "name": manifest.name,
            "source": self.bundle.source,
            "model_path": str(self.bundle.model_path),
            "sha256": self.bundle.model_sha256,
            "model_sha256": self.bundle.model_sha256,
            "format_version": manifest.format_version,
            "signature": manifest.signature,
            "levels": list(self.levels),
            "label_counts": {h.spec.level: h.size for h in self._heads},
            "activation": {h.spec.level: "softmax" if h.softmax else "none" for h in self._heads},
            "input": f"{spec.height}x{spec.width} {spec.dtype} {spec.colour_order}",
            "interpreter": backend["runtime"],
            "backend": self.backend.name,
            "backend_model_path": str(self.backend.model_path),
            "backend_flags": list(self.backend_flags),
            "backend_detail": backend,
            "num_threads": self.num_threads,
            "top_k": self.top_k,
            "default_threshold": self.default_threshold,
        }
