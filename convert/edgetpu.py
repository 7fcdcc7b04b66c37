"""Coral Edge TPU check: which ops of a .tflite model the Edge TPU compiler can map, and compiling it.

`edgetpu_report` reads a converted model with the LiteRT interpreter and says which builtin ops fall
outside the Edge TPU's supported set and whether the model is fully 8-bit (the compiler refuses
float models). `compile_edgetpu` runs Coral's `edgetpu_compiler` when it is installed (x86-64
Debian/Ubuntu only) and parses its log; without it an `EdgeTpuError` says how to install it. The
CPU bundle never depends on any of this.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import TrapcamError

COMPILER = "edgetpu_compiler"
INSTALL_HINT = (
    f"{COMPILER} was not found on PATH: it runs only on x86-64 Debian/Ubuntu, from Coral's apt repository "
    "(https://coral.ai/docs/edgetpu/compiler/: add the coral-edgetpu-stable repository, then "
    "`sudo apt-get install edgetpu-compiler`); the CPU bundle is unaffected"
)
COMPILE_TIMEOUT_S = 600

# TFLite builtin ops the Edge TPU compiler can map, from Coral's documentation page "TensorFlow models
# on the Edge TPU" (https://coral.ai/docs/edgetpu/models-intro/#supported-operations), written as
# TFLite builtin op names. Each op also has conditions there (no batch-dimension reductions, same
# dilation in x and y, ...), so an op in this set may still be left on the CPU by the compiler.
# QUANTIZE and DEQUANTIZE are listed because a full-int8 model carries them at its ends (uint8 <-> int8
# at the input/output); a DEQUANTIZE in the middle of a graph ends the Edge TPU segment there.
# Not mapped (and therefore absent), among others: HARD_SWISH (MobileNetV3-style activations), GELU,
# EXP, DIV, LEAKY_RELU, ARG_MAX, GATHER, CAST, FLOOR_MOD, and any CUSTOM op.
EDGETPU_OPS: frozenset[str] = frozenset(
    {
        "ABS",
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "DEQUANTIZE",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "LSTM",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PADV2",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUARED_DIFFERENCE",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)

_INT8_TYPES = (np.int8, np.uint8)
_TPU_LINE = re.compile(r"Number of operations that will run on Edge TPU:\s*(\d+)")
_CPU_LINE = re.compile(r"Number of operations that will run on CPU:\s*(\d+)")
_TOTAL_LINE = re.compile(r"Total number of operations:\s*(\d+)")
_TABLE_ROW = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


class EdgeTpuError(TrapcamError):
    """The Edge TPU compiler is missing or failed, or a model cannot be read for the Edge TPU check."""

    exit_code = 1


@dataclass(frozen=True)
class EdgeTpuReport:
    """What the Edge TPU would make of a .tflite model, without compiling it.

    ops: op name -> how many times it occurs (primary subgraph, in graph order of first use).
    unsupported: the part of `ops` outside EDGETPU_OPS (the compiler leaves these, and in practice
        everything after the first of them, on the CPU).
    all_int8: every activation (each op's output, the model's inputs and outputs) is int8/uint8 and no
        tensor is floating point; int32 constants (biases, axes, shapes) are part of int8 models.
    compiler: the path of `edgetpu_compiler`, or None where it is not installed.
    """

    ops: dict[str, int]
    unsupported: dict[str, int]
    all_int8: bool
    compiler: str | None

    @property
    def compatible(self) -> bool:
        """No unsupported op and fully 8-bit: the compiler should map the whole model."""
        return self.all_int8 and not self.unsupported


@dataclass(frozen=True)
class EdgeTpuCompiled:
    """The result of `edgetpu_compiler`: the compiled model and how its ops were split."""

    path: Path  # <out_dir>/<stem>_edgetpu.tflite
    edgetpu_ops: int  # operations that will run on the Edge TPU
    cpu_ops: int  # operations that will run on the CPU
    log: str = field(repr=False, default="")


def _interpreter(model_path: Path | str):  # -> ai_edge_litert.interpreter.Interpreter
    from ai_edge_litert.interpreter import Interpreter

    path = Path(model_path)
    if not path.is_file():
        raise EdgeTpuError(f"{path}: no such .tflite model")
    try:
        return Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as error:
        raise EdgeTpuError(f"{path}: not a readable TFLite model ({error})") from error


def tflite_ops(model_path: Path | str) -> list[str]:
    """The builtin op names of a .tflite model's primary subgraph, in execution order (e.g. "CONV_2D")."""
    return [str(op["op_name"]) for op in _interpreter(model_path)._get_ops_details()]


