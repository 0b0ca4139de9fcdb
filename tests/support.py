"""Test helpers: polling waits; the throwaway local services live in `procs.bench.services` (the
benchmarks start them too) and are re-exported here."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from procs.bench.services import MotoServer, PostgresServer, TansuServer, free_port
from procs.bench.services import RedisService as RedisServer

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

__all__ = ["REPO", "SHARED_DATA", "MotoServer", "PostgresServer", "RedisServer", "TansuServer", "eventually",
           "free_port",
           "stop_pid"]


def eventually(fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll `fn` until it returns a truthy value (returned) or raise after `timeout` seconds.
    Exceptions inside `fn` count as "not yet"; the last one is chained."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as exc:  # noqa: BLE001
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or fn}") from last
        time.sleep(interval)


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
