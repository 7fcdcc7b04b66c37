"""`train.allocator.keep_freed_memory`: freed buffers stay mapped, so a training step stops faulting
the same pages in again (a third of the demo's training time was system time before)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Buffers of a few megabytes allocated and freed in cycles, like a training step's activations;
# prints the minor page faults of 20 cycles after a first one.
CYCLES = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from train.allocator import keep_freed_memory
    assert keep_freed_memory()
def cycle():
    buffers = [np.ones(n, np.uint8) for n in (3 << 20, 5 << 20, 1 << 20, 7 << 20, 2 << 20, 6 << 20)]
    del buffers
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CYCLES, mode], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return int(out.stdout.strip())


def test_freed_buffers_are_not_faulted_in_again() -> None:
    default, kept = _faults("default"), _faults("keep")
    # glibc's defaults hand the memory back and fault it in again each cycle (26,000 faults here)
    assert default > 2000, default
    assert kept < 200, kept
