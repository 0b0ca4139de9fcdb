"""The supervisor's side of the fork server (`procs.zygote`): start it, ask it for children,
and fall back to `posix_spawn` of a fresh interpreter whenever it cannot answer.

Any failure (the server died, did not get ready in time, answered garbage, or the kernel
refused the subreaper flag) turns the server off for the rest of the instance's life and is
logged once; the child in question, and every later one, is spawned as before. So the server
can only make a start cheaper, never stop one.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import time

log = logging.getLogger("scanner.supervisor")

PR_SET_CHILD_SUBREAPER = 36
READY_TIMEOUT_S = 60.0  # the server's imports on a loaded machine (a fresh child pays the same)
ANSWER_TIMEOUT_S = 5.0  # a fork takes milliseconds; the supervisor's loop (systemd watchdog: 10 s) waits meanwhile
STRAY_WATCH_S = 60.0  # after a request went unanswered, how long a late fork of it is looked for


def become_subreaper() -> bool:
    """Adopt orphaned descendants (the fork server's children) instead of init."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class ForkServer:
    """One `procs.zygote` process and its socket; `spawn(name, slot)` -> pid, or 0 (not used)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.pid = 0
        self.sock: socket.socket | None = None
        self.ready = False
        self._buf = b""
        self.stray_until = 0.0  # a request went unanswered: its child may still be forked and adopted
        self.ready_by = 0.0  # the deadline of the server's `ready`, from `kernels_ready` (0: not sent yet)
        if not become_subreaper():
            log.warning("fork server off: the kernel refused PR_SET_CHILD_SUBREAPER")
            return
        ours, theirs = socket.socketpair()
        try:
            os.set_inheritable(theirs.fileno(), True)
            argv = [sys.executable, "-m", "procs.zygote", str(theirs.fileno())]
            self.pid = os.posix_spawn(sys.executable, argv, env)
        except OSError as exc:
            ours.close()
            log.warning("fork server off: %s", exc)
            return
        finally:
            theirs.close()
        self.sock = ours

    def kernels_ready(self) -> None:
        """Tell the server the numba cache is filled (it loads the kernels, then serves)."""
        if self.sock is not None:
            self.ready_by = time.monotonic() + READY_TIMEOUT_S  # from here: a cold compile is long
            try:
                self.sock.sendall(b"kernels\n")
            except OSError as exc:
                log.warning("fork server off (%s): children start as fresh interpreters", exc)
                self.close()

    def _line(self, deadline: float) -> bytes:
        assert self.sock is not None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer")
            self.sock.settimeout(left)
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the fork server exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def spawn(self, name: str, slot: int) -> int:
        """A forked child's pid, or 0 when the caller must spawn it itself."""
        if self.sock is None:
            return 0
        try:
            if not self.ready:
                if not self.ready_by:
                    raise ConnectionError("spawn before kernels_ready")
                if self._line(self.ready_by) != b"ready":
                    raise ConnectionError("unexpected greeting")
                self.ready = True
            self.sock.sendall(f"{name} {slot}\n".encode())
            self.stray_until = time.monotonic() + STRAY_WATCH_S  # until answered
            pid = int(self._line(time.monotonic() + ANSWER_TIMEOUT_S))
            self.stray_until = 0.0
            if pid <= 0:
                log.warning("fork server could not fork %s: spawning it", name)
            return max(pid, 0)
        except (OSError, ValueError) as exc:  # TimeoutError and ConnectionError are OSErrors
            log.warning("fork server off (%s): children start as fresh interpreters", exc or type(exc).__name__)
            self.close()
            return 0

    def sweep(self, known: set[int] | dict[int, object]) -> None:
        """Kill any adopted fork of an unanswered request (a child the supervisor does not know
        would run beside the one it started itself): for a while after a request timed out."""
        if not self.stray_until:
            return
        if time.monotonic() > self.stray_until:
            self.stray_until = 0.0
            return
        from procs.status import children

        for pid in children(os.getpid()):
            if pid in known:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if b"procs.zygote" not in fh.read():
                        continue
                os.kill(pid, signal.SIGKILL)
                log.warning("killed pid %d: a fork of a request the fork server answered too late", pid)
            except OSError:
                continue

    def close(self) -> None:
        """Stop the server (it exits on end of file; a stuck one is killed)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.pid = 0
