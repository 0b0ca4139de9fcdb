"""A local Polygon (Massive) server: the stocks WebSocket and the REST endpoints a live day needs
(`GET /v2/aggs/ticker/{sym}/range/1/{minute|day}/{from}/{to}` with `next_url` pagination,
`GET /v3/reference/tickers` paginated), per the Massive docs ("WebSocket / Stocks", "Custom
Bars (OHLC)", "All Tickers") and the official client `massive`.

Stream session (path `/stocks`): `[{"ev":"status","status":"connected",...}]` -> `{"action":
"auth","params":KEY}` answered "auth_success" or "auth_failed" (then closed) ->
`{"action":"subscribe","params":"T.AAPL,Q.*"}` answered by one status "success" per topic ->
data messages of the subscribed topics, `batch` per frame. Also: "max_connections" (a
connection over the limit; closed), "slow_consumer" (a frame not taken within `slow_timeout`;
closed), "error" statuses for actions before auth or unknown actions. The stream state (cursor,
drop, lost messages) works as in `tests.vendors.alpaca_server`.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import msgspec
import numpy as np
from websockets.asyncio.server import ServerConnection

from scanner.feeds.lean import DAILY_DTYPE
from scanner.session import day_start_ns, next_day
from tests.vendors.base import HttpServer, Response, WsServer, cut_after_sent, tighten

MS = 1_000_000
_TOPIC_OF = {"T": "T", "Q": "Q", "LULD": "LULD", "A": "A", "AM": "AM"}


def status(code: str, message: str) -> dict:
    return {"ev": "status", "status": code, "message": message}


class PolygonStreamServer(WsServer):
    """`messages`: Polygon data messages (dicts, see `tests.vendors.messages`) streamed in order
    once subscribed. Options as `AlpacaStreamServer`: `batch`, `interval`, `drop_after`,
    `lost_on_drop`, `repeat`, `slow_timeout`, `connection_limit`."""

    path = "/stocks"

    def __init__(self, messages: list[dict] = (), *, key: str = "test-key", batch: int = 100,
                 interval: float = 0.0, drop_after: int | None = None, lost_on_drop: int = 0,
                 repeat: bool = False, slow_timeout: float | None = None, connection_limit: int = 1) -> None:
        super().__init__()
        self.messages = list(messages)
        self.key = key
        self.batch, self.interval = batch, interval
        self.drop_after, self.lost_on_drop, self.repeat = drop_after, lost_on_drop, repeat
        self.slow_timeout, self.connection_limit = slow_timeout, connection_limit
        self.cursor = 0
        self.sent = 0
        self.drops = 0
        self.authenticated: set[ServerConnection] = set()

    async def session(self, ws: ServerConnection) -> None:
        async def send(msgs: list[dict]) -> None:
            await ws.send(msgspec.json.encode(msgs).decode())

        await send([status("connected", "Connected Successfully")])
        topics: dict[str, set[str]] = {k: set() for k in _TOPIC_OF.values()}
        authed = False
        streamer: asyncio.Task | None = None
        try:
            async for raw in ws:
                try:
                    msg = msgspec.json.decode(raw)
                    action, params = msg["action"], msg["params"]
                    if not isinstance(action, str) or not isinstance(params, str):
                        raise TypeError
                except (msgspec.DecodeError, KeyError, TypeError):
                    await send([status("error", "invalid message")])
                    continue
                with self.lock:
                    self.received.append({"action": action, "params": "***" if action == "auth" else params})
                if action == "auth":
                    if params != self.key:
                        await send([status("auth_failed", "authentication failed")])
                        await ws.close()
                        return
                    if len(self.authenticated) >= self.connection_limit:
                        await send([status("max_connections", "Maximum number of websocket connections "
                                                              "exceeded. You have reached the connection limit.")])
                        await ws.close()
                        return
                    self.authenticated.add(ws)
                    authed = True
                    await send([status("auth_success", "authenticated")])
                elif action in ("subscribe", "unsubscribe"):
                    if not authed:
                        await send([status("error", "not authorized")])
                        continue
                    acks = []
                    for topic in (t.strip() for t in params.split(",") if t.strip()):
                        ev, _, sym = topic.partition(".")
                        if ev not in topics or not sym:
                            acks.append(status("error", f"invalid subscription: {topic}"))
                            continue
                        (topics[ev].add if action == "subscribe" else topics[ev].discard)(sym)
                        verb = "subscribed to" if action == "subscribe" else "unsubscribed to"
                        acks.append(status("success", f"{verb}: {topic}"))
                    await send(acks)
                    if streamer is None and any(topics.values()):
                        streamer = asyncio.create_task(self._stream(ws, send, topics))
                else:
                    await send([status("error", f"unknown action: {action}")])
        finally:
            self.authenticated.discard(ws)
            if streamer is not None:
                streamer.cancel()

    async def _stream(self, ws: ServerConnection, send: Any, topics: dict[str, set[str]]) -> None:
        first = self.connections == 1
        if self.slow_timeout is not None:
            tighten(ws)
        while True:
            if self.cursor >= len(self.messages):
                if not self.repeat or not self.messages:
                    return
                self.cursor = 0
            chunk = self.messages[self.cursor:self.cursor + self.batch]
            if self.drop_after is not None and first and self.drops == 0:
                chunk = chunk[:max(0, self.drop_after - self.sent)]
                if not chunk:
                    self.drops += 1
                    self.cursor += self.lost_on_drop
                    await cut_after_sent(ws)
                    return
            self.cursor += len(chunk)
            frame = [m for m in chunk if _wanted(m, topics)]
            if frame:
                if self.slow_timeout is None:
                    await send(frame)
                else:
                    try:
                        await asyncio.wait_for(send(frame), self.slow_timeout)
                    except TimeoutError:
                        ws.protocol.send_text(msgspec.json.encode(
                            [status("slow_consumer", "Connection closed: client is not reading fast enough")]))
                        for data in ws.protocol.data_to_send():
                            ws.transport.write(data)
                        ws.transport.close()
                        return
            self.sent += len(chunk)
            await asyncio.sleep(self.interval)


def _wanted(m: dict, topics: dict[str, set[str]]) -> bool:
    ev = m.get("ev", "")
    if ev not in topics:
        return True
    s = topics[ev]
    return "*" in s or (m.get("T") if ev == "LULD" else m.get("sym")) in s


class PolygonRestServer(HttpServer):
    """Aggregates (minute/day bars, `limit` a page, `next_url` with a cursor) and the tickers
    list (`limit` a page, `next_url`). `minute_bars` / `daily_bars` map symbol -> BAR_DTYPE /
    DAILY_DTYPE arrays; `tickers` are Massive ticker dicts (see `ticker`). Auth: `apiKey`
    query parameter or `Authorization: Bearer KEY`."""

    def __init__(self, *, minute_bars: dict[str, np.ndarray] | None = None,
                 daily_bars: dict[str, np.ndarray] | None = None, tickers: list[dict] | None = None,
                 key: str = "test-key", max_limit: int = 50_000) -> None:
        super().__init__()
        self.minute_bars = minute_bars or {}
        self.daily_bars = daily_bars or {}
        self.tickers = tickers or []
        self.key, self.max_limit = key, max_limit

    def too_many(self) -> Response:
        return 429, {}, {"status": "ERROR", "request_id": "local",
                         "error": "You've exceeded the maximum requests per minute, please wait or upgrade your "
                                  "subscription to continue."}

    def route(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Response:
        key = query.get("apiKey") or headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not key:
            return 401, {}, {"status": "ERROR", "request_id": "local", "error": "API Key was not provided"}
        if key != self.key:
            return 401, {}, {"status": "ERROR", "request_id": "local", "error": "Unknown API Key"}
        parts = path.strip("/").split("/")
        if len(parts) == 9 and parts[:3] == ["v2", "aggs", "ticker"] and parts[4] == "range":
            return self._aggs(parts[3], parts[5], parts[6], parts[7], parts[8], query)
        if path == "/v3/reference/tickers":
            rows = [t for t in self.tickers if t["market"] == query.get("market", t["market"])
                    and str(t["active"]).lower() == query.get("active", str(t["active"])).lower()
                    and t["primary_exchange"] == query.get("exchange", t["primary_exchange"])
                    and t["type"] == query.get("type", t["type"])]
            return self._page(rows, query, 100, path, {})
        return 404, {}, {"status": "NOT_FOUND", "request_id": "local", "message": "Not found"}

    def _aggs(self, sym: str, mult: str, span: str, frm: str, to: str, q: dict[str, str]) -> Response:
        if mult != "1" or span not in ("minute", "day"):
            return 400, {}, {"status": "ERROR", "request_id": "local", "error": f"unsupported range {mult}/{span}"}
        lo, hi = _bound(frm, False), _bound(to, True)
        rows = []
        if span == "minute":
            b = self.minute_bars.get(sym)
            for _s, n, t, o, h, low, c, v, vw in (b.tolist() if b is not None else []):
                if lo <= t <= hi:
                    rows.append({"v": v, "vw": vw, "o": o, "c": c, "h": h, "l": low, "t": t // MS, "n": n})
        else:
            d = self.daily_bars.get(sym, np.empty(0, DAILY_DTYPE))
            for day, o, h, low, c, v in d.tolist():
                t = day_start_ns(int(day))
                if lo <= t <= hi:
                    rows.append({"v": v, "vw": c, "o": o, "c": c, "h": h, "l": low, "t": t // MS, "n": 0})
        if q.get("sort") == "desc":
            rows.reverse()
        head = {"ticker": sym, "adjusted": q.get("adjusted", "true") == "true", "queryCount": len(rows)}
        return self._page(rows, q, 5000, f"/v2/aggs/ticker/{sym}/range/{mult}/{span}/{frm}/{to}", head)

    def _page(self, rows: list[dict], q: dict[str, str], default: int, path: str, head: dict) -> Response:
        limit = min(int(q.get("limit", default)), self.max_limit)
        offset = int(base64.urlsafe_b64decode(q["cursor"]).decode()) if q.get("cursor") else 0
        page = rows[offset:offset + limit]
        body: dict[str, Any] = {**head, "results": page, "resultsCount": len(page), "count": len(page),
                                "status": "OK", "request_id": f"local-{offset}"}
        if offset + limit < len(rows):
            keep = {k: v for k, v in q.items() if k not in ("cursor", "apiKey")}
            cursor = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
            extra = "".join(f"&{k}={v}" for k, v in keep.items())
            body["next_url"] = f"{self.base_url}{path}?cursor={cursor}{extra}"
        return 200, {}, body


def ticker(symbol: str, exchange: str = "XNAS", kind: str = "CS", name: str = "", active: bool = True) -> dict:
    """A Massive ticker record (`GET /v3/reference/tickers`)."""
    return {"ticker": symbol, "name": name or f"{symbol} Inc.", "market": "stocks", "locale": "us",
            "primary_exchange": exchange, "type": kind, "active": active, "currency_name": "usd",
            "last_updated_utc": "2024-01-02T00:00:00Z"}


def _bound(v: str, end: bool) -> int:
    """A from/to path value: a date (yyyy-mm-dd, New York trading day) or Unix ms."""
    if v.isdigit():
        return int(v) * MS + (MS - 1 if end else 0)
    day = int(v.replace("-", ""))
    return day_start_ns(next_day(day)) - 1 if end else day_start_ns(day)
