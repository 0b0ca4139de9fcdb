"""The local Polygon (Massive) server speaks the documented stocks stream protocol, read through
our parser: welcome, auth success / failure, per-topic subscription acknowledgements, data
frames, max_connections, a connection cut mid-stream, a slow consumer; and the REST aggregates
(next_url pagination) and tickers endpoints with 429s."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from scanner.feeds.common import SymbolMap
from scanner.feeds.polygon import PolygonParser, auth_message, classify_error, subscribe_message
from scanner.records import TICK_DTYPE, TICK_ODD_LOT
from tests.vendors.base import tight_socket
from tests.vendors.messages import bars_from_ticks, polygon_luld, polygon_quote, polygon_trades
from tests.vendors.polygon_server import ticker

NS = 1_000_000_000
MS = 1_000_000
T0 = 1_381_239_000 * NS  # 2013-10-08 09:30 New York


def _ticks(n: int) -> tuple[np.ndarray, list[str]]:
    t = np.zeros(n, TICK_DTYPE)
    t["sym"] = np.arange(n) % 2
    t["ts_ns"] = T0 + np.arange(n) * 7 * MS
    t["price"] = 10 + np.arange(n) * 0.01
    t["size"] = np.where(np.arange(n) % 5 == 0, 50, 100)
    t["flags"] = np.where(t["size"] < 100, TICK_ODD_LOT, 0)
    return t, ["AAPL", "MSFT"]


def _recv(ws: ClientConnection, parser: PolygonParser, timeout: float = 10.0):
    return parser.parse(ws.recv(timeout))


@contextmanager
def _login(url: str, parser: PolygonParser, key: str = "test-key", **kw: object) -> Iterator[ClientConnection]:
    with connect(url, **kw) as ws:
        ctl = _recv(ws, parser).control
        assert ctl == [{"ev": "status", "status": "connected", "message": "Connected Successfully"}]
        ws.send(auth_message(key))
        yield ws


def _stream(ws: ClientConnection, parser: PolygonParser, topics: str) -> None:
    ws.send(json.dumps({"action": "subscribe", "params": topics}))
    acks = _recv(ws, parser).control
    assert [a["status"] for a in acks] == ["success"] * len(topics.split(","))


def test_session_streams_subscribed_topics(polygon_stream) -> None:
    ticks, names = _ticks(250)
    msgs = [*polygon_trades(ticks, names), polygon_quote("MSFT", T0, 1.0, 1.1), polygon_quote("AAPL", T0, 2.0, 2.1),
            polygon_luld("AAPL", T0, 11.0, 9.0, [17])]
    server = polygon_stream(msgs, batch=100)
    parser = PolygonParser(SymbolMap(names, grow=False))
    with _login(server.url, parser) as ws:
        assert _recv(ws, parser).control[0]["status"] == "auth_success"
        ws.send(subscribe_message(trades=["*"], quotes=["AAPL"], lulds=["*"]))
        acks = _recv(ws, parser).control
        assert [a["message"] for a in acks] == ["subscribed to: T.*", "subscribed to: Q.AAPL",
                                                 "subscribed to: LULD.*"]
        frames = [_recv(ws, parser) for _ in range(3)]
    trades = np.concatenate([f.trades for f in frames])
    np.testing.assert_array_equal(trades, ticks)
    last = frames[-1]
    assert last.quotes["bid"].tolist() == [2.0]
    assert last.lulds[["upper", "lower"]].tolist() == [(11.0, 9.0)]
    assert last.statuses[["sym", "halted"]].tolist() == [(0, 1)]


def test_auth_failed_is_fatal(polygon_stream) -> None:
    server = polygon_stream([])
    parser = PolygonParser(SymbolMap())
    with _login(server.url, parser, key="nope") as ws:
        ctl = _recv(ws, parser).control[0]
        assert ctl["status"] == "auth_failed" and classify_error(ctl) == "fatal"
        with pytest.raises(ConnectionClosed):
            ws.recv(5)


def test_subscribe_before_auth_and_max_connections(polygon_stream) -> None:
    server = polygon_stream([], connection_limit=1)
    parser = PolygonParser(SymbolMap())
    with connect(server.url) as ws:
        _recv(ws, parser)
        ws.send(subscribe_message(trades=["AAPL"]))
        assert _recv(ws, parser).control[0] == {"ev": "status", "status": "error", "message": "not authorized"}
        ws.send(auth_message("test-key"))
        _recv(ws, parser)
        with _login(server.url, parser) as second:
            ctl = _recv(second, parser).control[0]
    assert ctl["status"] == "max_connections" and classify_error(ctl) == "reconnect"


def test_drop_mid_stream_loses_what_was_published_meanwhile(polygon_stream) -> None:
    ticks, names = _ticks(300)
    server = polygon_stream(polygon_trades(ticks, names), batch=50, drop_after=120, lost_on_drop=30)
    parser = PolygonParser(SymbolMap(names, grow=False))
    got = []
    with _login(server.url, parser) as ws:
        _recv(ws, parser)
        _stream(ws, parser, "T.*")
        with pytest.raises(ConnectionClosed):
            while True:
                got.append(_recv(ws, parser).trades)
    with _login(server.url, parser) as ws:
        _recv(ws, parser)
        _stream(ws, parser, "T.*")
        while sum(map(len, got)) < 270:
            got.append(_recv(ws, parser).trades)
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate([ticks[:120], ticks[150:]]))


@pytest.mark.slow
def test_slow_consumer_is_cut_off(polygon_stream) -> None:
    ticks, names = _ticks(1000)
    server = polygon_stream(polygon_trades(ticks, names), batch=1000, repeat=True, slow_timeout=0.3)
    parser = PolygonParser(SymbolMap(names, grow=False))
    with _login(server.url, parser, sock=tight_socket(server.port), max_queue=1) as ws:
        _recv(ws, parser)
        _stream(ws, parser, "T.*")
        time.sleep(2.0)  # not reading
        ctl = []
        with pytest.raises(ConnectionClosed):
            for _ in range(100):
                ctl += _recv(ws, parser).control
    assert [c["status"] for c in ctl] == ["slow_consumer"] and classify_error(ctl[0]) == "reconnect"


def _get(url: str) -> tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_rest_aggs_follow_next_url_and_tickers(polygon_rest) -> None:
    ticks, names = _ticks(2000)
    bars = bars_from_ticks(ticks, names)
    server = polygon_rest(minute_bars=bars, tickers=[ticker("AAPL"), ticker("MSFT"), ticker("SPY", kind="ETF")])
    assert _get(f"{server.base_url}/v2/aggs/ticker/AAPL/range/1/minute/2013-10-08/2013-10-08")[0] == 401
    url = f"{server.base_url}/v2/aggs/ticker/AAPL/range/1/minute/2013-10-08/2013-10-08?limit=2&apiKey=test-key"
    server.throttle(1, retry_after=3)
    status, headers, body = _get(url)
    assert status == 429 and headers["Retry-After"] == "3" and body["status"] == "ERROR"
    rows, pages = [], 0
    while url:
        _, _, body = _get(url)
        rows += body["results"]
        pages += 1
        url = body.get("next_url") and body["next_url"] + "&apiKey=test-key"
    assert pages == -(-len(bars["AAPL"]) // 2)
    assert [r["c"] for r in rows] == bars["AAPL"]["close"].tolist()
    assert [r["t"] * MS for r in rows] == bars["AAPL"]["minute_ns"].tolist()
    _, _, body = _get(f"{server.base_url}/v3/reference/tickers?market=stocks&type=CS&limit=1&apiKey=test-key")
    assert [r["ticker"] for r in body["results"]] == ["AAPL"] and "cursor=" in body["next_url"]
