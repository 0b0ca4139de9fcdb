"""A child never outlives its supervisor. Standard library only: `procs.run` calls this before
importing anything heavy (numpy, numba, FastAPI take seconds on a busy machine), so the window
in which a supervisor's death goes unnoticed is the interpreter's start-up, not the imports."""

from __future__ import annotations

import ctypes
import os
import signal

PARENT_ENV = "SCANNER_SUPERVISOR_PID"  # the pid a child's parent must have (set by the supervisor)
EXIT_PARENT_GONE = 4  # a child whose supervisor died before it could arm the death signal
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent (the supervisor) dies, whatever it
    is doing (importing, compiling a kernel, blocked in I/O): no orphan keeps writing into an
    abandoned instance (prctl PR_SET_PDEATHSIG). If the parent is already gone, exit now."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os.write(2, f"prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}\n".encode())
    want = os.environ.get(PARENT_ENV)
    if want and os.getppid() != int(want):  # the parent died before the prctl took effect
        os._exit(EXIT_PARENT_GONE)
