"""Keep the C/C++ libraries' log lines (TensorFlow, absl, oneDNN, the TFLite converter, LiteRT's
XNNPACK notice) off a newcomer's screen, without hiding anything trapcam itself says.

Those libraries write straight to file descriptor 2, below Python, and some of them (absl before
`InitializeLog`, oneDNN's start-up notice, the MLIR quantizer) ignore `TF_CPP_MIN_LOG_LEVEL`. So the
desktop commands move descriptor 2 to a log file for the rest of the process and give Python's
`sys.stderr` a fresh descriptor on the terminal: trapcam's errors, warnings and logging still appear,
the native chatter lands in the file (its path is printed when a command fails). `--verbose` skips
this and shows everything.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

_diverted: Path | None = None


def quiet_environment() -> None:
    """Environment variables read when TensorFlow loads: call before the first TensorFlow import."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING from TensorFlow itself


def divert_native_stderr(log_path: Path) -> Path:
    """From now on, native writes to descriptor 2 go to `log_path`; Python's sys.stderr stays on the
    terminal. Idempotent: a second call keeps the first file. Returns the file in use."""
    global _diverted
    if _diverted is not None:
        return _diverted
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    terminal = os.dup(2)
    target = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 2)
    finally:
        os.close(target)
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr = io.TextIOWrapper(
        io.FileIO(terminal, "w", closefd=True),
        encoding=encoding,
        errors="backslashreplace",
        line_buffering=True,
    )
    _diverted = log_path
    return log_path


def diverted_to() -> Path | None:
    """The native log file of this process, or None when nothing was diverted."""
    return _diverted


__all__ = ["divert_native_stderr", "diverted_to", "quiet_environment"]
