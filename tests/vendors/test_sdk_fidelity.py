"""Fidelity of the local servers: the vendors' official Python SDKs (alpaca-py, massive) connect
to them and receive the same trades our parsers get from the same servers. The SDKs build one
Python object per message, so they stay here, out of the hot path."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import numpy as np
import pytest
from alpaca.data.live import StockDataStream
from massive import WebSocketClient
from massive.websocket.models import EquityTrade, LimitUpLimitDown
from websockets.sync.client import connect

from scanner.feeds import alpaca, polygon
from scanner.feeds.common import SymbolMap
from tests.vendors.messages import alpaca_trades, lean_ticks, polygon_luld, polygon_trades

N = 3_000


@pytest.fixture(scope="module")
def real_ticks(shared_data) -> tuple[np.ndarray, list[str]]:
    return lean_ticks(shared_data / "lean-us-equity", ["aig", "bac", "ibm"], 20131008, limit=N)


def _ours(url: str, parser, login: list[str], n: int) -> np.ndarray:
    got = []
    with connect(url) as ws:
        ws.recv(10)
        for m in login:
            ws.send(m)
            ws.recv(10)
        while sum(map(len, got)) < n:
            got.append(parser.parse(ws.recv(10)).trades)
    return np.concatenate(got)


def test_alpaca_py_receives_the_trades_our_parser_gets(alpaca_stream, real_ticks) -> None:
    ticks, names = real_ticks
    msgs = alpaca_trades(ticks, names)
    sdk_server = alpaca_stream(msgs, batch=200)
    received: list = []
    stream = StockDataStream("test-key", "test-secret", url_override=sdk_server.url)

    async def on_trade(t) -> None:
        received.append(t)
        if len(received) == len(ticks):
            await stream.stop_ws()

    stream.subscribe_trades(on_trade, "*")
    runner = threading.Thread(target=stream.run, daemon=True)
    runner.start()
    runner.join(60)
    assert not runner.is_alive(), f"alpaca-py got {len(received)} of {len(ticks)} trades"
    # alpaca-py spoke MessagePack (its default), authenticated and subscribed like a real client
    assert sdk_server.received[0] == {"action": "auth", "key": "test-key", "secret": "***"}
    assert sdk_server.received[1]["trades"] == ["*"]

    ours = _ours(alpaca_stream(msgs, batch=200).url, alpaca.AlpacaParser(SymbolMap(names, grow=False)),
                 [alpaca.auth_message("test-key", "test-secret"), alpaca.subscribe_message(trades=["*"])],
                 len(ticks))
    np.testing.assert_array_equal(ours, ticks)
    assert [t.symbol for t in received] == [names[s] for s in ours["sym"].tolist()]
    assert [t.price for t in received] == ours["price"].tolist()
    assert [t.size for t in received] == ours["size"].tolist()
    # the SDK's datetimes hold microseconds; our times are the same instants to the ns
    us = [int((t.timestamp - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6 + 0.5) for t in received]
    assert us == (ours["ts_ns"] // 1000).tolist()
    assert [("I" in t.conditions) for t in received] == (ours["size"] < 100).tolist()


def test_massive_client_receives_the_trades_our_parser_gets(polygon_stream, real_ticks) -> None:
    ticks, names = real_ticks
    msgs = [*polygon_trades(ticks, names), polygon_luld(names[0], int(ticks["ts_ns"][-1]), 40.0, 30.0, [17])]
    sdk_server = polygon_stream(msgs, batch=250)
    received: list = []
    client = WebSocketClient(api_key="test-key", feed=f"127.0.0.1:{sdk_server.port}", market="stocks",
                             secure=False, subscriptions=["T.*", "LULD.*"], max_reconnects=0)

    async def handle(batch: list) -> None:
        received.extend(batch)
        if len(received) == len(msgs):
            await client.close()

    asyncio.run(asyncio.wait_for(client.connect(handle), 60))
    assert sdk_server.received[0] == {"action": "auth", "params": "***"}
    assert sorted(sdk_server.received[1]["params"].split(",")) == ["LULD.*", "T.*"]

    parser = polygon.PolygonParser(SymbolMap(names, grow=False))
    ours = _ours(polygon_stream(msgs[:-1], batch=250).url, parser,
                 [polygon.auth_message("test-key"), polygon.subscribe_message(trades=["*"])], len(ticks))
    np.testing.assert_array_equal(ours["sym"], ticks["sym"])
    np.testing.assert_array_equal(ours["ts_ns"], ticks["ts_ns"])  # Lean ticks are whole ms: exact
    trades = [m for m in received if isinstance(m, EquityTrade)]
    assert [t.symbol for t in trades] == [names[s] for s in ours["sym"].tolist()]
    assert [t.price for t in trades] == ours["price"].tolist()
    assert [t.size for t in trades] == ours["size"].tolist()
    assert [t.timestamp * 1_000_000 for t in trades] == ours["ts_ns"].tolist()
    luld = [m for m in received if isinstance(m, LimitUpLimitDown)]
    assert [(x.symbol, x.high_price, x.low_price, x.indicators) for x in luld] == [(names[0], 40.0, 30.0, [17])]
