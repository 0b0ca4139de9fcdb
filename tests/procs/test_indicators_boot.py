"""The indicators' boot reads the 1-minute history a chunk of rows at a time (issue 15's memory
budget). On real bars (Lean minute bars of four symbols over four days, spread over rows with
0 to 1,500 bars each, so some rings wrapped), the engine, its intraday state, the timeframe bars
and the stored-history merge come out exactly as from one whole copy of the ring: for a row
count the chunk does not divide, and when bars close while the chunks are being read."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from procs.indicators import warm_from_history
from scanner.feeds.lean import read_lean_minute
from scanner.indicators.engine import IndicatorEngine, warm_kernels
from scanner.indicators.timeframes import warm_kernels as warm_timeframe_kernels
from scanner.metrics import HIST, HIST_FIELDS
from scanner.records import BAR_DTYPE
from scanner.session import MINUTE_NS
from scanner.storage.history import StoredBars, merge_history
from scanner.timeframes import TimeframeBars
from shm.history import History
from tests.scanner.helpers import data_path

SYMS = ("aig", "bac", "ibm", "spy")
DAYS = (20131004, 20131007, 20131008, 20131009)
N_ROWS, K = 37, 400  # 37 rows in chunks of 16: 16 + 16 + 5
COUNTS = (0, 1, 57, 399, 400, 401, 1000, 1500)  # bars per row, cycled: empty, partial, wrapped rings


@pytest.fixture(scope="module")
def series() -> list[np.ndarray]:
    return [np.concatenate([read_lean_minute(data_path("lean-us-equity", "minute", s, f"{d}_trade.zip"))
                            for d in DAYS]) for s in SYMS]


def row_bars(series: list[np.ndarray], r: int) -> np.ndarray:
    """Row r's bars: a symbol's series, scaled per row, cut to its count; trades and VWAP set."""
    b = series[r % len(SYMS)].copy()
    b = b[:min(len(b), COUNTS[r % len(COUNTS)])]
    b["sym"] = r
    for f in ("open", "high", "low", "close"):
        b[f] *= 1 + r / 100
    b["vwap"] = (b["high"] + b["low"] + b["close"]) / 3
    b["trades"] = 1 + r % 5
    return b


def append(h: History, bars: np.ndarray) -> None:
    """Write closed bars into the ring as the bar process does (record j in slot j % K)."""
    for r in np.unique(bars["sym"]):
        b = bars[bars["sym"] == r]
        j = h.head[r] + np.arange(len(b))
        h.hist[HIST["minute"], r, j % K] = b["minute_ns"] // MINUTE_NS
        for f in HIST_FIELDS[1:]:
            h.hist[HIST[f], r, j % K] = b[f]
        h.head[r] += len(b)


@pytest.fixture
def history(series: list[np.ndarray]) -> Iterator[History]:
    h = History.create(f"scanner.boot{os.getpid()}.hist", n_fields=len(HIST_FIELDS), n_rows=N_ROWS, depth=K,
                       block_shift=3)
    h.head[:] = 0
    append(h, np.concatenate([row_bars(series, r) for r in range(N_ROWS)]))
    yield h
    h.seg.unlink()
    h.close()


def stored_bars(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Bars of the day before from 'storage' for two rows in three, in load (minute) order; a
    few minutes also in the ring, where the ring's bar must win."""
    parts = []
    for r in range(N_ROWS):
        if r % 3 == 2:
            continue
        b = row_bars(series, r)[:300].copy()
        b["minute_ns"] -= 24 * 60 * MINUTE_NS * (1 if r % 2 else 0)  # odd rows: a day earlier
        b["close"] += 0.5
        parts.append(b)
    b = np.concatenate(parts)
    b = b[np.argsort(b["minute_ns"], kind="stable")]
    values = np.empty((len(HIST_FIELDS), len(b)))
    values[HIST["minute"]] = b["minute_ns"] // MINUTE_NS
    for f in HIST_FIELDS[1:]:
        values[HIST[f]] = b[f]
    return b["sym"].astype(np.int64), values


