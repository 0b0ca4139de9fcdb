"""The fork server (`procs.zygote`): children start as forks of a process that has imported them,
yet remain the supervisor's own children (it waits for them, restarts them, and they die with
it); when the server is gone, children start as fresh interpreters, and the instance goes on.
With `fork_server = false` every child is a fresh interpreter."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from procs.status import children, pid_alive
from tests.procs.instance import Instance, child
from tests.support import eventually


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read().replace(b"\0", b" ").decode()


def _comm(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as fh:
        return fh.read().strip()


def _server(sup: int) -> int:
    """The supervisor's child running procs.zygote (0: none)."""
    return next((k for k in children(sup) if pid_alive(k) and "procs.zygote" in _cmdline(k)), 0)


def _instance(tmp_path: Path, **env: str) -> Iterator[Instance]:
    i = Instance(tmp_path, f"fs{os.getpid()}", SCANNER_SYMBOLS="200", SCANNER_SCAN_WORKERS="1", **env)
    i.start()
    try:
        yield i
    finally:
        i.close()


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Instance]:
    yield from _instance(tmp_path)


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Instance]:
    yield from _instance(tmp_path, SCANNER_FORK_SERVER="false")


@pytest.mark.slow
def test_forked_children_are_the_supervisors_and_restart_without_the_server(inst: Instance) -> None:
    st = eventually(inst.all_running, 300, 0.2, "instance up")
    assert inst.proc is not None
    sup = inst.proc.pid
    server = _server(sup)
    assert server, "no fork server"
    for p in st["processes"]:
        if p["name"] == "supervisor":
            continue
        assert _ppid(p["pid"]) == sup, p  # adopted: waited for, signalled and restarted by the supervisor
        assert "procs.zygote" in _cmdline(p["pid"]) and _comm(p["pid"]) == p["name"][:15], p
    # a killed child comes back as a fork, the supervisor's child again
    old = child(st, "publisher")["pid"]
    os.kill(old, signal.SIGKILL)
    new = eventually(lambda: (c := child(inst.status(), "publisher"))["pid"] != old and c["state"] == "running"
                     and c["pid"], 60, 0.05, "publisher restarted")
    assert _ppid(new) == sup and "procs.zygote" in _cmdline(new)
    # without the server, a restart spawns a fresh interpreter and the instance goes on
    os.kill(server, signal.SIGKILL)
    os.kill(new, signal.SIGKILL)
    fresh = eventually(lambda: (c := child(inst.status(), "publisher"))["pid"] != new and c["state"] == "running"
                       and c["pid"], 120, 0.05, "publisher restarted without the server")
    assert _ppid(fresh) == sup and "procs.run publisher" in _cmdline(fresh)
    eventually(inst.all_running, 60, 0.2, "instance still up")
    # the supervisor stops cleanly, children and all
    pids = [p["pid"] for p in inst.status()["processes"]]
    inst.proc.send_signal(signal.SIGTERM)
    assert inst.proc.wait(timeout=120) == 0
    eventually(lambda: not any(pid_alive(p) for p in pids), 10, 0.1, "every process gone")


@pytest.mark.slow
def test_without_the_fork_server_children_are_fresh_interpreters(plain: Instance) -> None:
    st = eventually(plain.all_running, 300, 0.2, "instance up")
    assert plain.proc is not None
    assert _server(plain.proc.pid) == 0
    for p in st["processes"]:
        if p["name"] != "supervisor":
            assert f"procs.run {p['name']}" in _cmdline(p["pid"]), p


def test_a_late_fork_of_an_unanswered_request_is_killed() -> None:
    """After a request timed out, an adopted fork the supervisor does not know is killed (it would
    run beside the child the supervisor started itself); a known one, or one after the watch, is
    left alone."""
    import subprocess
    import sys
    import time

    from procs.forkserver import ForkServer

    argv = [sys.executable, "-c", "import time; time.sleep(120)", "procs.zygote"]  # a fork's command line
    stray, known = subprocess.Popen(argv), subprocess.Popen(argv)
    fs = ForkServer.__new__(ForkServer)  # no server: only the sweep's bookkeeping
    fs.pid, fs.sock = 0, None
    try:
        fs.stray_until = 0.0
        fs.sweep({known.pid: None})
        assert stray.poll() is None  # no unanswered request: nothing swept
        fs.stray_until = time.monotonic() + 30
        fs.sweep({known.pid: None})
        assert stray.wait(10) == -signal.SIGKILL
        assert known.poll() is None
    finally:
        for p in (stray, known):
            p.kill()
            p.wait()
