"""`scanner bench boot --json`: what an instance's start and a child's restart cost, with the
fork server (`procs/zygote.py`) and with fresh interpreters (`fork_server = false`), alternated.

Each round starts `scanner start --foreground` (synthetic feed, `symbols` symbols, two scan
workers, no Redis or database: the supervisor and seven children) on a data dir of its own,
polls `procs.status.collect` until every process runs, and reads the CPU time (utime + stime,
`/proc/PID/stat`) of the supervisor and each of its children (the fork server included) at
that moment. Then it kills the publisher (`SIGKILL`) and times the supervisor's restart until
the new one runs, and its CPU at that moment. Keys (medians over the rounds):

- `boot_s_fork_server`, `boot_s_fresh`: start to every process running, wall seconds;
- `boot_cpu_s_fork_server`, `boot_cpu_s_fresh`: CPU seconds of the whole instance by then;
  `boot_cpu_ratio`: fresh / fork server;
- `restart_s_fork_server`, `restart_s_fresh`: the kill to the new publisher running (includes
  the supervisor's 0.1 s restart delay); `restart_cpu_s_*`: the new publisher's CPU by then.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs.bench.e2e import cpu_s
from procs.bench.services import free_port


def _wait(fn: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            got = fn()
        except Exception:  # noqa: BLE001 - not up yet (segments, status file)
            got = None
        if got:
            return got
        time.sleep(0.02)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def one_round(work: Path, fork_server: bool, symbols: int, tag: str) -> dict[str, float]:
    """Start, measure, restart the publisher, stop; the round's figures."""
    from procs.status import children, collect
    from scanner.config import Settings

    name = f"boot{os.getpid()}{tag}"
    data = work / name
    env = dict(os.environ, SCANNER_INSTANCE=name, SCANNER_DATA_DIR=str(data), SCANNER_SYMBOLS=str(symbols),
               SCANNER_SCAN_WORKERS="2", SCANNER_HTTP_PORT=str(free_port()),
               SCANNER_FORK_SERVER=str(fork_server).lower(), SCANNER_BOOT_TIMEOUT_S="120",
               SCANNER_HEARTBEAT_TIMEOUT_S="10")
    env.pop("SCANNER_REDIS_URL", None)
    settings = Settings(instance=name, data_dir=data)

    def running() -> dict | None:
        st = collect(settings)
        ok = st["processes"] and all(p["alive"] and p["state"] == "running" for p in st["processes"])
        return st if ok else None

    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "cli.app", "start", "--foreground"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        st = _wait(running, 300, "the instance running")
        boot_s = time.monotonic() - t0
        boot_cpu = cpu_s(proc.pid) + sum(cpu_s(c) for c in children(proc.pid))
        old = next(p["pid"] for p in st["processes"] if p["name"] == "publisher")
        t1 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        new = _wait(lambda: next((p["pid"] for p in collect(settings)["processes"] if p["name"] == "publisher"
                                  and p["pid"] != old and p["state"] == "running"), None), 120, "the restart")
        restart_s = time.monotonic() - t1
        restart_cpu = cpu_s(new)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"boot_s": boot_s, "boot_cpu_s": boot_cpu, "restart_s": restart_s, "restart_cpu_s": restart_cpu}


def bench_boot(rounds: int = 3, symbols: int = 600) -> dict[str, Any]:
    """Run the benchmark; see the module docstring for the keys."""
    work = Path(tempfile.mkdtemp(prefix="scanner-boot-"))
    got: dict[str, list[dict[str, float]]] = {"fork_server": [], "fresh": []}
    try:
        for r in range(rounds):
            for mode in ("fork_server", "fresh") if r % 2 == 0 else ("fresh", "fork_server"):
                got[mode].append(one_round(work, mode == "fork_server", symbols, f"{mode[:2]}{r}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {"benchmark": "boot", "rounds": rounds, "symbols": symbols}
    for mode, runs in got.items():
        for key in ("boot_s", "boot_cpu_s", "restart_s", "restart_cpu_s"):
            out[f"{key}_{mode}"] = round(statistics.median(r[key] for r in runs), 3)
    out["boot_cpu_ratio"] = round(out["boot_cpu_s_fresh"] / max(out["boot_cpu_s_fork_server"], 1e-9), 2)
    out["runs"] = got
    return out
