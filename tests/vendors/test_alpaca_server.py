"""The local Alpaca server speaks the documented stream protocol, read through our parser:
welcome, auth success / failure, subscription acknowledgement, data frames, error codes, a
connection cut mid-stream and a slow client; and the REST bars / assets endpoints."""

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

from scanner.feeds.alpaca import AlpacaParser, auth_message, classify_error, subscribe_message
from scanner.feeds.common import SymbolMap
from scanner.feeds.frames import unpack_code
from scanner.records import TICK_DTYPE, TICK_ODD_LOT
from tests.vendors.alpaca_server import asset
from tests.vendors.base import tight_socket
from tests.vendors.messages import alpaca_luld, alpaca_quote, alpaca_status, alpaca_trades, bars_from_ticks, lean_ticks

NS = 1_000_000_000
T0 = 1_381_239_000 * NS  # 2013-10-08 13:30 UTC (09:30 New York)


def _ticks(n: int) -> tuple[np.ndarray, list[str]]:
    t = np.zeros(n, TICK_DTYPE)
    t["sym"] = np.arange(n) % 2
    t["ts_ns"] = T0 + np.arange(n) * 1_000_123
    t["price"] = 10 + np.arange(n) * 0.01
    t["size"] = np.where(np.arange(n) % 5 == 0, 50, 100)
    t["flags"] = np.where(t["size"] < 100, TICK_ODD_LOT, 0)
    return t, ["AAPL", "MSFT"]


def _recv(ws: ClientConnection, parser: AlpacaParser, timeout: float = 10.0):
    return parser.parse(ws.recv(timeout))


@contextmanager
def _login(url: str, parser: AlpacaParser, key: str = "test-key", secret: str = "test-secret",
           **kw: object) -> Iterator[ClientConnection]:
    with connect(url, **kw) as ws:
        assert _recv(ws, parser).control == [{"T": "success", "msg": "connected"}]
        ws.send(auth_message(key, secret))
        yield ws


def test_session_streams_the_subscribed_trades_in_batches(alpaca_stream) -> None:
    ticks, names = _ticks(250)
    server = alpaca_stream(alpaca_trades(ticks, names), batch=100)
    parser = AlpacaParser(SymbolMap(names, grow=False))
    with _login(server.url, parser) as ws:
        assert _recv(ws, parser).control == [{"T": "success", "msg": "authenticated"}]
        ws.send(subscribe_message(trades=["*"], quotes=["AAPL"]))
        sub = _recv(ws, parser).control[0]
        assert sub["T"] == "subscription" and sub["trades"] == ["*"] and sub["quotes"] == ["AAPL"]
        assert sub["corrections"] == ["*"] and sub["cancelErrors"] == ["*"]
        got, frames = [], 0
        while sum(len(g) for g in got) < len(ticks):
            f = _recv(ws, parser)
            assert f.malformed == 0 and f.unknown_symbol == 0
            got.append(f.trades)
            frames += 1
    assert frames == 3
    np.testing.assert_array_equal(np.concatenate(got), ticks)
    assert server.received[0] == {"action": "auth", "key": "test-key", "secret": "***"}


def test_only_subscribed_symbols_and_channels_are_sent(alpaca_stream) -> None:
    ticks, names = _ticks(10)
    msgs = [*alpaca_trades(ticks, names), alpaca_quote("MSFT", T0, 1.0, 1.1), alpaca_quote("AAPL", T0, 2.0, 2.1),
            alpaca_status("AAPL", T0, True), alpaca_luld("AAPL", T0, 11.0, 9.0)]
    server = alpaca_stream(msgs, batch=1000)
    parser = AlpacaParser(SymbolMap(names, grow=False))
    with _login(server.url, parser) as ws:
        _recv(ws, parser)
        ws.send(subscribe_message(trades=["MSFT"], quotes=["AAPL"], statuses=["*"], lulds=["AAPL"]))
        _recv(ws, parser)
        f = _recv(ws, parser)
    np.testing.assert_array_equal(f.trades, ticks[ticks["sym"] == 1])
    assert f.quotes["sym"].tolist() == [0] and f.quotes["bid"].tolist() == [2.0]
    assert f.statuses["halted"].tolist() == [1] and unpack_code(f.statuses["reason"][0]) == "LUDP"
    assert f.lulds[["upper", "lower"]].tolist() == [(11.0, 9.0)]


def test_auth_failure_is_402_and_fatal(alpaca_stream) -> None:
    server = alpaca_stream([])
    parser = AlpacaParser(SymbolMap())
    with _login(server.url, parser, secret="wrong") as ws:
        ctl = _recv(ws, parser).control
        assert ctl == [{"T": "error", "code": 402, "msg": "auth failed"}]
        assert classify_error(ctl[0]) == "fatal"
        with pytest.raises(ConnectionClosed):
            ws.recv(5)


@pytest.mark.parametrize(("options", "code", "cls"), [
    ({"entitled": False}, 409, "fatal"),
    ({"connection_limit": 0}, 406, "reconnect"),
])
def test_entitlement_and_connection_errors_at_auth(alpaca_stream, options, code, cls) -> None:
    server = alpaca_stream([], **options)
    parser = AlpacaParser(SymbolMap())
    with _login(server.url, parser) as ws:
        ctl = _recv(ws, parser).control[0]
    assert ctl["code"] == code and classify_error(ctl) == cls


