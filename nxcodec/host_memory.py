"""Large arrays without a page fault each: glibc's malloc is told to keep freed blocks for reuse.

Set by a fit on the CPU, by nxcodec's command line (every command handles large arrays: decoding a full-size
Kodak image allocates tens of megabytes per layer too) and by its worker processes; not by merely importing
nxcodec, since it changes the whole process's allocator.

A fit allocates and frees tensors of tens of megabytes in every iteration (a full-size Kodak image's hidden
activations are 393k x 24 floats, 38 MB). glibc serves a block above its mmap threshold from a fresh mapping
and unmaps it when freed, so each such tensor's pages fault in again, one by one: on this project's CPU an
iteration of a full-size image at quality 5 went from 464-498 ms to 349-489 ms once the blocks were kept
(bench/results/fit_speed_cpu). Raising the mmap threshold and the trim threshold keeps those
blocks in the heap: the process keeps its peak memory instead of returning it between iterations, which a fit
reaches again at every iteration anyway.
"""

from __future__ import annotations

import ctypes
import functools
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GB come from the heap
TRIM_THRESHOLD = 2**31 - 1  # and freed memory stays there


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed large blocks, once per process; False where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False
