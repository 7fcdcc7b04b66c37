"""A few megabytes held back on the data disk, given up the moment the disk is full.

A trap alone in a field fills its card sooner or later (crops, a forgotten video, another
program's log). SQLite needs room for its WAL and shared-memory files to open a database at all,
and a write that fails half way leaves the writer retrying forever: before this file existed a
full disk stopped the trap (exit 4 "disk I/O error" at start; "the writer did not answer" during a
run) while retention had crops it could have deleted.

So the trap keeps `storage.reserve_mb` of zeros in `<data_dir>/.trapcam-reserve`. When the disk
is full (at start, or the writer's first "disk full"), the file is deleted: the database opens or
the writer finishes its batch, retention deletes old images, and a stop can still write its last
rows. It is written again once the disk has room above the retention watermark.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

RESERVE_NAME = ".trapcam-reserve"


class Reserve:
    """The reserve file of one data folder (thread-safe enough: release may come from the writer)."""

    def __init__(self, data_dir: Path, size_mb: float) -> None:
        self.path = Path(data_dir) / RESERVE_NAME
        self.size = int(size_mb * 1024 * 1024)

    @property
    def held(self) -> int:
        """Bytes the reserve holds now (0 when released or never written)."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def ensure(self, free_bytes: int, watermark: int = 0) -> bool:
        """Write the reserve when the disk has room for it above `watermark`; True when it is whole.

        Allocated with posix_fallocate (real blocks, no data written; glibc writes zeros where a
        filesystem cannot allocate) and synced: a reserve that holds no blocks frees nothing.
        A failure (the disk filled meanwhile) removes the partial file and says so.
        """
        if self.size <= 0:
            return True
        have = self.held
        if have >= self.size:
            return True
        if free_bytes - (self.size - have) < watermark:
            return False
        try:
            with open(self.path, "ab") as f:
                os.posix_fallocate(f.fileno(), 0, self.size)
                os.fsync(f.fileno())
        except OSError as exc:
            log.warning("storage: cannot write the %s reserve file: %s", self.path, exc.strerror or exc)
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False
        return True

    def release(self) -> int:
        """Delete the reserve; returns the bytes freed (0 when there was none)."""
        freed = self.held
        try:
            self.path.unlink()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.error("storage: cannot delete the reserve file %s: %s", self.path, exc.strerror or exc)
            return 0
        if freed:
            log.warning(
                "storage: the disk is full; released the %.0f MB reserve (%s) so the trap can go on writing",
                freed / 2**20,
                self.path,
            )
        return freed
