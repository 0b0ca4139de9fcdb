"""Issue 10.1: every numba kernel is compiled or loaded before a process's first heartbeat.

In process: after the warm-ups, driving the bar, indicator and scan code with the argument
kinds the processes use (shared-memory columns, ring batches) compiles nothing more. With real
processes (`test_cold_start.py`): an instance whose numba cache is empty comes up without a
stall."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

import scanner.bar_kernels
import scanner.bars
import scanner.indicators.averages
import scanner.indicators.engine
import scanner.indicators.intraday
import scanner.indicators.live_rows
import scanner.indicators.momentum
import scanner.indicators.session
import scanner.indicators.timeframes
import scanner.indicators.trading_status
import scanner.indicators.volatility
import scanner.indicators.volume
import scanner.rules.alerts
import scanner.rules.kernel
import scanner.session
import scanner.ticks
import scanner.timeframes
import shm.history_read
from procs.indicators import warm_from_history
from procs.scan import match_state
from procs.shared import BAR_CONSUMER_INDICATORS, TICK_CONSUMER_BARS, Shared
from scanner.bars import BarAggregator
from scanner.indicators.engine import INDICATOR_COLUMNS, IndicatorEngine, warm_kernels
from scanner.indicators.timeframes import TimeframeIndicators
from scanner.indicators.timeframes import warm_kernels as warm_timeframe_kernels
from scanner.metrics import CATALOGUE, Owner
from scanner.records import TICK_DTYPE
from scanner.rules.compiler import warm_up as warm_rules
from scanner.rules.engine import ScanEngine
from scanner.rules.store import default_pack
from scanner.session import MINUTE_NS, session_bounds_ns
from scanner.storage.history import StoredBars
from scanner.ticks import MAX_AHEAD_NS, LastTradeWriter, validate_ticks
from scanner.timeframes import TimeframeBars

MODULES = (scanner.bar_kernels, scanner.indicators.engine, scanner.indicators.averages, scanner.indicators.momentum,
           scanner.indicators.volatility, scanner.rules.kernel, scanner.indicators.intraday, scanner.timeframes,
           scanner.indicators.timeframes, scanner.indicators.live_rows, scanner.indicators.session,
           scanner.indicators.trading_status, scanner.indicators.volume, scanner.ticks,
           shm.history_read, scanner.rules.alerts, scanner.session)


def signatures() -> dict[str, int]:
    return {f"{m.__name__}.{k}": len(v.signatures) for m in MODULES for k, v in vars(m).items()
            if isinstance(v, CPUDispatcher)}


@pytest.fixture
def shared() -> Iterator[Shared]:
    n = 300
    sh = Shared.create(f"kw{os.getpid()}", keys=[f"S{i}" for i in range(n)], n_workers=1, trading_day=20260105,
                       tick_capacity=4096, bar_capacity=4096, alert_capacity=1024, hist_depth=8, block_shift=6,
                       supervisor_pid=os.getpid(), created_ns=time.time_ns(),
                       states={"bars": BarAggregator.new_state(n), "matches": match_state(n, 1)})
    try:
        yield sh
    finally:
        sh.close()
        sh.unlink()


def test_after_the_warm_ups_the_process_paths_compile_nothing(shared: Shared) -> None:
    scanner.bars.warm_up()
    warm_kernels()
    warm_timeframe_kernels()
    scanner.indicators.live_rows.warm_kernels()
    warm_rules()
    scanner.ticks.warm_up()
    shm.history_read.warm_up()
    before = signatures()
    entry = ("scanner.bar_kernels.ingest", "scanner.bar_kernels.close_due", "scanner.indicators.engine._fold_bars",
             "scanner.indicators.engine._fold_history", "scanner.indicators.engine._live",
             "scanner.rules.kernel.run_steps", "scanner.ticks._valid", "scanner.ticks._last_trade",
             "shm.history_read.read_ago",
             "scanner.rules.alerts._step")  # what Python calls; the rest are inlined callees
    assert all(before[k] >= 1 for k in entry), before
    t, h, n = shared.table, shared.history, shared.table.n_rows
    # bars, as procs/bars.py drives it: table columns, the shared state, ring batches
    cols = {m.name: (t.f8[m.index] if m.dtype == "f8" else t.i8[m.index]) for m in CATALOGUE.owned_by(Owner.BARS)}
    agg = BarAggregator(cols, h.hist, h.head, state=shared.state["bars"].arrays, grace_ns=0)
    open_ns = session_bounds_ns(20260105)["open"]
    ticks = np.zeros(1000, TICK_DTYPE)
    ticks["sym"] = np.arange(1000) % n
    ticks["ts_ns"] = open_ns + np.arange(1000) * 100_000_000
    ticks["price"], ticks["size"] = 10.0 + np.arange(1000) % 7, 100.0
    tick_in, bar_in = shared.ticks.consumer(TICK_CONSUMER_BARS), shared.bars.consumer(BAR_CONSUMER_INDICATORS)
    # ingest, as procs/ingest.py's TableSink drives it: slices of a decoded batch, one tick, none
    last = LastTradeWriter(t.f8[CATALOGUE.f8("price")], t.f8[CATALOGUE.f8("last_size")],
                           t.i8[CATALOGUE.i8("last_ts_ns")], t.i8[CATALOGUE.i8("tick_count")])
    for part in (ticks[10:500], ticks[:1], ticks[:0]):
        last.apply(validate_ticks(part, n, open_ns + MAX_AHEAD_NS)[0])
    shared.ticks.producer().publish(ticks)
    closed = [agg.on_ticks(tick_in.poll(1 << 16)),
              agg.close_due(open_ns + 5 * MINUTE_NS)]
    # a batch of one tick: numpy marks a one-element field view C-contiguous, another numba
    # signature than the strided views of a longer batch (it compiled in the work loop: a stall)
    one = ticks[:1].copy()
    one["ts_ns"] = open_ns + 5 * MINUTE_NS + 1
    shared.ticks.producer().publish(one)
    closed.append(agg.on_ticks(tick_in.poll(1 << 16)))
    bars = np.concatenate(closed)
    assert len(bars) > 0
    shared.bars.producer().publish(bars)
    shared.bars.producer().publish(bars[:1])  # one closed bar: the same one-element case downstream
    # indicators, as procs/indicators.py drives it: history chunks (the last one shorter), stored bars merged
    eng, tfb, tfi = IndicatorEngine(n), TimeframeBars(n), TimeframeIndicators(n)
    stored = StoredBars(np.array([0, 299]), np.full((h.n_fields, 2), 1.0))
    warm_from_history(h.chunks(128), eng, tfb, stored)
    tfi.warm_up(tfb.hists, tfb.heads)
    got = bar_in.poll(len(bars)).copy()
    assert len(got) == len(bars)
    eng.on_bars_closed(got)
    single = bar_in.poll(1 << 16)
    assert len(single) == 1
    eng.on_bars_closed(single)
    inputs = [m for m in CATALOGUE.metrics if m.owner != Owner.INDICATORS]
    buf_f8 = np.empty((sum(m.dtype == "f8" for m in inputs), n))
    buf_i8 = np.empty((sum(m.dtype == "i8" for m in inputs), n), np.int64)
    live: dict[str, np.ndarray] = {}
    live.update(zip([m.name for m in inputs if m.dtype == "f8"], buf_f8, strict=True))
    live.update(zip([m.name for m in inputs if m.dtype == "i8"], buf_i8, strict=True))
    t.snapshot(0, n, np.array([m.index for m in inputs if m.dtype == "f8"]), buf_f8,
               np.array([m.index for m in inputs if m.dtype == "i8"]), buf_i8)
    out = np.full((len(INDICATOR_COLUMNS), n), np.nan)
    live.update(zip(INDICATOR_COLUMNS, out, strict=True))
    eng.update_live(live, open_ns + 6 * MINUTE_NS)
    tfi.on_bars_closed(tfb.on_bars_closed(got))
    tfi.on_bars_closed(tfb.on_bars_closed(single))
    tfi.update_live(live, tfb, open_ns + 6 * MINUTE_NS)
    # a replay's refresh: the changed rows, straight from and into the table's columns
    table_cols = {m.name: (t.f8[m.index] if m.dtype == "f8" else t.i8[m.index]) for m in CATALOGUE.metrics}
    changed = scanner.indicators.live_rows.ChangedRows(n)
    for s in (1, 2):
        changed.mark(got["sym"])
        rows = changed.take(table_cols, open_ns + 6 * MINUTE_NS + s)
        eng.update_live(table_cols, open_ns + 6 * MINUTE_NS + s, rows)
        tfi.update_live(table_cols, tfb, open_ns + 6 * MINUTE_NS + s, rows)
    # a scan over the default rule pack
    se = ScanEngine(default_pack(), t.key_list(), lo=0, worker_id=0)
    snap = se.snapshot_buffer()
    t.snapshot(0, n, se.f8_cols, snap)
    hist = se.hist_buffer()
    if len(hist):
        h.read(0, n, se.compiled.hist_fields, se.compiled.hist_bars_ago, hist)
    se.cycle(snap, hist, 1, open_ns, 600, 1, 20260105)
    after = signatures()
    assert {k: (before[k], v) for k, v in after.items() if v != before[k]} == {}
