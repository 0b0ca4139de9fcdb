"""Higher-timeframe bars against a pandas resample of the same real ticks (Lean US equities,
three days of October 2013, through the 1-minute aggregator as live), and their indicators
against TA-Lib on those bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from scanner.bars import BarAggregator, new_columns, new_history
from scanner.feeds.common import SymbolMap
from scanner.feeds.lean import lean_tick_files, read_lean_ticks
from scanner.indicators.engine import KERNEL_OUT
from scanner.indicators.timeframes import TimeframeIndicators
from scanner.metrics import HIST
from scanner.records import BAR_DTYPE
from scanner.session import MINUTE_NS, session_bounds_ns
from scanner.timeframes import TF, TIMEFRAMES, TimeframeBars
from tests.scanner.helpers import data_path, pandas_reference_bars, table_columns

RULE = {"5m": "5min", "15m": "15min", "60m": "60min", "1d": "1D"}


@pytest.fixture(scope="module")
def run() -> dict[str, object]:
    syms = SymbolMap()
    files = lean_tick_files(data_path("lean-us-equity"), days=[20131007, 20131008, 20131009])
    ticks = np.concatenate([b.ticks for b in read_lean_ticks(files, syms, batch_size=100_000)])
    n = len(syms.names)
    hist, head = new_history(n)
    agg = BarAggregator(new_columns(n), hist, head)
    tf = TimeframeBars(n)
    engines = TimeframeIndicators(n).engines  # as the indicator process has them (SMA periods, ring length)
    outs = np.full((len(KERNEL_OUT), n), np.nan)
    no_live_bar, no_close = np.zeros(n, np.int64), np.full(n, np.nan)
    closed: dict[str, list[np.ndarray]] = {t: [] for t in TIMEFRAMES}
    finals: dict[str, list[tuple[int, int, dict[str, float]]]] = {t: [] for t in TIMEFRAMES}

    def take(parts: list[np.ndarray]) -> None:
        for t, b in zip(TIMEFRAMES, parts, strict=True):
            if len(b):
                closed[t].append(b)
                eng = engines[t]
                eng.on_bars_closed(b)
                eng.update_kernel(no_live_bar, no_close, tuple(outs))
                for r in np.unique(b["sym"]):
                    finals[t].append((int(r), int(eng.bars_seen[r]),
                                      {k: float(outs[eng.kernel_out.index(k), r])
                                       for k in ("rsi_14", "sma_20", "sma_50", "ema_9", "ema_20", "atr_14")}))

    for i in range(0, len(ticks), 20_000):
        take(tf.on_bars_closed(agg.on_ticks(ticks[i:i + 20_000])))
        take(tf.close_due(agg.watermark_ns))
    take(tf.on_bars_closed(agg.close_all()))
    take(tf.close_due(agg.watermark_ns + 10**18))
    df = pd.DataFrame({"sym": ticks["sym"], "ts_ns": ticks["ts_ns"], "price": ticks["price"],
                       "size": ticks["size"], "flags": ticks["flags"]})
    return {"closed": {t: np.concatenate(v) for t, v in closed.items()}, "finals": finals,
            "ref1m": pandas_reference_bars(df), "tf": tf, "n": n}


def _resample(ref1m: pd.DataFrame, tf: str) -> pd.DataFrame:
    d = ref1m
    if tf == "1d":  # the regular session of each day
        m = pd.to_datetime(d.minute_ns, unit="ns").dt.tz_localize("UTC").dt.tz_convert("America/New_York")
        tod = m.dt.hour * 60 + m.dt.minute
        d = d[(tod >= 570) & (tod < 960)]
    out = []
    for sym, g in d.groupby("sym"):
        g = g.set_index(pd.to_datetime(g.minute_ns, unit="ns"))
        if tf == "1d":
            g = g.tz_localize("UTC").tz_convert("America/New_York")
        a = g.resample(RULE[tf]).agg({"open": "first", "high": "max", "low": "min", "close": "last",
                                      "volume": "sum", "trades": "sum"})
        a = a[a.trades > 0]
        a["sym"] = sym
        if tf == "1d":
            a["minute_ns"] = [session_bounds_ns(int(x.strftime("%Y%m%d")))["open"] for x in a.index]
        else:
            a["minute_ns"] = a.index.asi8
        out.append(a.reset_index(drop=True))
    return pd.concat(out, ignore_index=True).sort_values(["sym", "minute_ns"], ignore_index=True)


@pytest.mark.parametrize("tf", TIMEFRAMES)
def test_timeframe_bars_equal_pandas_resample(run: dict, tf: str) -> None:
    got = run["closed"][tf]
    got = pd.DataFrame({k: got[k] for k in BAR_DTYPE.names}).sort_values(["sym", "minute_ns"], ignore_index=True)
    want = _resample(run["ref1m"], tf)
    assert len(got) == len(want) >= (3 * 4 if tf == "1d" else 100)
    for k in ("sym", "minute_ns", "trades"):
        np.testing.assert_array_equal(got[k].to_numpy(np.int64), want[k].to_numpy(np.int64), err_msg=k)
    for k in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(got[k].to_numpy(), want[k].to_numpy(), err_msg=f"{tf} {k}")
    assert int(run["tf"].late[TIMEFRAMES.index(tf)]) == 0
    # the history ring holds the same bars, in order
    tfb = run["tf"]
    j = TIMEFRAMES.index(tf)
    for r in range(run["n"]):
        mine = want[want.sym == r]
        k = tfb.hists[j].shape[0]
        h = int(tfb.heads[j][r])
        assert h == len(mine)
        slots = np.arange(max(0, h - k), h) % k
        np.testing.assert_array_equal(tfb.hists[j][slots, r, TF["close"]], mine.close.to_numpy()[-len(slots):])
        np.testing.assert_array_equal(tfb.hists[j][slots, r, TF["minute"]] * MINUTE_NS,
                                      mine.minute_ns.to_numpy()[-len(slots):])


@pytest.mark.parametrize("tf", ["5m", "15m"])
def test_timeframe_indicators_equal_talib(run: dict, tf: str) -> None:
    """The timeframe engines (a ring of 64 closes: SMA(50) is their longest) after every close,
    over more bars than their ring holds."""
    want = _resample(run["ref1m"], tf)
    checked = 0
    for r, g in want.groupby("sym"):
        c, h, lo = g.close.to_numpy(), g.high.to_numpy(), g.low.to_numpy()
        ref = {"rsi_14": talib.RSI(c, 14), "sma_20": talib.SMA(c, 20), "sma_50": talib.SMA(c, 50),
               "ema_9": talib.EMA(c, 9), "ema_20": talib.EMA(c, 20), "atr_14": talib.ATR(h, lo, c, 14)}
        for row, seen, vals in run["finals"][tf]:
            if row != r:
                continue
            for k, v in vals.items():
                assert v == pytest.approx(ref[k][seen - 1], rel=1e-9, nan_ok=True), (tf, r, seen, k)
            checked += 1
    assert checked > 200


def test_daily_timeframe_seeded_from_lean_daily_then_today_matches_talib(run: dict) -> None:
    """The daily ring seeded from the Lean daily files before 2013-10-07, then the three days
    built from ticks: the 1d indicators equal TA-Lib over that same series, and the live value
    (today's bar as if it closed at the last price) too."""
    from scanner.daily import daily_matrix
    from scanner.feeds.lean import read_lean_daily
    from scanner.indicators.timeframes import TimeframeIndicators
    from scanner.timeframes import seed_daily

    names = ["aig", "bac", "ibm", "spy"]
    daily = [read_lean_daily(data_path("lean-us-equity", "daily", f"{s}.zip")) for s in names]
    tfb = TimeframeBars(4)
    j = TIMEFRAMES.index("1d")
    seed_daily(tfb.hists[j], tfb.heads[j], daily_matrix(daily, 20131007, 260))
    tfi = TimeframeIndicators(4)
    tfi.warm_up(tfb.hists, tfb.heads)
    ours = run["closed"]["1d"]
    first_two = ours[ours["minute_ns"] < session_bounds_ns(20131009)["open"]]
    tfi.on_bars_closed([np.empty(0, BAR_DTYPE)] * 3 + [first_two[np.argsort(first_two["minute_ns"])]])
    cols = table_columns(4)
    cols["bar_start_ns"][:] = session_bounds_ns(20131009)["open"] + 60 * MINUTE_NS
    last = ours[ours["minute_ns"] == session_bounds_ns(20131009)["open"]]
    cols["bar_close"][last["sym"]] = last["close"]
    cols["price"][last["sym"]] = last["close"]
    tfi.update_live(cols, tfb, int(cols["bar_start_ns"][0]) + 30 * 10**9)
    for r, s in enumerate(names):
        past = daily[r][daily[r]["day"] < 20131007]
        mine = ours[(ours["sym"] == r)]
        c = np.concatenate([past["close"], mine["close"]])
        h = np.concatenate([past["high"], mine["high"]])
        lo = np.concatenate([past["low"], mine["low"]])
        for k, want in (("rsi_14_1d", talib.RSI(c, 14)[-1]), ("sma_50_1d", talib.SMA(c, 50)[-1]),
                        ("sma_200_1d", talib.SMA(c, 200)[-1]), ("ema_20_1d", talib.EMA(c[-260:], 20)[-1]),
                        ("atr_14_1d", talib.ATR(h[:-1], lo[:-1], c[:-1], 14)[-1])):
            rel = 1e-9 if k.startswith("sma") else 1e-6  # EMA/RSI/ATR: seeds from 260 daily bars
            assert cols[k][r] == pytest.approx(want, rel=rel), (s, k)
        assert cols["pct_from_sma_50_1d"][r] == pytest.approx((c[-1] / talib.SMA(c, 50)[-1] - 1) * 100)


def test_resume_from_rings_gives_the_same_bars(run: dict) -> None:
    """A restarted indicators process rebuilds its live timeframe bars from the 1-minute ring and
    closes the same bars as an uninterrupted run."""
    ref1m = run["ref1m"]
    cut = session_bounds_ns(20131008)["open"] + 97 * MINUTE_NS  # mid-bucket for every timeframe
    b = np.zeros(len(ref1m), BAR_DTYPE)
    for k in ("sym", "minute_ns", "open", "high", "low", "close", "volume", "vwap", "trades"):
        b[k] = ref1m[k].to_numpy()
    b = b[np.lexsort((b["sym"], b["minute_ns"]))]
    before, after = b[b["minute_ns"] < cut], b[b["minute_ns"] >= cut]
    whole = TimeframeBars(4)
    first = TimeframeBars(4)
    w1 = whole.on_bars_closed(before)
    f1 = first.on_bars_closed(before)
    hist, head = new_history(4, 400)
    for r in range(4):
        mine = before[before["sym"] == r][-400:]
        j = np.arange(int((before["sym"] == r).sum()) - len(mine), int((before["sym"] == r).sum()))
        for f in ("open", "high", "low", "close", "volume", "vwap", "trades"):
            hist[HIST[f], r, j % 400] = mine[f]
        hist[HIST["minute"], r, j % 400] = mine["minute_ns"] // MINUTE_NS
        head[r] = int((before["sym"] == r).sum())
    second = TimeframeBars(4, first.hists, first.heads)  # a new process over the same rings
    assert sum(len(x) for x in second.resume(hist, head)) == 0
    live = second.live.copy()
    # the closed-bar ring re-delivers what the ring already held (the consumer's cursor was behind)
    assert sum(len(x) for x in second.on_bars_closed(before[-200:])) == 0
    np.testing.assert_array_equal(second.live, live)  # not merged twice
    for tf, a, c in zip(TIMEFRAMES, whole.on_bars_closed(after), second.on_bars_closed(after), strict=True):
        np.testing.assert_array_equal(a, c, err_msg=tf)
    for a, c in zip(whole.close_due(2**62), second.close_due(2**62), strict=True):
        np.testing.assert_array_equal(a, c)
    assert all(len(x) for x in w1) and [len(x) for x in w1] == [len(x) for x in f1]
    assert second.late.sum() == 0


@pytest.mark.parametrize("tf", ["5m", "15m", "60m"])
def test_intraday_buckets_are_new_york_clock_aligned_including_premarket(run: dict, tf: str) -> None:
    """5/15/60-minute buckets start on New York clock multiples (60 minutes: 04:00, 05:00 ...
    09:00, 10:00, not anchored at the 09:30 open), and pre-market minutes (04:00-09:30) feed them:
    the bars equal a pandas resample done in New York local time, and the 09:00 hour bar holds
    the 09:00-09:29 pre-market minutes with the first half hour of the session."""
    minutes = int(tf[:-1])
    got = run["closed"][tf]
    local = pd.to_datetime(got["minute_ns"], unit="ns").tz_localize("UTC").tz_convert("America/New_York")
    tod = np.asarray(local.hour * 60 + local.minute)
    assert (tod % minutes == 0).all()
    assert tod.min() == 4 * 60 and (tod < 9 * 60 + 30).sum() >= 3 * 4  # pre-market bars, from 04:00
    ref1m = run["ref1m"]
    want = []
    for sym, g in ref1m.groupby("sym"):
        g = g.set_index(pd.to_datetime(g.minute_ns.to_numpy(), unit="ns").tz_localize("UTC").tz_convert(
            "America/New_York"))
        a = g.resample(RULE[tf]).agg({"open": "first", "high": "max", "low": "min", "close": "last",
                                      "volume": "sum", "trades": "sum"})
        a = a[a.trades > 0]
        a["sym"], a["minute_ns"] = sym, a.index.tz_convert("UTC").asi8
        want.append(a.reset_index(drop=True))
    w = pd.concat(want, ignore_index=True).sort_values(["sym", "minute_ns"], ignore_index=True)
    g = pd.DataFrame({k: got[k] for k in BAR_DTYPE.names}).sort_values(["sym", "minute_ns"], ignore_index=True)
    assert len(g) == len(w)
    for k in ("sym", "minute_ns", "trades"):
        np.testing.assert_array_equal(g[k].to_numpy(np.int64), w[k].to_numpy(np.int64), err_msg=k)
    for k in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(g[k].to_numpy(), w[k].to_numpy(), err_msg=f"{tf} {k}")
    if tf == "60m":
        for day in (20131007, 20131008, 20131009):
            nine = session_bounds_ns(day)["open"] - 30 * MINUTE_NS  # 09:00 New York
            bar = g[(g.minute_ns == nine) & (g.sym == 3)]  # SPY trades before and after 09:30
            mins = ref1m[(ref1m.sym == 3) & (ref1m.minute_ns >= nine) & (ref1m.minute_ns < nine + 60 * MINUTE_NS)]
            assert len(bar) == 1 and (mins.minute_ns < nine + 30 * MINUTE_NS).any()
            assert (mins.minute_ns >= nine + 30 * MINUTE_NS).any()
            assert bar.volume.iloc[0] == mins.volume.sum() and bar.open.iloc[0] == mins.open.iloc[0]


@pytest.mark.parametrize("day", [20131008, 20240308, 20240311])  # EDT; EST, the Friday before DST; EDT, after it
def test_live_daily_bucket_from_the_open_equals_day_bucket(day: int) -> None:
    """The live refresh's daily bucket (`timeframes._buckets`: the day's 09:30 for a bar in its
    session, `day_bucket` otherwise) is `day_bucket` for every minute 00:00-24:00 of the day,
    and of the day before (a bar still live from yesterday)."""
    from scanner.indicators.timeframes import TimeframeIndicators, _buckets
    from scanner.session import DAY_NS, trading_day
    from scanner.timeframes import day_bucket

    b = session_bounds_ns(day)
    event_ns = b["open"] + 3 * MINUTE_NS
    assert trading_day(event_ns) == day
    minutes = np.arange(b["day_start"] - DAY_NS, b["day_start"] + DAY_NS, MINUTE_NS, dtype=np.int64)
    close = np.full(len(minutes), 10.0)
    close[::7] = np.nan  # no live close: no bucket
    starts = minutes.copy()
    starts[::11] = 0  # no live bar
    rows = np.arange(len(minutes), dtype=np.int64)
    got = np.empty(len(minutes), np.int64)
    tfi = TimeframeIndicators(1)
    if _buckets(starts, close, 0, tfi._day_open(event_ns), rows, got):
        other = rows[got == -2]
        got[other] = day_bucket(starts[other])
    want = np.where((starts != 0) & ~np.isnan(close), day_bucket(starts), -1)
    np.testing.assert_array_equal(got, want)
    assert (got == b["open"]).sum() > 300  # today's session took the short way


def test_close_due_within_a_minute_closes_what_a_fold_made_due() -> None:
    """`close_due` skips its pass while the watermark stays in the minute it last closed up to
    (bucket ends are whole minutes), unless bars were folded since: a repaired bar of a bucket
    that already ended is closed by the next call, not a minute later."""
    open_ns = session_bounds_ns(20131008)["open"]
    tfb = TimeframeBars(2)

    def bar(row: int, minute: int) -> np.ndarray:
        b = np.zeros(1, BAR_DTYPE)
        b["sym"], b["minute_ns"], b["trades"] = row, open_ns + minute * MINUTE_NS, 1
        b["open"] = b["high"] = b["low"] = b["close"] = b["vwap"] = 10.0
        b["volume"] = 100.0
        return b

    five = TIMEFRAMES.index("5m")
    tfb.on_bars_closed(bar(0, 3))  # 09:33: not the bucket's last minute, so it stays live
    assert len(tfb.close_due(open_ns + 4 * MINUTE_NS + 59 * 10**9)[five]) == 0  # 09:34:59: not yet
    assert tfb.close_due(open_ns + 5 * MINUTE_NS + 10**9)[five]["sym"].tolist() == [0]  # 09:35:01
    assert all(len(p) == 0 for p in tfb.close_due(open_ns + 5 * MINUTE_NS + 2 * 10**9))  # same minute: skipped
    tfb.on_bars_closed(bar(1, 3))  # repaired: its 09:30 bucket ended already
    assert tfb.close_due(open_ns + 5 * MINUTE_NS + 3 * 10**9)[five]["sym"].tolist() == [1]
    tfb.on_bars_closed(bar(0, 8))
    assert len(tfb.close_due(open_ns + 9 * MINUTE_NS + 30 * 10**9)[five]) == 0
    assert tfb.close_due(open_ns + 10 * MINUTE_NS)[five]["sym"].tolist() == [0]  # 09:40:00 exactly


def test_the_last_minute_of_a_bucket_closes_it_in_the_fold() -> None:
    """A bucket whose last 1-minute bar is folded closes at once (no later bar can fall in it):
    the fold returns it, with the values a watermark close would give, and `close_due` then has
    nothing left; the day bar closes on its 15:59 bar. A bar short of the end leaves it live."""
    day = 20131008
    open_ns, close_ns = session_bounds_ns(day)["open"], session_bounds_ns(day)["close"]
    five, sixty, daily = (TIMEFRAMES.index(tf) for tf in ("5m", "60m", "1d"))

    def bars(minutes: list[int], row: int = 0) -> np.ndarray:
        b = np.zeros(len(minutes), BAR_DTYPE)
        b["sym"], b["trades"], b["volume"] = row, 1, 100.0
        b["minute_ns"] = [close_ns + m * MINUTE_NS for m in minutes]
        b["open"] = b["high"] = b["low"] = b["close"] = b["vwap"] = 10.0 + np.arange(len(minutes))
        return b

    early, late = TimeframeBars(1), TimeframeBars(1)
    seq = bars([-7, -6, -5, -2, -1])  # 15:53 15:54 | 15:55 15:58 15:59
    got = early.on_bars_closed(seq)
    assert [int(x) for x in got[five]["minute_ns"]] == [close_ns - 10 * MINUTE_NS, close_ns - 5 * MINUTE_NS]
    assert len(got[sixty]) == 1 and len(got[daily]) == 1
    assert got[daily]["minute_ns"][0] == open_ns and got[daily]["close"][0] == 14.0
    assert all(len(p) == 0 for p in early.close_due(close_ns + MINUTE_NS))
    # what a watermark close of the same buckets gives (pandas' resample of these bars)
    assert got[five][["open", "high", "low", "close", "volume", "trades"]].tolist() == [
        (10.0, 11.0, 10.0, 11.0, 200.0, 2), (12.0, 14.0, 12.0, 14.0, 300.0, 3)]
    assert got[sixty][["open", "high", "low", "close", "volume"]].tolist() == [(10.0, 14.0, 10.0, 14.0, 500.0)]
    # without the last minute, the same bucket stays live until the watermark passes its end
    assert len(late.on_bars_closed(seq[:-1])[five]) == 1
    assert len(late.close_due(close_ns - MINUTE_NS)[five]) == 0
    assert late.close_due(close_ns)[five][["open", "high", "close", "volume"]].tolist() == [(12.0, 13.0, 13.0, 200.0)]
    assert early.start[five, 0] == 0 and late.start[five, 0] == 0
    short = TimeframeBars(1)
    assert len(short.on_bars_closed(bars([-3]))[five]) == 0  # 15:57: its bucket is still open
    assert short.start[five, 0] == close_ns - 5 * MINUTE_NS


def test_a_row_being_rebuilt_closes_no_bucket_on_the_watermark_until_it_is_live() -> None:
    """Kafka group mode: a rebuilt row's day arrives a batch at a time, far behind the live
    watermark. Its buckets must not close on the watermark between two batches (part of their
    bars, the rest late), so its bars equal one uninterrupted fold; once live (`rows_changed`),
    its open bucket closes on the watermark like any row's."""
    from scanner.bar_kernels import ROW_LIVE, ROW_REBUILDING

    day = 20131008
    open_ns = session_bounds_ns(day)["open"]
    rng = np.random.default_rng(11)
    minutes = np.sort(rng.choice(np.arange(0, 96), 70, replace=False))  # 09:30-11:05, with gaps
    b = np.zeros(len(minutes), BAR_DTYPE)
    b["sym"], b["trades"], b["volume"] = 1, 3, rng.integers(1, 9, len(minutes)) * 100.0
    b["minute_ns"] = open_ns + minutes * MINUTE_NS
    b["close"] = 10 + rng.normal(0, 0.1, len(minutes))
    b["open"], b["vwap"] = b["close"] - 0.01, b["close"]
    b["high"], b["low"] = b["close"] + 0.05, b["close"] - 0.05
    now = open_ns + 200 * MINUTE_NS  # the live watermark, well past every rebuilt minute
    ref = TimeframeBars(2)
    want = [np.concatenate([x, y]) for x, y in zip(ref.on_bars_closed(b), ref.close_due(now), strict=True)]

    tfb = TimeframeBars(2)
    state = np.array([ROW_LIVE, ROW_REBUILDING], np.uint8)
    got: list[list[np.ndarray]] = []
    for lo in range(0, len(b), 7):  # the rebuild's batches, a watermark close after each
        got.append(tfb.on_bars_closed(b[lo:lo + 7]))
        got.append(tfb.close_due(now + lo, state))
    assert tfb.late.sum() == 0
    state[1] = ROW_LIVE
    tfb.rows_changed()
    got.append(tfb.close_due(now + len(b), state))
    for j in range(len(TIMEFRAMES)):
        mine = np.concatenate([g[j] for g in got])
        assert mine.tobytes() == want[j].tobytes(), TIMEFRAMES[j]
    assert len(want[TIMEFRAMES.index("5m")]) >= 15


def test_a_watermark_given_to_the_fold_closes_what_close_due_after_it_would() -> None:
    """`on_bars_closed(bars, watermark, rows_state)` (each timeframe's close on the watermark in
    its fold task, so the two threads share it) returns and leaves what the fold followed by
    `close_due(watermark, rows_state)` does: minute by minute over a session with quiet minutes,
    a row being rebuilt, batches larger than one fold takes, and a minute without bars."""
    from scanner.bar_kernels import ROW_LIVE, ROW_REBUILDING

    n = 30
    open_ns = session_bounds_ns(20131008)["open"]
    rng = np.random.default_rng(5)
    a, b = TimeframeBars(n), TimeframeBars(n)
    state = np.full(n, ROW_LIVE, np.uint8)
    state[3] = ROW_REBUILDING
    checked = 0
    minute = -5
    while minute < 400:
        step = int(rng.choice([1, 1, 1, 3]))
        if rng.random() < 0.05:  # a catch-up: many minutes of bars in one batch, more than one fold takes
            step = 120
        mins = np.arange(minute, minute + step)
        minute += step
        rows, ms = np.meshgrid(np.arange(n), mins)
        keep = rng.random(rows.shape) < (0.0 if rng.random() < 0.1 else 0.7)
        bars = np.zeros(int(keep.sum()), BAR_DTYPE)
        bars["sym"] = rows[keep]
        bars["minute_ns"] = open_ns + ms[keep] * MINUTE_NS
        bars["close"] = 10 + rng.normal(0, 0.1, len(bars))
        bars["open"], bars["vwap"], bars["trades"] = bars["close"], bars["close"], 2
        bars["high"], bars["low"] = bars["close"] + 0.05, bars["close"] - 0.05
        bars["volume"] = rng.integers(1, 9, len(bars)) * 100.0
        if rng.random() < 0.3:
            bars = np.concatenate([bars] * 2)  # re-delivered bars, skipped
        wm = open_ns + minute * MINUTE_NS + int(rng.integers(0, 59)) * 10**9
        want = [np.concatenate([x, y]) for x, y in zip(a.on_bars_closed(bars), a.close_due(wm, state), strict=True)]
        got = b.on_bars_closed(bars, wm, state)
        for j in range(len(TIMEFRAMES)):
            assert got[j].tobytes() == want[j].tobytes(), (TIMEFRAMES[j], minute)
        checked += sum(len(w) for w in want)
        if minute > 200:
            state[3] = ROW_LIVE
            a.rows_changed()
            b.rows_changed()
    for name in ("start", "live", "last", "last_1m", "late", "watermark_ns"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for ha, hb in zip(a.hists, b.hists, strict=True):
        np.testing.assert_array_equal(ha, hb)
    assert checked > 1000
