"""Edge TPU check: real Keras 3 models converted like `convert` does it, and the compiler boundary.

The op check reads real .tflite files (full int8 with uint8 in/out, and float32). `edgetpu_compiler`
exists only for x86-64 Debian/Ubuntu from Coral's apt repository, so the compile step is tested
twice at its boundary: with no compiler on PATH (the install hint) and with a fake compiler script
that prints a log in the real compiler's format and writes <stem>_edgetpu.tflite.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow  # noqa: F401

from convert.edgetpu import (
    EDGETPU_OPS,
    EdgeTpuError,
    compile_edgetpu,
    edgetpu_report,
    parse_compiler_log,
    tflite_ops,
)
from edge.errors import TrapcamError

SIZE = 16


def _build(activation: Any) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")

    image = keras.Input((SIZE, SIZE, 3), batch_size=1, name="image")
    x = keras.layers.Rescaling(1.0 / 255.0)(image)
    x = keras.layers.Conv2D(8, 3, padding="same", activation=activation)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, activation="softmax")(x)
    return keras.Model(image, out)


def _convert(model: Any, int8: bool) -> bytes:
    """Keras -> SavedModel -> TFLite (full int8 with uint8 in/out, or plain float32), as tests/modelkit."""
    import tensorflow as tf

    def representative():
        rng = np.random.default_rng(0)
        for _ in range(16):
            yield [rng.integers(0, 256, (1, SIZE, SIZE, 3)).astype(np.float32)]

    with tempfile.TemporaryDirectory(prefix="edgetpu-") as tmp:
        saved = Path(tmp) / "saved_model"
        model.export(str(saved), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if int8:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
        return bytes(converter.convert())


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:

    folder = tmp_path_factory.mktemp("edgetpu_models")
    paths = {}
    for name, activation, int8 in [
        ("relu_int8", "relu", True),
        ("hardswish_int8", keras.activations.hard_swish, True),
        ("relu_float", "relu", False),
    ]:
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(_convert(_build(activation), int8))
    return paths


# ---------------------------------------------------------------- the op check


def test_tflite_ops_lists_the_builtin_ops_in_order(models: dict[str, Path]) -> None:
    ops = tflite_ops(models["relu_int8"])
    assert ops[0] == "QUANTIZE" and ops[-1] == "QUANTIZE"  # uint8 <-> int8 at the ends
    for name in ("CONV_2D", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"):
        assert name in ops
    assert ops.index("CONV_2D") < ops.index("FULLY_CONNECTED") < ops.index("SOFTMAX")


def test_int8_relu_model_is_fully_supported(models: dict[str, Path]) -> None:
    report = edgetpu_report(models["relu_int8"])
    assert report.ops["CONV_2D"] == 1 and report.ops["QUANTIZE"] == 2
    assert {"FULLY_CONNECTED", "SOFTMAX", "MAX_POOL_2D", "MEAN"} <= set(report.ops)
    assert report.unsupported == {}
    assert report.all_int8 is True
    assert report.compatible


def test_hard_swish_is_reported_unsupported(models: dict[str, Path]) -> None:
    assert "HARD_SWISH" not in EDGETPU_OPS
    report = edgetpu_report(models["hardswish_int8"])
    assert report.unsupported == {"HARD_SWISH": 1}
    assert report.all_int8 is True  # the model is 8-bit; only the op is the problem
    assert not report.compatible


def test_float_model_is_not_int8(models: dict[str, Path]) -> None:
    report = edgetpu_report(models["relu_float"])
    assert report.all_int8 is False
    assert "CONV_2D" in report.ops and report.unsupported == {}
    assert not report.compatible


def test_report_names_a_missing_or_broken_model(tmp_path: Path) -> None:
    with pytest.raises(EdgeTpuError, match="no such"):
        edgetpu_report(tmp_path / "absent.tflite")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(EdgeTpuError, match=r"broken\.tflite"):
        edgetpu_report(broken)


# ---------------------------------------------------------------- the compiler boundary

PARTIAL_LOG = """\
Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 312 ms.

Input model: {model}
Input size: 9.05KiB
Output model: {out}
Output size: 45.37KiB
On-chip memory used for caching model parameters: 3.25KiB
On-chip memory remaining for caching model parameters: 7.93MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 8
Operation log: {log}

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the \
model will instead run on the CPU, which is slower. If possible, consider updating your model to use \
only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 2
Number of operations that will run on CPU: 6

