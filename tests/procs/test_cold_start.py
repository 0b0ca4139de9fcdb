"""Issue 10.1 with real processes: `scanner demo` whose numba cache is empty (so every kernel
compiles during boot) comes up under a short heartbeat timeout without a single stall.

Marked `own_numba_cache`: it does not wait for the suite's kernel warm-up (tests/conftest.py),
so under `make test` it runs while that warm-up compiles the shared cache."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from procs.shared import instance_segments
from tests.procs.instance import Instance, child
from tests.support import eventually, free_port


@pytest.mark.slow
@pytest.mark.own_numba_cache
def test_first_demo_log_has_no_error_line(tmp_path: Path) -> None:
    """`scanner demo` on a fresh machine (empty numba cache): every kernel compiles during boot,
    yet no child is killed as stalled (with a strict 3 s heartbeat timeout) and the log has no
    ERROR line: the kernels compile once in the supervisor, before any child and any heartbeat
    deadline, and the children load them before their first heartbeat, not in the work loop."""
    name = f"demo{os.getpid()}"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"), SCANNER_INSTANCE=name,
               SCANNER_DATA_DIR=str(tmp_path / "data"), SCANNER_SCAN_WORKERS="2", SCANNER_BOOT_TIMEOUT_S="300",
               SCANNER_HEARTBEAT_TIMEOUT_S="3", SCANNER_FEED_SPEED="30")  # a minute of event time every 2 s
    kernels = ("bars", "indicators", "scan-0", "scan-1")  # the processes that run numba kernels
    log = tmp_path / "demo.log"
    proc = subprocess.Popen([sys.executable, "-m", "cli.app", "demo", "--symbols", "1000", "--port", str(free_port())],
                            env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    inst = Instance(tmp_path, name)
    inst.data_dir = tmp_path / "data"
    try:
        eventually(inst.all_running, 600, 0.5, "the demo running")
        eventually(lambda: child(inst.status(), "scan-0")["cycles"] > 3, 120, 0.2, "scan cycles")
        # ticks aggregated, a minute closed and folded by the indicators: every kernel has run
        eventually(lambda: child(inst.status(), "indicators")["in"] > 0, 120, 0.2, "closed bars folded")
        st = inst.status()
        assert all(child(st, k)["restarts"] == 0 for k in kernels), st["processes"]
        assert any((tmp_path / "numba").rglob("*.nbi"))  # the cache went where it was told
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for seg in instance_segments(name):
            os.unlink(f"/dev/shm/{seg}")
    text = log.read_text(errors="replace")
    assert "numba kernels ready" in text
    assert [ln for ln in text.splitlines() if " ERROR " in ln] == []
    stalls = [ln for ln in text.splitlines() if "stalled" in ln]
    assert not [ln for ln in stalls if any(f" {k} (pid" in ln for k in kernels)], stalls
