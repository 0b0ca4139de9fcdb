"""Event-time hand-offs of a replay: scan boundaries on the feed clock, progress words, waiting.

In a replay (`feed = "replay"`) the feed's clock, not the wall clock, drives the scan cadence:
ingest anchors the clock at each scan boundary T (a multiple of `scan_interval_ms` of event
time) once every tick up to T is published, and the chain bars -> indicators -> scan workers
each publish "done up to T" in their control-block progress word (`shm.control`, where the
ordering contract is stated). Ingest publishes nothing after T before every scan worker reached
T, so every boundary is scanned, on the same state, at any speed and batch size. It waits
for the workers' snapshots of T (their read words), not their evaluation: the next boundary's
ticks, bars and indicator refresh run while the workers evaluate T on their copies, and the
end of the feed waits for the last boundary's evaluation. Live processes never call any of
this: the wall clock drives them as before.

Hand-offs ring a bell (`HandoffBell`): each process waits for its next step on a Unix datagram
socket of its own (Linux's abstract namespace, named after the instance and its control-block
slot, like the feed bell) instead of sleeping `POLL_S` between checks; whoever makes progress
rings the next process in the chain (ingest -> bars -> indicators -> scan workers -> ingest).
A boundary then costs a few wake-ups, not a few polling periods of several processes sharing
two cores (one a 2-second-cadence real day took 1.36 ms a boundary polling). The progress words
stay the truth: a ring only wakes a waiter early, a waiter still checks the words, and waits
time out after `BELL_WAIT_S` (a ring sent before the waiter bound its socket is not lost for
long). Ringing never blocks and never fails the ringer.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Iterable

from procs.feedbell import bell_address, drain, ring_all
from procs.runtime import Context
from scanner.config import Settings

POLL_S = 0.0002  # a hand-off wait without a bell: short enough that a boundary costs little
BELL_WAIT_S = 0.002  # a hand-off wait with a bell: rings wake it at once; the timeout is the safety net
log = logging.getLogger("scanner.eventtime")


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


class HandoffBell:
    """One process's hand-off bell: `wait` for a ring (or the timeout), `ring` other slots."""

    def __init__(self, instance: str, slot: int) -> None:
        self.instance = instance
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.bound = True
        try:
            self.sock.bind(bell_address(instance, slot, "handoff"))
        except OSError as exc:  # the name is held by another process: poll as before
            self.bound = False
            log.warning("hand-off bell of slot %d not available (%s): polling every %.1f ms", slot, exc,
                        POLL_S * 1e3)
        self.sock.setblocking(False)
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN)

    @classmethod
    def of(cls, ctx: Context) -> HandoffBell:
        return cls(ctx.settings.instance, ctx.slot_index)

    def wait(self, timeout_s: float = BELL_WAIT_S) -> None:
        """Return on a ring (the pending rings are read) or after `timeout_s`."""
        if not self.bound:
            time.sleep(min(timeout_s, POLL_S))
            return
        if self._poll.poll(max(1, round(timeout_s * 1e3))):
            drain(self.sock, 64)

    def ring(self, slots: Iterable[int]) -> None:
        """Wake the processes of `slots` (whoever is bound there; nobody is fine)."""
        ring_all(self.sock, (bell_address(self.instance, s, "handoff") for s in slots))

    def close(self) -> None:
        self.sock.close()


def wait_progress(ctx: Context, slots: list[int], t_ns: int, bell: HandoffBell | None = None, *,
                  read: bool = False) -> bool:
    """Wait until every slot in `slots` is done up to `t_ns` (with `read`: has read the shared
    state up to it, `shm.control`'s read words of the scan workers), beating; False when stopping."""
    ctl = ctx.shared.control
    word = ctl.read_progress_of if read else ctl.progress_of
    while True:
        if all(word(s) >= t_ns for s in slots):
            return True
        if not ctx.should_run():
            return False
        ctx.beat()
        if bell is not None:
            bell.wait()
        else:
            time.sleep(POLL_S)