Operator                       Count      Status

QUANTIZE                       1          Mapped to Edge TPU
CONV_2D                        1          Mapped to Edge TPU
HARD_SWISH                     1          Operation not supported
MAX_POOL_2D                    1          More than one subgraph is not supported
MEAN                           1          More than one subgraph is not supported
FULLY_CONNECTED                1          More than one subgraph is not supported
SOFTMAX                        1          More than one subgraph is not supported
QUANTIZE                       1          More than one subgraph is not supported
Compilation child process completed within timeout period.
Compilation succeeded!
"""

FAKE_COMPILER = """\
#!/bin/sh
# A stand-in for Coral's edgetpu_compiler: same arguments, same log format, copies the model.
args="$*"
out_dir=.
while [ $# -gt 1 ]; do
  case "$1" in
    -s) shift ;;
    -o) out_dir="$2"; shift 2 ;;
    *) shift ;;
  esac
done
model="$1"
stem=$(basename "$model" .tflite)
out="$out_dir/${{stem}}_edgetpu.tflite"
echo "$args" >> "{calls}"
{body}
"""


def _fake_compiler(bindir: Path, body: str) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / "edgetpu_compiler"
    script.write_text(FAKE_COMPILER.format(calls=bindir / "calls.txt", body=body), encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def test_no_compiler_raises_with_the_install_hint(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("edgetpu_compiler") is not None:
        empty = tmp_path / "empty_bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("edgetpu_compiler") is None
    assert edgetpu_report(models["relu_int8"]).compiler is None
    with pytest.raises(EdgeTpuError) as caught:
        compile_edgetpu(models["relu_int8"], tmp_path / "out")
    message = str(caught.value)
    assert isinstance(caught.value, TrapcamError)
    assert "\n" not in message
    assert "edgetpu_compiler was not found" in message
    assert "x86-64 Debian/Ubuntu" in message
    assert "sudo apt-get install edgetpu-compiler" in message
    assert "CPU bundle is unaffected" in message
    assert not (tmp_path / "out").exists()


def test_fake_compiler_log_is_parsed(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    log = PARTIAL_LOG.format(model="$model", out="$out", log="${out_dir}/${stem}_edgetpu.log")
    script = _fake_compiler(bindir, f'cat <<EOF\n{log}EOF\ncp "$model" "$out"')
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ.get("PATH", ""))
    assert shutil.which("edgetpu_compiler") == str(script)
    assert edgetpu_report(models["hardswish_int8"]).compiler == str(script)

    result = compile_edgetpu(models["hardswish_int8"], tmp_path / "out")
    assert result.path == tmp_path / "out" / "hardswish_int8_edgetpu.tflite"
    assert result.path.read_bytes() == models["hardswish_int8"].read_bytes()
    assert (result.edgetpu_ops, result.cpu_ops) == (2, 6)
    assert f"Output model: {result.path}" in result.log
    calls = (bindir / "calls.txt").read_text(encoding="utf-8")
    assert f"-s -o {tmp_path / 'out'} {models['hardswish_int8']}" in calls


def test_fake_compiler_failure_is_one_line(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    body = 'echo "Edge TPU Compiler version 16.0.384591198"\necho "Invalid model: $model" >&2\nexit 1'
    _fake_compiler(bindir, body)
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ.get("PATH", ""))
    with pytest.raises(EdgeTpuError, match=r"failed on .*relu_float\.tflite \(exit 1\): Invalid model"):
        compile_edgetpu(models["relu_float"], tmp_path / "out")


def test_log_parsing_variants() -> None:
    full = "Number of Edge TPU subgraphs: 1\nTotal number of operations: 7\nCompilation succeeded!\n"
    assert parse_compiler_log(full) == (7, 0)
    table = (
        "Operator  Count  Status\n\nCONV_2D  3  Mapped to Edge TPU\nHARD_SWISH  2  Operation not supported"
    )
    assert parse_compiler_log(table) == (3, 2)
    assert parse_compiler_log(PARTIAL_LOG.format(model="m", out="o", log="l")) == (2, 6)
    with pytest.raises(EdgeTpuError, match="no operation counts"):
        parse_compiler_log("Compilation succeeded!\n")
