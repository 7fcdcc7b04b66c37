"""Keep freed memory in the training process instead of handing it back to the kernel every step.

TensorFlow's CPU kernels allocate and free activation buffers of several megabytes at every step.
With glibc's defaults that memory goes back to the kernel as soon as it is free (the main heap is
trimmed; a thread's own arena unmaps its 64 MiB heaps when they empty) and the next step faults the
same pages in again, zeroed: the demo's training spent 85 of its 240 CPU seconds in the kernel.
One arena for all threads, a fixed trim threshold of 1 GiB, a 256 MiB pad on each heap growth and
a fixed 32 MiB mmap threshold keep those pages mapped: the demo's training took 77 s instead of
124 s on two cores, with bit-identical weights (allocation does not change arithmetic). The memory
stays with the process until it ends, which a training run does. One arena means one lock for
every thread's malloc; with a handful of compute threads that costs less than the page faults.

Call it before TensorFlow starts its threads (a thread keeps the arena it first used): the `train`
and `demo` commands call it first thing, `fit_two_stage` again for callers in their own process.
Only glibc has `mallopt`; elsewhere (macOS, musl) nothing changes and the caller is told so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("trapcam.train")

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

TRIM_THRESHOLD_BYTES = 1 << 30
TOP_PAD_BYTES = 256 << 20
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory (module docstring); True if glibc took all four settings."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl has mallopt as a stub)
    except (OSError, AttributeError, TypeError):
        log.debug("allocator: not glibc (%s); malloc left at its defaults", name)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    taken = [
        mallopt(M_ARENA_MAX, 1),
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        mallopt(M_TOP_PAD, TOP_PAD_BYTES),
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
    ]
    if not all(taken):
        log.debug("allocator: glibc refused a malloc setting (%s)", taken)
    return all(taken)


__all__ = ["keep_freed_memory"]
