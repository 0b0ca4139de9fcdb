"""A real instance for the soak and fault programmes: `scanner start --foreground` as a child
process with its own name, data directory and port, plus the readings they take from it (status,
RSS per process, the bar history)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs.bench.services import free_port
from procs.shared import Shared, instance_segments
from procs.status import collect, pid_alive
from scanner.config import Settings


class LiveInstance:
    def __init__(self, name: str, workdir: Path | None = None, **settings: Any) -> None:
        self.name = name
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{name}-"))
        self.data_dir = self.workdir / "data"
        self.env = dict(os.environ, SCANNER_INSTANCE=name, SCANNER_DATA_DIR=str(self.data_dir),
                        SCANNER_HTTP_PORT=str(free_port()))
        self.env.update({f"SCANNER_{k.upper()}": str(v) for k, v in settings.items()})
        self.log = self.workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.app", "start", "--foreground"], env=self.env,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

    def status(self) -> dict:
        return collect(Settings(instance=self.name, data_dir=self.data_dir))

    def running(self) -> dict | None:
        try:
            st = self.status()
        except FileNotFoundError:
            return None
        ok = st["processes"] and all(p["alive"] and p["state"] == "running" for p in st["processes"])
        return st if ok else None

    def wait(self, what: str, fn: Any, timeout: float = 300.0, every: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                v = fn()
                if v:
                    return v
            except (FileNotFoundError, KeyError, StopIteration):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: timed out after {timeout:.0f} s waiting for {what}; log {self.log}")
            time.sleep(every)

    def child(self, name: str) -> dict:
        return next(p for p in self.status()["processes"] if p["name"] == name)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def close(self) -> None:
        self.stop()
        for seg in instance_segments(self.name):
            os.unlink(f"/dev/shm/{seg}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tick_total(self) -> int:
        """Ticks counted in the table (a column the kills must never reset)."""
        from scanner.metrics import CATALOGUE

        sh = Shared.attach(self.name)
        try:
            return int(sh.table.i8[CATALOGUE.i8("tick_count")].sum())
        finally:
            sh.close()

    def bar_minutes(self) -> dict[int, list[int]]:
        """Per row, the minutes (epoch minute) of the closed bars in the shared bar history."""
        import numpy as np

        from scanner.metrics import HIST

        sh = Shared.attach(self.name)
        try:  # a consistent copy (the seqlock): a plain one can pair a head with a slot not yet written
            h = sh.history
            full, head = np.empty_like(h.hist), np.empty_like(h.head)
            h.snapshot(full, head)
            hist = full[HIST["minute"]]
        finally:
            sh.close()
        k = hist.shape[1]
        out = {}
        for r in np.flatnonzero(head).tolist():
            n = int(head[r])
            idx = [(i % k) for i in range(max(0, n - k), n)]
            out[r] = [int(hist[r, i]) for i in idx]
        return out


def rss_mb(pid: int) -> float | None:
    """Resident set size of a process (VmRSS), MB; None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if pid_alive(p)]
