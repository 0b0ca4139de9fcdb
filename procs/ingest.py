"""Ingest: feed -> validated tick batches -> tick ring + last-trade columns of the table.

The only writer of the ingest-owned columns. Malformed ticks are dropped and counted (slot
`drops`), never crash the loop. The synthetic feed runs on the feed clock anchored in the
control block, so a restarted ingest continues the same event time and prices.

The replay feed (`feed = "replay"`, `scanner replay`) lives in `procs.ingest_replay`: there, and
only there, ingest waits for the bars consumer instead of lapping it (flow control), owns the
feed clock (`control.set_clock`, so bars' watermark follows the replayed time), and signals the
end of data by setting its slot's `cycles` to 1 after the clock passed the last minute + grace.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from procs.feed_stats import FEED, feed_counters
from procs.ingest_replay import ReplayFeed
from procs.runtime import BootError, Context
from procs.shared import WRITERS
from scanner.feeds.frames import STATUS_DTYPE
from scanner.feeds.synthetic import SyntheticTape, make_universe
from scanner.market_state import LULD_COLUMNS, QUOTE_COLUMNS, STATUS_COLUMNS, MarketStateWriter
from scanner.metrics import CATALOGUE, Owner
from scanner.records import TICK_DTYPE, TICK_MARK_BEGIN
from scanner.session import session_bounds_ns
from scanner.ticks import MAX_AHEAD_NS, LastTradeWriter, validate_ticks
from scanner.ticks import warm_up as warm_ticks

log = logging.getLogger("scanner.ingest")
PASS_S = 0.01  # one batch every 10 ms: small enough for latency, large enough to amortise numpy


class TableSink:
    """Publishes a tick batch to the ring and the last-trade columns under the seqlock, and
    quote / status / LULD batches to their columns (`push_state`)."""

    def __init__(self, ctx: Context) -> None:
        t = ctx.shared.table
        self.ctx = ctx
        self.n_rows = t.n_rows
        self.ring = ctx.shared.ticks.producer()
        self.seq = t.writer(WRITERS[Owner.INGEST])
        f8, i8 = t.f8, t.i8
        self.last = LastTradeWriter(f8[CATALOGUE.f8("price")], f8[CATALOGUE.f8("last_size")],
                                    i8[CATALOGUE.i8("last_ts_ns")], i8[CATALOGUE.i8("tick_count")])
        names = QUOTE_COLUMNS + STATUS_COLUMNS + LULD_COLUMNS
        self.state = MarketStateWriter({n: (f8[CATALOGUE[n].index] if CATALOGUE[n].dtype == "f8"
                                            else i8[CATALOGUE[n].index]) for n in names})
        self.counters = feed_counters(ctx.shared)

    def push(self, ticks: np.ndarray) -> int:
        # the synthetic feed's clock may run ahead of the wall clock (feed_speed): bound by both
        good, bad = validate_ticks(ticks, self.n_rows, max(time.time_ns(), self.ctx.event_now_ns()) + MAX_AHEAD_NS)
        if bad:
            log.warning("dropped %d malformed ticks", bad)
        if len(good):
            self.ring.publish(good)
            blocks = self.seq.mark_rows(good["sym"].astype(np.intp))
            self.seq.begin(blocks)
            self.last.apply(good)
            self.seq.end(blocks)
        self.ctx.count(n_in=len(good), n_out=len(good), drops=bad)
        return len(good)

    def mark(self, rows: np.ndarray, kind: int) -> None:
        """Kafka group mode: an ownership mark (`scanner.records.TICK_MARK_*`) for each of `rows`
        into the ring, in order with the ticks (`scanner.group_rows`); before a BEGIN, the rows'
        last trade is forgotten (their day is replayed next)."""
        if len(rows) == 0:
            return
        if kind == TICK_MARK_BEGIN:
            blocks = self.seq.mark_rows(rows.astype(np.intp))
            self.seq.begin(blocks)
            self.last.clear(rows)
            self.seq.end(blocks)
        marks = np.zeros(len(rows), TICK_DTYPE)
        marks["sym"], marks["flags"] = rows, kind
        self.ring.publish(marks)

    def push_state(self, quotes: np.ndarray | None = None, statuses: np.ndarray | None = None,
                   lulds: np.ndarray | None = None) -> None:
        """Quote, status and LULD records into their columns (last per symbol wins), under the
        ingest seqlock of the rows they touch; counted in the feed counters."""
        parts = [(a, f) for a, f in ((quotes, self.state.apply_quotes), (statuses, self.state.apply_statuses),
                                     (lulds, self.state.apply_lulds)) if a is not None and len(a)]
        if not parts:
            return
        syms = np.concatenate([a["sym"][a["sym"] < self.n_rows] for a, _ in parts]).astype(np.intp)
        blocks = self.seq.mark_rows(syms)
        st = self.state
        before = (st.quotes, st.statuses, st.halts, st.resumes, st.lulds)
        self.seq.begin(blocks)
        try:
            for a, apply in parts:
                apply(a)
        finally:
            self.seq.end(blocks)
        c = self.counters
        if c is not None:
            for name, was, now in zip(("quotes", "statuses", "halts", "resumes", "lulds"), before,
                                      (st.quotes, st.statuses, st.halts, st.resumes, st.lulds), strict=True):
                c[FEED[name]] += now - was


MAX_CATCHUP_NS = 1_000_000_000  # event time one synthetic pass may generate at most


def run_synthetic(ctx: Context, sink: TableSink) -> None:
    s = ctx.settings
    ctl = ctx.shared.control
    n = ctx.shared.table.n_rows
    universe = make_universe(s.symbols, s.feed_seed, s.feed_rate)
    rows = np.arange(n)
    lo = s.range_start
    # the table holds this host's range of the universe; index the universe by it
    universe_rows = rows + lo
    day = int(ctl.header["trading_day"])
    open_ns = session_bounds_ns(day)["open"]
    price = ctx.shared.table.f8[CATALOGUE.f8("price")].copy()
    restarts = int(ctx.slot["restarts"][0])
    tape = SyntheticTape(universe, universe_rows, s.feed_rate, s.feed_seed + restarts, open_ns, price)
    tape.rows = rows.astype(np.uint32)  # ticks carry table rows, not universe rows
    t_event = ctx.event_now_ns()
    halted = np.flatnonzero(ctx.shared.table.f8[CATALOGUE.f8("halted")] == 1)
    if len(halted):  # halted by an earlier life of this process: its pause is over
        resume = np.zeros(len(halted), STATUS_DTYPE)
        resume["sym"], resume["ts_ns"] = halted, t_event
        sink.push_state(statuses=resume)
    next_pass = time.monotonic()
    while ctx.should_run():
        ctx.beat()
        now_event = ctx.event_now_ns()
        if now_event - t_event > MAX_CATCHUP_NS:
            # the loop was held up (a busy machine, a restart): generating the whole gap at once
            # would make this pass long enough to stall the heartbeat and flood the tick ring, so
            # a synthetic market skips what it missed (a vendor feed would repair it instead)
            t_event = now_event - MAX_CATCHUP_NS
        if now_event > t_event:
            sink.push(tape.generate(t_event, now_event))
            statuses, lulds = tape.take_market_state()
            sink.push_state(statuses=statuses, lulds=lulds)
            t_event = now_event
        next_pass += PASS_S
        ctx.sleep_until(next_pass)


def main(ctx: Context) -> None:
    warm_ticks()  # the tick kernels compiled or loaded before the first heartbeat (boot_timeout_s applies)
    sink = TableSink(ctx)
    feed = ctx.settings.feed
    if feed == "synthetic":
        run_synthetic(ctx, sink)
    elif feed == "replay":
        ReplayFeed(ctx, sink).run()
        while ctx.should_run():  # done (or stopping): stay up, the supervisor must not restart us
            ctx.beat()
            ctx.sleep_until(time.monotonic() + 0.1)
    elif feed in ("alpaca", "polygon"):
        from procs.ingest_live import LiveFeed  # the socket stack only where it is used

        LiveFeed(ctx, sink).run()
    elif feed == "kafka":
        from procs.ingest_kafka import KafkaFeed

        KafkaFeed(ctx, sink).run()
    elif feed == "none":
        while ctx.should_run():  # ticks come from elsewhere (tests, external ingest)
            ctx.beat()
            ctx.sleep_until(time.monotonic() + 0.1)
    else:
        raise BootError(f"feed {feed!r} is not handled by the ingest process")