def test_protocol_errors(alpaca_stream) -> None:
    server = alpaca_stream([], symbol_limit=2, channels=("trades", "quotes"))
    parser = AlpacaParser(SymbolMap())
    with connect(server.url) as ws:
        _recv(ws, parser)
        ws.send(subscribe_message(trades=["AAPL"]))
        assert _recv(ws, parser).control[0]["code"] == 401
        ws.send("{not json")
        assert _recv(ws, parser).control[0]["code"] == 400
        ws.send(auth_message("test-key", "test-secret"))
        _recv(ws, parser)
        ws.send(auth_message("test-key", "test-secret"))
        assert _recv(ws, parser).control[0]["code"] == 403
        ws.send(subscribe_message(trades=["A", "B", "C"]))
        assert _recv(ws, parser).control[0]["code"] == 405
        ws.send(subscribe_message(lulds=["A"]))
        assert _recv(ws, parser).control[0]["code"] == 410


def test_auth_timeout_is_404(alpaca_stream) -> None:
    server = alpaca_stream([], auth_timeout=0.2)
    parser = AlpacaParser(SymbolMap())
    with connect(server.url) as ws:
        _recv(ws, parser)
        ctl = _recv(ws, parser).control[0]
    assert ctl["code"] == 404 and classify_error(ctl) == "reconnect"


def test_drop_mid_stream_then_the_next_connection_carries_on(alpaca_stream) -> None:
    ticks, names = _ticks(300)
    server = alpaca_stream(alpaca_trades(ticks, names), batch=50, drop_after=120, lost_on_drop=30)
    parser = AlpacaParser(SymbolMap(names, grow=False))
    got = []
    with _login(server.url, parser) as ws:
        _recv(ws, parser)
        ws.send(subscribe_message(trades=["*"]))
        _recv(ws, parser)
        with pytest.raises(ConnectionClosed):
            while True:
                got.append(_recv(ws, parser).trades)
    assert sum(map(len, got)) == 120
    with _login(server.url, parser) as ws:
        _recv(ws, parser)
        ws.send(subscribe_message(trades=["*"]))
        _recv(ws, parser)
        while sum(map(len, got)) < 270:
            got.append(_recv(ws, parser).trades)
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate([ticks[:120], ticks[150:]]))


@pytest.mark.slow
def test_slow_client_gets_407(alpaca_stream) -> None:
    ticks, names = _ticks(1000)
    server = alpaca_stream(alpaca_trades(ticks, names), batch=1000, repeat=True, slow_timeout=0.3)
    parser = AlpacaParser(SymbolMap(names, grow=False))
    with _login(server.url, parser, sock=tight_socket(server.port), max_queue=1) as ws:
        _recv(ws, parser)
        ws.send(subscribe_message(trades=["*"]))
        _recv(ws, parser)
        time.sleep(2.0)  # not reading: the server's sends stall, it gives up on us
        ctl = []
        with pytest.raises(ConnectionClosed):
            for _ in range(100):  # a few frames were in flight, then the error, then the close
                ctl += _recv(ws, parser).control
    assert ctl == [{"T": "error", "code": 407, "msg": "slow client"}]
    assert classify_error(ctl[0]) == "reconnect"


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict, object]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def test_rest_bars_paginate_across_symbols_and_throttle(alpaca_rest) -> None:
    ticks, names = _ticks(600)
    bars = bars_from_ticks(ticks, names)
    server = alpaca_rest(minute_bars=bars, assets=[asset("AAPL"), asset("MSFT", exchange="NYSE")])
    auth = {"APCA-API-KEY-ID": "test-key", "APCA-API-SECRET-KEY": "test-secret"}
    assert _get(f"{server.base_url}/v2/assets", {})[0] == 401
    assert [a["symbol"] for a in _get(f"{server.base_url}/v2/assets?status=active&exchange=NYSE", auth)[2]] == ["MSFT"]
    url = f"{server.base_url}/v2/stocks/bars?symbols=AAPL,MSFT&timeframe=1Min&limit=3&start=2013-10-08"
    server.throttle(1, retry_after=2)
    status, headers, _ = _get(url, auth)
    assert status == 429 and headers["Retry-After"] == "2"
    got: dict[str, list] = {}
    token, pages = None, 0
    while True:
        _, _, body = _get(url + (f"&page_token={token}" if token else ""), auth)
        pages += 1
        for sym, rows in body["bars"].items():
            got.setdefault(sym, []).extend(rows)
        token = body["next_page_token"]
        if not token:
            break
    n = sum(len(b) for b in bars.values())
    assert pages == -(-n // 3)
    for sym, b in bars.items():
        assert [r["c"] for r in got[sym]] == b["close"].tolist()
        assert [r["v"] for r in got[sym]] == b["volume"].tolist()


def test_real_lean_ticks_round_trip_through_server_and_parser(alpaca_stream, shared_data) -> None:
    ticks, names = lean_ticks(shared_data / "lean-us-equity", ["aig", "bac"], 20131008, limit=20_000)
    server = alpaca_stream(alpaca_trades(ticks, names), batch=1000)
    parser = AlpacaParser(SymbolMap(names, grow=False))
    got = []
    with _login(server.url, parser) as ws:
        _recv(ws, parser)
        ws.send(subscribe_message(trades=["*"]))
        _recv(ws, parser)
        while sum(map(len, got)) < len(ticks):
            got.append(_recv(ws, parser).trades)
    np.testing.assert_array_equal(np.concatenate(got), ticks)
