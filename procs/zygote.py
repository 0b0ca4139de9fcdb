"""Fork server: the children start as forks of one process that has already imported them.

A fresh interpreter spends ~0.6-1.2 s of CPU importing numpy, numba, pydantic and the child's
modules before its first heartbeat; an instance boot paid that eight times (9.5 s of CPU for a
6 s start on an idle 2-core box), and every restart of a child paid it again. The supervisor
starts this server once; it imports every child's module (`procs.run.MODULES`) and loads the
numba kernels, then forks a child per request, in a few milliseconds and a few pages of
copy-on-write memory.

Protocol on the socket pair the supervisor passes (file descriptor in argv): the supervisor
starts the server before it compiles the kernels, so the server's imports run meanwhile, and
writes `kernels\\n` once they are in the cache; the server loads them and writes `ready\\n`.
Each request is a line `NAME SLOT\\n`, answered with the child's pid as a line. The child is
forked twice (the middle process exits at once), so it is re-parented to the supervisor, which
is a child subreaper (`PR_SET_CHILD_SUBREAPER`): the supervisor waits for it, signals it and
restarts it exactly as a child it spawned itself, and the child arms its death signal
(`procs.orphan.die_with_parent`) once the supervisor is its parent. The server exits when the
supervisor closes its end or dies (its own death signal); the supervisor then falls back to
`posix_spawn` of a fresh interpreter (`procs.forkserver`).
"""

from __future__ import annotations

from procs.malloc import tune_malloc
from procs.orphan import EXIT_PARENT_GONE, PARENT_ENV, die_with_parent

if __name__ == "__main__":
    die_with_parent()
    tune_malloc()  # inherited by every fork

import importlib  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

REPARENT_WAIT_S = 10.0  # a forked child waits this long for the supervisor to adopt it
PR_SET_NAME = 15
NOT_PRELOADED = frozenset({"storage"})
"""Children whose modules start threads on import (storage: pyarrow's jemalloc background
thread): a fork copies only the forking thread, so the server stays free of them and such a
child imports its own after the fork. numpy's OpenBLAS pool re-creates itself after a fork."""


def preload() -> None:
    """Import every child's module (a module that fails to import is left to the child, which
    reports it as a boot failure the way a fresh interpreter would)."""
    from procs.run import MODULES

    for kind, module in MODULES.items():
        if kind in NOT_PRELOADED:
            continue
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - reported by the child that needs it
            pass


def load_kernels() -> None:
    """The numba kernels, from the cache the supervisor has just filled: the children's own
    warm-ups then find them loaded."""
    try:
        from procs.instance import warm_kernels

        warm_kernels()
    except Exception:  # noqa: BLE001 - each child loads (and reports) its own, as without a server
        pass


def _name_process(name: str) -> None:
    """The child's name as its `comm` (ps -o comm, top), since its argv stays the server's."""
    import ctypes

    try:
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def child_main(name: str, slot: int) -> None:
    """In the forked child: wait to be adopted by the supervisor, arm the death signal, run."""
    code = 1
    try:
        sup = int(os.environ.get(PARENT_ENV, "0"))
        end = time.monotonic() + REPARENT_WAIT_S
        while sup and os.getppid() != sup:
            if time.monotonic() > end:
                os._exit(EXIT_PARENT_GONE)
            time.sleep(0.0005)
        die_with_parent()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _name_process(name)
        sys.argv = ["procs.run", name, "--slot", str(slot)]
        from procs.run import main

        code = main([name, "--slot", str(slot)])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the exit status is the report; the trace goes to the log
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(fd: int) -> int:
    """Answer spawn requests on `fd` until the supervisor closes it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the supervisor, as for the children
    sock = socket.socket(fileno=fd)
    preload()  # meanwhile the supervisor compiles or loads the kernels
    reader = sock.makefile("rb")
    if reader.readline().strip() != b"kernels":  # they are in the cache now
        return 0
    load_kernels()
    sock.sendall(b"ready\n")
    for line in reader:
        try:
            name, slot_text = line.decode().split()
            slot = int(slot_text)
        except ValueError:
            sock.sendall(b"0\n")
            continue
        middle = os.fork()
        if middle == 0:
            try:
                pid = os.fork()
            except OSError:
                pid = -1  # answered as 0: the supervisor spawns this child itself
            if pid == 0:
                reader.close()
                sock.close()
                child_main(name, slot)
            try:
                sock.sendall(f"{max(pid, 0)}\n".encode())
            finally:
                os._exit(0)
        os.waitpid(middle, 0)
    return 0


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1])))
