"""procs.status's light helpers: the names it spells itself agree with the segment registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from procs.shared import seg_name
from procs.status import collect, control_path, live_pid, read_pid, require_control
from scanner.config import Settings
from shm.segment import SHM_DIR


def test_control_path_is_the_registry_name() -> None:
    for instance in ("default", "east-1", "r_2"):
        assert control_path(instance) == os.path.join(SHM_DIR, seg_name(instance, "ctl"))


def test_a_stopped_instance_is_not_running(tmp_path: Path) -> None:
    name = f"gone{os.getpid()}"
    with pytest.raises(FileNotFoundError, match=f"instance '{name}' is not running"):
        require_control(name)
    with pytest.raises(FileNotFoundError, match="is not running"):
        collect(Settings(instance=name, data_dir=tmp_path))


def test_pidfiles(tmp_path: Path) -> None:
    pidfile = tmp_path / "x.pid"
    assert read_pid(pidfile) is None and live_pid(pidfile) is None
    pidfile.write_text("garbage\n")
    assert read_pid(pidfile) is None
    pidfile.write_text(f"{os.getpid()}\n")
    assert read_pid(pidfile) == os.getpid() and live_pid(pidfile) == os.getpid()
    pidfile.write_text("0\n")
    assert live_pid(pidfile) is None


def test_children_skip_a_thread_that_ended_and_keep_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread of the parent can end between the listing of its tasks and the read of their
    children; the children of the other threads must still be found (the fork server's sweep
    relies on it)."""
    import subprocess
    import sys

    from procs import status

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        real = os.listdir

        def listing(path: str) -> list[str]:
            names = real(path)
            return ["999999999", *names] if path.endswith("/task") else names  # a task that is gone

        monkeypatch.setattr(status.os, "listdir", listing)
        assert child.pid in status.children(os.getpid())
    finally:
        child.kill()
        child.wait()
