"""The `/ws` feed on a real uvicorn server and real sockets, without a whole instance: fan-out by
subscription group, the slow-client drop, and the limits (message size, nesting, subscription
size, rate per key, clients, Host and Origin)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
import websockets
from fastapi import FastAPI

from procs.api.wire import heads_of
from procs.api.wsfeed import Hub
from scanner.config import Settings
from tests.support import eventually, free_port

KEY = "feed-test-key-0123456789"


def connect(url: str, **kw: Any) -> Any:
    """websockets.connect with a handshake timeout for a loaded machine (the default is 10 s)."""
    return websockets.connect(url, open_timeout=60, **kw)


class Server:
    """uvicorn in a thread with the feed's protocol; `push` hands alerts to the hub on its loop."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.rows: list[dict[str, Any]] = [{"symbol": f"S{i}", "day_volume": float(i)} for i in range(500)]
        self.hub = Hub(settings, lambda metric, order, limit, cols: self.rows[:limit])
        config = uvicorn.Config(FastAPI(), host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", ws=self.hub.protocol_class())
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            tops = asyncio.create_task(self.hub.run_tops(lambda: not self.server.should_exit))
            await self.server.serve()
            await tops

        asyncio.run(main())

    def push(self, alerts: list[dict[str, Any]]) -> None:
        done = threading.Event()
        assert self.loop is not None
        heads, parts = heads_of([json.dumps(a).encode() for a in alerts])
        assert len(heads) == len(alerts)
        self.loop.call_soon_threadsafe(lambda: (self.hub.send(heads, parts), done.set()))
        assert done.wait(10)


def _serve(**over: Any) -> Iterator[Server]:
    srv = Server(Settings(instance="wsfeed", **over))
    srv.thread.start()
    eventually(lambda: srv.server.started, 20, 0.02, "uvicorn up")
    try:
        yield srv
    finally:
        srv.server.should_exit = True
        srv.thread.join(20)


@pytest.fixture
def feed() -> Iterator[Server]:
    yield from _serve(ws_client_buffer_bytes=65536, ws_max_clients=30, ws_max_message_bytes=8192,
                      ws_rate_per_s=2, ws_rate_burst=20, ws_max_subscription=100)


@pytest.fixture
def keyed() -> Iterator[Server]:
    yield from _serve(api_keys={KEY: "read"})


def alert(rule: str, symbol: str, scan_ts: float, tags: list[str] | None = None) -> dict[str, Any]:
    return {"seq": 1, "rule": rule, "rule_name": f"<b>{rule}</b>", "severity": "info", "tags": tags or [],
            "symbol": symbol, "kind": "enter", "values": {"price": 1.5}, "event_ts": scan_ts, "scan_ts": scan_ts}


async def next_of(ws: Any, kind: str, timeout: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if msg["type"] == kind:
                return msg


def test_groups_get_their_alerts_with_the_frame_header(feed: Server) -> None:
    async def run() -> None:
        url = f"ws://127.0.0.1:{feed.port}/ws"
        async with connect(url) as everything, connect(url) as by_symbol, \
                connect(url) as by_tag:
            for ws in (everything, by_symbol, by_tag):
                assert json.loads(await ws.recv())["type"] == "hello"
            await by_symbol.send(json.dumps({"op": "subscribe", "symbols": ["msft"]}))
            await next_of(by_symbol, "subscribed")
            await by_tag.send(json.dumps({"op": "subscribe", "tags": ["gap"]}))
            await next_of(by_tag, "subscribed")
            now = time.time()
            await asyncio.to_thread(feed.push, [alert("r1", "AAPL", now - 1, ["gap"]), alert("r2", "MSFT", now)])
            raw = await everything.recv()
            assert raw.startswith('{"type":"alerts","scan_ts":')  # header first: scan_ts without decoding
            msg = json.loads(raw)
            assert msg["count"] == 2 and msg["scan_ts"] == pytest.approx(now - 1)
            assert [a["symbol"] for a in msg["alerts"]] == ["AAPL", "MSFT"]
            assert [a["symbol"] for a in (await next_of(by_symbol, "alerts"))["alerts"]] == ["MSFT"]
            assert [a["symbol"] for a in (await next_of(by_tag, "alerts"))["alerts"]] == ["AAPL"]

    asyncio.run(run())
    assert feed.hub.deliveries == 4 and feed.hub.dropped == 0
    assert len(feed.hub.groups) == 0  # every connection left its group


def test_slow_client_drops_and_is_told_while_others_are_served(feed: Server) -> None:
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", feed.port))
    slow.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    slow.settimeout(10)
    assert slow.recv(12) == b"HTTP/1.1 101"
    big = [alert(f"r{i}", f"S{i}", time.time()) for i in range(300)]  # ~50 KB a frame

    async def fast_reader() -> int:
        got = 0
        async with connect(f"ws://127.0.0.1:{feed.port}/ws", max_size=None) as ws:
            await next_of(ws, "hello")
            for _ in range(40):  # 2 MB in all: far past the slow client's 64 KiB + kernel buffers
                await asyncio.to_thread(feed.push, big)
                got += (await next_of(ws, "alerts"))["count"]
        return got

    try:
        assert asyncio.run(fast_reader()) == 40 * 300  # the reading client lost nothing
        assert feed.hub.dropped > 0
        slow.settimeout(0.5)
        data = b""
        try:
            while True:
                chunk = slow.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
        assert len(data) < 1_000_000  # the bound held: nowhere near the 2 MB that were offered
        feed.push(big[:1])  # room again: the next frame is preceded by the count
        slow.settimeout(10)
        tail = b""
        while b'"type":"dropped"' not in tail or not tail.endswith(b"]}"):
            tail += slow.recv(1 << 16)
        i = tail.index(b'{"type":"dropped","count":')
        assert int(tail[i + 26:tail.index(b"}", i)]) > 0
    finally:
        slow.close()


def test_limits_message_size_nesting_subscription_rate(feed: Server) -> None:
    async def run() -> None:
        url = f"ws://127.0.0.1:{feed.port}/ws"
        async with connect(url) as ws:
            await next_of(ws, "hello")
            await ws.send(json.dumps({"op": "subscribe", "rules": [f"r{i}" for i in range(150)]}))
            assert "too large" in (await next_of(ws, "error"))["error"]
            await ws.send("[" * 4000 + "]" * 4000)
            assert "nested" in (await next_of(ws, "error"))["error"]
            await ws.send(json.dumps({"op": "top", "metric": "day_volume", "limit": 2, "interval_s": 0.2}))
            assert [r["symbol"] for r in (await next_of(ws, "top"))["rows"]] == ["S0", "S1"]
            await ws.send("x" * 10_000)  # over ws_max_message_bytes
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await next_of(ws, "never")
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        async with connect(url) as a, connect(url) as b:  # one key (none): one bucket
            await next_of(a, "hello")
            await next_of(b, "hello")
            for _ in range(20):
                await a.send("{}")
                await b.send("{}")
            while "rate limit" not in (await next_of(b, "error"))["error"]:
                pass

    asyncio.run(run())


def test_max_clients_and_host_check(feed: Server) -> None:
    async def run() -> None:
        url = f"ws://127.0.0.1:{feed.port}/ws"
        conns = []
        try:
            with pytest.raises(websockets.InvalidStatus) as refused:
                for _ in range(31):
                    conns.append(await connect(url))
            assert refused.value.response.status_code == 503 and len(conns) == 30
        finally:
            for c in conns:
                await c.close()
        # no API keys: a rebinding page names its own host and is refused
        s = socket.create_connection(("127.0.0.1", feed.port))
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Origin: http://evil.example\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        s.settimeout(10)
        assert s.recv(12) == b"HTTP/1.1 403"
        s.close()

    asyncio.run(run())


def test_api_key_required_when_configured(keyed: Server) -> None:
    async def run() -> None:
        async with connect(f"ws://127.0.0.1:{keyed.port}/ws?token=wrong") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        async with connect(f"ws://127.0.0.1:{keyed.port}/ws",
                                      additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"

    asyncio.run(run())
