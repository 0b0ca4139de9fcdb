"""Scanner worker `scan-<i>`: every cycle, all rules over this worker's symbol range.

The range is a contiguous, block-aligned slice of the table. Cycles are aligned to the wall
clock (every `scan_interval_ms`, default 1 s, down to 50 ms). A cycle reads only the columns
the compiled rules need, as one seqlock-consistent snapshot, evaluates every rule at once, and
writes new (edge-triggered) alerts into this worker's SPSC alert ring. No I/O in the cycle.
A rule change (generation bump in the control block) is picked up at the next cycle. A cycle
that overruns its period is counted and logged; missed boundaries are counted as overruns too,
never skipped silently.

In a replay the feed clock drives the cadence instead (`procs.eventtime`): the worker scans at
each boundary T the indicators process is done up to, with T as the event time and the cooldown
clock. It publishes "read up to T" once its snapshot is taken (ingest waits for that before
publishing ticks after T, so the next boundary is prepared while this one is evaluated), then
"scanned up to T" with its alerts in the ring. No boundary is skipped, whatever the replay
speed. A worker that dies between the two loses that boundary's alerts (the state it read has
moved on): its next life logs and counts it as an error.

In Kafka group mode the table holds the whole universe and the bars process says which rows this
host owns (`state.bars` `rows_state`, `scanner.group_rows`): a cycle scans the whole range but
only rows that are ROW_LIVE can match (one vectorised mask), so a moved symbol alerts here once
its day is rebuilt, and a row that left stops alerting, without an EXIT (it still matches on its
new host; `ScanEngine.cycle`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from procs.eventtime import HandoffBell, event_mode, slots_named
from procs.rules_admin import open_store
from procs.runtime import Context
from scanner.bar_kernels import ROW_LIVE
from scanner.rules.compiler import warm_up
from scanner.rules.engine import ScanEngine
from scanner.session import MINUTE_NS, minute_of_day, trading_day
from shm import partitioned
from shm.history_read import warm_up as warm_history_read
from shm.partitioned import PartitionedMatrix

log = logging.getLogger("scanner.scan")


MAX_RULES = 1024  # rules whose current matches are published to shared memory


def match_state(n_rows: int, n_workers: int) -> dict[str, np.ndarray]:
    """The `state.matches` segment: each worker's last match matrix over its own rows, tagged
    with the rule generation it ran (a `shm.partitioned.PartitionedMatrix`, one writer per range)."""
    return partitioned.arrays(MAX_RULES, n_rows, n_workers)


def partition(n_rows: int, n_workers: int, index: int, block_rows: int) -> tuple[int, int]:
    """Rows [lo, hi) of worker `index`: equal shares rounded to whole seqlock blocks."""
    blocks = -(-n_rows // block_rows)
    b0 = blocks * index // n_workers
    b1 = blocks * (index + 1) // n_workers
    return min(n_rows, b0 * block_rows), min(n_rows, b1 * block_rows)


class Worker:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        sh = ctx.shared
        self.index = int(ctx.name.split("-", 1)[1])
        self.lo, self.hi = partition(sh.table.n_rows, len(sh.alerts), self.index, ctx.settings.block_rows)
        self.keys = sh.table.key_list()[self.lo:self.hi]
        self.ring = sh.alerts[self.index].producer()
        self.store = open_store(ctx.settings)
        self.generation = -1
        self.engine: ScanEngine | None = None
        self.hist_fields = self.hist_ago = np.empty(0, np.int64)
        self.matches = PartitionedMatrix(sh.state["matches"].arrays) if "matches" in sh.state else None
        self.seq = int(ctx.slot["n_out"][0])  # alert sequence numbers continue across restarts
        rows_state = sh.state["bars"].arrays.get("rows_state") if "bars" in sh.state else None
        self.rows_state = rows_state[self.lo:self.hi] if rows_state is not None else None
        self.owned = np.zeros(self.hi - self.lo, np.bool_) if rows_state is not None else None
        self.scanned = self.hi - self.lo  # rows the last cycle could match
        self._known_for: np.ndarray | None = None  # `known_heads`
        self._known = np.empty(0, np.int64)

    def known_heads(self, hist: np.ndarray) -> np.ndarray | None:
        """The history heads `hist` (the engine's operand buffer, kept between cycles) was read at,
        so that `History.read` skips the rows whose head has not moved; a new buffer (a new rule
        set) starts unknown. None in Kafka group mode: a row rebuilt there restarts its history
        at head 0 and could be back at the same head with other bars by the next cycle."""
        if self.rows_state is not None:
            return None
        if hist is not self._known_for:
            self._known_for, self._known = hist, np.full(self.hi - self.lo, -1, np.int64)
        return self._known

    def publish_matches(self) -> None:
        """Copy this cycle's match matrix into shared memory for the REST "current matches"."""
        match = self.engine.last_match if self.engine is not None else None
        if self.matches is not None and match is not None:
            self.matches.publish(self.index, self.lo, self.hi, match, self.generation)

    def load_rules(self) -> None:
        """Read the rule store and switch to it (unchanged rules keep their alert state)."""
        gen = self.ctx.shared.control.rules_generation
        self.generation = gen
        try:
            rules = self.store.list()
            if self.engine is None:
                self.engine = ScanEngine(rules, self.keys, self.lo, self.index, generation=gen, seq_start=self.seq)
            else:
                self.engine.set_rules(rules, gen)
        except Exception as exc:  # noqa: BLE001 - a bad store keeps the previous rule set running
            log.error("rule set of generation %d not loaded, keeping the previous one: %s", gen, exc)
            self.ctx.count(errors=1)
            return
        refs = self.engine.hist_refs
        # computed by the compiled set on each access: take them once per rule load
        self.hist_fields, self.hist_ago = self.engine.compiled.hist_fields, self.engine.compiled.hist_bars_ago
        log.info("generation %d: %d rules over rows %d..%d (%d columns, %d history operands)", gen, len(rules),
                 self.lo, self.hi, len(self.engine.f8_cols), len(refs))

    def warm(self) -> None:
        """Compile and warm the kernels on a scratch engine over empty buffers, leaving the real
        engine's alert state untouched (a replay's first scan must be a real one)."""
        if self.engine is None:
            return
        scratch = ScanEngine(self.engine.compiled.rules, self.keys, self.lo, self.index)
        scratch.cycle(scratch.snapshot_buffer(), scratch.hist_buffer(), 0, 0, 0, 0, 19700101)

    def cycle(self, at_ns: int | None = None, read_done: Callable[[], None] | None = None) -> int:
        """One scan over the range; returns the number of alerts written. `at_ns`: a replay's
        scan boundary (event time, also the cooldown clock); None = live, on the feed clock now.
        `read_done` is called once the cycle holds its copy of the shared state (before the
        evaluation, which reads nothing shared)."""
        ctx = self.ctx
        if ctx.shared.control.rules_generation != self.generation:
            self.load_rules()
        engine = self.engine
        if engine is None or self.hi <= self.lo:
            if read_done is not None:  # nothing to read: a worker without rows must not hold ingest
                read_done()
            return 0
        sh = ctx.shared
        snap = engine.snapshot_buffer()
        sh.table.snapshot(self.lo, self.hi, engine.f8_cols, snap)
        hist = engine.hist_buffer()
        if len(hist):
            sh.history.read(self.lo, self.hi, self.hist_fields, self.hist_ago, hist, self.known_heads(hist))
        if self.rows_state is not None:
            np.equal(self.rows_state, ROW_LIVE, out=self.owned)
            self.scanned = int(np.count_nonzero(self.owned))
        if read_done is not None:
            read_done()
        now_ns = time.time_ns()
        event_ns = ctx.event_now_ns() if at_ns is None else at_ns
        minute = int(minute_of_day(np.array([event_ns]))[0])
        alerts = engine.cycle(snap, hist, now_ns if at_ns is None else at_ns, event_ns, minute,
                              event_ns // MINUTE_NS, trading_day(event_ns), scan_ns=now_ns, owned=self.owned)
        self.publish_matches()
        if len(alerts):
            self.ring.publish(alerts)
            self.seq += len(alerts)
        return len(alerts)


def run_event_time(ctx: Context, w: Worker) -> None:
    """Replay: scan at each boundary the indicators process is done up to (module docstring)."""
    ctl = ctx.shared.control
    me, ind = ctx.slot_index, ctl.slot_index("indicators")
    done = ctl.progress_of(me)
    if ctl.read_progress_of(me) > done:  # an earlier life died between its snapshot and its alerts
        log.error("the scan of boundary %d was lost: this worker restarted after reading it, and the "
                  "replay went on from there", ctl.read_progress_of(me))
        ctx.count(errors=1)
    bell, ingest = HandoffBell.of(ctx), slots_named(ctx, b"ingest")  # indicators ring it; it rings ingest
    while ctx.should_run():
        ctx.beat()
        t = ctl.progress_of(ind)  # loaded before the table: see shm.control
        if t <= done:
            bell.wait()
            continue

        def read_done(t: int = t) -> None:  # ingest may go on to the next boundary
            ctl.publish_read(me, t)
            bell.ring(ingest)

        t0 = time.perf_counter()
        n = w.cycle(t, read_done)
        ctx.record_cycle(time.perf_counter() - t0)
        ctx.count(n_in=w.scanned, n_out=n)
        ctl.publish_progress(me, t)  # after the alerts are in the ring (ingest waits for it at the end)
        done = t


def main(ctx: Context) -> None:
    warm_up()  # the rule kernel, even if the first rule set needs none (a later one may)
    warm_history_read()  # the history operands' gather, likewise
    w = Worker(ctx)
    if event_mode(ctx.settings):
        w.load_rules()
        w.warm()
        run_event_time(ctx, w)
        return
    w.cycle()  # load and compile the rules, warm the kernels: the first timed cycle is a real one
    period = ctx.settings.scan_interval_ms / 1000.0
    next_at = (time.time() // period + 1) * period
    while ctx.should_run():
        ctx.beat()
        ctx.sleep_until(time.monotonic() + max(0.0, next_at - time.time()))
        if not ctx.should_run():
            break
        t0 = time.perf_counter()
        n = w.cycle()
        dt = time.perf_counter() - t0
        overrun = dt > period
        ctx.record_cycle(dt, overrun)
        ctx.count(n_in=w.scanned, n_out=n)
        next_at += period
        now = time.time()
        if overrun or now > next_at:
            missed = int((now - next_at) // period) + 1 if now > next_at else 0
            log.warning("scan cycle took %.1f ms (period %.0f ms); %d boundaries missed", dt * 1e3,
                        period * 1e3, missed)
            if missed:
                ctx.slot["overruns"] += missed
                next_at += missed * period
