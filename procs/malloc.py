"""glibc malloc settings of the pipeline's processes: freed blocks stay in the heap for reuse.

Every cycle allocates and frees the same numpy temporaries (a minute close's bar batches, the
copies the kernels return, the live-value intermediates): hundreds of KB to a few MB each.
glibc's defaults hand such blocks back to the kernel (blocks above the mmap threshold are
unmapped on free; a free top of heap above the trim threshold is trimmed), so the next cycle
faults every page in again. On these virtual machines a fault costs about 3 µs: the 16:00
close of every timeframe took 469 faults (~1.3 ms) for the same arrays each day. Fixed
thresholds keep up to `TRIM_BYTES` of free heap per process instead (RSS stays at the cycle's
peak, not the idle level), and only blocks above `MMAP_BYTES` get their own mapping.
Standard library only, so `procs.run` can call it first."""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 32 << 20  # glibc's ceiling for this setting on 64-bit
TRIM_BYTES = 64 << 20


def tune_malloc() -> bool:
    """Apply the thresholds (module doc); False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_BYTES))
