"""The 1-minute bar aggregator against independent references: a pandas resample of real US
equity ticks, Databento's own ohlcv-1m bars, batch-split invariance, late ticks, sessions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scanner.bars import AGG_STATE, BarAggregator, new_columns, new_history
from scanner.feeds.common import FeedStats, SymbolMap
from scanner.feeds.dbn import read_dbn_ohlcv, read_dbn_trades
from scanner.feeds.lean import lean_tick_files, read_lean_ticks
from scanner.metrics import HIST
from scanner.records import (
    BAR_DTYPE,
    TICK_DTYPE,
    TICK_NO_HIGH_LOW,
    TICK_NO_LAST,
    TICK_NO_PRICE,
    TICK_NO_VOLUME,
    TICK_ODD_LOT,
)
from scanner.session import MINUTE_NS, NS, session_bounds_ns, trading_day
from tests.scanner.helpers import data_path, pandas_reference_bars

DAY = 20131008
B = session_bounds_ns(DAY)


def _agg(n: int, depth: int = 400, grace_ns: int = 2 * NS) -> tuple[BarAggregator, dict[str, np.ndarray]]:
    cols = new_columns(n)
    hist, head = new_history(n, depth)
    return BarAggregator(cols, hist, head, grace_ns=grace_ns), cols


def _ticks(rows: list[tuple[int, int, float, float, int]]) -> np.ndarray:
    t = np.zeros(len(rows), TICK_DTYPE)
    for i, (sym, ts, px, size, flags) in enumerate(rows):
        t[i] = (sym, flags, ts, px, size)
    return t


def _sorted(bars: np.ndarray) -> np.ndarray:
    return bars[np.lexsort((bars["minute_ns"], bars["sym"]))]


# ---------------------------------------------------------------- real ticks vs pandas


def _day_reference(df: pd.DataFrame, day: int) -> pd.DataFrame:
    b = session_bounds_ns(day)
    d = df[(df.ts_ns >= b["day_start"]) & (df.ts_ns < b["day_end"]) & ((df["flags"] & TICK_NO_VOLUME) == 0)]
    priced = (d["flags"] & TICK_NO_PRICE) == 0
    reg = d[(d.ts_ns >= b["open"]) & (d.ts_ns < b["close"])]
    regp = reg[priced.loc[reg.index]]
    pre = d[(d.ts_ns >= b["premarket"]) & (d.ts_ns < b["open"])]
    prep = pre[priced.loc[pre.index]]
    rows = {}
    for sym, g in regp.groupby("sym"):
        runmax = g.price.cummax()
        raised = (runmax.diff() > 0).sum()
        hod_ts = int(g.ts_ns[g.price == g.price.max()].iloc[0])
        rows[sym] = {"day_open": g.price.iloc[0], "day_high": g.price.max(), "day_low": g.price.min(),
                     "hod_ts_ns": hod_ts, "new_hod_count": float(raised)}
    ref = pd.DataFrame.from_dict(rows, orient="index")
    ref["day_volume"] = d.groupby("sym")["size"].sum()
    ref["day_trades"] = d.groupby("sym").size()
    ref["vwap"] = (reg.price * reg["size"]).groupby(reg.sym).sum() / reg.groupby("sym")["size"].sum()
    ref["premarket_high"] = prep.groupby("sym").price.max()
    ref["premarket_low"] = prep.groupby("sym").price.min()
    ref["premarket_volume"] = pre.groupby("sym")["size"].sum()
    return ref


@pytest.fixture(scope="module")
def lean_ticks() -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    root = data_path("lean-us-equity")
    syms = SymbolMap()
    stats = FeedStats()
    batches = [b.ticks for b in read_lean_ticks(lean_tick_files(root), syms, stats=stats, batch_size=50_000)]
    assert stats.malformed == 0 and stats.ticks > 1_500_000
    assert syms.names == ["AIG", "BAC", "IBM", "SPY"]
    return np.concatenate(batches), batches, syms.names


@pytest.mark.parametrize("flag_share", [0.0, 0.3])
def test_lean_ticks_match_pandas_resample(lean_ticks: tuple[np.ndarray, list[np.ndarray], list[str]],
                                          flag_share: float) -> None:
    """Every bar of three real days equals the resample; with `flag_share` of the ticks also
    flagged odd-lot / no-last / no-high-low / no-volume (the 2013 tape has almost no odd lots), so
    flat bars and ignored reports occur too."""
    ticks, batches, names = lean_ticks
    if flag_share:
        rng = np.random.default_rng(3)
        ticks = ticks.copy()
        pick = rng.random(len(ticks)) < flag_share
        kinds = [TICK_ODD_LOT, TICK_NO_LAST, TICK_NO_HIGH_LOW, TICK_NO_LAST | TICK_NO_HIGH_LOW, TICK_NO_VOLUME]
        ticks["flags"][pick] |= rng.choice(kinds, int(pick.sum())).astype(np.uint32)
        batches = np.split(ticks, np.cumsum([len(b) for b in batches])[:-1])
    agg, cols = _agg(len(names))
    got: list[np.ndarray] = []
    day_cols: dict[int, dict[str, np.ndarray]] = {}
    for batch in batches:
        day = trading_day(int(batch["ts_ns"][0]))
        if agg.day and day != agg.day:  # snapshot the day's statistics before the roll
            day_cols[agg.day] = {k: v.copy() for k, v in cols.items()}
        got.append(agg.on_ticks(batch))
    day_cols[agg.day] = {k: v.copy() for k, v in cols.items()}
    got.append(agg.close_all())
    bars = _sorted(np.concatenate(got))
    assert agg.late_ticks == 0 and agg.ticks == len(ticks)

    df = pd.DataFrame({k: ticks[k] for k in ("sym", "ts_ns", "price", "size", "flags")})
    assert (df["flags"] != 0).sum() >= (7 if flag_share == 0 else len(df) * flag_share * 0.9)
    ref = pandas_reference_bars(df)
    assert len(bars) == len(ref)
    np.testing.assert_array_equal(bars["sym"], ref.sym)
    np.testing.assert_array_equal(bars["minute_ns"], ref.minute_ns)
    for k in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(bars[k], ref[k].to_numpy(), err_msg=k)
    np.testing.assert_array_equal(bars["trades"], ref.trades)
    np.testing.assert_allclose(bars["vwap"], ref.vwap, rtol=1e-9)

    for day, snap in day_cols.items():
        dref = _day_reference(df, day)
        rows = dref.index.to_numpy()
        for k in dref.columns:
            np.testing.assert_allclose(snap[k][rows], dref[k].to_numpy(dtype=float), rtol=1e-9,
                                       err_msg=f"{day} {k}")
        n_day = [(bars["sym"] == r) & (bars["minute_ns"] >= session_bounds_ns(day)["day_start"])
                 & (bars["minute_ns"] < session_bounds_ns(day)["day_end"]) for r in range(len(names))]
        live = snap["bar_start_ns"] != 0  # the day's last bar closes at the roll
        assert (snap["bars_closed"] + live).tolist() == [int(m.sum()) for m in n_day]

    # the history ring holds the last K bars of each symbol, oldest first
    k = agg.hist.shape[2]
    for r in range(len(names)):
        mine = bars[bars["sym"] == r][-k:]
        head = int(agg.hist_head[r])
        slots = np.arange(head - len(mine), head) % k
        np.testing.assert_array_equal(agg.hist[HIST["close"], r, slots], mine["close"])
        np.testing.assert_array_equal(agg.hist[HIST["minute"], r, slots], mine["minute_ns"] // MINUTE_NS)


# ---------------------------------------------------------------- Databento vendor bars


def test_databento_trades_aggregate_to_vendor_bars() -> None:
    trades = data_path("databento-glbx", "futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst")
    ohlcv = data_path("databento-glbx", "futures_ohlcv-1m_2024-07-01T23-40_2024-07-02T00-10.dbn.zst")
    syms = SymbolMap()
    vendor = read_dbn_ohlcv(ohlcv, syms)
    agg, _ = _agg(len(syms))
    got = [agg.on_ticks(b.ticks) for b in read_dbn_trades([trades], syms)]
    mine = _sorted(np.concatenate([*got, agg.close_all()]))
    es = syms.row("ESU4")
    mine = mine[mine["sym"] == es]
    assert len(mine) == 4  # 23:58, 23:59, 00:00, 00:01 UTC
    v = vendor[(vendor["sym"] == es) & np.isin(vendor["minute_ns"], mine["minute_ns"])]
    assert len(v) == 4
    for k in ("minute_ns", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(mine[k], v[k], err_msg=k)


# ---------------------------------------------------------------- invariance and late ticks


def _jittered_day(lean_ticks: tuple[np.ndarray, list[np.ndarray], list[str]]) -> np.ndarray:
    """One real day with feed-order jitter: ticks displaced by up to ~3 s, so some merge out of
    order inside their minute and some arrive after the grace (late)."""
    ticks = lean_ticks[0]
    b = session_bounds_ns(20131009)
    day = ticks[(ticks["ts_ns"] >= b["open"]) & (ticks["ts_ns"] < b["open"] + 40 * MINUTE_NS)]
    rng = np.random.default_rng(5)
    key = day["ts_ns"] + rng.integers(0, 3 * NS, len(day))
    return day[np.argsort(key, kind="stable")]


def _run(ticks: np.ndarray, cuts: np.ndarray, n: int) -> tuple[np.ndarray, BarAggregator]:
    agg, _ = _agg(n, depth=64, grace_ns=NS)
    parts = [agg.on_ticks(p) for p in np.split(ticks, cuts)]
    parts.append(agg.close_all())
    return _sorted(np.concatenate(parts)), agg


LeanTicks = tuple[np.ndarray, list[np.ndarray], list[str]]


def test_any_batch_split_gives_the_same_bars(lean_ticks: LeanTicks) -> None:
    ticks = _jittered_day(lean_ticks)
    n = len(lean_ticks[2])
    whole, a0 = _run(ticks, np.array([], int), n)
    assert a0.late_ticks > 0  # the jitter does produce late ticks
    rng = np.random.default_rng(11)
    splits = [np.sort(rng.choice(len(ticks), size, replace=False)) for size in (7, 300, 5000)]
    splits.append(np.arange(1, 3000))  # single-tick batches at the start
    for cuts in splits:
        bars, agg = _run(ticks, cuts, n)
        assert bars.tobytes() == whole.tobytes()
        assert agg.late_ticks == a0.late_ticks
        np.testing.assert_array_equal(agg.hist, a0.hist)
        for k, v in agg.columns.items():
            np.testing.assert_array_equal(v, a0.columns[k], err_msg=k)


def test_late_ticks_are_counted_and_dropped() -> None:
    agg, cols = _agg(2, grace_ns=2 * NS)
    o = B["open"]
    first = agg.on_ticks(_ticks([(0, o + 10 * NS, 10.0, 100, 0), (0, o + 70 * NS, 11.0, 100, 0)]))
    assert len(first) == 1 and first["close"][0] == 10.0  # superseded by the next minute
    # older than the live bar of its symbol: late
    assert len(agg.on_ticks(_ticks([(0, o + 30 * NS, 99.0, 100, 0)]))) == 0
    assert agg.late_ticks == 1
    # symbol 1 never traded in minute 0, but the watermark (max ts - grace) has passed its end
    agg.on_ticks(_ticks([(1, o + 61 * NS, 20.0, 100, 0), (1, o + 59 * NS, 21.0, 100, 0)]))
    assert agg.late_ticks == 2
    # inside the grace: merges out of order (open = earliest event time)
    agg.on_ticks(_ticks([(1, o + 62 * NS, 22.0, 100, 0), (1, o + 60 * NS, 19.0, 100, 0)]))
    assert agg.late_ticks == 2
    assert cols["bar_open"][1] == 19.0 and cols["bar_close"][1] == 22.0 and cols["bar_high"][1] == 22.0
    assert cols["day_volume"].tolist() == [200.0, 300.0] and agg.ticks == 7


def test_watermark_closes_quiet_symbols_and_gaps_make_no_bars() -> None:
    agg, cols = _agg(2)
    o = B["open"]
    agg.on_ticks(_ticks([(0, o + 1 * NS, 10.0, 100, 0), (1, o + 2 * NS, 5.0, 100, 0)]))
    closed = agg.on_ticks(_ticks([(1, o + 185 * NS, 6.0, 100, 0)]))  # minute 3 for symbol 1
    assert sorted(closed["sym"].tolist()) == [0, 1]  # symbol 0 by the watermark
    assert cols["bar_start_ns"][0] == 0 and np.isnan(cols["bar_close"][0])
    assert agg.close_due(o + 10 * 60 * NS)["minute_ns"].tolist() == [o + 180 * NS]
    assert agg.hist_head.tolist() == [1, 2]  # minutes 1 and 2 had no trades: no bars


def test_odd_lots_count_volume_but_not_price() -> None:
    agg, cols = _agg(1)
    o = B["open"]
    agg.on_ticks(_ticks([(0, o + 1 * NS, 10.0, 100, 0), (0, o + 2 * NS, 50.0, 10, TICK_ODD_LOT),
                         (0, o + 3 * NS, 1.0, 100, TICK_NO_LAST)]))
    assert cols["bar_high"][0] == 10.0 and cols["bar_low"][0] == 10.0 and cols["day_high"][0] == 10.0
    assert cols["bar_volume"][0] == 210.0 and cols["bar_trades"][0] == 3
    np.testing.assert_allclose(cols["bar_vwap"][0], (1000 + 500 + 100) / 210)
    # a minute of odd lots only closes flat at the previous close
    agg.on_ticks(_ticks([(0, o + 61 * NS, 12.0, 5, TICK_ODD_LOT)]))
    bar = agg.close_all()
    assert bar[["open", "high", "low", "close"]].tolist() == [(10.0, 10.0, 10.0, 10.0)]
    assert bar["volume"][0] == 5.0 and bar["vwap"][0] == 12.0


def test_no_high_low_prints_and_reports_never_move_the_day() -> None:
    """An average-price print (no last, no high/low) above the high moves no price and no HOD; an
    official close report (no volume) counts nowhere."""
    agg, cols = _agg(1)
    o = B["open"]
    agg.on_ticks(_ticks([(0, o + 1 * NS, 10.0, 100, 0), (0, o + 2 * NS, 11.0, 100, 0),
                         (0, o + 3 * NS, 50.0, 300, TICK_NO_LAST | TICK_NO_HIGH_LOW),
                         (0, o + 4 * NS, 60.0, 100, TICK_NO_HIGH_LOW),
                         (0, o + 5 * NS, 0.5, 9999, TICK_NO_VOLUME)]))
    day = (cols["day_high"][0], cols["day_low"][0], cols["bar_high"][0], cols["bar_close"][0])
    assert day == (11.0, 10.0, 11.0, 11.0)
    assert cols["new_hod_count"][0] == 1.0 and cols["hod_ts_ns"][0] == o + 2 * NS
    assert (cols["bar_volume"][0], cols["bar_trades"][0], cols["day_volume"][0]) == (600.0, 4, 600.0)
    bar = agg.close_all()
    assert bar[["open", "high", "low", "close", "volume"]].tolist() == [(10.0, 11.0, 10.0, 11.0, 600.0)]
    # a minute holding only a report makes no bar
    agg.on_ticks(_ticks([(0, o + 125 * NS, 12.0, 100, TICK_NO_VOLUME)]))
    assert len(agg.close_all()) == 0 and agg.late_ticks == 0


def test_sessions_and_day_roll() -> None:
    agg, cols = _agg(1)
    pre, o, c = B["premarket"], B["open"], B["close"]
    agg.on_ticks(_ticks([(0, pre + 60 * NS, 9.0, 100, 0), (0, pre + 120 * NS, 8.0, 300, 0),
                         (0, o + 5 * NS, 10.0, 100, 0), (0, o + 65 * NS, 11.0, 100, 0),
                         (0, o + 125 * NS, 10.5, 100, 0), (0, c + 30 * 60 * NS, 20.0, 100, 0)]))
    pm = (cols["premarket_high"][0], cols["premarket_low"][0], cols["premarket_volume"][0])
    assert pm == (9.0, 8.0, 400.0)
    assert (cols["day_open"][0], cols["day_high"][0], cols["day_low"][0]) == (10.0, 11.0, 10.0)
    assert cols["new_hod_count"][0] == 1.0 and cols["hod_ts_ns"][0] == o + 65 * NS
    assert cols["vwap"][0] == pytest.approx((10 + 11 + 10.5) / 3)
    assert cols["day_volume"][0] == 800.0 and cols["day_trades"][0] == 6  # pre and after included
    assert cols["bar_start_ns"][0] == c + 30 * 60 * NS  # after-hours ticks form bars
    assert cols["bars_closed"][0] == 5
    nxt = session_bounds_ns(20131009)
    rolled = agg.on_ticks(_ticks([(0, nxt["open"] + NS, 30.0, 100, 0), (0, c + 31 * 60 * NS, 1.0, 100, 0)]))
    assert rolled["minute_ns"].tolist() == [c + 30 * 60 * NS]
    assert agg.day == 20131009 and agg.late_ticks == 1  # the old day's tick after the roll
    assert cols["bars_closed"][0] == 0 and cols["day_volume"][0] == 100.0 and cols["day_open"][0] == 30.0
    assert int(agg.hist_head[0]) == 6


def test_state_can_live_outside_and_be_reattached() -> None:
    n = 3
    cols = new_columns(n)
    hist, head = new_history(n, 16)
    state = BarAggregator.new_state(n)
    assert set(AGG_STATE) <= set(state)
    o = B["open"]
    a = BarAggregator(cols, hist, head, state=state)
    a.on_ticks(_ticks([(2, o + NS, 10.0, 100, 0)]))
    b = BarAggregator(cols, hist, head, state=state)  # a restarted process re-attaches
    assert b.day == DAY and b.ticks == 1
    b.on_ticks(_ticks([(2, o + 2 * NS, 12.0, 100, 0)]))
    bar = b.close_all()
    assert bar[["open", "close", "volume"]].tolist() == [(10.0, 12.0, 200.0)]
    with pytest.raises(ValueError, match="outside the table"):
        b.on_ticks(_ticks([(3, o + 3 * NS, 1.0, 1, 0)]))
    with pytest.raises(ValueError, match="must be C-contiguous"):
        BarAggregator({**cols, "bar_open": np.zeros(2 * n)[::2]}, hist, head)
    assert BAR_DTYPE.itemsize == 64
