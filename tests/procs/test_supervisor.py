"""The running skeleton end to end: real supervisor, real child processes, real segments."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from procs.shared import instance_segments
from tests.procs.instance import Instance, child
from tests.support import eventually


@pytest.fixture
def inst(tmp_path: Path) -> Iterator[Instance]:
    i = Instance(tmp_path, f"t{os.getpid()}", SCANNER_HEARTBEAT_TIMEOUT_S="3")  # a stall is tested here
    i.start()
    try:
        yield i
    finally:
        i.close()


@pytest.mark.slow
def test_lifecycle_restart_checkpoint(inst: Instance) -> None:
    st = eventually(inst.all_running, 60, 0.2, "all processes running")
    assert inst.cli_status()["instance"] == inst.name  # the CLI reads the same object
    names = {p["name"] for p in st["processes"]}
    assert {"ingest", "bars", "indicators", "scan-0", "scan-1", "publisher", "gateway"} <= names
    for key in ("instance", "processes", "ticks_per_s", "scan_p99_ms", "alerts_per_s", "drops"):
        assert key in st
    for p in st["processes"]:
        assert {"name", "pid", "alive", "restarts", "heartbeat_age_ms", "core"} <= set(p)
    # ticks flow into bars, and the scanners cycle
    eventually(lambda: inst.status()["ticks_per_s"] > 0, 20, 0.2, "ticks flowing")
    eventually(lambda: child(inst.status(), "bars")["in"] > 0, 20, 0.2, "bars consuming ticks")
    eventually(lambda: child(inst.status(), "scan-0")["cycles"] > 2, 20, 0.2, "scan cycles")

    # a second start of the same instance refuses, clearly
    r = inst.cli("start", "--foreground", check=False)
    assert r.returncode == 1 and "already running" in r.stderr
    # and so does another instance on the same port (its gateways would share it: procs.instance.PortLock)
    other = Instance(inst.data_dir.parent / "other", f"o{os.getpid()}", SCANNER_HTTP_PORT=str(inst.port))
    r = other.cli("start", "--foreground", check=False)
    assert r.returncode == 1 and f"port {inst.port} is served by another scanner instance" in r.stderr, r.stderr
    assert repr(inst.name) in r.stderr
    assert not instance_segments(other.name)

    # kill -9 of every child: restarted (new pid) within 2 s, restart counted
    for name in ("ingest", "bars", "indicators", "scan-1", "publisher", "gateway"):
        old = child(inst.status(), name)
        os.kill(old["pid"], signal.SIGKILL)
        t0 = time.monotonic()
        def replaced(name: str = name, old_pid: int = old["pid"]) -> bool:
            c = child(inst.status(), name)
            return c["pid"] != old_pid and c["alive"]

        eventually(replaced, 2.0, 0.02, f"{name} restarted")
        assert time.monotonic() - t0 < 2.0
        def running(name: str = name) -> dict | None:
            c = child(inst.status(), name)
            return c if c["state"] == "running" else None

        new = eventually(running, 30, 0.1)
        assert new["restarts"] == old["restarts"] + 1

    # a stalled child (SIGSTOP: alive but no heartbeat) is killed and restarted
    old = child(inst.status(), "scan-0")
    os.kill(old["pid"], signal.SIGSTOP)
    eventually(lambda: child(inst.status(), "scan-0")["pid"] != old["pid"], 15, 0.1, "stalled scan-0 replaced")
    assert "stalled" in inst.output()

    # the table kept its state across restarts: tick counts only grow
    eventually(inst.all_running, 30, 0.2)
    before = _tick_total(inst)
    eventually(lambda: _tick_total(inst) > before, 20, 0.2, "ticks still counted after restarts")

    # clean stop: exit 0, segments unlinked once, checkpoint written
    assert inst.stop() == 0
    assert instance_segments(inst.name) == []
    ckpt = inst.data_dir / f"{inst.name}.checkpoint.npz"
    assert ckpt.exists()
    with np.load(ckpt) as z:
        saved_ticks = int(z["i8"][_tick_count_index()].sum())
    assert saved_ticks >= before

    # a start on the same trading day restores the day
    inst.start()
    eventually(inst.all_running, 60, 0.2)
    assert _tick_total(inst) >= saved_ticks
    assert "restored checkpoint" in inst.output()
    assert inst.stop() == 0


def _tick_count_index() -> int:
    from scanner.metrics import CATALOGUE

    return CATALOGUE.i8("tick_count")


def _tick_total(inst: Instance) -> int:
    from procs.shared import Shared

    sh = Shared.attach(inst.name)
    try:
        return int(sh.table.i8[_tick_count_index()].sum())
    finally:
        sh.close()


@pytest.mark.slow
def test_checkpoint_from_another_day_is_refused(tmp_path: Path) -> None:
    inst = Instance(tmp_path, f"d{os.getpid()}")
    inst.start()
    try:
        eventually(inst.all_running, 60, 0.2)
        assert inst.stop() == 0
        ckpt = inst.data_dir / f"{inst.name}.checkpoint.npz"
        with np.load(ckpt) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(bytes(arrays["meta"]).decode())
        meta["trading_day"] = 20000103
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        np.savez(ckpt, **arrays)
        inst.start()
        eventually(inst.all_running, 60, 0.2)
        assert "is from trading day 20000103" in inst.output() and "not restored" in inst.output()
        assert inst.stop() == 0
    finally:
        inst.close()
