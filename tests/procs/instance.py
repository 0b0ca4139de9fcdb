"""A real instance (`scanner start --foreground` as a subprocess) for the process tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from procs.shared import instance_segments
from tests.support import free_port

SCANNER = [sys.executable, "-m", "cli.app"]


class Instance:
    """`scanner start --foreground` as a subprocess with its own name, data dir and port."""

    def __init__(self, tmp: Path, name: str, **env: str) -> None:
        self.name = name
        self.data_dir = tmp / "data"
        self.port = free_port()
        self.env = dict(os.environ)
        self.env.update({
            "SCANNER_INSTANCE": name, "SCANNER_DATA_DIR": str(self.data_dir), "SCANNER_SYMBOLS": "600",
            "SCANNER_SCAN_WORKERS": "2", "SCANNER_HTTP_PORT": str(self.port), "SCANNER_FEED_RATE": "3000",
            "SCANNER_SCAN_INTERVAL_MS": "200",
            # not a stall test: a loaded 2-core machine must never look like a stall (tests of
            # stall detection set their own, short, timeout)
            "SCANNER_HEARTBEAT_TIMEOUT_S": "10",
            "SCANNER_CHECKPOINT_INTERVAL_S": "2",
            "SCANNER_BOOT_TIMEOUT_S": "120",  # shared 2-core test machines can take a minute to import
        })
        self.env.update(env)
        self.log = tmp / f"{name}.out"
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*SCANNER, *args], env=self.env, capture_output=True, text=True, check=check,
                              timeout=60)

    def start(self) -> None:
        self.proc = subprocess.Popen([*SCANNER, "start", "--foreground"], env=self.env,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

    def status(self) -> dict:
        """The `scanner status --json` object, read in-process (a CLI round trip costs ~0.5 s of
        interpreter start-up, too coarse for the restart-within-2-s checks)."""
        from procs.status import collect
        from scanner.config import Settings

        return collect(Settings(instance=self.name, data_dir=self.data_dir))

    def cli_status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout.strip().splitlines()[-1])

    def all_running(self) -> dict | None:
        st = self.status()
        ok = st["processes"] and all(p["alive"] and p["state"] == "running" for p in st["processes"])
        return st if ok else None

    def symbol_with_a_closed_bar(self) -> str:
        """A symbol whose bar history holds a closed bar (read from the instance's shared memory)."""
        import numpy as np

        from procs.shared import Shared

        sh = Shared.attach(self.name)
        try:
            return sh.table.key_list()[int(np.flatnonzero(sh.history.head)[0])]
        finally:
            sh.close()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        """Teardown, also after a failure: stop (kill past the deadline), unlink leftovers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for name in instance_segments(self.name):  # never leave segments behind
            os.unlink(f"/dev/shm/{name}")


def child(st: dict, name: str) -> dict:
    return next(p for p in st["processes"] if p["name"] == name)
