"""Keep freed memory in the process, so XLA:CPU's per-step temporaries are not page-faulted in every step.

XLA:CPU allocates a compiled step's temporaries as one block per run (120 MB for the CPU preset's train step),
from a worker thread. glibc serves a block that large from a fresh mmap and unmaps it on free, so every step
faults all of it in again: 30,000 page faults and about 60 ms of kernel time per step on a 2-core VM, a third
of the step. With one malloc arena, no mmap and no trimming, the block comes back from the heap instead (0
faults per step). PyTorch does not pay this: its tensors are smaller than glibc's adaptive mmap threshold.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # glibc's <malloc.h>


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to reuse freed memory; True if it took (Linux with glibc; elsewhere a no-op).

    Call it before JAX starts (before the first computation): threads keep the arena they started with.
    The process then holds its peak heap until it exits, which is what a training process does anyway.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):  # another C library (musl)
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
    return all(mallopt(option, value) == 1 for option, value in settings)
