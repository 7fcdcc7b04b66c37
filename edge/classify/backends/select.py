"""Choosing the backend from the config, and the policy when the accelerator is not there.

No silent fallback: a configured Edge TPU or TensorRT that is missing is an AcceleratorError at
start-up (exit code 2, one line with what was looked for and how to check it). A trap left for a
season on the CPU at a fifth of the frame rate, with nobody told, is worse than one that does not
start. Only `classifier.allow_cpu_fallback: true` runs the CPU model instead, and then the flag
"cpu fallback" is returned so health reports "degraded: cpu fallback" (and MQTT publishes it).

A bundle that lacks the accelerator's model file is a ModelError whatever the fallback setting:
that is a deployment mistake to fix, not missing hardware.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge.classify.backends.base import CPU_FALLBACK_FLAG, Backend, BackendProbe
from edge.classify.backends.cpu import CpuBackend
from edge.classify.bundle import LoadedBundle
from edge.config import ClassifierConfig
from edge.errors import AcceleratorError, TrapcamError

log = logging.getLogger(__name__)

BACKENDS = ("cpu", "edgetpu", "tensorrt")


def engine_cache_root(cfg: ClassifierConfig, data_dir: Path | None) -> Path | None:
    """classifier.engine_cache_dir, else <data_dir>/engines (None when neither is known)."""
    if cfg.engine_cache_dir is not None:
        return Path(cfg.engine_cache_dir)
    return Path(data_dir) / "engines" if data_dir is not None else None


def _open_named(name: str, cfg: ClassifierConfig, bundle: LoadedBundle, data_dir: Path | None) -> Backend:
    if name == "edgetpu":
        from edge.classify.backends.edgetpu import EdgeTpuBackend

        return EdgeTpuBackend(bundle, cfg.edgetpu_device)
    if name == "tensorrt":
        from edge.classify.backends.tensorrt import TensorRtBackend

        return TensorRtBackend(bundle, cfg.tensorrt_precision, engine_cache_root(cfg, data_dir))
    return CpuBackend(bundle, cfg.num_threads)


def open_backend(
    cfg: ClassifierConfig, bundle: LoadedBundle, data_dir: Path | None = None
) -> tuple[Backend, list[str]]:
    """(the configured backend, health flags): AcceleratorError unless CPU fallback is allowed."""
    if cfg.backend == "cpu":
        return CpuBackend(bundle, cfg.num_threads), []
    try:
        return _open_named(cfg.backend, cfg, bundle, data_dir), []
    except AcceleratorError as exc:
        if not cfg.allow_cpu_fallback:
            raise
        log.warning(
            "%s; running the CPU model instead because classifier.allow_cpu_fallback is true"
            " (health: degraded: %s)",
            exc,
            CPU_FALLBACK_FLAG,
        )
        return CpuBackend(bundle, cfg.num_threads), [CPU_FALLBACK_FLAG]


def _probe_cpu(bundle: LoadedBundle) -> tuple[bool, str]:
    from edge.classify.interpreter import interpreter_package

    return True, f"{interpreter_package()} with XNNPACK runs {bundle.model_path.name}"


def _probe_edgetpu(cfg: ClassifierConfig, bundle: LoadedBundle) -> tuple[bool, str]:
    from edge.classify.backends.edgetpu import EDGETPU_LIBRARY, find_edgetpu_model, open_delegate

    path, _ = find_edgetpu_model(bundle)
    delegate = open_delegate(cfg.edgetpu_device)
    del delegate  # let the running trap (or the benchmark) have the device
    return True, f"{EDGETPU_LIBRARY} opened device '{cfg.edgetpu_device}' for {path.name}"


def _probe_tensorrt(cfg: ClassifierConfig, bundle: LoadedBundle, data_dir: Path | None) -> tuple[bool, str]:
    from edge.classify.backends.tensorrt import (
        TRT_PROVIDER,
        cached_engines,
        engine_cache_folder,
        find_onnx_model,
        onnxruntime_or_error,
        tensorrt_providers,
    )

    path, sha = find_onnx_model(bundle, cfg.tensorrt_precision)
    ort = onnxruntime_or_error()
    tensorrt_providers(ort)
    root = engine_cache_root(cfg, data_dir)
    cache = "no engine cache folder configured"
    if root is not None:
        folder = engine_cache_folder(root, sha, cfg.tensorrt_precision)
        cache = (
            f"engine cached in {folder}" if cached_engines(folder) else "engine not built yet (first start)"
        )
    version = getattr(ort, "__version__", "?")
    return (
        True,
        f"onnxruntime {version} offers {TRT_PROVIDER} for {path.name} ({cfg.tensorrt_precision}; {cache})",
    )


def probe_backends(
    cfg: ClassifierConfig, bundle: LoadedBundle, data_dir: Path | None = None
) -> list[BackendProbe]:
    """Which backends could run this bundle here, each with the reason (for `trapcam doctor`).

    Cheap: no engine is built and no model runs; the Edge TPU delegate is opened and released.
    """
    probes = []
    for name in BACKENDS:
        try:
            if name == "cpu":
                available, detail = _probe_cpu(bundle)
            elif name == "edgetpu":
                available, detail = _probe_edgetpu(cfg, bundle)
            else:
                available, detail = _probe_tensorrt(cfg, bundle, data_dir)
        except TrapcamError as exc:
            available, detail = False, str(exc)
        probes.append(BackendProbe(name, available, detail, configured=name == cfg.backend))
    return probes
