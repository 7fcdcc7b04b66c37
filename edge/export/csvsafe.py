"""CSV cells that are safe to open in a spreadsheet, and files that are replaced atomically.

Why escaping: label names come from model files that users download; a label such as
`=HYPERLINK("http://...")` or `+1` would run as a formula when an ecologist opens the CSV in a
spreadsheet. Every text cell starting with = + - @ (or a tab or carriage return) gets a leading
single quote, which spreadsheets show as text. Numbers written by us are `Num` and never escaped
(a negative longitude must stay a number).

Why atomic: the export runs from a timer while someone may be copying the folder; a reader must
see the old file or the new one, never half of one. The new bytes go to a temporary file in the
same folder, are flushed to disk and then renamed over the old file. When the bytes are the same
as the file already there, nothing is written (the mtime stays, rsync sees no change).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from edge.errors import ExportError

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class Num(str):
    """A number already formatted by us: written as is, never escaped."""


def fixed(value: float | int | None, digits: int) -> Num | None:
    """A float with a fixed number of decimals (stable text across runs and platforms)."""
    if value is None:
        return None
    return Num(f"{float(value):.{digits}f}")


def integer(value: int | None) -> Num | None:
    return None if value is None else Num(str(int(value)))


def safe_cell(value: object) -> str:
    """Text for one cell: None is empty, booleans are true/false, text is formula-escaped."""
    if value is None:
        return ""
    if isinstance(value, Num):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise ExportError(f"csv: float {value!r} without a fixed format (use fixed())")  # a bug, not input
    text = str(value)
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def render_csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """UTF-8 CSV with '\\n' line ends and minimal quoting: the same rows always give the same bytes."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow([safe_cell(h) for h in header])
    for row in rows:
        if len(row) != len(header):
            raise ExportError(f"csv: row has {len(row)} cells, header {len(header)}")  # a bug, not input
        writer.writerow([safe_cell(v) for v in row])
    return buf.getvalue().encode("utf-8")


def atomic_write(path: Path, data: bytes | Iterable[bytes]) -> bool:
    """Replace `path` with `data` atomically; returns False when the file already held these bytes.

    `data` may be an iterable of chunks: if producing them fails midway, the old file is kept
    and the temporary file removed.
    """
    path = Path(path)
    if isinstance(data, (bytes, bytearray)):
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
                return False
        chunks: Iterable[bytes] = (bytes(data),)
    else:
        chunks = data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ExportError(f"{path}: cannot write: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise ExportError(f"{path}: cannot write: {exc.strerror or exc}; the old file was kept") from None
        raise
    _fsync_dir(path.parent)
    return True


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (power loss right after an export)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
