"""Classifier backends: CPU for real, Edge TPU and TensorRT faked only at the hardware boundary.

- CPU: real TFLite models from `modelkit`, answers checked against its numpy oracle.
- Edge TPU: `edgetpu._load_delegate` (libedgetpu) and `edgetpu._make_interpreter` (the interpreter
  that takes the delegate) are replaced; everything around them (finding the compiled model,
  checksums, the messages, the classifier) is real. The fake interpreter is a real CPU interpreter
  on the same (not compiled) int8 model. Without fakes, this machine has no libedgetpu: that real
  failure is tested too.
- TensorRT: `tensorrt._import_onnxruntime` and `tensorrt._make_session` are replaced by a fake
  "onnxruntime-gpu" that keeps an engine cache like the TensorRT provider does and runs the
  bundle's real ONNX file with the CPU onnxruntime. This machine's real onnxruntime has no
  TensorRT provider: that real failure is tested too.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import json
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import modelkit as mk
import numpy as np
import onnxruntime  # noqa: F401  (the TensorRT fake runs the bundle's ONNX file on the CPU)
import onnxruntime as real_ort
import pytest
import tensorflow  # noqa: F401  (tests build their TFLite models with TensorFlow)

from edge.classify.backends import (
    CPU_FALLBACK_FLAG,
    BackendProbe,
    CpuBackend,
    open_backend,
    probe_backends,
)
from edge.classify.backends import edgetpu as edgetpu_mod
from edge.classify.backends import tensorrt as trt_mod
from edge.classify.benchmark import benchmark
from edge.classify.bundle import FileEntry, load_bundle, read_manifest, write_manifest
from edge.classify.classifier import Classifier
from edge.config import ClassifierConfig, parse_config
from edge.errors import AcceleratorError, ConfigError, ModelError, StorageError, TrapcamError

ROOT = Path(__file__).resolve().parents[1]
TRT = "TensorrtExecutionProvider"
COLOURS = list(mk.COLOURS.values())


# ---------------------------------------------------------------- bundles


def crops_of(colours: list[tuple[int, int, int]], size: int = 32) -> np.ndarray:
    return np.stack([mk.colour_crop(c, size) for c in colours])


def oracle(rgb: tuple[int, int, int], level: str) -> str:
    return mk.level_labels()[level][int(np.argmax(mk.reference_probs(rgb, level)))]


def add_files(directory: Path, files: dict[str, str], validation: dict[str, Any] | None = None) -> None:
    """List extra files (already in `directory`) in model.json with their roles; checksums recomputed."""
    manifest = read_manifest(directory / "model.json")
    entries = dict(manifest.files) | {
        name: FileEntry(sha256="0" * 64, role=role) for name, role in files.items()
    }
    update: dict[str, Any] = {"files": entries}
    if validation is not None:
        update["validation"] = {**manifest.validation, **validation}
    write_manifest(directory, manifest.model_copy(update=update))


@pytest.fixture(scope="module")
def int8_model() -> mk.BuiltModel:
    return mk.hierarchical_model(quant="int8", io="uint8")


@pytest.fixture(scope="module")
def onnx_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The float model exported to ONNX as `convert --onnx` does it (NHWC float32 RGB 0..255)."""
    from convert.onnx_export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    described = export_onnx(mk.hierarchical_model().keras_model, (32, 32), path, list(mk.LEVELS))
    return path, described.input_name


@pytest.fixture
def bundle_dir(tmp_path: Path, int8_model: mk.BuiltModel) -> Path:
    return mk.write_bundle(tmp_path / "bundle", int8_model)


@pytest.fixture
def tpu_bundle(bundle_dir: Path) -> Path:
    """A bundle with model_edgetpu.tflite (here: the int8 model itself, as the fake TPU runs it)."""
    shutil.copyfile(bundle_dir / "model.tflite", bundle_dir / "model_edgetpu.tflite")
    add_files(bundle_dir, {"model_edgetpu.tflite": "edgetpu"})
    return bundle_dir


