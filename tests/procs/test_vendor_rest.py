"""The vendor REST clients against the local vendor servers: pagination, 429 with Retry-After,
an exchange filter on the universe, refused keys, and the reference values of a live day
(cached per day)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from procs.reference import ReferenceError, live_reference, live_universe
from procs.vendor_rest import AlpacaRest, PolygonRest, RestClient, RestError
from scanner.config import Settings
from scanner.feeds.lean import read_lean_daily
from scanner.feeds.replay import reference as lean_reference
from scanner.records import BAR_DTYPE
from scanner.session import MINUTE_NS, session_bounds_ns
from tests.vendors.alpaca_server import asset
from tests.vendors.polygon_server import ticker

DAY = 20131008
SYMS = ["AIG", "BAC", "IBM", "SPY"]


def _alpaca(rest, tmp: Path, **kw: object) -> Settings:
    return Settings(feed="alpaca", feed_rest_url=rest.base_url, data_dir=tmp, alpaca_key_id=SecretStr("test-key"),
                    alpaca_secret_key=SecretStr("test-secret"), **kw)


def _polygon(rest, tmp: Path, **kw: object) -> Settings:
    return Settings(feed="polygon", feed_rest_url=rest.base_url, data_dir=tmp,
                    polygon_api_key=SecretStr("test-key"), **kw)


def _daily(shared_data: Path) -> dict[str, np.ndarray]:
    return {s: read_lean_daily(shared_data / "lean-us-equity" / "daily" / f"{s.lower()}.zip") for s in SYMS}


def _minute_bars(n: int) -> dict[str, np.ndarray]:
    t0 = session_bounds_ns(DAY)["open"]
    b = np.zeros(n, BAR_DTYPE)
    b["minute_ns"] = t0 + np.arange(n) * MINUTE_NS
    b["open"] = b["high"] = b["low"] = b["close"] = b["vwap"] = 10.0 + np.arange(n)
    b["volume"], b["trades"] = 100.0, 3
    return {"AIG": b}


def test_alpaca_bars_paginate_and_survive_429(alpaca_rest, tmp_path: Path) -> None:
    rest = alpaca_rest(minute_bars=_minute_bars(25), max_limit=10)
    rest.throttle(2, retry_after=0)
    slept: list[float] = []
    client = RestClient({"APCA-API-KEY-ID": "test-key", "APCA-API-SECRET-KEY": "test-secret"}, sleep=slept.append)
    t0 = session_bounds_ns(DAY)["open"]
    bars = AlpacaRest(_alpaca(rest, tmp_path), client).bars(["AIG", "BAC"], "1Min", t0, t0 + 20 * MINUTE_NS)
    assert len(bars) == 21  # the vendor's end is inclusive: the caller filters
    assert bars["ts_ns"].tolist() == (t0 + np.arange(21) * MINUTE_NS).tolist()
    assert bars["close"].tolist() == (10.0 + np.arange(21)).tolist()
    assert slept == [0.0, 0.0] and client.throttled == 2 and client.requests == 5  # 2 x 429, 3 pages
    assert all("page_token" in r for r in rest.requests[-2:])


def test_polygon_bars_follow_next_url_and_universe_filter(polygon_rest, tmp_path: Path) -> None:
    rest = polygon_rest(minute_bars=_minute_bars(25), max_limit=10,
                        tickers=[ticker("AIG", "XNYS"), ticker("BAC", "XNYS"), ticker("QQQ", "XNAS")])
    s = _polygon(rest, tmp_path)
    t0 = session_bounds_ns(DAY)["open"]
    bars = PolygonRest(s).bars(["AIG"], "1Min", t0, t0 + 20 * MINUTE_NS)
    assert bars["ts_ns"].tolist() == (t0 + np.arange(20) * MINUTE_NS).tolist()
    assert PolygonRest(s).active_equities(["XNYS"]) == ["AIG", "BAC"]
    assert all("apiKey" not in r for r in rest.requests)  # the key travels in a header only


def test_refused_key_is_a_clear_error(alpaca_rest, tmp_path: Path) -> None:
    rest = alpaca_rest(assets=[asset("AIG")])
    s = Settings(feed="alpaca", feed_rest_url=rest.base_url, data_dir=tmp_path, alpaca_key_id=SecretStr("nope"),
                 alpaca_secret_key=SecretStr("wrong-secret"))
    with pytest.raises(RestError) as e:
        AlpacaRest(s).active_equities([])
    assert e.value.status == 401 and "wrong-secret" not in str(e.value)
    with pytest.raises(ReferenceError, match="check the API key"):
        live_universe(s, DAY)


@pytest.mark.parametrize("vendor", ["alpaca", "polygon"])
def test_live_day_reference_from_vendor_daily_bars(vendor, alpaca_rest, polygon_rest, shared_data,
                                                   tmp_path: Path) -> None:
    daily = _daily(shared_data)
    if vendor == "alpaca":
        rest = alpaca_rest(daily_bars=daily, assets=[asset(s, "NYSE" if s != "SPY" else "ARCA") for s in SYMS])
        s = _alpaca(rest, tmp_path, feed_exchanges=["NYSE"])
    else:
        rest = polygon_rest(daily_bars=daily, tickers=[ticker(s, "XNYS" if s != "SPY" else "ARCX") for s in SYMS])
        s = _polygon(rest, tmp_path, feed_exchanges=["XNYS"])
    names = live_universe(s, DAY)
    assert names == ["AIG", "BAC", "IBM"]
    ref = live_reference(s, names, DAY)
    lean, _ = lean_reference(names, DAY, shared_data / "lean-us-equity" / "daily")
    for k in ("prev_close", "prev_high", "prev_low", "avg_daily_volume", "high_52w", "low_52w"):
        np.testing.assert_allclose(ref[k], lean[k], rtol=1e-9, err_msg=k)
    asked = len(rest.requests)
    assert live_universe(s, DAY) == names  # cached per day: no vendor call
    np.testing.assert_array_equal(live_reference(s, names, DAY)["prev_close"], ref["prev_close"])
    assert len(rest.requests) == asked
    assert (tmp_path / "reference" / f"{DAY}.{vendor}.reference.npz").is_file()
