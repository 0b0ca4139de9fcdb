"""Benchmark of the bar aggregator plus indicator engine, side by side with nautilus_trader.

`bench_bars()` measures, in this run, on the same synthetic ticks:

- `ticks_per_s`: ticks through `BarAggregator.on_ticks` in batches, with the closed bars folded
  into `IndicatorEngine` and `update_live` run over every symbol after each batch;
- `numpy_baseline_ticks_per_s`: plain-numpy per-batch OHLCV (`numpy_batch_bars`), which does
  less; it is here because numba kernels must beat numpy in the same run to be used;
- `minute_close_ms`: closing one minute for every symbol (`close_due`), folding those bars
  into the indicators and one `update_live` (median of several minutes);
- `all_timeframes_close_ms`: the 16:00 minute close, on which every higher timeframe (5, 15,
  60 minutes and the day) closes too for every symbol: the same work as `minute_close_ms` plus
  `TimeframeBars` (fold and close) and the timeframe indicators (fold and live values), median
  over `close_days` - 1 days (nine: on these shared machines one close varies by a third from
  day to day); `all_timeframes_vs_minute_close` is its ratio to `minute_close_ms`
  measured in the same loop on the ordinary minutes before it. Those days hold five minutes of
  bars each, every symbol trading in every minute, so each row's rolling windows are short and
  all rows' bar counts are equal;
- `all_timeframes_close_full_session_ms`: the same 16:00 close after whole sessions, each symbol
  trading in a random 70% of the minutes (full rolling windows, bar counts that differ per row,
  as on a real day), median of `full_session_days` (five); `minute_close_full_session_ms` the other
  minute closes of the last hour;
- the same work in nautilus_trader (one `TimeBarAggregator` per symbol on a `TestClock`, with
  RSI(14), SMA(20/50/200), EMA(9/20) and ATR(14) fed each bar), when it is importable:
  `nautilus_ticks_per_s`, `nautilus_minute_close_ms`, `speedup_vs_nautilus`. nautilus takes
  Python objects, so its ticks are built before the clock starts; it sees a prefix of the
  tape (`nautilus_ticks`) because it is much slower.

The process runs with the pipeline's malloc settings (`procs.malloc`, which the bar and
indicator processes apply at start), so a close's temporaries come from the heap as they do
there, not from fresh pages each day.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np

from procs.indicators import RefreshHelper, fold_closed, update_live
from procs.malloc import tune_malloc
from scanner.bars import BarAggregator, new_history
from scanner.indicators.engine import IndicatorEngine
from scanner.indicators.timeframes import TimeframeIndicators
from scanner.metrics import CATALOGUE
from scanner.records import BAR_DTYPE, TICK_DTYPE
from scanner.session import MINUTE_NS, NS, next_day, session_bounds_ns
from scanner.timeframes import TimeframeBars

BENCH_DAY = 20131008


def synthetic_ticks(symbols: int, n: int, seed: int, minutes: int = 30) -> np.ndarray:
    """`n` ticks over `minutes` from the open, symbols drawn uniformly, prices a small random
    walk around a per-symbol level, round-lot sizes; sorted by event time."""
    rng = np.random.default_rng(seed)
    t = np.empty(n, TICK_DTYPE)
    t["sym"] = rng.integers(0, symbols, n)
    t["ts_ns"] = session_bounds_ns(BENCH_DAY)["open"] + np.sort(rng.integers(0, minutes * MINUTE_NS, n))
    level = rng.uniform(5.0, 200.0, symbols)
    t["price"] = np.round(level[t["sym"]] * (1.0 + rng.normal(0.0, 0.002, n)), 2)
    t["size"] = 100.0 * rng.integers(1, 10, n)
    t["flags"] = 0
    return t


def _table(n: int) -> dict[str, np.ndarray]:
    cols = {m.name: (np.zeros(n, np.int64) if m.dtype == "i8" else np.full(n, np.nan))
            for m in CATALOGUE.metrics}
    BarAggregator.init_columns(cols)
    cols["price"][:] = 10.0
    cols["prev_close"][:] = 10.0
    cols["avg_daily_volume"][:] = 1e6
    return cols


def _ours_throughput(ticks: np.ndarray, symbols: int, batch: int) -> tuple[float, int]:
    warm = _table(1)  # load (or compile) the kernels outside the clock
    w_agg, w_eng = BarAggregator(warm, *new_history(1, 4)), IndicatorEngine(1)
    first = ticks[:1].copy()
    first["sym"] = 0
    w_eng.on_bars_closed(w_agg.on_ticks(first))
    w_eng.on_bars_closed(w_agg.close_all())
    w_eng.update_live(warm, int(first["ts_ns"][0]))
    cols = _table(symbols)
    agg = BarAggregator(cols, *new_history(symbols))
    eng = IndicatorEngine(symbols)
    bars = 0
    t0 = time.perf_counter()
    for i in range(0, len(ticks), batch):
        b = ticks[i:i + batch]
        closed = agg.on_ticks(b)
        eng.on_bars_closed(closed)
        eng.update_live(cols, int(b["ts_ns"][-1]))
        bars += len(closed)
    return len(ticks) / (time.perf_counter() - t0), bars


def numpy_batch_bars(ticks: np.ndarray) -> np.ndarray:
    """Baseline: the OHLCV of one batch's (symbol, minute) groups in plain numpy (sort +
    reduceat). It does less than the aggregator (no live state across batches, no late ticks,
    no flags, no session statistics): a lower bound of what numpy would cost."""
    minute = ticks["ts_ns"] - ticks["ts_ns"] % MINUTE_NS
    order = np.lexsort((ticks["ts_ns"], minute, ticks["sym"]))
    sym, mnt, px, sz = ticks["sym"][order], minute[order], ticks["price"][order], ticks["size"][order]
    start = np.flatnonzero(np.r_[True, (sym[1:] != sym[:-1]) | (mnt[1:] != mnt[:-1])])
    end = np.r_[start[1:], len(sym)] - 1
    out = np.empty(len(start), BAR_DTYPE)
    out["sym"], out["minute_ns"] = sym[start], mnt[start]
    out["open"], out["close"] = px[start], px[end]
    out["high"], out["low"] = np.maximum.reduceat(px, start), np.minimum.reduceat(px, start)
    out["volume"] = np.add.reduceat(sz, start)
    out["vwap"] = np.add.reduceat(px * sz, start) / out["volume"]
    out["trades"] = end - start + 1
    return out


def _numpy_throughput(ticks: np.ndarray, batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(ticks), batch):
        numpy_batch_bars(ticks[i:i + batch])
    return len(ticks) / (time.perf_counter() - t0)


def _ours_minute_close(symbols: int, minutes: int) -> float:
    cols = _table(symbols)
    agg = BarAggregator(cols, *new_history(symbols))
    eng = IndicatorEngine(symbols)
    o = session_bounds_ns(BENCH_DAY)["open"]
    t = np.zeros(symbols, TICK_DTYPE)
    t["sym"] = np.arange(symbols)
    t["size"] = 100.0
    rng = np.random.default_rng(1)
    times = []
    for m in range(minutes):
        t["ts_ns"] = o + m * MINUTE_NS + 5 * NS
        t["price"] = 10.0 + rng.normal(0, 0.05, symbols)
        agg.on_ticks(t)
        end = o + (m + 1) * MINUTE_NS
        t0 = time.perf_counter()
        closed = agg.close_due(end)
        eng.on_bars_closed(closed)
        eng.update_live(cols, end)
        times.append(time.perf_counter() - t0)
        assert len(closed) == symbols
    return statistics.median(times[2:]) * 1e3


class _Closes:
    """The bar and indicator steps of minute closes as the processes run them (`procs.indicators`:
    the higher timeframes beside the 1-minute engine, on a helper thread when this process may
    use more than one core), over `symbols` rows trading one tick a minute each."""

    def __init__(self, symbols: int, seed: int) -> None:
        self.cols = _table(symbols)
        self.agg = BarAggregator(self.cols, *new_history(symbols))
        self.eng = IndicatorEngine(symbols)
        self.tfb = TimeframeBars(symbols)
        self.tfi = TimeframeIndicators(symbols)
        self.t = np.zeros(symbols, TICK_DTYPE)
        self.t["sym"] = np.arange(symbols)
        self.t["size"] = 100.0
        self.rng = np.random.default_rng(seed)
        self.helper = RefreshHelper(os.getpid())

    def minute(self, start_ns: int, trade_prob: float = 1.0) -> tuple[float, np.ndarray, list[np.ndarray]]:
        """Trade in minute `start_ns` (each row with probability `trade_prob`), then close it: the
        seconds the close took, the 1-minute bars and the timeframe bars it closed."""
        t, n = self.t, len(self.t)
        t["ts_ns"] = start_ns + 5 * NS
        t["price"] = 10.0 + self.rng.normal(0, 0.05, n)
        self.agg.on_ticks(t if trade_prob >= 1.0 else t[self.rng.random(n) < trade_prob])
        end = start_ns + MINUTE_NS
        t0 = time.perf_counter()
        closed = self.agg.close_due(end)
        parts = fold_closed(self.helper, self.eng, self.tfb, self.tfi, closed, end)  # and the watermark's close
        update_live(self.helper, self.eng, self.tfb, self.tfi, self.cols, end)
        dt = time.perf_counter() - t0
        return dt, closed, parts

    def close(self) -> None:
        self.helper.close()


def _all_timeframes_close(symbols: int, days: int) -> tuple[float, float]:
    """(median ms of the 16:00 close with every timeframe, median ms of the ordinary minute
    closes 15:56-15:59 doing the same pipeline); five minutes of ticks per day and symbol."""
    run = _Closes(symbols, 2)
    all_tf: list[float] = []
    ordinary: list[float] = []
    day = BENCH_DAY
    try:
        for _ in range(days):
            close = session_bounds_ns(day)["close"]
            for m in range(5, 0, -1):
                dt, closed, parts = run.minute(close - m * MINUTE_NS)
                assert len(closed) == symbols
                if m == 1:  # every timeframe closed, in the fold (their last minute) or by the watermark
                    assert [len(p) for p in parts] == [symbols] * len(parts), [len(p) for p in parts]
                    all_tf.append(dt)
                elif m < 5:
                    ordinary.append(dt)
            day = next_day(day)
    finally:
        run.close()
    return statistics.median(all_tf[1:]) * 1e3, statistics.median(ordinary[3:]) * 1e3


def _full_session_close(symbols: int, days: int, trade_prob: float = 0.7) -> tuple[float, float]:
    """(median ms of the 16:00 close, median ms of the other minute closes from 15:00) after whole
    sessions, each symbol trading in a random `trade_prob` of the minutes: the rolling windows
    and rings hold a full session (`scanner.indicators.intraday`), and the rows' bar counts
    differ, as on a real day. The same steps as `_all_timeframes_close`."""
    run = _Closes(symbols, 3)
    closes: list[float] = []
    ordinary: list[float] = []
    day = BENCH_DAY
    try:
        for _ in range(days):
            opn = session_bounds_ns(day)["open"]
            for m in range(390):
                dt, _, _ = run.minute(opn + m * MINUTE_NS, trade_prob)
                if m == 389:
                    closes.append(dt)
                elif m >= 330 and m % 5 != 4:
                    ordinary.append(dt)
            day = next_day(day)
    finally:
        run.close()
    return statistics.median(closes) * 1e3, statistics.median(ordinary) * 1e3


def _nautilus(ticks: np.ndarray, symbols: int, minutes: int) -> dict[str, Any]:
    """Throughput and minute-close time of nautilus_trader on the same ticks (raises ImportError
    when it is not installed)."""
    import nautilus_trader
    from nautilus_trader.common.component import TestClock
    from nautilus_trader.data.aggregation import TimeBarAggregator
    from nautilus_trader.indicators import (
        AverageTrueRange,
        ExponentialMovingAverage,
        RelativeStrengthIndex,
        SimpleMovingAverage,
    )
    from nautilus_trader.model.data import BarType, TradeTick
    from nautilus_trader.model.enums import AggressorSide
    from nautilus_trader.model.identifiers import TradeId
    from nautilus_trader.model.objects import Price, Quantity
    from nautilus_trader.test_kit.providers import TestInstrumentProvider

    def build(clock: TestClock) -> list[Any]:
        aggs = []
        for s in range(symbols):
            inst = TestInstrumentProvider.equity(f"S{s}", "XNAS")
            inds = [RelativeStrengthIndex(14), SimpleMovingAverage(20), SimpleMovingAverage(50),
                    SimpleMovingAverage(200), ExponentialMovingAverage(9), ExponentialMovingAverage(20),
                    AverageTrueRange(14)]

            def on_bar(bar: Any, inds: list[Any] = inds) -> None:
                for ind in inds:
                    ind.handle_bar(bar)

            bt = BarType.from_str(f"S{s}.XNAS-1-MINUTE-LAST-INTERNAL")
            aggs.append((inst, TimeBarAggregator(inst, bt, on_bar, clock, build_with_no_updates=False)))
        return aggs

    def run(clock: TestClock, aggs: list[Any], objs: list[Any], syms: np.ndarray, ts: np.ndarray) -> None:
        for i in range(0, len(objs), 1000):
            for e in clock.advance_time(int(ts[i])):
                e.handle()
            for j in range(i, min(i + 1000, len(objs))):
                aggs[syms[j]][1].handle_trade_tick(objs[j])

    o = session_bounds_ns(BENCH_DAY)["open"]
    clock = TestClock()
    clock.set_time(o)
    aggs = build(clock)
    syms = ticks["sym"].astype(np.intp)
    rows = zip(syms.tolist(), ticks["price"].tolist(), ticks["size"].tolist(), ticks["ts_ns"].tolist(),
               strict=True)
    side = AggressorSide.NO_AGGRESSOR
    objs = [TradeTick(aggs[s][0].id, Price(p, 2), Quantity(q, 0), side, TradeId(str(i)), t, t)
            for i, (s, p, q, t) in enumerate(rows)]
    t0 = time.perf_counter()
    run(clock, aggs, objs, syms, ticks["ts_ns"])
    rate = len(objs) / (time.perf_counter() - t0)

    clock2 = TestClock()
    clock2.set_time(o)
    aggs2 = build(clock2)
    times = []
    for m in range(minutes):
        at = o + m * MINUTE_NS + 5 * NS
        for s, (inst, agg) in enumerate(aggs2):
            agg.handle_trade_tick(TradeTick(inst.id, Price(10.0 + (s % 7) * 0.01, 2), Quantity(100, 0),
                                            AggressorSide.NO_AGGRESSOR, TradeId(f"{m}-{s}"), at, at))
        t0 = time.perf_counter()
        for e in clock2.advance_time(o + (m + 1) * MINUTE_NS):
            e.handle()
        times.append(time.perf_counter() - t0)
    return {"nautilus_ticks_per_s": rate, "nautilus_minute_close_ms": statistics.median(times[1:]) * 1e3,
            "nautilus_version": nautilus_trader.__version__}


def bench_bars(symbols: int = 10_000, ticks: int = 2_000_000, seed: int = 7, *, batch: int = 50_000,
               close_minutes: int = 12, close_days: int = 10, full_session_days: int = 5, nautilus: bool = True,
               nautilus_ticks: int = 200_000) -> dict[str, Any]:
    """Run the benchmark; see the module docstring for the keys."""
    if symbols <= 0 or ticks <= 0 or batch <= 0:
        raise ValueError(f"'symbols', 'ticks' and 'batch' must be positive, were {symbols}, {ticks}, {batch}")
    tune_malloc()  # as the processes measured run (module docstring)
    tape = synthetic_ticks(symbols, ticks, seed)
    rate, bars = _ours_throughput(tape, symbols, batch)
    out: dict[str, Any] = {
        "symbols": symbols, "ticks": ticks, "batch": batch, "bars_closed": bars,
        "ticks_per_s": rate, "minute_close_ms": _ours_minute_close(symbols, close_minutes),
        "numpy_baseline_ticks_per_s": _numpy_throughput(tape, batch),
        "all_timeframes_close_ms": None, "all_timeframes_vs_minute_close": None,
        "all_timeframes_close_full_session_ms": None, "minute_close_full_session_ms": None,
        "nautilus_ticks_per_s": None, "nautilus_minute_close_ms": None, "speedup_vs_nautilus": None,
        "nautilus_note": "",
    }
    all_ms, ordinary_ms = _all_timeframes_close(symbols, close_days)
    out["all_timeframes_close_ms"] = all_ms
    out["all_timeframes_vs_minute_close"] = all_ms / ordinary_ms
    if full_session_days:
        full_ms, full_ordinary_ms = _full_session_close(symbols, full_session_days)
        out["all_timeframes_close_full_session_ms"] = full_ms
        out["minute_close_full_session_ms"] = full_ordinary_ms
    if not nautilus:
        out["nautilus_note"] = "skipped (nautilus=False)"
        return out
    try:
        n = _nautilus(tape[:nautilus_ticks], symbols, min(close_minutes, 5))
    except ImportError as exc:
        out["nautilus_note"] = f"nautilus_trader is not importable ({exc}); pip install nautilus_trader"
        return out
    out.update(n)
    out["speedup_vs_nautilus"] = rate / n["nautilus_ticks_per_s"]
    out["nautilus_note"] = (f"nautilus_trader {n['nautilus_version']}: TimeBarAggregator per symbol on a "
                            f"TestClock + RSI/SMA x3/EMA x2/ATR per bar, first {min(nautilus_ticks, ticks)} "
                            "ticks, tick objects built before timing")
    return out


if __name__ == "__main__":
    for k, v in bench_bars().items():
        print(f"{k}: {v}")
