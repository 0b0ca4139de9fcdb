"""The indicator engine against TA-Lib on real 1-minute bars: bar by bar as live (finalised and
live-bar values), after a warm-up from the history ring, and vectorised across symbols."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from scanner.bars import new_history
from scanner.feeds.lean import read_lean_minute
from scanner.indicators.engine import INDICATOR_COLUMNS, IndicatorEngine
from scanner.metrics import CATALOGUE as CAT
from scanner.metrics import HIST, Owner
from scanner.records import BAR_DTYPE
from scanner.session import MINUTE_NS
from tests.scanner.helpers import data_path, table_columns

LIVE = ("rsi_14", "sma_20", "sma_50", "sma_200", "ema_9", "ema_20")
FINAL = (*LIVE, "atr_14")


def _bars_csv(name: str, ts_col: str) -> np.ndarray:
    df = pd.read_csv(data_path("bars-1m", name))
    b = np.zeros(len(df), BAR_DTYPE)
    b["minute_ns"] = pd.to_datetime(df[ts_col]).to_numpy().astype("datetime64[ns]").astype(np.int64)
    for k in ("open", "high", "low", "close", "volume"):
        b[k] = df[k].to_numpy()
    return b


def _talib(b: np.ndarray) -> dict[str, np.ndarray]:
    c, h, lo = b["close"], b["high"], b["low"]
    return {"rsi_14": talib.RSI(c, 14), "sma_20": talib.SMA(c, 20), "sma_50": talib.SMA(c, 50),
            "sma_200": talib.SMA(c, 200), "ema_9": talib.EMA(c, 9), "ema_20": talib.EMA(c, 20),
            "atr_14": talib.ATR(h, lo, c, 14)}


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, equal_nan=True, err_msg=what)


def _run_bar_by_bar(b: np.ndarray, ref: dict[str, np.ndarray], upto: int) -> IndicatorEngine:
    """Feed bars one at a time; before each close check the live values (the bar as if it
    closed now), after it the finalised ones."""
    eng = IndicatorEngine(1)
    cols = table_columns(1)
    cols["bars_closed"][:] = 0
    got_live = {k: np.empty(upto) for k in LIVE}
    got_final = {k: np.empty(upto) for k in FINAL}
    for i in range(upto):
        cols["bar_start_ns"][0] = b["minute_ns"][i]
        cols["bar_close"][0] = b["close"][i]
        eng.update_live(cols, int(b["minute_ns"][i]) + 30 * 10**9)
        for k in LIVE:
            got_live[k][i] = cols[k][0]
        eng.on_bars_closed(b[i:i + 1])
        cols["bar_start_ns"][0] = 0
        eng.update_live(cols, int(b["minute_ns"][i]) + MINUTE_NS)
        for k in FINAL:
            got_final[k][i] = cols[k][0]
    for k in LIVE:
        _close(got_live[k], ref[k][:upto], f"live {k}")
    for k in FINAL:
        _close(got_final[k], ref[k][:upto], f"final {k}")
    return eng


def test_euro_fx_bar_by_bar_matches_talib() -> None:
    b = _bars_csv("6EH4.XCME_1min_bars_20240101_20240131.csv.gz", "timestamp_utc")
    ref = _talib(b)
    assert (ref["rsi_14"] == 0).sum() == 0  # no fully flat 14-bar window (we give 50 there, TA-Lib 0)
    _run_bar_by_bar(b, ref, len(b))


def test_btc_long_run_matches_talib_without_drift() -> None:
    b = _bars_csv("btc-perp-20211231-20220201_1m.csv", "timestamp")
    ref = _talib(b)
    eng = _run_bar_by_bar(b, ref, 2000)
    cols = table_columns(1)
    cols["bar_start_ns"][0] = 0
    step = 997
    for i in range(2000, len(b), step):  # the kernel still folds bar by bar, checked per chunk
        eng.on_bars_closed(b[i:i + step])
        last = min(i + step, len(b)) - 1
        eng.update_live(cols, int(b["minute_ns"][last]) + MINUTE_NS)
        for k in FINAL:
            _close(cols[k], ref[k][last:last + 1], f"{k} at bar {last}")
    assert int(eng.bars_seen[0]) == len(b)


def test_warm_up_from_history_ring_matches_talib() -> None:
    b = _bars_csv("6EH4.XCME_1min_bars_20240101_20240131.csv.gz", "timestamp_utc")
    ref = _talib(b)
    k, n_hist = 400, 5000
    hist, _ = new_history(1, k)  # the shared ring's layout
    j = np.arange(n_hist - k, n_hist)  # what the bar process leaves in the ring after n_hist bars
    for f in ("open", "high", "low", "close", "volume", "vwap", "trades"):
        hist[HIST[f], 0, j % k] = b[f][j]
    hist[HIST["minute"], 0, j % k] = b["minute_ns"][j] // MINUTE_NS
    eng = IndicatorEngine(1)
    eng.warm_up(hist, np.array([n_hist], np.int64))
    cols = table_columns(1)
    cols["bar_start_ns"][0] = 0
    eng.on_bars_closed(b[n_hist - 10:n_hist])  # re-delivered bars are ignored
    for i in range(n_hist, n_hist + 50):
        eng.update_live(cols, int(b["minute_ns"][i]))
        for f in FINAL:
            _close(cols[f], ref[f][i - 1:i], f"{f} after warm-up, bar {i - 1}")
        eng.on_bars_closed(b[i:i + 1])


def test_symbols_are_independent_and_vectorised() -> None:
    """Four real symbols, four days of Lean minute bars, fed minute by minute as the bar process
    would; every row matches TA-Lib on its own series after every minute."""
    syms = ("aig", "bac", "ibm", "spy")
    days = (20131004, 20131007, 20131008, 20131009)
    per = [np.concatenate([read_lean_minute(data_path("lean-us-equity", "minute", s, f"{d}_trade.zip"), r)
                           for d in days]) for r, s in enumerate(syms)]
    refs = [_talib(p) for p in per]
    allb = np.concatenate(per)
    allb = allb[np.argsort(allb["minute_ns"], kind="stable")]
    eng = IndicatorEngine(len(syms))
    cols = table_columns(len(syms))
    cols["bar_start_ns"][:] = 0
    minutes, starts = np.unique(allb["minute_ns"], return_index=True)
    bounds = [*starts[1:], len(allb)]
    seen = np.zeros(len(syms), int)
    for m, lo, hi in zip(minutes, starts, bounds, strict=True):
        batch = allb[lo:hi]
        eng.on_bars_closed(batch)
        seen[batch["sym"]] += 1
        eng.update_live(cols, int(m) + MINUTE_NS)
        for r in np.flatnonzero(seen):
            for f in ("rsi_14", "sma_50", "ema_9", "atr_14"):
                want = refs[r][f][seen[r] - 1]
                assert cols[f][r] == pytest.approx(want, rel=1e-6, nan_ok=True), (syms[r], f, seen[r])
    # consecutive closes up / down against a pandas streak count
    for r, p in enumerate(per):
        d = np.sign(np.diff(p["close"]))
        up = down = 0
        for s in d:
            up, down = (up + 1, 0) if s > 0 else (0, down + 1) if s < 0 else (0, 0)
        assert (cols["consecutive_up"][r], cols["consecutive_down"][r]) == (up, down)


def test_flat_prices_give_rsi_50_and_writes_every_owned_column() -> None:
    eng = IndicatorEngine(2)
    b = np.zeros(30, BAR_DTYPE)
    b["minute_ns"] = (np.arange(30) + 1) * MINUTE_NS
    b["open"] = b["high"] = b["low"] = b["close"] = 10.0
    eng.on_bars_closed(b)
    cols = table_columns(2)
    cols["bar_start_ns"][:] = 0
    eng.update_live(cols, 31 * MINUTE_NS)
    assert cols["rsi_14"].tolist()[0] == 50.0 and np.isnan(cols["rsi_14"][1])
    assert cols["atr_14"][0] == 0.0 and cols["sma_20"][0] == 10.0
    owned = {m.name for m in CAT.owned_by(Owner.INDICATORS)}
    assert owned == set(INDICATOR_COLUMNS)
    with pytest.raises(ValueError, match="'n_rows' must be positive"):
        IndicatorEngine(0)


def test_a_timeframe_engine_keeps_its_own_windows_only() -> None:
    """A higher timeframe's engine (`intraday=False`) keeps a ring for its longest SMA (64 for 50),
    and writes the bar indicators only; the same values as a 1-minute engine."""
    lean = IndicatorEngine(2, intraday=False, sma_periods=(20, 50))
    full = IndicatorEngine(2)
    assert lean.ring.shape == (2, 64) and lean.intraday is None
    assert lean.kernel_out == ("rsi_14", "sma_20", "sma_50", "ema_9", "ema_20", "atr_14")
    rng = np.random.default_rng(5)
    b = np.zeros(2 * 300, BAR_DTYPE)  # past four turns of the shorter ring, one of the longer
    b["sym"] = np.tile([0, 1], 300)
    b["minute_ns"] = (np.repeat(np.arange(300), 2) + 1) * MINUTE_NS
    b["close"] = 10.0 + np.cumsum(rng.normal(0, 0.1, len(b)))
    b["high"], b["low"] = b["close"] + 0.05, b["close"] - 0.05
    lean.on_bars_closed(b)
    full.on_bars_closed(b)
    start, close = np.array([301 * MINUTE_NS, 0]), np.array([11.0, np.nan])  # row 0 with a live bar
    got, want = np.full((11, 2), np.nan), np.full((11, 2), np.nan)
    lean.update_kernel(start, close, tuple(got))
    full.update_kernel(start, close, tuple(want))
    for i, k in enumerate(lean.kernel_out):
        np.testing.assert_allclose(got[i], want[full.kernel_out.index(k)], rtol=1e-12, err_msg=k)
    assert np.isnan(got[len(lean.kernel_out):]).all()  # nothing past its own columns
    with pytest.raises(ValueError, match="no update_live"):
        lean.update_live(table_columns(2), 301 * MINUTE_NS)
    with pytest.raises(ValueError, match="'sma_periods'"):
        IndicatorEngine(2, sma_periods=())
