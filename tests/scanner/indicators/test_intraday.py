"""Rolling moves and the day's landmarks against direct computations over the same real bars and
ticks (Lean US equities, October 2013): the engine fed minute by minute as the bar process
feeds it, bars missing at random (quiet minutes) included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scanner.bars import BarAggregator, new_columns, new_history
from scanner.daily import daily_matrix, reference_columns
from scanner.feeds.common import SymbolMap
from scanner.feeds.lean import lean_tick_files, read_lean_daily, read_lean_minute, read_lean_ticks
from scanner.indicators.engine import IndicatorEngine
from scanner.indicators.intraday import gap_filled
from scanner.metrics import OPENING_RANGES, ROLLING_MINUTES
from scanner.records import TICK_NO_LAST, TICK_ODD_LOT
from scanner.session import MINUTE_NS, NS, session_bounds_ns
from tests.scanner.helpers import data_path, table_columns

SYMS = ("aig", "bac", "ibm", "spy")
DAY = 20131008
OPEN = session_bounds_ns(DAY)["open"]


def _minute_bars(drop: float) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    out = []
    for r, s in enumerate(SYMS):
        b = read_lean_minute(data_path("lean-us-equity", "minute", s, f"{DAY}_trade.zip"), r)
        keep = rng.random(len(b)) >= (drop if r % 2 else 0.0)  # AIG and IBM go quiet at random
        out.append(b[keep])
    return out


def _direct(b: np.ndarray, now_min: int, price: float, live: np.ndarray | None) -> dict[str, float]:
    """The metrics for one symbol from its closed bars `b` (minute < now_min) and live bar."""
    out: dict[str, float] = {}
    m = b["minute_ns"]
    for n in ROLLING_MINUTES:
        past = b[m <= now_min - n * MINUTE_NS]
        out[f"change_{n}m_pct"] = (price / past["close"][-1] - 1) * 100 if len(past) else np.nan
    lv = [live] if live is not None else []
    w15 = [*b[m >= now_min - 14 * MINUTE_NS], *lv]
    out["volume_15m"] = float(sum(x["volume"] for x in w15))
    w5 = [*b[m >= now_min - 4 * MINUTE_NS], *lv]
    hi, lo = max((x["high"] for x in w5), default=np.nan), min((x["low"] for x in w5), default=np.nan)
    out["range_5m_pct"] = (hi - lo) / lo * 100
    out["velocity_5m"] = out["change_5m_pct"] / 5
    allb = [*b, *lv]
    for n in OPENING_RANGES:
        win = [x for x in allb if OPEN <= x["minute_ns"] < OPEN + n * MINUTE_NS]
        done = now_min + 30 * NS >= OPEN + n * MINUTE_NS
        out[f"or_high_{n}m"] = max((x["high"] for x in win), default=np.nan) if done else np.nan
        out[f"or_low_{n}m"] = min((x["low"] for x in win), default=np.nan) if done else np.nan
    return out


@pytest.mark.parametrize("drop", [0.0, 0.3])
def test_rolling_moves_and_opening_range_match_direct_computation(drop: float) -> None:
    per = _minute_bars(drop)
    allb = np.concatenate(per)
    allb = allb[np.argsort(allb["minute_ns"], kind="stable")]
    eng = IndicatorEngine(len(SYMS))
    cols = table_columns(len(SYMS))
    minutes = np.unique(allb["minute_ns"])
    checked = 0
    for i, m in enumerate(minutes):
        live = allb[allb["minute_ns"] == m]
        cols["bar_start_ns"][:] = 0
        for name in ("bar_high", "bar_low", "bar_close"):
            cols[name][:] = np.nan
        cols["bar_volume"][:] = 0.0
        for x in live:
            r = x["sym"]
            cols["bar_start_ns"][r] = m
            cols["bar_high"][r], cols["bar_low"][r], cols["bar_close"][r] = x["high"], x["low"], x["close"]
            cols["bar_volume"][r] = x["volume"]
            cols["price"][r] = x["close"]
        if i % 3 == 0 or OPEN <= m < OPEN + 32 * MINUTE_NS:
            eng.update_live(cols, int(m) + 30 * NS)
            for r in range(len(SYMS)):
                b = per[r][per[r]["minute_ns"] < m]
                mine = live[live["sym"] == r]
                if len(b) == 0:
                    continue
                want = _direct(b, int(m), float(cols["price"][r]), mine[0] if len(mine) else None)
                for k, v in want.items():
                    assert cols[k][r] == pytest.approx(v, rel=1e-12, nan_ok=True), (SYMS[r], k, i)
                checked += 1
        eng.on_bars_closed(live)
    assert checked > 400
    # flags against the 5-minute range, after the window
    assert set(np.unique(cols["above_or_high"])) <= {0.0, 1.0}
    np.testing.assert_array_equal(cols["above_or_high"], (cols["price"] > cols["or_high_5m"]).astype(float))


def test_warm_up_from_history_ring_gives_the_same_values() -> None:
    per = _minute_bars(0.3)
    allb = np.concatenate(per)
    allb = allb[np.argsort(allb["minute_ns"], kind="stable")]
    cut = OPEN + 75 * MINUTE_NS
    done = allb[allb["minute_ns"] < cut]
    agg_hist, head = new_history(len(SYMS), 400)
    for r in range(len(SYMS)):  # what the bar process leaves in the ring
        b = done[done["sym"] == r]
        j = np.arange(len(b))
        agg_hist[0, r, j % 400] = b["minute_ns"] // MINUTE_NS
        for f, name in ((1, "open"), (2, "high"), (3, "low"), (4, "close"), (5, "volume")):
            agg_hist[f, r, j % 400] = b[name]
        head[r] = len(b)
    a, b = IndicatorEngine(len(SYMS)), IndicatorEngine(len(SYMS))
    a.on_bars_closed(done)
    b.warm_up(agg_hist, head)
    ca, cb = table_columns(len(SYMS)), table_columns(len(SYMS))
    for c in (ca, cb):
        c["price"][:] = [p[-1]["close"] for p in per]
        c["bar_start_ns"][:] = 0
    a.update_live(ca, cut + 10 * NS)
    b.update_live(cb, cut + 10 * NS)
    for k in ("change_60m_pct", "change_5m_pct", "volume_15m", "range_5m_pct", "or_high_30m", "or_low_15m"):
        np.testing.assert_array_equal(ca[k], cb[k], err_msg=k)
        assert not np.isnan(ca[k]).any(), k


@pytest.fixture(scope="module")
def day_ticks() -> tuple[np.ndarray, list[str]]:
    syms = SymbolMap()
    files = lean_tick_files(data_path("lean-us-equity"), days=[DAY])
    t = np.concatenate([b.ticks for b in read_lean_ticks(files, syms, batch_size=100_000)])
    return t, syms.names


def test_low_of_day_and_opening_range_from_ticks(day_ticks: tuple[np.ndarray, list[str]]) -> None:
    """Ticks -> bar process -> indicators: new lows, the low's time and the opening ranges equal
    a direct computation over the regular-session priced ticks."""
    ticks, names = day_ticks
    n = len(names)
    cols = {**table_columns(n), **new_columns(n)}
    hist, head = new_history(n)
    agg = BarAggregator(cols, hist, head)
    eng = IndicatorEngine(n)
    for i in range(0, len(ticks), 50_000):
        eng.on_bars_closed(agg.on_ticks(ticks[i:i + 50_000]))
    eng.on_bars_closed(agg.close_all())
    end = session_bounds_ns(DAY)["close"]
    daily = [read_lean_daily(data_path("lean-us-equity", "daily", f"{s.lower()}.zip")) for s in names]
    for k, v in reference_columns(daily_matrix(daily, DAY)).items():
        cols[k][:] = v
    df = pd.DataFrame({"sym": ticks["sym"], "ts": ticks["ts_ns"], "px": ticks["price"], "fl": ticks["flags"]})
    reg = df[(df.ts >= OPEN) & (df.ts < end) & ((df.fl & (TICK_ODD_LOT | TICK_NO_LAST)) == 0)]
    cols["price"][:] = reg.groupby("sym").px.last().reindex(range(n)).to_numpy()
    eng.update_live(cols, end)
    for r, g in reg.groupby("sym"):
        runmin = g.px.cummin()
        assert cols["new_lod_count"][r] == (runmin.diff() < 0).sum() > 0
        assert cols["lod_ts_ns"][r] == g.ts[g.px == g.px.min()].iloc[0]
        assert cols["minutes_since_lod"][r] == pytest.approx((end - cols["lod_ts_ns"][r]) / MINUTE_NS)
        for m in OPENING_RANGES:
            w = g[g.ts < OPEN + m * MINUTE_NS].px
            assert (cols[f"or_high_{m}m"][r], cols[f"or_low_{m}m"][r]) == (w.max(), w.min()), (names[r], m)
        # daily reference values against pandas / TA-Lib over the daily file
        d = pd.DataFrame(daily[r])
        d = d[d["day"] < DAY]
        assert cols["prev_high"][r] == d.high.iloc[-1] and cols["prev_low"][r] == d.low.iloc[-1]
        assert cols["high_52w"][r] == d.high.tail(252).max() and cols["low_52w"][r] == d.low.tail(252).min()
        assert cols["pct_from_high_52w"][r] == pytest.approx((g.px.iloc[-1] / d.high.tail(252).max() - 1) * 100)
        up = cols["day_open"][r] > cols["prev_close"][r]
        filled = (g.px.min() <= cols["prev_close"][r]) if up else (g.px.max() >= cols["prev_close"][r])
        assert cols["gap_filled"][r] == float(filled)


def test_gap_filled_cases() -> None:
    out = np.empty(6)
    gap_filled(np.array([11.0, 11.0, 9.0, 9.0, 10.0, np.nan]), np.array([12.0, 12.0, 9.5, 10.0, 10.0, 1.0]),
               np.array([10.5, 10.0, 8.0, 8.0, 10.0, 1.0]), np.full(6, 10.0), out)
    np.testing.assert_array_equal(out, [0.0, 1.0, 0.0, 1.0, 1.0, np.nan])


def test_updates_within_a_minute_match_a_fresh_engine() -> None:
    """The walk over each row's closed bars is cached per minute and redone for rows that took a
    bar: several updates per minute, with the previous minute's bars folded between two of them
    (as the bar grace does), give exactly what an engine that never updated before gives."""
    per = _minute_bars(0.3)
    allb = np.concatenate(per)
    allb = allb[np.argsort(allb["minute_ns"], kind="stable")]
    minutes = np.unique(allb["minute_ns"])
    minutes = minutes[(minutes >= OPEN - 20 * MINUTE_NS) & (minutes < OPEN + 70 * MINUTE_NS)]
    eng = IndicatorEngine(len(SYMS))
    eng.on_bars_closed(allb[allb["minute_ns"] < minutes[0]])
    cols = table_columns(len(SYMS))
    names = [k for k in cols if k.startswith(("change_", "volume_15m", "range_5m", "or_"))
             and not k.startswith("change_pct") and not k.startswith("change_from")]
    assert len(names) == len(ROLLING_MINUTES) + 2 + 2 * len(OPENING_RANGES)
    checked = 0
    for i, m in enumerate(minutes):
        live = allb[allb["minute_ns"] == m]
        prev = allb[allb["minute_ns"] == minutes[i - 1]] if i else allb[:0]
        cols["bar_start_ns"][:] = 0
        cols["bar_volume"][:] = 0.0
        for x in live:
            r = x["sym"]
            cols["bar_start_ns"][r] = m
            cols["bar_high"][r], cols["bar_low"][r], cols["bar_close"][r] = x["high"], x["low"], x["close"]
            cols["bar_volume"][r] = x["volume"]
            cols["price"][r] = x["close"]
        for step, t in enumerate((1, 3, 31)):
            if step == 1:
                eng.on_bars_closed(prev)  # the previous minute closes after the grace
            eng.update_live(cols, int(m) + t * NS)
            fresh = IndicatorEngine(len(SYMS))
            fresh.on_bars_closed(allb[allb["minute_ns"] < (m if step else minutes[i - 1] if i else m)])
            fc = {k: v.copy() for k, v in cols.items()}
            fresh.update_live(fc, int(m) + t * NS)
            for k in names:
                np.testing.assert_array_equal(cols[k], fc[k], err_msg=f"{k} minute {i} step {step}")
            checked += 1
    assert checked > 200


def _by_definition(bars: list[tuple[int, float, float, float, float]], now_min: int, price: float, bs: int,
                   live_hlv: tuple[float, float, float]) -> list[float]:
    """`KERNEL_OUT`'s rolling values (opening ranges left out) for one row, by definition in plain
    Python over every bar it was given (minute, close, high, low, volume; oldest first) and its
    live bar (start `bs`, high, low, volume): a minute `WINDOW` or more before the last bar is
    forgotten (NaN); a NaN volume adds nothing."""
    from scanner.indicators.intraday import WINDOW

    last = bars[-1][0] if bars else 0
    live = bs != 0 and bs > last
    known = last - WINDOW * MINUTE_NS  # minutes after this one are in the ring

    out = []
    for roll in ROLLING_MINUTES:
        t = now_min - roll * MINUTE_NS
        past = [b for b in bars if b[0] <= t]
        x = past[-1][1] if past and (t >= last or t > known) else np.nan
        out.append((price - x) / x * 100.0 if x > 0 else np.nan)
    vols = []
    for n in (5, 15):  # volume_5m, volume_15m
        if bars and now_min - n * MINUTE_NS <= known:
            v = np.nan
        else:
            v = 0.0
            for b in bars:
                if now_min - (n - 1) * MINUTE_NS <= b[0] < now_min and b[4] == b[4]:
                    v += b[4]
            if live and bs >= now_min - (n - 1) * MINUTE_NS:
                v += live_hlv[2]
        vols.append(v)
    hl = [(b[2], b[3]) for b in bars if now_min - 4 * MINUTE_NS <= b[0] < now_min and b[0] > known]
    if live and bs >= now_min - 4 * MINUTE_NS:
        hl.append(live_hlv[:2])
    highs = [h for h, _ in hl if h == h]
    lows = [lw for _, lw in hl if lw == lw]
    hi, lo = (max(highs) if highs else np.nan), (min(lows) if lows else np.nan)
    return [*out, *vols, (hi - lo) / lo * 100.0 if lo > 0 else np.nan]


def test_the_minute_ring_equals_a_computation_by_definition() -> None:
    """`Intraday` keeps each row's last minutes by minute number, filling the minutes a row did not
    trade as a bar is folded; its rolling values must be what every bar folded gives by
    definition: with gaps, rows whose ring wrapped many times, several minutes passing at
    once, bars folded between refreshes of one minute, NaN volumes, live bars, and the clock
    going back (behind the closed bars, to minutes the ring has forgotten)."""
    from scanner.indicators.intraday import COLUMNS, KERNEL_OUT, Intraday

    n = 40
    rng = np.random.default_rng(21)
    it = Intraday(n)
    cols = {k: np.full(n, np.nan) for k in ("price", "bar_high", "bar_low", "bar_volume", "avg_daily_volume",
                                             "volume_5m", "volume_15m", "prev_close", "day_open", "day_high",
                                             "day_low", "high_52w", "low_52w")}
    cols["bar_start_ns"] = np.zeros(n, np.int64)
    cols["lod_ts_ns"] = np.zeros(n, np.int64)
    for name in COLUMNS:
        cols.setdefault(name, np.full(n, np.nan))
    open_ns = session_bounds_ns(20131008)["open"]
    bars: list[list[tuple[int, float, float, float, float]]] = [[] for _ in range(n)]

    def fold(rows: np.ndarray, mn: np.ndarray) -> None:
        close = 10 + rng.normal(0, 0.2, len(rows))
        vol = rng.integers(1, 50, len(rows)) * 100.0
        vol[rng.random(len(rows)) < 0.03] = np.nan
        it.on_bars_closed(rows.astype(np.int64), mn.astype(np.int64), close + 0.1, close - 0.1, close, vol)
        for r, m, c, v in zip(rows.tolist(), mn.tolist(), close.tolist(), vol.tolist(), strict=True):
            bars[r].append((m, c, c + 0.1, c - 0.1, v))

    # a warm-up's worth first: up to 200 bars per row (rings wrapped), a few rows without any
    for r in range(n - 3):
        m = np.sort(rng.choice(np.arange(-400, -61), int(rng.integers(1, 200)), replace=False))
        fold(np.full(len(m), r), open_ns + m * MINUTE_NS)
    minute, went_back = -60, False
    checks = 0
    names = [k for k in KERNEL_OUT if not k.startswith("or_")]
    while minute < 300:
        minute += int(rng.choice([1, 1, 1, 2, 7]))
        if minute >= 200 and not went_back:
            minute, went_back = minute - 70, True  # the clock goes back, past the ring's 64 minutes
        now = open_ns + minute * MINUTE_NS
        for _ in range(int(rng.integers(1, 3))):  # bars folded between refreshes of this minute
            rows = np.flatnonzero(rng.random(n - 3) < 0.7)
            last = np.array([bars[r][-1][0] if bars[r] else 0 for r in rows], np.int64)
            rows, last = rows[last < now - MINUTE_NS], last[last < now - MINUTE_NS]
            if len(rows):
                mn = np.maximum(last + rng.integers(1, 4, len(rows)) * MINUTE_NS, now - 90 * MINUTE_NS)
                fold(rows, np.minimum(mn, now - MINUTE_NS))
            cols["price"][:] = 10 + rng.normal(0, 0.2, n)
            live = rng.random(n) < 0.5
            cols["bar_start_ns"][:] = np.where(live, now, 0)
            cols["bar_start_ns"][0] = bars[0][-1][0]  # a live bar not newer than the closed ones: not live
            cols["bar_high"][:] = cols["price"] + 0.3
            cols["bar_low"][:] = cols["price"] - 0.3
            cols["bar_volume"][:] = rng.integers(1, 9, n) * 100.0
            event = now + int(rng.integers(0, 59)) * NS
            it.update_live(cols, event, open_ns, None)
            for r in range(n):
                want = _by_definition(bars[r], now, float(cols["price"][r]), int(cols["bar_start_ns"][r]),
                                      (float(cols["bar_high"][r]), float(cols["bar_low"][r]),
                                       float(cols["bar_volume"][r])))
                got = [float(cols[k][r]) for k in names]
                np.testing.assert_array_equal(got, want, err_msg=f"row {r} minute {minute}")
            checks += 1
    assert checks > 100 and max(len(b) for b in bars) > 3 * 64
