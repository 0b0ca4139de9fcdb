"""Hostile ticks, property-based (hypothesis): NaN, infinities, zero or negative prices and
sizes, absurd magnitudes, unknown rows, timestamps anywhere in int64, duplicates and
out-of-order bursts. Through `validate_ticks`, the last-trade writer and the bar aggregator:
nothing raises, every tick is either kept or counted as dropped, and what comes out is sane."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scanner.bars import BarAggregator, new_columns, new_history
from scanner.records import BAR_DTYPE, TICK_DTYPE, TICK_ODD_LOT
from scanner.session import NS
from scanner.ticks import (
    MAX_AHEAD_NS,
    MAX_PRICE,
    MAX_SIZE,
    MIN_PRICE,
    MIN_SIZE,
    MIN_TS_NS,
    LastTradeWriter,
    validate_ticks,
)

N_ROWS = 8
NOW = 1_795_000_000 * NS  # the test's "wall clock" (2026-11)
T0 = NOW - 6 * 3600 * NS  # the day's ticks cluster around here
HOSTILE = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hostile_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, 5e-324, 1e-300, 1e-4, 1e-6, MAX_PRICE, MAX_PRICE * 1.01, MAX_SIZE * 10,
                     1e308]),
    st.floats(0.01, 500.0),  # plenty of sane ones, so bars do form
)
timestamp = st.one_of(
    st.integers(-(2**63), 2**63 - 1),  # anywhere: far past, negative, far future
    st.integers(T0 - 3600 * NS, T0 + 3600 * NS),  # the trading hour most ticks fall in
    st.sampled_from([0, MIN_TS_NS - 1, MIN_TS_NS, NOW + MAX_AHEAD_NS, NOW + MAX_AHEAD_NS + 1]),
)
tick = st.tuples(st.integers(0, 2 * N_ROWS), st.integers(0, 3), timestamp, hostile_float, hostile_float)


@st.composite
def bursts(draw: st.DrawFn) -> list[np.ndarray]:
    """Batches of ticks, with duplicates and out-of-order runs spliced in."""
    rows = draw(st.lists(tick, max_size=60))
    if rows and draw(st.booleans()):
        rows += draw(st.lists(st.sampled_from(rows), max_size=20))  # exact duplicates
    if rows and draw(st.booleans()):
        rows.reverse()  # an out-of-order burst
    batch = np.array(rows, TICK_DTYPE) if rows else np.zeros(0, TICK_DTYPE)
    cuts = sorted(draw(st.lists(st.integers(0, len(batch)), max_size=4)))
    return np.split(batch, cuts)


@HOSTILE
@given(bursts())
def test_every_tick_is_kept_or_counted_and_the_bars_stay_sane(batches: list[np.ndarray]) -> None:
    cols = new_columns(N_ROWS)
    hist, head = new_history(N_ROWS, depth=16)
    agg = BarAggregator(cols, hist, head)
    price, size = np.full(N_ROWS, np.nan), np.full(N_ROWS, np.nan)
    last_ts, count = np.zeros(N_ROWS, np.int64), np.zeros(N_ROWS, np.int64)
    writer = LastTradeWriter(price, size, last_ts, count)
    offered = kept = dropped = 0
    closed = [np.zeros(0, BAR_DTYPE)]
    for batch in batches:
        good, bad = validate_ticks(batch, N_ROWS, NOW + MAX_AHEAD_NS)
        offered += len(batch)
        kept += len(good)
        dropped += bad
        assert len(good) + bad == len(batch)
        assert np.all(good["sym"] < N_ROWS)
        assert np.all((good["price"] >= MIN_PRICE) & (good["price"] <= MAX_PRICE))
        assert np.all((good["size"] == 0) | ((good["size"] >= MIN_SIZE) & (good["size"] <= MAX_SIZE)))
        assert np.all((good["ts_ns"] >= MIN_TS_NS) & (good["ts_ns"] <= NOW + MAX_AHEAD_NS))
        writer.apply(good)
        closed.append(agg.on_ticks(good))
    closed.append(agg.close_all())
    assert kept + dropped == offered and agg.ticks == kept and 0 <= agg.late_ticks <= kept
    assert int(count.sum()) == kept
    bars = np.concatenate(closed)
    assert np.all(bars["sym"] < N_ROWS)
    priced = bars[np.isfinite(bars["open"])]
    for f in ("open", "high", "low", "close"):
        assert np.all((priced[f] >= MIN_PRICE) & (priced[f] <= MAX_PRICE)), f
    assert np.all(priced["low"] <= np.minimum(priced["open"], priced["close"]))
    assert np.all(np.maximum(priced["open"], priced["close"]) <= priced["high"])
    assert np.all(np.isfinite(bars["volume"]) & (bars["volume"] >= 0))
    assert not np.isinf(bars["vwap"]).any()
    assert not np.isinf(cols["vwap"]).any() and not np.isinf(cols["day_volume"]).any()
    # a restarted count: whatever the input, the per-minute bars of one symbol are unique
    keys = bars[["sym", "minute_ns"]]
    assert len(np.unique(keys)) == len(keys)
    assert np.all(np.isfinite(price[np.isfinite(price)]))


def test_a_far_future_tick_no_longer_ends_the_day() -> None:
    """Before the bound, one tick from 2200 rolled the aggregator to its day: every real tick
    after it was late and dropped (and the roll walked day by day through 170 years)."""
    cols = new_columns(1)
    hist, head = new_history(1, depth=16)
    agg = BarAggregator(cols, hist, head)
    far = np.array([(0, 0, 7_258_118_400 * NS, 10.0, 100)], TICK_DTYPE)  # 2200-01-01
    real = np.array([(0, 0, T0 + i * NS, 10.0 + i, 100) for i in range(5)], TICK_DTYPE)
    good, bad = validate_ticks(np.concatenate([real[:2], far, real[2:]]), 1, NOW + MAX_AHEAD_NS)
    assert bad == 1
    agg.on_ticks(good)
    assert agg.late_ticks == 0 and cols["day_volume"][0] == 500


def test_a_bar_of_odd_lots_at_the_lowest_price_stays_in_range() -> None:
    """Only odd lots, at the lowest valid price: the flat bar takes the bar's own VWAP, whose
    rounding (1e-4 * 2e-4 + 1e-4 * 3e-4) / 5e-4 = 9.999999999999999e-05 stepped under the lowest
    valid price (found by the hypothesis test above)."""
    cols = new_columns(1)
    hist, head = new_history(1, depth=16)
    agg = BarAggregator(cols, hist, head)
    odd = np.array([(0, TICK_ODD_LOT, T0 + NS, MIN_PRICE, 2e-4), (0, TICK_ODD_LOT, T0 + 2 * NS, MIN_PRICE, 3e-4)],
                   TICK_DTYPE)
    good, bad = validate_ticks(odd, 1, NOW + MAX_AHEAD_NS)
    assert bad == 0
    agg.on_ticks(good)
    bars = agg.close_all()
    assert len(bars) == 1
    for f in ("open", "high", "low", "close"):
        assert bars[f][0] == MIN_PRICE, f