def state(engine: IndicatorEngine, tfb: TimeframeBars) -> dict[str, np.ndarray]:
    """Every state array, as a view with the row axis first (`tf.late`: per timeframe, no rows)."""
    e, i = engine, engine.intraday
    assert i is not None
    last_axis = {"sma_sum": e.sma_sum, "sma_leave": e.sma_leave, "ema": e.ema, "state_f": e.state_f,
                 "state_i": e.state_i, "i.ring": i.ring, "i.or_hl": i.or_hl, "tf.start": tfb.start, "tf.live": tfb.live,
                 "tf.last": tfb.last}
    out = {k: np.moveaxis(a, -1, 0) for k, a in last_axis.items()}
    out.update({"ring": e.ring,  # [row, slot]
                "i.last_min": i.last_min, "i.or_open": i.or_open, "tf.last_1m": tfb.last_1m, "tf.late": tfb.late})
    for j, (h, hd) in enumerate(zip(tfb.hists, tfb.heads, strict=True)):
        out[f"tf.ring{j}"], out[f"tf.head{j}"] = np.moveaxis(h, 1, 0), hd
    return out


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def whole(h: History, stored: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[IndicatorEngine, TimeframeBars]:
    """Today's boot before chunks: one copy of the whole ring, warm-up, merge, resume."""
    hist, head = np.empty_like(h.hist), np.empty_like(h.head)
    h.snapshot(hist, head)
    eng, tfb = IndicatorEngine(N_ROWS), TimeframeBars(N_ROWS)
    eng.warm_up(hist, head)
    if stored is not None:
        eng.warm_up(*merge_history(hist, head, *stored))
    tfb.resume(hist, head)
    return eng, tfb


@pytest.mark.parametrize("with_stored", [False, True])
def test_chunked_warm_up_equals_the_whole_copy(history: History, series: list[np.ndarray],
                                               with_stored: bool) -> None:
    stored = stored_bars(series) if with_stored else None
    eng_a, tfb_a = whole(history, stored)
    eng_b, tfb_b = IndicatorEngine(N_ROWS), TimeframeBars(N_ROWS)
    chunks = []

    def walk() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for lo, hist, head in history.chunks(16):
            chunks.append(len(head))
            yield lo, hist, head

    warm_from_history(walk(), eng_b, tfb_b, StoredBars(*stored) if stored is not None else None)
    assert chunks == [16, 16, 5]
    assert_same(state(eng_a, tfb_a), state(eng_b, tfb_b))
    held = np.minimum(history.head, K)
    if stored is None:
        np.testing.assert_array_equal(eng_b.bars_seen, held)
    else:  # rows with stored bars hold more than their ring (up to K)
        assert (eng_b.bars_seen >= held).all() and (eng_b.bars_seen > held).any()
    assert all(len(hd) and hd.max() > 0 for hd in tfb_b.heads[:3])  # timeframe bars were closed


def rows_of(st: dict[str, np.ndarray], rows: slice) -> dict[str, np.ndarray]:
    """The rows' part of every state array (`state`: the row axis first)."""
    return {k: (a if k == "tf.late" else a[rows]) for k, a in st.items()}


def test_bars_closing_while_the_chunks_are_read(history: History, series: list[np.ndarray]) -> None:
    """A minute closes for every row after the first chunk was read: later chunks hold its bars,
    the first does not, and the closed-bar ring delivers them all after the warm-up (the
    consumer attached before the read). Once polled, each row's state is what a whole copy taken
    when its chunk was read gives: before the minute, then the poll, for the first chunk; after
    it for the others, where the poll changes nothing (the timeframes' live bars included)."""
    last = np.array([int(history.hist[HIST["minute"], r, (history.head[r] - 1) % K]) if history.head[r] else 0
                     for r in range(N_ROWS)])
    minute = np.zeros(N_ROWS, BAR_DTYPE)  # the next minute of every row that has bars
    minute["sym"] = np.arange(N_ROWS)
    minute["minute_ns"] = (last + 1) * MINUTE_NS
    minute["open"] = minute["high"] = minute["low"] = minute["close"] = 50.0 + np.arange(N_ROWS)
    minute["high"] += 1.0
    minute["volume"], minute["vwap"], minute["trades"] = 1000.0, 50.5, 3
    minute = minute[history.head > 0]
    before = history.head.copy()
    ref_before = whole(history)
    eng, tfb = IndicatorEngine(N_ROWS), TimeframeBars(N_ROWS)
    closed = False

    def walk() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        nonlocal closed
        for lo, hist, head in history.chunks(16):
            yield lo, hist, head
            if not closed:  # bars writes the history, then publishes into the ring
                append(history, minute)
                closed = True

    warm_from_history(walk(), eng, tfb)
    np.testing.assert_array_equal(eng.bars_seen[:16], np.minimum(before[:16], K))  # the first chunk lacks it
    np.testing.assert_array_equal(eng.bars_seen[16:], np.minimum(history.head[16:], K))  # the others have it
    ref_after = whole(history)  # holds the minute already: its poll must change nothing, so none here
    for e, t in (ref_before, (eng, tfb)):  # the first poll of the closed-bar ring
        e.on_bars_closed(minute)
        t.on_bars_closed(minute)
    got = state(eng, tfb)
    assert_same(rows_of(state(*ref_before), slice(0, 16)), rows_of(got, slice(0, 16)))
    assert_same(rows_of(state(*ref_after), slice(16, None)), rows_of(got, slice(16, None)))
    assert tfb.late.sum() == 0
    np.testing.assert_array_equal(eng.bars_seen[:16], np.minimum(before[:16], K) + (before[:16] > 0))
    np.testing.assert_array_equal(eng.bars_seen[16:], np.minimum(history.head[16:], K))  # not folded twice


def test_the_boot_holds_a_few_chunks_never_a_whole_copy() -> None:
    """Reading 4,096 rows x 256 bars (64 MB) in chunks of 256 rows allocates a few chunks' worth."""
    import tracemalloc

    from scanner.session import session_bounds_ns

    n, k = 4096, 256
    h = History.create(f"scanner.bootm{os.getpid()}.hist", n_fields=len(HIST_FIELDS), n_rows=n, depth=k,
                       block_shift=6)
    try:
        rng = np.random.default_rng(7)
        h.head[:] = rng.integers(0, 2 * k, n)
        j = h.head[:, None] - k + np.arange(k)[None, :]  # record numbers, oldest first (< 0: none)
        r, p = np.nonzero(j >= 0)
        slot = j[r, p] % k
        close = 100 + rng.normal(size=(n, k)).cumsum(axis=1)[r, p]
        h.hist[:] = np.nan
        h.hist[HIST["minute"], r, slot] = session_bounds_ns(20131008)["open"] // MINUTE_NS + j[r, p]
        for f, v in (("open", close), ("high", close + 0.5), ("low", close - 0.5), ("close", close),
                     ("volume", 100.0), ("vwap", close), ("trades", 1.0)):
            h.hist[HIST[f], r, slot] = v
        warm_kernels()  # as the process does first: loading them is not the boot's memory
        warm_timeframe_kernels()
        eng, tfb = IndicatorEngine(n), TimeframeBars(n)
        tracemalloc.start()
        try:
            warm_from_history(h.chunks(256), eng, tfb)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < h.hist.nbytes / 4, (peak, h.hist.nbytes)
        np.testing.assert_array_equal(eng.bars_seen, np.minimum(h.head, k))
    finally:
        h.seg.unlink()
        h.close()
