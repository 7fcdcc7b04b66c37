"""The Jetson backend: TensorRT through onnxruntime's TensorrtExecutionProvider.

TensorRT engines are specific to the GPU and the TensorRT version, so the trap builds one itself
from the bundle's ONNX file on its first start (FP16 by default, INT8 from `model_int8.onnx`, whose
Q/DQ nodes carry the calibration) and caches it under
`<engine_cache_dir>/<onnx sha256>-<precision>/`: a new model gets a new folder, a restart reuses
the engine instead of spending minutes rebuilding it. The optimisation profile (batch 1..32) is
fixed in the provider options, so a batch of a new size never triggers a rebuild mid-night.

onnxruntime quietly runs a session on the CUDA or CPU provider when TensorRT cannot be loaded;
this backend checks which provider the session really got and refuses anything but TensorRT.
`_import_onnxruntime` and `_make_session` are the hardware boundary that tests replace.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edge.classify.backends.base import TensorBackend, bundle_dir, verified_file
from edge.classify.bundle import InputSpec, LoadedBundle
from edge.errors import AcceleratorError, ModelError, StorageError

log = logging.getLogger(__name__)

TRT_PROVIDER = "TensorrtExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
ONNX_ROLE = "onnx"
OPT_BATCH = 8  # kernels are tuned for this batch; 1..MAX_BATCH run without a rebuild
MAX_BATCH = 32
STAMP = "cache.json"
HOW_TO_CHECK = (
    "check `python3 -c 'import onnxruntime as o; print(o.get_available_providers())'` lists"
    f" {TRT_PROVIDER} (install the onnxruntime-gpu wheel for your JetPack) and that TensorRT's"
    " libraries are found (`ldconfig -p | grep nvinfer`)"
)


def _import_onnxruntime() -> Any:
    """onnxruntime, imported only when TensorRT is configured (hardware boundary)."""
    import onnxruntime

    return onnxruntime


def _make_session(onnx_path: Path, providers: list[Any]) -> Any:
    """An onnxruntime session with the given providers (hardware boundary: builds the engine)."""
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # per-node placement warnings would flood the journal
    return ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _tensorrt_version() -> str | None:
    """TensorRT's version from package metadata (without importing it), None when unknown."""
    for distribution in ("tensorrt", "tensorrt-cu12", "tensorrt_cu12"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def onnxruntime_or_error() -> Any:
    """The onnxruntime module, or an AcceleratorError saying what was looked for."""
    try:
        return _import_onnxruntime()
    except ImportError as exc:
        raise AcceleratorError(
            f"classifier.backend tensorrt: onnxruntime is not installed (looked for onnxruntime-gpu with"
            f" {TRT_PROVIDER}: {_first_line(exc)}); {HOW_TO_CHECK}"
        ) from None


def tensorrt_providers(ort: Any) -> list[str]:
    """The providers this onnxruntime build offers; AcceleratorError when TensorRT is not among them."""
    available = [str(p) for p in ort.get_available_providers()]
    if TRT_PROVIDER not in available:
        version = getattr(ort, "__version__", "?")
        raise AcceleratorError(
            f"classifier.backend tensorrt: onnxruntime {version} has no TensorRT (looked for {TRT_PROVIDER},"
            f" found {available}); {HOW_TO_CHECK}"
        )
    return available


def find_onnx_model(bundle: LoadedBundle, precision: str) -> tuple[Path, str]:
    """(path, sha256) of the ONNX file for `precision`; ModelError naming the bundle and the fix."""
    if bundle.source == "plain":
        raise ModelError(
            f"{bundle.model_path}: classifier.backend tensorrt needs a model bundle with model.onnx"
            " (a plain .tflite has none); make one with `trapcam convert --onnx`"
        )
    names = sorted(name for name, entry in bundle.manifest.files.items() if entry.role == ONNX_ROLE)
    wanted = [n for n in names if ("int8" in n) == (precision == "int8")]
    if not wanted:
        where = f"{bundle_dir(bundle)}: the bundle has no"
        if precision == "int8":
            onnx_facts = bundle.manifest.validation.get("onnx")
            reason = onnx_facts.get("int8_left_out") if isinstance(onnx_facts, dict) else None
            why = f" (convert left it out: {reason})" if reason else ""
            raise ModelError(
                f"{where} int8 ONNX model (model_int8.onnx){why}; set classifier.tensorrt_precision: fp16"
                " or rebuild the bundle with `trapcam convert --onnx`"
            )
        raise ModelError(
            f"{where} ONNX model (no file with role 'onnx' in {bundle.describe_source()}); rebuild it with"
            " `trapcam convert --onnx` or set classifier.backend: cpu"
        )
    return verified_file(bundle, wanted[0])


def provider_options(input_name: str, height: int, width: int, precision: str, cache_dir: Path) -> dict:
    """TensorRT provider options: precision, the engine cache folder and a fixed batch profile."""

    def shape(batch: int) -> str:
        return f"{input_name}:{batch}x{height}x{width}x3"

    return {
        "device_id": 0,
        "trt_fp16_enable": precision in ("fp16", "int8"),  # int8: layers without Q/DQ scales run in FP16
        "trt_int8_enable": precision == "int8",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_profile_min_shapes": shape(1),
        "trt_profile_opt_shapes": shape(OPT_BATCH),
        "trt_profile_max_shapes": shape(MAX_BATCH),
    }


def cached_engines(cache_dir: Path) -> list[Path]:
    """Engine files onnxruntime wrote into the cache folder (empty ones are half-written)."""
    if not cache_dir.is_dir():
        return []
    return sorted(p for p in cache_dir.glob("*.engine") if p.is_file() and p.stat().st_size > 0)


def _clear(cache_dir: Path) -> None:
    for path in cache_dir.iterdir():
        if path.is_file():
            path.unlink()


def engine_cache_folder(cache_root: Path, onnx_sha256: str, precision: str) -> Path:
    """`<root>/<onnx sha256>-<precision>`: one folder per model file and precision."""
    return Path(cache_root) / f"{onnx_sha256}-{precision}"


class TensorRtBackend(TensorBackend):
    """The bundle's ONNX model as a TensorRT engine (built once, then loaded from the cache)."""

    name: ClassVar[str] = "tensorrt"

    def __init__(self, bundle: LoadedBundle, precision: str = "fp16", cache_root: Path | None = None) -> None:
        if precision not in ("fp16", "int8", "fp32"):
            raise ModelError(f"classifier.tensorrt_precision must be fp16, int8 or fp32, got {precision!r}")
        if cache_root is None:
            raise ModelError(
                "classifier.backend tensorrt: no folder for the engine cache"
                " (set classifier.engine_cache_dir or pass the data_dir)"
            )
        onnx_path, sha = find_onnx_model(bundle, precision)
        super().__init__(bundle, onnx_path, sha)
        self.precision = precision
        ort = onnxruntime_or_error()
        tensorrt_providers(ort)
        self._versions = {
            "onnxruntime": str(getattr(ort, "__version__", "?")),
            "tensorrt": _tensorrt_version(),
        }
        spec = bundle.manifest.input
        self.input_spec = InputSpec(
            height=spec.height,
            width=spec.width,
            dtype="float32",
            colour_order="RGB",
            normalization_in_model=True,
        )
        self.input_name = self._input_name(ort, onnx_path)
        self.cache_dir = engine_cache_folder(Path(cache_root), sha, precision)
        had_engine = self._prepare_cache()
        options = provider_options(self.input_name, spec.height, spec.width, precision, self.cache_dir)
        started = time.perf_counter()
        self._session, had_engine = self._open_session(
            [(TRT_PROVIDER, options), (CUDA_PROVIDER, {"device_id": 0})], had_engine
        )
        self._check_session()
        warm = self._run_chunk(np.zeros((1, spec.height, spec.width, 3), np.float32))
        self.output_sizes = {name: int(np.prod(out.shape[1:])) for name, out in warm.items()}
        self.start_s = time.perf_counter() - started
        if had_engine:
            self.engine = "reused"
        elif cached_engines(self.cache_dir):
            self.engine = "built"
            log.info(
                "built the TensorRT %s engine for %s in %.1f s; cached in %s",
                precision,
                onnx_path.name,
                self.start_s,
                self.cache_dir,
            )
        else:
            self.engine = "not cached"
            log.warning("TensorRT wrote no engine into %s: the next start builds it again", self.cache_dir)
        self._write_stamp()

    # ------------------------------------------------------------ start-up

    def _input_name(self, ort: Any, onnx_path: Path) -> str:
        """The ONNX input's name: from model.json (convert records it), else from a CPU session."""
        facts = self.bundle.manifest.validation.get("onnx")
        if isinstance(facts, dict) and isinstance(facts.get("input"), str):
            return str(facts["input"])
        try:
            session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            return str(session.get_inputs()[0].name)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ModelError(f"{onnx_path}: onnxruntime cannot read it: {_first_line(exc)}") from None

    def _prepare_cache(self) -> bool:
        """Create the cache folder; drop engines of another onnxruntime/TensorRT. True: an engine is there."""
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            stamp = self.cache_dir / STAMP
            if stamp.is_file():
                try:
                    recorded = json.loads(stamp.read_text(encoding="utf-8"))
                except (ValueError, OSError):
                    recorded = {}
                if any(recorded.get(k) != v for k, v in self._versions.items()):
                    log.warning(
                        "TensorRT engine cache %s was built with %s; now %s: rebuilding",
                        self.cache_dir,
                        {k: recorded.get(k) for k in self._versions},
                        self._versions,
                    )
                    _clear(self.cache_dir)
            probe = self.cache_dir / ".writable"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StorageError(
                f"{self.cache_dir}: cannot use the TensorRT engine cache folder: {exc.strerror or exc}"
                " (set classifier.engine_cache_dir to a writable folder)"
            ) from None
        return bool(cached_engines(self.cache_dir))

    def _open_session(self, providers: list[Any], had_engine: bool) -> tuple[Any, bool]:
        """(session, whether a cached engine was loaded); a cached engine that fails to load is rebuilt."""
        try:
            return _make_session(self.model_path, providers), had_engine
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, RuntimeException...)
            if not had_engine:
                raise self._build_error(exc) from None
            log.warning(
                "cached TensorRT engine in %s is unusable (%s); rebuilding", self.cache_dir, _first_line(exc)
            )
        _clear(self.cache_dir)
        try:
            return _make_session(self.model_path, providers), False
        except Exception as exc:  # as above
            raise self._build_error(exc) from None

    def _build_error(self, exc: BaseException) -> AcceleratorError:
        return AcceleratorError(
            f"classifier.backend tensorrt: TensorRT cannot build a {self.precision} engine for"
            f" {self.model_path} ({_first_line(exc)}); {HOW_TO_CHECK}, and try"
            f" `/usr/src/tensorrt/bin/trtexec --onnx={self.model_path}`"
        )

    def _check_session(self) -> None:
        """No silent fallback: the session must really run on TensorRT, with the input we feed."""
        active = [str(p) for p in self._session.get_providers()]
        if TRT_PROVIDER not in active:
            raise AcceleratorError(
                f"classifier.backend tensorrt: onnxruntime did not enable TensorRT for {self.model_path.name}"
                f" (looked for {TRT_PROVIDER}, the session got {active}); {HOW_TO_CHECK}"
            )
        inputs = self._session.get_inputs()
        spec = self.input_spec
        if len(inputs) != 1 or inputs[0].name != self.input_name:
            names = [i.name for i in inputs]
            raise ModelError(
                f"{self.model_path}: inputs {names}; expected one image input '{self.input_name}'"
            )
        shape = list(inputs[0].shape)
        dims_ok = len(shape) == 4 and all(
            not isinstance(got, int) or got == want
            for got, want in zip(shape[1:], (spec.height, spec.width, 3), strict=True)
        )
        if not dims_ok or inputs[0].type != "tensor(float)":
            raise ModelError(
                f"{self.model_path}: input {shape} {inputs[0].type}; expected"
                f" N x {spec.height} x {spec.width} x 3 float (NHWC RGB 0..255, the bundle's input size)"
            )
        self._output_names = [o.name for o in self._session.get_outputs()]

    def _write_stamp(self) -> None:
        record = {"onnx_sha256": self.model_sha256, "precision": self.precision, **self._versions}
        try:
            fd, tmp = tempfile.mkstemp(prefix=".cache.json.", dir=self.cache_dir)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
            os.replace(tmp, self.cache_dir / STAMP)
        except OSError as exc:
            log.warning("cannot record the TensorRT engine cache stamp in %s: %s", self.cache_dir, exc)

    # ------------------------------------------------------------ running

    def _run_chunk(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        try:
            outputs = self._session.run(self._output_names, {self.input_name: chunk})
        except Exception as exc:  # onnxruntime's own exception types
            raise AcceleratorError(
                f"classifier.backend tensorrt: running {self.model_path.name} failed: {_first_line(exc)}"
            ) from None
        return {name: np.asarray(out) for name, out in zip(self._output_names, outputs, strict=True)}

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """{output name: N x classes} for N x H x W x 3 float32 RGB 0..255, in chunks of MAX_BATCH."""
        parts = [
            self._run_chunk(np.ascontiguousarray(batch[i : i + MAX_BATCH], dtype=np.float32))
            for i in range(0, len(batch), MAX_BATCH)
        ]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in self._output_names}

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "provider": TRT_PROVIDER,
            "runtime": f"onnxruntime {self._versions['onnxruntime']}",
            "tensorrt": self._versions["tensorrt"],
            "precision": self.precision,
            "model_path": str(self.model_path),
            "model_sha256": self.model_sha256,
            "engine": self.engine,
            "engine_cache": str(self.cache_dir),
            "start_s": round(self.start_s, 3),
        }

    def close(self) -> None:
        self._session = None
