"""The hardware assumptions every lock-free structure in `shm/` relies on, checked once.

Contract (relied on by `seqlock`, `ring` and `control`):

* Linux with POSIX shared memory in /dev/shm (segments are files there, mapped MAP_SHARED).
* x86-64 (TSO): stores become visible to other cores in program order, loads are not
  reordered with other loads, and an aligned 8-byte load or store is atomic. The seqlock and
  ring protocols only need "store A then store B" to be seen in that order and "load B then
  load A" to observe it; TSO gives both without fences. Copies go through numpy/memcpy; glibc's
  memcpy ends its non-temporal (streaming) path with an SFENCE, so large copies keep the order.
* Every counter is an aligned int64 written by exactly one process.

On weakly-ordered CPUs (aarch64, POWER) plain stores may be reordered and the protocols would
let torn reads through, so we refuse to start there rather than run incorrectly.
"""

from __future__ import annotations

import os
import platform
import sys

SUPPORTED_MACHINES = frozenset({"x86_64", "amd64", "AMD64"})


class UnsupportedPlatform(RuntimeError):
    """The memory-ordering contract of `shm/` does not hold on this machine."""


def check_memory_model() -> None:
    """Raise `UnsupportedPlatform` unless this is x86-64 Linux with /dev/shm."""
    machine = platform.machine()
    if not sys.platform.startswith("linux"):
        raise UnsupportedPlatform(f"shared-memory engine needs Linux, this is {sys.platform}")
    if machine not in SUPPORTED_MACHINES:
        raise UnsupportedPlatform(
            f"shared-memory engine relies on x86-64 store ordering (TSO); this CPU is {machine!r}"
        )
    if not os.path.isdir("/dev/shm"):
        raise UnsupportedPlatform("/dev/shm is missing: POSIX shared memory is not available")
