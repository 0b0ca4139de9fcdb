"""A live day's daily history from our own PostgreSQL daily bars: the writer rolls `bars_1m` up
into `bars_daily` as days end, and the instance's set-up reads it back into the reference
columns and the daily timeframe's ring. Values checked against a direct computation over the
same 1-minute bars; the vendor fills in a symbol whose history here is young (ours win on a
day both have)."""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest
from pydantic import SecretStr

from procs.bench.services import PostgresServer
from procs.instance import InstanceSetup, remove_stale_segments
from procs.storage.pg import PgWriter
from scanner.config import Settings
from scanner.daily import ADV_DAYS, YEAR_DAYS
from scanner.feeds.lean import DAILY_DTYPE
from scanner.indicators.timeframes import TimeframeIndicators
from scanner.metrics import CATALOGUE
from scanner.session import MINUTE_NS, session_bounds_ns, trading_day
from scanner.storage.rows import SPOOL_BAR_DTYPE
from scanner.timeframes import TF, TIMEFRAMES, TimeframeBars
from tests.scanner.helpers import table_columns
from tests.vendors.alpaca_server import asset

FULL, YOUNG = ["AAA", "BBB"], "YNG"
# minutes after the open of each day's bars: one pre-market, five regular, one after the close
OFFSETS = np.array([-90, 0, 1, 2, 3, 4, 390])


