"""Bars: tick ring -> 1-minute bars (live bar, session VWAP, day stats) -> closed-bar ring.

The only writer of the bars-owned table columns and of the bar history. The aggregator's private
state (`scanner.bars.AGG_STATE` + meta) lives in the `state.bars` segment, so a restarted bars
process carries on where it stopped. Event time drives closes: each pass raises the watermark
to the feed clock minus the grace, so quiet symbols' bars close on time too.

Live vendor feeds add two inputs: cancel ticks in the tick ring (applied to the live minute,
`scanner.bars`), and the repair ring, where ingest puts the vendor's REST minute bars of a
reconnect's gap. Repaired bars go into the history and the day like closed bars and out to the
closed-bar ring (indicators, storage); the feed counters `repaired_bars` (taken) and
`corrections_applied` are written here, and nowhere else.

Kafka group mode: the tick ring also carries rebuilds of moved symbols and ownership marks; they
go through `scanner.group_rows`, and `state.bars` holds `rows_state` (which rows this host
builds and scans) and the rebuilds' counters.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from procs.eventtime import HandoffBell, event_mode, slots_named
from procs.feed_stats import FEED, feed_counters
from procs.runtime import Context
from procs.shared import REPAIR_CONSUMER_BARS, TICK_CONSUMER_BARS, WRITERS
from scanner.bar_kernels import META_PUBLISHED
from scanner.bars import BarAggregator, warm_up
from scanner.group_rows import GroupRows
from scanner.metrics import CATALOGUE, Owner
from shm.records import concat

log = logging.getLogger("scanner.bars")
PASS_S = 0.005
MAX_BATCH = 1 << 16


def table_columns(ctx: Context, owner: Owner) -> dict[str, np.ndarray]:
    """Views of the table columns owned by `owner` (1-D, length n_rows)."""
    t = ctx.shared.table
    return {m.name: (t.f8[m.index] if m.dtype == "f8" else t.i8[m.index]) for m in CATALOGUE.owned_by(owner)}


def main(ctx: Context) -> None:
    warm_up()  # every kernel compiled or loaded before the first heartbeat (boot_timeout_s applies)
    sh = ctx.shared
    t, h = sh.table, sh.history
    st = sh.state["bars"].arrays
    agg = BarAggregator(table_columns(ctx, Owner.BARS), h.hist, h.head, state=st,
                        grace_ns=ctx.settings.bar_grace_ms * 1_000_000, rows_state=st.get("rows_state"))
    # Kafka group mode: the ring also carries rebuilds and ownership marks (scanner.group_rows)
    on_ticks = GroupRows(agg, st["rebuild_meta"]).on_ticks if "rows_state" in st else agg.on_ticks
    rows_published = st.get("rows_published")
    ticks = sh.ticks.consumer(TICK_CONSUMER_BARS)
    out = sh.bars.producer()
    seq = t.writer(WRITERS[Owner.BARS])
    hseq = h.writer()
    all_blocks = seq.block_range(0, t.n_rows)
    all_hist = hseq.block_range(0, t.n_rows)
    late_seen = agg.late_ticks
    repairs = sh.repair.consumer(REPAIR_CONSUMER_BARS)
    counters = feed_counters(sh)
    lost_seen = ticks.lost
    grace = ctx.settings.bar_grace_ms * 1_000_000
    ctl = sh.control
    event = event_mode(ctx.settings)  # replay: publish "done up to T" after each drained pass
    done = ctl.progress_of(ctx.slot_index)
    bell = HandoffBell.of(ctx) if event else None  # ingest rings it; bars rings indicators
    next_slots = slots_named(ctx, b"indicators")

    def write(fn, *args) -> np.ndarray:  # type: ignore[no-untyped-def]
        # any row may change (a tick's own row, or any row whose bar the watermark closes)
        seq.begin(all_blocks)
        hseq.begin(all_hist)
        try:
            return fn(*args)
        finally:
            hseq.end(all_hist)
            seq.end(all_blocks)

    while ctx.should_run():
        ctx.beat()
        # replay: the clock is read before the ring, so every tick up to it is in the ring (ingest
        # anchors the clock at T after publishing the ticks up to T)
        clock = ctl.clock_anchor_ns if event else 0
        batch = ticks.poll(MAX_BATCH)
        closed = []
        if len(batch):
            closed.append(write(on_ticks, batch))
            ctx.count(n_in=len(batch))
        repaired = repairs.poll(1 << 14)
        if len(repaired):
            before, taken = write(agg.insert_repaired, repaired)
            closed += [before, taken]
            if counters is not None:
                counters[FEED["repaired_bars"]] += len(taken)
            if len(taken) < len(repaired):
                log.warning("%d repaired bars not taken (their minute is already in the history)",
                            len(repaired) - len(taken))
        if counters is not None:
            counters[FEED["corrections_applied"]] = agg.cancels_applied
        wm = (clock if event else ctx.event_now_ns()) - grace
        if agg.day and wm > agg.watermark_ns:
            closed.append(write(agg.close_due, wm))
        bars = concat(closed) if len(closed) > 1 else (closed[0] if closed else None)
        if bars is not None and len(bars):
            out.publish(bars)
            ctx.count(n_out=len(bars))
        # after the publish: the rows' states (scanner.group_rows), then the watermark, whose bars
        # are all in the ring now (higher timeframes close on it). In this order, a reader that
        # loads the watermark, then the states, then polls the ring, never pairs a new watermark
        # with an old state: a row released in this pass would close a bucket its open bar is in.
        if rows_published is not None:
            np.copyto(rows_published, agg.rows_state)
        agg.meta[META_PUBLISHED] = agg.watermark_ns
        if agg.late_ticks != late_seen:
            log.warning("%d late ticks dropped (beyond the %d ms grace)", agg.late_ticks - late_seen,
                        ctx.settings.bar_grace_ms)
            ctx.count(drops=agg.late_ticks - late_seen)
            late_seen = agg.late_ticks
        if ticks.lost != lost_seen:
            log.error("tick ring lapped: %d ticks lost", ticks.lost - lost_seen)
            ctx.count(drops=ticks.lost - lost_seen)
            lost_seen = ticks.lost
        if event and len(batch) < MAX_BATCH and clock > done:  # drained up to the clock
            ctl.publish_progress(ctx.slot_index, clock)  # after the table, history and bar ring
            done = clock
            bell.ring(next_slots)  # type: ignore[union-attr]
        if len(batch) < MAX_BATCH:
            if bell is not None:
                bell.wait()
            else:
                time.sleep(PASS_S)
