"""The replay feed of the ingest process: recorded trade files -> tick ring, paced by event time.

Run by `procs.ingest` when `feed = "replay"`. What differs from a live feed:

* **Flow control** (replay only; live feeds never block): before each publish ingest waits while
  `ring.head - cursor(bars) > capacity / 2`, so a replay at any speed never laps the bars
  consumer. Nothing is published before indicators has attached its bar-ring consumer (bars'
  tick consumer is attached by the supervisor with the ring, `procs.shared`), and (up to
  `boot_timeout_s`) every child runs.
* **Pacing**: with `replay_speed` X, a tick with event time t is due at wall time
  `w0 + (t - t0) / X` (t0, w0: the first tick) and published in slices: at most one publish
  per `PACE_S` (1 ms), of every tick due by then. A tick may so wait up to a millisecond (a
  live feed's ingest takes its queue every 10 ms when idle), and ingest and bars wake at most a
  thousand times a second instead of once per few ticks: each publish and its hand-off to bars
  cost a fixed few hundred microseconds of numpy calls. With `replay_max`, as fast as bars
  takes them.
* **The feed clock** in the control block belongs to ingest in replay mode (the supervisor
  leaves it at 0, stopped), and it drives the scan cadence (`procs.eventtime`): the clock moves
  only from one scan boundary T (a multiple of `scan_interval_ms` of event time) to the next.
  Ingest publishes every tick with event time <= T, anchors the clock at T
  (`control.set_clock(T, wall, 0)`: speed 0, it never runs on its own), then waits until every
  scan worker has published "scanned up to T" before it publishes any later tick. Bars' watermark
  (`clock - grace`) therefore closes quiet symbols' bars at the same boundary at any speed, and
  every boundary of a trading day is scanned on the same state. A stretch with no ticks across
  a day change (night, weekend) is not stepped through: the day is finished (boundaries up to
  its last minute + grace), then the clock continues at the next day's first tick. Before the
  first tick of each day, ingest announces the day in its progress word and waits until the
  supervisor has written that day's reference columns (`InstanceSetup.roll_reference`).
* **End of data**: once the last ticks are scanned, ingest steps the boundaries up to the last
  minute plus the grace (bars' `close_due` then closes every live bar), writes the report
  `<data_dir>/<instance>.replay.json` (decoder counts and the malformed rows with their line
  numbers), and sets its slot's `cycles` to 1: *feed done*. It then idles until stopped.

Slot fields in replay mode: `n_in` / `n_out` ticks published, `drops` ticks refused by
validation, `errors` malformed rows met by the decoders so far, `cycles` 1 once the feed is
done. A restarted ingest skips the `n_out + drops` ticks it already took (the decode is
deterministic; a batch published but not yet counted when it died comes again and shows as
late ticks), and a finished one stays done.

Decoding runs in a reader thread feeding a short queue: the CSV decoder reads a whole file
before its first batch, and the publishing loop (which beats) must not stall meanwhile.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from procs.eventtime import HandoffBell, ceil_boundary, slots_named, step_ns, wait_progress
from procs.runtime import BootError, Context
from procs.shared import ALERT_CONSUMER_REPLAY, BAR_CONSUMER_INDICATORS, TICK_CONSUMER_BARS
from scanner.config import Settings
from scanner.feeds.common import FeedStats, SymbolMap
from scanner.feeds.replay import ReplayError, open_ticks, spec_from_settings
from scanner.session import MINUTE_NS, NS, day_start_ns, next_day, trading_day
from shm.control import STATE_RUNNING

log = logging.getLogger("scanner.ingest")
PASS_S = 0.01
PACE_S = 0.001  # a paced replay publishes what is due at most once per slice (module docstring)
MAX_BAD_LINES = 100  # malformed rows listed in the report (all are counted)


class Sink(Protocol):
    def push(self, ticks: np.ndarray) -> int: ...


def report_path(settings: Settings) -> Path:
    """Where ingest writes the replay report at the end of data."""
    return settings.run_dir() / f"{settings.instance}.replay.json"


class _Reader:
    """Runs a batch iterator in a daemon thread; `get` hands over batches, then `END` or the
    exception that ended the iterator."""

    END = object()

    def __init__(self, source: Iterator[np.ndarray], depth: int = 4) -> None:
        self.q: queue.Queue[object] = queue.Queue(depth)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(source,), name="replay-reader", daemon=True)
        self.thread.start()

    def _run(self, source: Iterator[np.ndarray]) -> None:
        try:
            for batch in source:
                if not self._put(batch):
                    return
            self._put(self.END)
        except Exception as exc:  # noqa: BLE001 - handed to the loop, which reports it and finishes
            self._put(exc)

    def _put(self, item: object) -> bool:
        while not self.stopped.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float) -> object | None:
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self) -> None:
        self.stopped.set()


class ReplayFeed:
    """Publishes the replay files' ticks into the ring with flow control, owns the feed clock."""

    def __init__(self, ctx: Context, sink: Sink) -> None:
        s = ctx.settings
        self.ctx, self.sink = ctx, sink
        self.ctl = ctx.shared.control
        self.ring = ctx.shared.ticks
        self.bars_cursor = self.ring.consumers[TICK_CONSUMER_BARS: TICK_CONSUMER_BARS + 1]
        self.speed = 0.0 if s.replay_max else float(s.replay_speed)
        self.grace_ns = s.bar_grace_ms * 1_000_000
        self.half = self.ring.capacity // 2
        self.step = max(1, self.ring.capacity // 4)
        self.step_ns = step_ns(s)
        self.max_ts: int | None = None
        self.first_ts: int | None = None
        self.clock = int(self.ctl.header["clock_event_ns"])  # a restarted ingest never moves it back
        self.next_b: int | None = None  # the next scan boundary (event ns) not yet handed off
        self.day = (0, 0)  # [start, end) of the trading day being replayed, epoch ns
        self.scan_slots = slots_named(ctx, b"scan-")
        self.bell = HandoffBell.of(ctx)  # scan workers ring it when they reach a boundary
        self.bars_slot = [self.ctl.slot_index("bars")]  # rung when ticks or a boundary are out
        # the replay command's consumer on each alert ring: never lapped (waited for, like bars)
        self.alert_rings = [(r.consumers[ALERT_CONSUMER_REPLAY: ALERT_CONSUMER_REPLAY + 1], r)
                            for r in ctx.shared.alerts]
        self.ev0 = 0  # pacing anchor: event time ev0 at monotonic w0
        self.w0 = -1.0
        self.slice_at = 0.0  # paced: no publish before this monotonic time (PACE_S)
        self.stats = FeedStats(max_bad=MAX_BAD_LINES)
        self.wall_start_ns = 0  # replay started (decoding included in the feed time)
        self.wall_first_ns = 0
        self.error: str | None = None

    # ------------------------------------------------------------------ main
    def run(self) -> None:
        """Replay everything (unless done by an earlier life of this process), then finish."""
        ctx, slot = self.ctx, self.ctx.slot
        if int(slot["cycles"][0]) >= 1:
            log.info("replay already done (restarted after the end of data)")
            return
        try:
            spec = spec_from_settings(ctx.settings)
        except ReplayError as exc:
            raise BootError(str(exc)) from None
        symbols = SymbolMap(ctx.shared.table.key_list(), grow=False)
        skip = int(slot["n_out"][0]) + int(slot["drops"][0])
        if skip:
            log.info("restarted: skipping the %d ticks already published", skip)
        if not self.wait_ready():
            return
        self.wall_start_ns = time.time_ns()
        log.info("replaying %d files %s", len(spec.files),
                 "as fast as possible" if not self.speed else f"at {self.speed:g}x")
        reader = _Reader(open_ticks(spec, symbols, self.stats, batch_size=ctx.settings.replay_batch))
        try:
            while True:
                if not ctx.should_run():
                    return
                ctx.beat()
                slot["errors"] = self.stats.malformed
                item = reader.get(PASS_S)
                if item is None:
                    continue
                if item is _Reader.END:
                    break
                if isinstance(item, BaseException):
                    self.error = f"decoding stopped: {type(item).__name__}: {item}"
                    log.error("%s", self.error)
                    break
                batch: np.ndarray = item  # type: ignore[assignment]
                if skip:
                    n = min(skip, len(batch))
                    batch, skip = batch[n:], skip - n
                if len(batch) and not self.feed(batch):
                    return
        finally:
            reader.stop()
        if not self.finish():
            return
        self.write_report()
        ctx.slot["errors"] = self.stats.malformed
        ctx.slot["cycles"] = 1  # feed done (read by `scanner replay`)
        log.info("replay done: %s", self.stats.report().splitlines()[0])

    def wait_ready(self) -> bool:
        """Wait until indicators consumes the bar ring (a consumer attaching later starts at the
        head and would miss what came before; bars' tick consumer is attached with the ring) and,
        for up to boot_timeout_s, all children run."""
        ctx = self.ctx
        deadline = time.monotonic() + ctx.settings.boot_timeout_s
        bars_ring = ctx.shared.bars
        while ctx.should_run():
            ctx.beat()
            attached = int(bars_ring.consumers[BAR_CONSUMER_INDICATORS]["attached"])
            slots = self.ctl.slots
            named = [i for i in range(1, len(slots)) if bytes(slots[i]["name"])]
            running = all(int(slots[i]["state"]) == STATE_RUNNING for i in named)
            if attached and (running or time.monotonic() > deadline):
                return True
            time.sleep(0.02)
        return False

    # ------------------------------------------------------------------ publishing
    def feed(self, batch: np.ndarray) -> bool:
        """Publish one batch, handing each scan boundary off on the way (module docstring),
        paced by event time unless --max; False when stopped."""
        ctx = self.ctx
        ts = batch["ts_ns"]
        reach = np.maximum.accumulate(ts)  # sorted even if a few ticks are out of order
        i, n = 0, len(batch)
        while i < n:
            if self.next_b is None or not self.day[0] <= int(ts[i]) < self.day[1]:  # a new trading day
                if self.next_b is not None and not self.finish_day():
                    return False
                d = trading_day(int(ts[i]))
                self.day = (day_start_ns(d), day_start_ns(next_day(d)))
                if not self.announce_day(int(ts[i])):
                    return False
                self.next_b = max(ceil_boundary(int(ts[i]), self.step_ns), self.clock)
            if self.speed and self.w0 < 0:
                self.ev0, self.w0 = int(ts[i]), time.monotonic()
            limit = self.next_b if not self.speed else min(self.next_b, self.target())
            j = int(np.searchsorted(reach, limit, side="right"))  # ticks before the first beyond it
            if j > i:
                if self.speed:  # paced: one publish per slice, of every tick due by then
                    now = time.monotonic()
                    if now < self.slice_at:
                        ctx.beat()
                        ctx.sleep_until(self.slice_at)
                        if not ctx.should_run():
                            return False
                        continue
                    self.slice_at = now + PACE_S
                if not self.publish(batch[i:j]):
                    return False
                i = j
            elif limit >= self.next_b:
                if not self.boundary(self.next_b):
                    return False
                self.next_b += self.step_ns
            else:  # paced: wait until the next tick or boundary is due
                due = self.w0 + (min(int(reach[i]), self.next_b) - self.ev0) / NS / self.speed
                ctx.beat()
                ctx.sleep_until(min(due, time.monotonic() + PASS_S))
                if not ctx.should_run():
                    return False
        return True

    def announce_day(self, first_ns: int) -> bool:
        """A new trading day starts with a tick at `first_ns`: publish it in our progress word and
        wait until the supervisor has loaded that day's reference columns (previous close, average
        volume) and acknowledged in its own word. False when stopped."""
        if first_ns <= self.ctl.progress_of(self.ctx.slot_index):
            return True  # announced by an earlier life of this process
        self.ctl.publish_progress(self.ctx.slot_index, first_ns)
        return wait_progress(self.ctx, [0], first_ns, self.bell)

    def target(self) -> int:
        """Paced replay time now: the event time whose ticks are due."""
        return self.ev0 + int((time.monotonic() - self.w0) * self.speed * NS)

    def publish(self, ticks: np.ndarray) -> bool:
        """Ring + table in slices of a quarter ring, never more than half a ring ahead of bars."""
        ctx = self.ctx
        for k in range(0, len(ticks), self.step):
            part = ticks[k:k + self.step]
            while self.ring.head + len(part) - int(self.bars_cursor["cursor"][0]) > self.half:
                if not ctx.should_run():
                    return False
                ctx.beat()
                time.sleep(0.0005)
            if not self.wall_first_ns:
                self.wall_first_ns = time.time_ns()
            self.sink.push(part)
            self.bell.ring(self.bars_slot)
            ts = part["ts_ns"]
            hi, lo = int(ts.max()), int(ts.min())
            self.max_ts = hi if self.max_ts is None else max(self.max_ts, hi)
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
        return True

    def boundary(self, t_ns: int) -> bool:
        """Hand scan boundary `t_ns` off: anchor the clock there (every tick up to it is in the
        ring), wait until every scan worker has read the state at it (its snapshot: it evaluates
        while the next boundary is prepared, `shm.control`). Before that, while the replay
        command's alert consumer (when attached) is more than half a ring behind, wait: its
        alerts are the replay's result and must not be lapped. False when stopped."""
        ctx = self.ctx
        for cur, ring in self.alert_rings:
            while int(cur["attached"][0]) and ring.head - int(cur["cursor"][0]) > ring.capacity // 2:
                if not ctx.should_run():
                    return False
                ctx.beat()
                time.sleep(0.001)
        if t_ns > self.clock:
            self.clock = t_ns
            self.ctl.set_clock(t_ns, time.time_ns(), 0.0)
            self.bell.ring(self.bars_slot)
        return wait_progress(self.ctx, self.scan_slots, t_ns, self.bell, read=True)

    # ------------------------------------------------------------------ end of data
    def finish_day(self) -> bool:
        """Step the boundaries up to the last minute seen + grace: bars closes every live bar and
        the scans see it. False when stopped."""
        if self.max_ts is None or self.next_b is None:
            return True
        end = self.max_ts - self.max_ts % MINUTE_NS + MINUTE_NS + self.grace_ns
        while self.next_b <= ceil_boundary(end, self.step_ns):
            if not self.boundary(self.next_b):
                return False
            self.next_b += self.step_ns
        return True

    def finish(self) -> bool:
        """End of data: finish the last day, and wait until the workers have evaluated its last
        boundary (`boundary` waits for their snapshots only). False when stopped."""
        if not self.finish_day():
            return False
        last = self.clock
        return not last or wait_progress(self.ctx, self.scan_slots, last, self.bell)

    def write_report(self) -> None:
        st, slot = self.stats, self.ctx.slot
        report = {
            "rows": st.rows, "ticks": st.ticks, "skipped": st.skipped, "malformed": st.malformed,
            "bad_lines": [[src, line, why] for src, line, why in st.bad_lines],
            "published": int(slot["n_out"][0]), "dropped": int(slot["drops"][0]),
            "first_event_ns": self.first_ts, "last_event_ns": self.max_ts,
            "wall_start_ns": self.wall_start_ns, "wall_first_ns": self.wall_first_ns,
            "wall_done_ns": time.time_ns(), "error": self.error,
        }
        path = report_path(self.ctx.settings)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(report))
            os.replace(tmp, path)
        except OSError as exc:
            log.error("cannot write the replay report %s: %s", path, exc)