@pytest.fixture
def url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's throwaway server (tests/conftest.py)."""
    name = f"d{time.monotonic_ns()}"
    with psycopg.connect(postgres_server.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return postgres_server.url.rsplit("/", 1)[0] + f"/{name}"


def weekdays_before(day: int, n: int) -> list[int]:
    d = date(day // 10000, day // 100 % 100, day % 100)
    out: list[int] = []
    while len(out) < n:
        d -= timedelta(days=1)
        if d.weekday() < 5:
            out.append(d.year * 10000 + d.month * 100 + d.day)
    return out[::-1]


def minute_bars(symbols: list[str], days: list[int], rng: np.random.Generator) -> np.ndarray:
    n = len(symbols) * len(days) * len(OFFSETS)
    b = np.zeros(n, SPOOL_BAR_DTYPE)
    opens = np.array([session_bounds_ns(d)["open"] for d in days])
    b["symbol"] = np.repeat([s.encode() for s in symbols], len(days) * len(OFFSETS))
    b["minute_ns"] = np.tile((opens[:, None] + OFFSETS[None, :] * MINUTE_NS).ravel(), len(symbols))
    mid = rng.uniform(20, 200, n)
    b["open"], b["close"] = mid + rng.uniform(-1, 1, n), mid + rng.uniform(-1, 1, n)
    b["high"] = np.maximum(b["open"], b["close"]) + rng.uniform(0, 1, n)
    b["low"] = np.minimum(b["open"], b["close"]) - rng.uniform(0, 1, n)
    b["volume"] = rng.integers(100, 10_000, n).astype(float)
    b["vwap"] = mid
    b["trades"] = rng.integers(1, 50, n)
    return b


def direct_daily(b: np.ndarray, sym: str) -> np.ndarray:
    """Regular-session OHLC and whole-day volume per day, straight from the 1-minute bars."""
    mine = b[b["symbol"] == sym.encode()]
    mine = mine[np.argsort(mine["minute_ns"], kind="stable")]
    out = []
    for d in sorted({trading_day(int(m)) for m in mine["minute_ns"]}):
        s = session_bounds_ns(d)
        day = mine[(mine["minute_ns"] >= s["day_start"]) & (mine["minute_ns"] < s["day_end"])]
        reg = day[(day["minute_ns"] >= s["open"]) & (day["minute_ns"] < s["close"])]
        out.append((d, reg["open"][0], reg["high"].max(), reg["low"].min(), reg["close"][-1], day["volume"].sum()))
    return np.array(out, DAILY_DTYPE)


def test_live_day_daily_history_from_postgres(url: str, alpaca_rest, tmp_path: Path) -> None:
    rng = np.random.default_rng(15)
    today = trading_day(time.time_ns())  # the live day the instance starts on
    days = weekdays_before(today, 280)  # more than the 370-day lookback
    full = minute_bars(FULL, days, rng)
    young = minute_bars([YOUNG], days[-30:], rng)  # this database met YNG 30 sessions ago
    w = PgWriter(url)
    w.open()
    for i in range(0, len(days), 20):  # batches of 20 days, in feed order: the writer rolls as days end
        part = set(days[i:i + 20])
        for b in (full, young):
            tdays = np.array([trading_day(int(m)) for m in b["minute_ns"]])
            sel = b[np.isin(tdays, list(part))]
            if len(sel):
                w.write_bars(sel[np.argsort(sel["minute_ns"], kind="stable")])
    w.close()
    with psycopg.connect(url) as c:
        assert c.execute("SELECT count(*) FROM bars_daily").fetchone() == (2 * 280 + 30,)

    # the vendor knows YNG's whole year, with other values on the 30 days we have ourselves
    vendor_days = weekdays_before(today, 300)
    vend = np.zeros(len(vendor_days), DAILY_DTYPE)
    vend["day"] = vendor_days
    vend["open"], vend["high"], vend["low"], vend["close"] = 10.0, 12.0, 9.0, 11.0
    vend["volume"] = 5_000.0
    vend["high"][-1] = 10_000.0  # a high we must not take: that day is ours
    rest = alpaca_rest(daily_bars={YOUNG: vend}, assets=[asset(s) for s in [*FULL, YOUNG]])
    symbols = tmp_path / "symbols.txt"
    symbols.write_text("\n".join([*FULL, YOUNG]) + "\n")
    s = Settings(feed="alpaca", feed_rest_url=rest.base_url, alpaca_key_id=SecretStr("test-key"),
                 alpaca_secret_key=SecretStr("test-secret"), data_dir=tmp_path / "data", symbols_file=symbols,
                 database_url=SecretStr(url), instance=f"dpg{os.getpid()}", scan_workers=1)
    try:
        shared = InstanceSetup(s).allocate()
    except BaseException:
        remove_stale_segments(s.instance)  # created before the failure: leave nothing in /dev/shm
        raise
    try:
        asked = [r for r in rest.requests if "/v2/stocks/bars" in r]
        assert len(asked) == 1 and YOUNG in asked[0] and "AAA" not in asked[0]  # only the young symbol
        t = shared.table
        tfa = shared.timeframes.arrays
        ring, head = tfa["ring_1d"], tfa["head_1d"]
        live_day = int(shared.control.header["trading_day"])  # `today`, or the next if a midnight passed
        cols = table_columns(3)
        cols["bar_start_ns"][:] = session_bounds_ns(live_day)["open"] + 60 * MINUTE_NS
        cols["bar_close"][:] = cols["price"][:] = 50.0
        tfb = TimeframeBars(3, [tfa[f"ring_{tf}"] for tf in TIMEFRAMES], [tfa[f"head_{tf}"] for tf in TIMEFRAMES])
        tfi = TimeframeIndicators(3)
        tfi.warm_up(tfb.hists, tfb.heads)
        tfi.update_live(cols, tfb, int(cols["bar_start_ns"][0]) + 30 * 10**9)
        for r, sym in enumerate([*FULL, YOUNG]):
            ours = direct_daily(young if sym == YOUNG else full, sym)
            if sym == YOUNG:
                older = vend[vend["day"] < ours["day"][0]]
                ours = np.concatenate([older, ours])
            ours = ours[-YEAR_DAYS:]
            want = {"prev_close": ours["close"][-1], "prev_high": ours["high"][-1], "prev_low": ours["low"][-1],
                    "high_52w": ours["high"].max(), "low_52w": ours["low"].min(),
                    "avg_daily_volume": ours["volume"][-ADV_DAYS:].mean()}
            for k, v in want.items():
                assert t.f8[CATALOGUE.f8(k)][r] == pytest.approx(v, rel=1e-12), (sym, k)
            # the daily ring holds those bars (the session open as its minute), oldest first
            h = int(head[r])
            assert h == len(ours)
            np.testing.assert_array_equal(ring[:h, r, TF["close"]], ours["close"])
            np.testing.assert_array_equal(ring[:h, r, TF["high"]], ours["high"])
            assert ring[h - 1, r, TF["minute"]] * MINUTE_NS == session_bounds_ns(int(ours["day"][-1]))["open"]
            closes = np.append(ours["close"], 50.0)  # today's live bar at the last price
            assert cols["sma_200_1d"][r] == pytest.approx(closes[-200:].mean(), rel=1e-9), sym
            assert cols["sma_50_1d"][r] == pytest.approx(closes[-50:].mean(), rel=1e-9), sym
    finally:
        shared.close()
        shared.unlink()