@pytest.fixture
def trt_bundle(bundle_dir: Path, onnx_source: tuple[Path, str]) -> Path:
    """A bundle with model.onnx and model_int8.onnx (a copy: the fake engine does not quantize)."""
    path, input_name = onnx_source
    shutil.copyfile(path, bundle_dir / "model.onnx")
    shutil.copyfile(path, bundle_dir / "model_int8.onnx")
    facts = {
        "input": input_name,
        "layout": "NHWC float32 RGB 0..255, dynamic batch",
        "outputs": list(mk.LEVELS),
    }
    add_files(bundle_dir, {"model.onnx": "onnx", "model_int8.onnx": "onnx"}, {"onnx": facts})
    return bundle_dir


def config(model: Path, **keys: Any) -> ClassifierConfig:
    return ClassifierConfig(model=model, **keys)


def one_line(exc: pytest.ExceptionInfo[TrapcamError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message, message
    return message


# ---------------------------------------------------------------- CPU (real)


def test_cpu_backend_runs_the_bundle_for_real(bundle_dir: Path) -> None:
    classifier = Classifier.from_config(config(bundle_dir, backend="cpu"))
    assert isinstance(classifier.backend, CpuBackend)
    assert classifier.backend_flags == []
    described = classifier.describe()
    assert described["backend"] == "cpu"
    assert described["backend_detail"]["delegate"] == "XNNPACK"
    assert described["backend_model_path"] == str(bundle_dir / "model.tflite")
    for rgb, result in zip(COLOURS, classifier.classify(crops_of(COLOURS)), strict=True):
        assert result.label == oracle(rgb, "species"), rgb
        assert result.levels["order"].label == oracle(rgb, "order")


def test_open_backend_cpu_gives_a_real_interpreter_and_no_flags(bundle_dir: Path) -> None:
    backend, flags = open_backend(config(bundle_dir), load_bundle(bundle_dir), None)
    assert (backend.name, flags) == ("cpu", [])
    assert backend.interpreter.get_signature_list()  # a real TFLite interpreter
    assert backend.model_sha256 == load_bundle(bundle_dir).model_sha256


def test_cpu_start_imports_no_accelerator_module(bundle_dir: Path) -> None:
    """The trap configured for the CPU never imports onnxruntime or the accelerator modules."""
    code = (
        "import sys\n"
        "from edge.classify.classifier import Classifier\n"
        "from edge.config import ClassifierConfig\n"
        f"Classifier.from_config(ClassifierConfig(model={str(bundle_dir)!r}))\n"
        "bad = [m for m in ('onnxruntime', 'tensorrt', 'pycuda', 'edge.classify.backends.tensorrt',"
        " 'edge.classify.backends.edgetpu', 'tensorflow') if m in sys.modules]\n"
        "print('LOADED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout


# ---------------------------------------------------------------- Edge TPU (fake delegate loader)


class FakeCoral:
    """libedgetpu at the boundary: `present` False behaves like the real loader with no device."""

    def __init__(self, present: bool = True, interpreter_error: str | None = None) -> None:
        self.present = present
        self.interpreter_error = interpreter_error
        self.loaded: list[tuple[str, dict[str, str]]] = []
        self.models: list[Path] = []
        self.delegate = object()

    def load_delegate(self, library: str, options: dict[str, str]) -> Any:
        self.loaded.append((library, dict(options)))
        if not self.present:  # what tflite_runtime / ai-edge-litert raise when libedgetpu finds no TPU
            raise ValueError(f"Failed to load delegate from {library}\n")
        return self.delegate

    def make_interpreter(self, model_path: Path, delegate: Any) -> Any:
        assert delegate is self.delegate, "the interpreter must get the loaded delegate"
        self.models.append(Path(model_path))
        if self.interpreter_error:
            raise RuntimeError(self.interpreter_error)
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_path=str(model_path))  # the real CPU interpreter on the same int8 graph


@pytest.fixture
def coral(monkeypatch: pytest.MonkeyPatch) -> FakeCoral:
    fake = FakeCoral()
    monkeypatch.setattr(edgetpu_mod, "_load_delegate", fake.load_delegate)
    monkeypatch.setattr(edgetpu_mod, "_make_interpreter", fake.make_interpreter)
    return fake


def test_edgetpu_runs_the_compiled_model_through_the_delegate(tpu_bundle: Path, coral: FakeCoral) -> None:
    classifier = Classifier.from_config(config(tpu_bundle, backend="edgetpu", edgetpu_device="usb:0"))
    assert coral.loaded == [("libedgetpu.so.1", {"device": "usb:0"})]
    assert coral.models == [tpu_bundle / "model_edgetpu.tflite"]
    assert classifier.backend_flags == []
    described = classifier.describe()
    assert (described["backend"], described["backend_detail"]["device"]) == ("edgetpu", "usb:0")
    assert described["backend_model_path"] == str(tpu_bundle / "model_edgetpu.tflite")
    cpu = Classifier.from_config(config(tpu_bundle))
    crops = crops_of(COLOURS)
    # The same int8 graph: the shared quantization/heads code must give identical answers.
    for tpu_result, cpu_result, rgb in zip(
        classifier.classify(crops), cpu.classify(crops), COLOURS, strict=True
    ):
        assert tpu_result.label == cpu_result.label == oracle(rgb, "species")
        for level in mk.LEVELS:
            np.testing.assert_array_equal(tpu_result.probs[level], cpu_result.probs[level])


@pytest.mark.parametrize(
    ("device", "hint"),
    [("usb", "lsusb | grep -i -E '1a6e|18d1'"), ("pci:0", "/dev/apex_"), (":1", "lsusb")],
)
def test_edgetpu_missing_is_a_loud_start_error(
    tpu_bundle: Path, coral: FakeCoral, device: str, hint: str
) -> None:
    coral.present = False
    with pytest.raises(AcceleratorError) as exc:
        Classifier.from_config(config(tpu_bundle, backend="edgetpu", edgetpu_device=device))
    message = one_line(exc)
    assert exc.value.exit_code == 2
    assert message.startswith("classifier.backend edgetpu: no Edge TPU found")
    assert f"looked for libedgetpu.so.1 with device '{device}'" in message
    assert hint in message and "libedgetpu1-std" in message


@pytest.mark.hardware
@pytest.mark.skipif(ctypes.util.find_library("edgetpu") is not None, reason="this machine has libedgetpu")
def test_edgetpu_without_the_runtime_library_for_real(tpu_bundle: Path) -> None:
    """No fake: the real loader on a machine without libedgetpu."""
    with pytest.raises(AcceleratorError) as exc:
        open_backend(config(tpu_bundle, backend="edgetpu"), load_bundle(tpu_bundle), None)
    message = one_line(exc)
    assert "libedgetpu.so.1" in message and "'usb'" in message
    assert "libedgetpu1-std" in message and "ldconfig -p | grep edgetpu" in message


def test_edgetpu_that_cannot_run_the_model_is_an_accelerator_error(
    tpu_bundle: Path, coral: FakeCoral
) -> None:
    coral.interpreter_error = (
        "Failed to prepare for TPU. Failed precondition: Package requires runtime version (14),"
        " which is newer than this runtime version (13).\nNode number 0 (EdgeTpuDelegateForCustomOp) failed"
    )
    with pytest.raises(AcceleratorError) as exc:
        open_backend(config(tpu_bundle, backend="edgetpu"), load_bundle(tpu_bundle), None)
    message = one_line(exc)
    assert "model_edgetpu.tflite" in message and "runtime version (14)" in message
    assert "dpkg -l | grep edgetpu" in message


@pytest.mark.parametrize("fallback", [False, True])
def test_bundle_without_edgetpu_model_names_the_fix(
    bundle_dir: Path, coral: FakeCoral, fallback: bool
) -> None:
    """A deployment mistake, not missing hardware: an error even when CPU fallback is allowed."""
    with pytest.raises(ModelError) as exc:
        open_backend(
            config(bundle_dir, backend="edgetpu", allow_cpu_fallback=fallback), load_bundle(bundle_dir), None
        )
    message = one_line(exc)
    assert str(bundle_dir) in message and "trapcam convert --edgetpu" in message
    assert coral.loaded == []  # the device is not even touched


def test_half_copied_edgetpu_model_is_refused(tpu_bundle: Path, coral: FakeCoral) -> None:
    path = tpu_bundle / "model_edgetpu.tflite"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelError) as exc:
        open_backend(config(tpu_bundle, backend="edgetpu"), load_bundle(tpu_bundle), None)
    assert "sha256 mismatch" in one_line(exc) and "model_edgetpu.tflite" in str(exc.value)


def test_plain_model_uses_the_edgetpu_file_beside_it(tmp_path: Path, coral: FakeCoral) -> None:
    model = mk.third_party_model()
    plain = mk.write_plain(tmp_path, model, filename="insects_quant.tflite")
    cfg = config(plain, backend="edgetpu")
    with pytest.raises(ModelError, match=r"insects_quant_edgetpu\.tflite beside it"):
        Classifier.from_config(cfg)
    shutil.copyfile(plain, tmp_path / "insects_quant_edgetpu.tflite")
    classifier = Classifier.from_config(cfg)
    assert coral.models == [tmp_path / "insects_quant_edgetpu.tflite"]
    assert classifier.classify(crops_of(COLOURS[:1]))[0].label == oracle(COLOURS[0], "species")


def test_cpu_fallback_only_when_allowed(
    tpu_bundle: Path, coral: FakeCoral, caplog: pytest.LogCaptureFixture
) -> None:
    coral.present = False
    with pytest.raises(AcceleratorError):
        Classifier.from_config(config(tpu_bundle, backend="edgetpu"))
    with caplog.at_level("WARNING"):
        classifier = Classifier.from_config(config(tpu_bundle, backend="edgetpu", allow_cpu_fallback=True))
    assert classifier.backend.name == "cpu"
    assert classifier.backend_flags == [CPU_FALLBACK_FLAG] == ["cpu fallback"]
    assert classifier.describe()["backend_flags"] == ["cpu fallback"]
    assert classifier.describe()["backend_model_path"] == str(tpu_bundle / "model.tflite")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("no Edge TPU found" in w and "allow_cpu_fallback" in w for w in warnings), warnings
    result = classifier.classify(crops_of(COLOURS[:2]))
    assert [r.label for r in result] == [oracle(c, "species") for c in COLOURS[:2]]


def test_cpu_fallback_flag_makes_health_degraded(tmp_path: Path) -> None:
    """The flag the classifier returns is what health turns into its status (and MQTT publishes)."""
    from collections import namedtuple

    from edge.health import HealthMonitor, LoopStats, SystemProbes

    usage = namedtuple("usage", "total used free")
    cfg = parse_config(f"data_dir: {tmp_path}\nsource: {{kind: synthetic}}\n")
    probes = SystemProbes(
        tmp_path,
        thermal_path=None,
        vcgencmd=None,
        timedatectl=None,
        disk_usage=lambda _p: usage(100 << 30, 10 << 30, 90 << 30),
        adjtimex=False,
    )
    now = datetime(2026, 7, 1, 22, 0, tzinfo=timezone.utc)
    monitor = HealthMonitor(cfg, None, now, probes=probes)
    stats = LoopStats(1.0, [5.0], 0, 0, "ok", None, 10, True)
    assert monitor.sample(now, stats)["status"] == "ok"
    assert monitor.sample(now, stats, extra_flags=[CPU_FALLBACK_FLAG])["status"] == "degraded: cpu fallback"


@pytest.mark.hardware
def test_configured_missing_accelerator_exits_non_zero(tmp_path: Path, tpu_bundle: Path) -> None:
    """`trapcam run` as a user runs it: exit code 2 and one line on stderr, no traceback."""
    if ctypes.util.find_library("edgetpu") is not None:
        pytest.skip("this machine has libedgetpu")
    cfg = tmp_path / "trap.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\nsource: {{kind: synthetic, frames: 3, width: 320, height: 240}}\n"
        f"classifier: {{model: {tpu_bundle}, backend: edgetpu}}\n",
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("trapcam: error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "classifier.backend edgetpu" in errors[0] and "libedgetpu.so.1" in errors[0]


# ---------------------------------------------------------------- TensorRT (fake runtime)


class FakeSession:
    """An onnxruntime session as the TensorRT provider gives it, computing with the CPU onnxruntime."""

    def __init__(self, path: Path, active: list[str], runs: list[int]) -> None:
        self._real = real_ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self._active = active
        self._runs = runs

    def get_providers(self) -> list[str]:
        return list(self._active)

    def get_inputs(self) -> Any:
        return self._real.get_inputs()

    def get_outputs(self) -> Any:
        return self._real.get_outputs()

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> Any:
        (batch,) = feeds.values()
        assert batch.dtype == np.float32 and batch.flags.c_contiguous
        assert 1 <= len(batch) <= 32, "outside the optimisation profile: TensorRT would fail"
        self._runs.append(len(batch))
        return self._real.run(names, feeds)


class FakeTensorRt:
    """onnxruntime-gpu with the TensorRT provider, at the boundary.

    Like the provider's engine cache: a session finds an engine in trt_engine_cache_path and loads
    it, or builds one (slow on a Jetson) and writes it there. An engine that does not belong to the
    ONNX file fails to load, like a corrupt or foreign engine does.
    """

    def __init__(self, version: str = "1.20.0") -> None:
        self.builds: list[Path] = []
        self.loads = 0
        self.options: list[dict[str, Any]] = []
        self.runs: list[int] = []
        self.active = [TRT, "CUDAExecutionProvider", "CPUExecutionProvider"]
        self.fail: str | None = None
        self.module = SimpleNamespace(
            __version__=version,
            get_available_providers=lambda: [TRT, "CUDAExecutionProvider", "CPUExecutionProvider"],
        )

    def make_session(self, onnx_path: Path, providers: list[Any]) -> FakeSession:
        name, options = providers[0]
        assert name == TRT and providers[1][0] == "CUDAExecutionProvider"
        self.options.append(dict(options))
        if self.fail:
            raise RuntimeError(self.fail)
        cache = Path(options["trt_engine_cache_path"])
        digest = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()
        stamp = f"engine for {digest} fp16={options['trt_fp16_enable']} int8={options['trt_int8_enable']}"
        engines = sorted(cache.glob("*.engine"))
        if engines:
            if engines[0].read_text(errors="replace") != stamp:
                raise RuntimeError("TensorRT EP could not deserialize engine from cache")
            self.loads += 1
        else:
            cache.mkdir(parents=True, exist_ok=True)
            (cache / "TensorrtExecutionProvider_TRTKernel_graph_1234_0_sm87.engine").write_text(stamp)
            self.builds.append(cache)
        return FakeSession(onnx_path, self.active, self.runs)


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> FakeTensorRt:
    fake = FakeTensorRt()
    monkeypatch.setattr(trt_mod, "_import_onnxruntime", lambda: fake.module)
    monkeypatch.setattr(trt_mod, "_make_session", fake.make_session)
    return fake


def onnx_sha(bundle: Path, name: str = "model.onnx") -> str:
    return read_manifest(bundle / "model.json").files[name].sha256


def test_tensorrt_builds_the_engine_once_and_reuses_it(
    tmp_path: Path, trt_bundle: Path, trt: FakeTensorRt
) -> None:
    data = tmp_path / "data"
    cfg = config(trt_bundle, backend="tensorrt")
    first = Classifier.from_config(cfg, data_dir=data)
    folder = data / "engines" / f"{onnx_sha(trt_bundle)}-fp16"
    assert trt.builds == [folder]
    assert first.backend_flags == []
    described = first.describe()
    assert described["backend"] == "tensorrt"
    assert described["backend_model_path"] == str(trt_bundle / "model.onnx")
    assert described["backend_detail"]["engine"] == "built"
    assert described["backend_detail"]["precision"] == "fp16"
    options = trt.options[0]
    assert options["trt_fp16_enable"] is True and options["trt_int8_enable"] is False
    assert options["trt_engine_cache_enable"] is True and options["trt_engine_cache_path"] == str(folder)
    input_name = read_manifest(trt_bundle / "model.json").validation["onnx"]["input"]
    assert options["trt_profile_min_shapes"] == f"{input_name}:1x32x32x3"
    assert options["trt_profile_max_shapes"] == f"{input_name}:32x32x32x3"
    results = first.classify(crops_of(COLOURS))
    for rgb, result in zip(COLOURS, results, strict=True):
        for level in mk.LEVELS:
            assert result.levels[level].label == oracle(rgb, level), (rgb, level)
        assert result.score > 0.95
    assert trt.runs[-1] == len(COLOURS)  # the batch ran as one batch

    second = Classifier.from_config(cfg, data_dir=data)  # a restart
    assert trt.builds == [folder] and trt.loads == 1
    assert second.describe()["backend_detail"]["engine"] == "reused"
    stamp = json.loads((folder / "cache.json").read_text())
    assert stamp["onnx_sha256"] == onnx_sha(trt_bundle) and stamp["onnxruntime"] == "1.20.0"


def test_tensorrt_engine_is_keyed_by_onnx_sha256_and_precision(
    tmp_path: Path, trt_bundle: Path, trt: FakeTensorRt
) -> None:
    import onnx

    cache = tmp_path / "engines-elsewhere"
    Classifier.from_config(config(trt_bundle, backend="tensorrt", engine_cache_dir=cache))
    Classifier.from_config(
        config(trt_bundle, backend="tensorrt", engine_cache_dir=cache, tensorrt_precision="fp32")
    )
    assert trt.builds == [cache / f"{onnx_sha(trt_bundle)}-fp16", cache / f"{onnx_sha(trt_bundle)}-fp32"]
    assert trt.options[1]["trt_fp16_enable"] is False
    # A new model file (a retrained model copied in): new sha256, new engine; the old one is not used.
    model = onnx.load(trt_bundle / "model.onnx")
    model.doc_string = "retrained"
    onnx.save(model, trt_bundle / "model.onnx")
    add_files(trt_bundle, {})
    Classifier.from_config(config(trt_bundle, backend="tensorrt", engine_cache_dir=cache))
    assert len(trt.builds) == 3 and trt.builds[2] == cache / f"{onnx_sha(trt_bundle)}-fp16"
    assert len({p.name for p in trt.builds}) == 3


def test_tensorrt_int8_uses_the_int8_onnx(tmp_path: Path, trt_bundle: Path, trt: FakeTensorRt) -> None:
    classifier = Classifier.from_config(
        config(trt_bundle, backend="tensorrt", tensorrt_precision="int8"), data_dir=tmp_path
    )
    assert classifier.backend.model_path == trt_bundle / "model_int8.onnx"
    assert trt.builds == [tmp_path / "engines" / f"{onnx_sha(trt_bundle, 'model_int8.onnx')}-int8"]
    assert trt.options[0]["trt_int8_enable"] is True and trt.options[0]["trt_fp16_enable"] is True


def test_tensorrt_big_batches_stay_inside_the_profile(
    tmp_path: Path, trt_bundle: Path, trt: FakeTensorRt
) -> None:
    classifier = Classifier.from_config(config(trt_bundle, backend="tensorrt"), data_dir=tmp_path)
    colours = [COLOURS[i % len(COLOURS)] for i in range(45)]
    trt.runs.clear()
    results = classifier.classify(crops_of(colours))
    assert trt.runs == [32, 13]
    assert [r.label for r in results] == [oracle(c, "species") for c in colours]


def test_tensorrt_unusable_cached_engine_is_rebuilt(
    tmp_path: Path, trt_bundle: Path, trt: FakeTensorRt, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "engines" / f"{onnx_sha(trt_bundle)}-fp16"
    folder.mkdir(parents=True)
    (folder / "TensorrtExecutionProvider_TRTKernel_graph_1234_0_sm87.engine").write_bytes(b"half-written")
    with caplog.at_level("WARNING"):
        classifier = Classifier.from_config(config(trt_bundle, backend="tensorrt"), data_dir=tmp_path)
    assert trt.builds == [folder]
    assert classifier.describe()["backend_detail"]["engine"] == "built"
    assert any("unusable" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)


def test_tensorrt_new_runtime_version_rebuilds(tmp_path: Path, trt_bundle: Path, trt: FakeTensorRt) -> None:
    cfg = config(trt_bundle, backend="tensorrt")
    Classifier.from_config(cfg, data_dir=tmp_path)
    trt.module.__version__ = "1.21.0"  # a JetPack upgrade: old engines must not be trusted
    classifier = Classifier.from_config(cfg, data_dir=tmp_path)
    assert len(trt.builds) == 2 and trt.loads == 0
    assert classifier.describe()["backend_detail"]["engine"] == "built"


@pytest.mark.hardware
def test_tensorrt_missing_here_is_a_loud_error_for_real(trt_bundle: Path, tmp_path: Path) -> None:
    """No fake: this machine's onnxruntime has no TensorRT provider."""
    if TRT in real_ort.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT")
    with pytest.raises(AcceleratorError) as exc:
        Classifier.from_config(config(trt_bundle, backend="tensorrt"), data_dir=tmp_path)
    message = one_line(exc)
    assert message.startswith("classifier.backend tensorrt: onnxruntime")
    assert "looked for TensorrtExecutionProvider" in message and "CPUExecutionProvider" in message
    assert "get_available_providers()" in message and "ldconfig -p | grep nvinfer" in message
    assert exc.value.exit_code == 2


def test_tensorrt_without_onnxruntime(
    trt_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Any:
        raise ModuleNotFoundError("No module named 'onnxruntime'")

    monkeypatch.setattr(trt_mod, "_import_onnxruntime", missing)
    with pytest.raises(AcceleratorError) as exc:
        open_backend(config(trt_bundle, backend="tensorrt"), load_bundle(trt_bundle), tmp_path)
    message = one_line(exc)
    assert "onnxruntime is not installed" in message and "onnxruntime-gpu" in message


def test_tensorrt_silent_provider_fallback_is_refused(
    tmp_path: Path, trt_bundle: Path, trt: FakeTensorRt
) -> None:
    """onnxruntime drops to CUDA/CPU when TensorRT's libraries fail to load: that must not pass."""
    trt.active = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(AcceleratorError) as exc:
        Classifier.from_config(config(trt_bundle, backend="tensorrt"), data_dir=tmp_path)
    message = one_line(exc)
    assert "did not enable TensorRT" in message and "'CUDAExecutionProvider'" in message
    fallback = Classifier.from_config(
        config(trt_bundle, backend="tensorrt", allow_cpu_fallback=True), data_dir=tmp_path
    )
    assert (fallback.backend.name, fallback.backend_flags) == ("cpu", ["cpu fallback"])


def test_tensorrt_build_failure_is_an_accelerator_error(
    tmp_path: Path, trt_bundle: Path, trt: FakeTensorRt
) -> None:
    trt.fail = "[TensorRT EP] Failed to build engine: out of memory\nmore detail"
    with pytest.raises(AcceleratorError) as exc:
        open_backend(config(trt_bundle, backend="tensorrt"), load_bundle(trt_bundle), tmp_path)
    message = one_line(exc)
    assert "cannot build a fp16 engine" in message and "out of memory" in message and "trtexec" in message


def test_bundle_without_onnx_names_the_fix(bundle_dir: Path, tmp_path: Path, trt: FakeTensorRt) -> None:
    with pytest.raises(ModelError) as exc:
        open_backend(
            config(bundle_dir, backend="tensorrt", allow_cpu_fallback=True), load_bundle(bundle_dir), tmp_path
        )
    message = one_line(exc)
    assert str(bundle_dir) in message and "trapcam convert --onnx" in message
    assert trt.options == []


def test_int8_left_out_by_convert_says_why(
    bundle_dir: Path, onnx_source: tuple[Path, str], tmp_path: Path
) -> None:
    shutil.copyfile(onnx_source[0], bundle_dir / "model.onnx")
    add_files(bundle_dir, {"model.onnx": "onnx"}, {"onnx": {"int8_left_out": "species drop 2.1 pp > 1 pp"}})
    with pytest.raises(ModelError) as exc:
        open_backend(
            config(bundle_dir, backend="tensorrt", tensorrt_precision="int8"),
            load_bundle(bundle_dir),
            tmp_path,
        )
    message = one_line(exc)
    assert "model_int8.onnx" in message and "species drop 2.1 pp" in message
    assert "tensorrt_precision: fp16" in message


def test_half_copied_onnx_is_refused(trt_bundle: Path, tmp_path: Path, trt: FakeTensorRt) -> None:
    path = trt_bundle / "model.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelError, match="sha256 mismatch"):
        open_backend(config(trt_bundle, backend="tensorrt"), load_bundle(trt_bundle), tmp_path)


def test_engine_cache_folder_problems(trt_bundle: Path, tmp_path: Path, trt: FakeTensorRt) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(StorageError) as exc:
        open_backend(
            config(trt_bundle, backend="tensorrt", engine_cache_dir=blocker), load_bundle(trt_bundle), None
        )
    assert str(blocker) in one_line(exc) and "engine_cache_dir" in str(exc.value)
    with pytest.raises(ModelError) as exc:
        open_backend(config(trt_bundle, backend="tensorrt"), load_bundle(trt_bundle), None)
    assert "engine_cache_dir" in one_line(exc)


# ---------------------------------------------------------------- doctor's helpers


def test_probe_backends_says_what_is_there(
    trt_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copyfile(trt_bundle / "model.tflite", trt_bundle / "model_edgetpu.tflite")
    add_files(trt_bundle, {"model_edgetpu.tflite": "edgetpu"})
    bundle = load_bundle(trt_bundle)
    cfg = config(trt_bundle, backend="edgetpu")
    real = {p.name: p for p in probe_backends(cfg, bundle, tmp_path)}
    assert list(real) == ["cpu", "edgetpu", "tensorrt"]
    assert all(isinstance(p, BackendProbe) for p in real.values())
    assert real["cpu"].available and "XNNPACK" in real["cpu"].detail
    assert real["edgetpu"].configured and not real["cpu"].configured
    if ctypes.util.find_library("edgetpu") is None:
        assert not real["edgetpu"].available and "libedgetpu.so.1" in real["edgetpu"].detail
    if TRT not in real_ort.get_available_providers():
        assert not real["tensorrt"].available and TRT in real["tensorrt"].detail

    coral, fake_trt = FakeCoral(), FakeTensorRt()
    monkeypatch.setattr(edgetpu_mod, "_load_delegate", coral.load_delegate)
    monkeypatch.setattr(trt_mod, "_import_onnxruntime", lambda: fake_trt.module)
    faked = {p.name: p for p in probe_backends(cfg, bundle, tmp_path)}
    assert all(p.available for p in faked.values()), faked
    assert "device 'usb'" in faked["edgetpu"].detail
    assert "not built yet" in faked["tensorrt"].detail
    assert fake_trt.builds == []  # probing never builds an engine


def test_benchmark_times_the_whole_classify_path(bundle_dir: Path) -> None:
    backend, _ = open_backend(config(bundle_dir), load_bundle(bundle_dir), None)
    crops = np.stack([mk.colour_crop(c, 48) for c in COLOURS])  # resized to 32 x 32 inside
    result = benchmark(backend, crops, repeats=3)
    assert (result["backend"], result["crops"], result["repeats"]) == ("cpu", len(COLOURS), 3)
    assert 0 < result["min_ms_per_crop"] <= result["median_ms_per_crop"] <= result["max_ms_per_crop"]
    assert result["invoke_ms_per_crop"] > 0
    with pytest.raises(ModelError, match="repeats"):
        benchmark(backend, crops, repeats=0)
    with pytest.raises(ModelError, match="crops"):
        benchmark(backend, crops[0], repeats=1)


# ---------------------------------------------------------------- config


def test_new_classifier_keys_have_safe_defaults() -> None:
    cfg = ClassifierConfig(enabled=False)
    assert (cfg.backend, cfg.edgetpu_device, cfg.tensorrt_precision) == ("cpu", "usb", "fp16")
    assert cfg.allow_cpu_fallback is False and cfg.engine_cache_dir is None


@pytest.mark.parametrize("device", ["usb", "usb:0", "usb:12", "pci", "pci:1", ":0"])
def test_edgetpu_device_accepts_coral_forms(device: str) -> None:
    assert ClassifierConfig(enabled=False, edgetpu_device=device).edgetpu_device == device


@pytest.mark.parametrize(
    ("line", "parts"),
    [
        ("backend: gpu", ["x.yaml:4", "classifier.backend", "'gpu'", "'edgetpu'", "'tensorrt'"]),
        ("edgetpu_device: usb0", ["x.yaml:4", "classifier.edgetpu_device", "'usb0'", "'usb:0'"]),
        ("edgetpu_device: 'pci:'", ["classifier.edgetpu_device", "'pci:'"]),
        ("tensorrt_precision: int4", ["classifier.tensorrt_precision", "'int4'", "'fp16'"]),
        ("allow_cpu_fallback: maybe", ["classifier.allow_cpu_fallback", "'maybe'", "bool"]),
        ("alow_cpu_fallback: true", ["classifier.alow_cpu_fallback", "no such key"]),
    ],
)
def test_new_classifier_keys_are_validated(line: str, parts: list[str]) -> None:
    text = f"source: {{kind: synthetic}}\nclassifier:\n  model: bundle\n  {line}\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "x.yaml")
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)


def test_engine_cache_dir_reads_as_a_path() -> None:
    cfg = parse_config(
        "source: {kind: synthetic}\nclassifier:\n  model: b\n  backend: tensorrt\n"
        "  tensorrt_precision: int8\n  allow_cpu_fallback: true\n  engine_cache_dir: /var/cache/trap\n"
    )
    assert cfg.classifier.engine_cache_dir == Path("/var/cache/trap")
    assert (cfg.classifier.backend, cfg.classifier.tensorrt_precision) == ("tensorrt", "int8")
    assert cfg.classifier.allow_cpu_fallback is True