def _all_int8(interpreter) -> bool:
    tensors = interpreter.get_tensor_details()
    if any(np.issubdtype(np.dtype(t["dtype"]), np.floating) for t in tensors):
        return False
    activations = [d["dtype"] for d in interpreter.get_input_details() + interpreter.get_output_details()]
    for op in interpreter._get_ops_details():
        activations.extend(op.get("result_types", []))
    return all(np.dtype(dtype) in map(np.dtype, _INT8_TYPES) for dtype in activations)


def edgetpu_report(model_path: Path | str) -> EdgeTpuReport:
    """Check a .tflite model against the Edge TPU's supported ops and its full-int8 requirement."""
    interpreter = _interpreter(model_path)
    ops = dict(Counter(str(op["op_name"]) for op in interpreter._get_ops_details()))
    unsupported = {name: count for name, count in ops.items() if name not in EDGETPU_OPS}
    return EdgeTpuReport(
        ops=ops,
        unsupported=unsupported,
        all_int8=_all_int8(interpreter),
        compiler=shutil.which(COMPILER),
    )


def parse_compiler_log(log: str) -> tuple[int, int]:
    """(operations on the Edge TPU, operations on the CPU) from an `edgetpu_compiler` log.

    The compiler prints "Number of operations that will run on Edge TPU: N" / "... on CPU: M" when part
    of the model stays on the CPU; for a fully mapped model it may print only "Total number of
    operations: T", and with -s an operator table ("CONV_2D  3  Mapped to Edge TPU").
    """
    tpu = _TPU_LINE.search(log)
    cpu = _CPU_LINE.search(log)
    if tpu or cpu:
        return (int(tpu.group(1)) if tpu else 0), (int(cpu.group(1)) if cpu else 0)
    rows = [_TABLE_ROW.match(line) for line in log.splitlines()]
    rows = [row for row in rows if row and row.group(1) != "Operator"]
    if rows:
        mapped = sum(int(row.group(2)) for row in rows if row.group(3).startswith("Mapped to Edge TPU"))
        return mapped, sum(int(row.group(2)) for row in rows) - mapped
    total = _TOTAL_LINE.search(log)
    if total:
        return int(total.group(1)), 0
    raise EdgeTpuError(f"{COMPILER} finished but its log has no operation counts: {_last_line(log)}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def compile_edgetpu(model_path: Path | str, out_dir: Path | str) -> EdgeTpuCompiled:
    """Run `edgetpu_compiler -s -o out_dir model_path`; return <stem>_edgetpu.tflite and the op split.

    Raises EdgeTpuError when the compiler is not installed (with the install hint), fails, or writes
    no model.
    """
    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise EdgeTpuError(INSTALL_HINT)
    model = Path(model_path)
    if not model.is_file():
        raise EdgeTpuError(f"{model}: no such .tflite model")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [compiler, "-s", "-o", str(out), str(model)],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise EdgeTpuError(f"{COMPILER} did not finish within {COMPILE_TIMEOUT_S} s on {model}") from error
    except OSError as error:
        raise EdgeTpuError(f"{COMPILER} ({compiler}) could not be started: {error}") from error
    log = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0:
        raise EdgeTpuError(f"{COMPILER} failed on {model} (exit {done.returncode}): {_last_line(log)}")
    compiled = out / f"{model.stem}_edgetpu.tflite"
    if not compiled.is_file():
        raise EdgeTpuError(f"{COMPILER} reported success but wrote no {compiled}: {_last_line(log)}")
    edgetpu_ops, cpu_ops = parse_compiler_log(log)
    return EdgeTpuCompiled(path=compiled, edgetpu_ops=edgetpu_ops, cpu_ops=cpu_ops, log=log)
