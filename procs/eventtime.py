"""Event-time hand-offs of a replay: scan boundaries on the feed clock, progress words, waiting.

In a replay (`feed = "replay"`) the feed's clock, not the wall clock, drives the scan cadence:
ingest anchors the clock at each scan boundary T (a multiple of `scan_interval_ms` of event
time) once every tick up to T is published, and the chain bars -> indicators -> scan workers
each publish "done up to T" in their control-block progress word (`shm.control`, where the
ordering contract is stated). Ingest publishes nothing after T before every scan worker reached
T, so every boundary is scanned, on the same state, at any speed and batch size. Live
processes never call any of this: the wall clock drives them as before.
"""

from __future__ import annotations

import time

from procs.runtime import Context
from scanner.config import Settings

POLL_S = 0.0002  # a hand-off wait: short enough that a boundary costs little, long enough to yield


def event_mode(settings: Settings) -> bool:
    """True when the feed clock drives the scan cadence (a replay)."""
    return settings.feed == "replay"


def step_ns(settings: Settings) -> int:
    """Event time between two scan boundaries."""
    return settings.scan_interval_ms * 1_000_000


def ceil_boundary(t_ns: int, step: int) -> int:
    """The first boundary at or after `t_ns` (boundaries are multiples of `step` since the epoch)."""
    return -(-t_ns // step) * step


def slots_named(ctx: Context, prefix: bytes) -> list[int]:
    """Control-block slots whose process name starts with `prefix` (e.g. b"scan-")."""
    slots = ctx.shared.control.slots
    return [i for i in range(len(slots)) if bytes(slots[i]["name"]).startswith(prefix)]


def wait_progress(ctx: Context, slots: list[int], t_ns: int) -> bool:
    """Wait until every slot in `slots` is done up to `t_ns`, beating; False when stopping."""
    ctl = ctx.shared.control
    while True:
        if all(ctl.progress_of(s) >= t_ns for s in slots):
            return True
        if not ctx.should_run():
            return False
        ctx.beat()
        time.sleep(POLL_S)
