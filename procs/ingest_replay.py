"""The replay feed of the ingest process: recorded trade files -> tick ring, paced by event time.

Run by `procs.ingest` when `feed = "replay"`. What differs from a live feed:

* **Flow control** (replay only; live feeds never block): before each publish ingest waits while
  `ring.head - cursor(bars) > capacity / 2`, so a replay at any speed never laps the bars
  consumer. Nothing is published before bars (tick ring) and indicators (bar ring) have
  attached their consumers, and (up to `boot_timeout_s`) every child runs.
* **Pacing**: with `replay_speed` X, a tick with event time t is published at wall time
  `w0 + (t - t0) / X` (t0, w0: the first tick); with `replay_max`, as fast as bars takes them.
* **The feed clock** in the control block belongs to ingest in replay mode (the supervisor
  leaves it at 0, stopped). Ingest anchors it with `control.set_clock(event_ns, wall_ns, 0)`
  every pass, at the latest event time that is safe: the newest tick bars has already taken
  from the ring (ticks still in flight are never overtaken), or, once bars has taken
  everything, the paced replay time (up to just before the next tick). So bars' watermark
  (`ctx.event_now_ns() - grace`) follows the replayed time and closes quiet symbols' bars as
  live. Speed 0 (no extrapolation) on purpose: a clock running on its own at speed X would
  overtake ticks during a decode or flow-control pause and make them late.
* **End of data**: once bars has taken every tick, ingest sets the clock past the last minute
  plus the grace (bars' `close_due` then closes every live bar), writes the report
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
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from procs.runtime import BootError, Context
from procs.shared import BAR_CONSUMER_INDICATORS, TICK_CONSUMER_BARS
from scanner.config import Settings
from scanner.feeds.common import FeedStats, SymbolMap
from scanner.feeds.replay import ReplayError, open_ticks, spec_from_settings
from scanner.session import MINUTE_NS, NS
from shm.control import STATE_RUNNING

log = logging.getLogger("scanner.ingest")
PASS_S = 0.01
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
        self.inflight: deque[tuple[int, int]] = deque()  # (ring head after a publish, newest event ns)
        self.max_ts: int | None = None
        self.first_ts: int | None = None
        self.consumed_ts: int | None = None
        self.clock = int(self.ctl.header["clock_event_ns"])  # a restarted ingest never moves it back
        self.ev0 = 0  # pacing anchor: event time ev0 at monotonic w0
        self.w0 = -1.0
        self.next_ts: int | None = None  # event time of the next tick not yet published, when known
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
        reader = _Reader(open_ticks(spec, symbols, self.stats))
        try:
            while True:
                if not ctx.should_run():
                    return
                ctx.beat()
                slot["errors"] = self.stats.malformed
                item = reader.get(PASS_S)
                if item is None:
                    self.update_clock()
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
        self.finish()

    def wait_ready(self) -> bool:
        """Wait until bars and indicators consume (a consumer attaching later starts at the
        head and would miss what came before) and, for up to boot_timeout_s, all children run."""
        ctx = self.ctx
        deadline = time.monotonic() + ctx.settings.boot_timeout_s
        bars_ring = ctx.shared.bars
        while ctx.should_run():
            ctx.beat()
            attached = (int(self.bars_cursor["attached"][0])
                        and int(bars_ring.consumers[BAR_CONSUMER_INDICATORS]["attached"]))
            slots = self.ctl.slots
            named = [i for i in range(1, len(slots)) if bytes(slots[i]["name"])]
            running = all(int(slots[i]["state"]) == STATE_RUNNING for i in named)
            if attached and (running or time.monotonic() > deadline):
                return True
            time.sleep(0.02)
        return False

    # ------------------------------------------------------------------ publishing
    def feed(self, batch: np.ndarray) -> bool:
        """Publish one batch, paced by event time (or at once with --max); False when stopped."""
        if not self.speed:
            return self.publish(batch)
        ctx = self.ctx
        ts = batch["ts_ns"]
        i, n = 0, len(batch)
        while i < n:
            if self.w0 < 0:
                self.ev0, self.w0 = int(ts[0]), time.monotonic()
            over = ts[i:] > self.target()
            j = i + int(over.argmax()) if over.any() else n
            if j > i:
                if not self.publish(batch[i:j]):
                    return False
                i = j
            if i < n:
                self.next_ts = int(ts[i])
                due = self.w0 + (self.next_ts - self.ev0) / NS / self.speed
                ctx.beat()
                self.update_clock()
                ctx.sleep_until(min(due, time.monotonic() + PASS_S))
                if not ctx.should_run():
                    return False
        self.next_ts = None
        return True

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
                self.update_clock()
                time.sleep(0.0005)
            if not self.wall_first_ns:
                self.wall_first_ns = time.time_ns()
            self.sink.push(part)
            ts = part["ts_ns"]
            hi, lo = int(ts.max()), int(ts.min())
            self.max_ts = hi if self.max_ts is None else max(self.max_ts, hi)
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
            self.inflight.append((self.ring.head, self.max_ts))
            self.update_clock()
        return True

    def update_clock(self) -> None:
        """Advance the feed clock to the latest safe event time (module docstring)."""
        cursor = int(self.bars_cursor["cursor"][0])
        while self.inflight and self.inflight[0][0] <= cursor:
            self.consumed_ts = self.inflight.popleft()[1]
        safe = self.consumed_ts
        if self.speed and self.w0 >= 0 and not self.inflight and self.next_ts is not None:
            paced = min(self.target(), self.next_ts - 1)
            safe = paced if safe is None else max(safe, paced)
        if safe is not None and safe > self.clock:
            self.clock = safe
            self.ctl.set_clock(safe, time.time_ns(), 0.0)

    # ------------------------------------------------------------------ end of data
    def finish(self) -> None:
        """Wait for bars to take everything, close the last minute, report, mark done."""
        ctx = self.ctx
        while self.inflight:
            if not ctx.should_run():
                return
            ctx.beat()
            self.update_clock()
            time.sleep(0.002)
        if self.max_ts is not None:
            end = self.max_ts - self.max_ts % MINUTE_NS + MINUTE_NS + self.grace_ns
            self.clock = max(self.clock, end)
            self.ctl.set_clock(self.clock, time.time_ns(), 0.0)
        self.write_report()
        ctx.slot["errors"] = self.stats.malformed
        ctx.slot["cycles"] = 1  # feed done (read by `scanner replay`)
        log.info("replay done: %s", self.stats.report().splitlines()[0])

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
