"""`train.allocator.keep_freed_memory`: freed buffers stay mapped, so a training step stops faulting
the same pages in again (a third of the demo's training CPU time was in the kernel before)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Buffers of a few megabytes allocated and freed in cycles, like a training step's activations, in
# the main thread and in a thread of its own (TensorFlow's kernels run in its threads, whose arenas
# glibc unmaps when they empty); prints the minor page faults of 20 cycles in each, after a first one.
CYCLES = """
import resource, sys, threading
import numpy as np
if sys.argv[1] == "keep":
    from train.allocator import keep_freed_memory
    assert keep_freed_memory()
def cycles(k):
    for _ in range(k):
        buffers = [np.ones(n, np.uint8) for n in (3 << 20, 5 << 20, 1 << 20, 7 << 20, 2 << 20, 6 << 20)]
        del buffers
def in_thread(k):
    worker = threading.Thread(target=cycles, args=(k,))
    worker.start()
    worker.join()
def faults(run):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run(20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
cycles(1)
in_thread(1)
print(faults(cycles), faults(in_thread))
"""


def _faults(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", CYCLES, mode], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    main, thread = out.stdout.split()
    return int(main), int(thread)


def test_freed_buffers_are_not_faulted_in_again_in_any_thread() -> None:
    default, kept = _faults("default"), _faults("keep")
    # glibc's defaults hand the memory back and fault it in again each cycle (about 26,000 faults)
    assert min(default) > 2000, default
    assert max(kept) < 200, kept
