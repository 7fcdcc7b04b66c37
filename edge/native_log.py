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
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


# Notices the TFLite runtime prints (once per process) on the trap itself, where nothing is diverted:
# they say nothing a user can act on. Only lines starting with these are dropped.
RUNTIME_NOTICES = ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)


@contextmanager
def without_runtime_notices(notices: tuple[str, ...] = RUNTIME_NOTICES) -> Iterator[None]:
    """Run a block (preparing a TFLite interpreter) with descriptor 2 captured, then write back every
    captured line except the known notices: `trapcam run` on a device keeps a quiet screen and
    journal, and any other native message (an error, a warning) still reaches stderr, after the
    block. Where the desktop commands already divert native output to a file, nothing changes."""
    if _diverted is not None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="backslashreplace")
            kept = "".join(line for line in text.splitlines(keepends=True) if not line.startswith(notices))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def diverted_to() -> Path | None:
    """The native log file of this process, or None when nothing was diverted."""
    return _diverted


__all__ = [
    "RUNTIME_NOTICES",
    "divert_native_stderr",
    "diverted_to",
    "quiet_environment",
    "without_runtime_notices",
]
