"""A local Alpaca market-data server: the v2 stocks stream (WebSocket) and the REST endpoints a
live day needs (`GET /v2/stocks/bars`, `GET /v2/assets`), per Alpaca's docs ("WebSocket
Stream", "Real-time Stock Data", "Historical bars", "Assets").

Stream session: welcome `[{"T":"success","msg":"connected"}]` -> auth (message, or the
APCA-API-KEY-ID / APCA-API-SECRET-KEY headers) -> `subscribe` acknowledged with a
`subscription` message -> data messages of the subscribed channels, `batch` per frame.
Errors as documented: 400 invalid syntax, 401 not authenticated, 402 auth failed, 403 already
authenticated, 404 auth timeout, 405 symbol limit exceeded, 406 connection limit exceeded, 407
slow client, 409 insufficient subscription, 410 invalid subscribe action for this feed.
Frames are JSON, or MessagePack (times as msgpack timestamps) when the client asks with
`Content-Type: application/msgpack` as alpaca-py does.

Streaming state is per server, not per connection: a cursor walks the message list; a dropped
connection (`drop_after`) loses `lost_on_drop` messages (published while the client was away),
and the next connection carries on from there, as a live vendor does.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from typing import Any

import msgspec
import numpy as np
from websockets.asyncio.server import ServerConnection

from scanner.feeds.frames import BAD_TS, rfc3339_ns
from scanner.feeds.lean import DAILY_DTYPE
from scanner.session import day_start_ns
from tests.vendors.base import HttpServer, Response, WsServer, cut_after_sent, tighten
from tests.vendors.messages import rfc3339

CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "corrections",
            "cancelErrors")
SUBSCRIBABLE = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds")
_CHANNEL_OF = {"t": "trades", "c": "trades", "x": "trades", "q": "quotes", "s": "statuses", "l": "lulds",
               "b": "bars", "u": "updatedBars", "d": "dailyBars"}


def error(code: int, msg: str) -> dict:
    return {"T": "error", "code": code, "msg": msg}


class AlpacaStreamServer(WsServer):
    """`messages`: vendor data messages (dicts, see `tests.vendors.messages`) streamed in order
    once a client subscribes. Options: `batch` messages per frame, `interval` seconds between
    frames, `drop_after` (cut the first connection, no close handshake, after that many data
    messages), `lost_on_drop`, `repeat` (loop the list forever), `slow_timeout` (a frame the
    client has not taken within it -> 407 and close), `connection_limit`, `symbol_limit`,
    `entitled` (False: 409 at auth), `channels` the feed offers (others: 410), `auth_timeout`."""

    def __init__(self, messages: list[dict] = (), *, key: str = "test-key", secret: str = "test-secret",
                 feed: str = "iex", batch: int = 100, interval: float = 0.0, drop_after: int | None = None,
                 lost_on_drop: int = 0, repeat: bool = False, slow_timeout: float | None = None,
                 connection_limit: int = 1, symbol_limit: int | None = None, entitled: bool = True,
                 channels: tuple[str, ...] = SUBSCRIBABLE, auth_timeout: float = 10.0) -> None:
        super().__init__()
        self.path = f"/v2/{feed}"
        self.messages = list(messages)
        self.key, self.secret = key, secret
        self.batch, self.interval = batch, interval
        self.drop_after, self.lost_on_drop, self.repeat = drop_after, lost_on_drop, repeat
        self.slow_timeout = slow_timeout
        self.connection_limit, self.symbol_limit = connection_limit, symbol_limit
        self.entitled, self.channels, self.auth_timeout = entitled, channels, auth_timeout
        self.cursor = 0  # next message to publish (shared by successive connections)
        self.sent = 0  # data messages sent so far
        self.drops = 0
        self.authenticated: set[ServerConnection] = set()

    async def session(self, ws: ServerConnection) -> None:
        packed = ws.request.headers.get("Content-Type", "") == "application/msgpack"
        subs: dict[str, set[str]] = {c: set() for c in CHANNELS}
        state = {"auth": False}

        async def send(msgs: list[dict]) -> None:
            await ws.send(_msgpack(msgs) if packed else msgspec.json.encode(msgs))

        await send([{"T": "success", "msg": "connected"}])
        hk, hs = ws.request.headers.get("APCA-API-KEY-ID"), ws.request.headers.get("APCA-API-SECRET-KEY")
        if hk is not None and not await self._auth(ws, send, hk, hs, state):
            return
        streamer: asyncio.Task | None = None
        try:
            while True:
                timeout = None if state["auth"] else self.auth_timeout
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout)
                except TimeoutError:
                    await send([error(404, "auth timeout")])
                    return
                try:
                    msg = msgspec.msgpack.decode(raw) if isinstance(raw, bytes) and packed else msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    await send([error(400, "invalid syntax")])
                    continue
                with self.lock:
                    self.received.append(_redact(msg))
                action = msg.get("action") if isinstance(msg, dict) else None
                if action == "auth":
                    if state["auth"]:
                        await send([error(403, "already authenticated")])
                    elif not await self._auth(ws, send, msg.get("key"), msg.get("secret"), state):
                        return
                elif action in ("subscribe", "unsubscribe"):
                    if not state["auth"]:
                        await send([error(401, "not authenticated")])
                        continue
                    reply = self._subscribe(subs, msg, action)
                    await send([reply])
                    if reply["T"] == "subscription" and streamer is None:
                        streamer = asyncio.create_task(self._stream(ws, send, subs))
                else:
                    await send([error(400, "invalid syntax")])
        finally:
            self.authenticated.discard(ws)
            if streamer is not None:
                streamer.cancel()

    async def _auth(self, ws: ServerConnection, send: Any, key: Any, secret: Any, state: dict) -> bool:
        if key != self.key or secret != self.secret:
            await send([error(402, "auth failed")])
            await ws.close()
            return False
        if not self.entitled:
            await send([error(409, "insufficient subscription")])
            await ws.close()
            return False
        if len(self.authenticated) >= self.connection_limit:
            await send([error(406, "connection limit exceeded")])
            await ws.close()
            return False
        self.authenticated.add(ws)
        state["auth"] = True
        await send([{"T": "success", "msg": "authenticated"}])
        return True

    def _subscribe(self, subs: dict[str, set[str]], msg: dict, action: str) -> dict:
        asked = {k: v for k, v in msg.items() if k != "action"}
        for k, v in asked.items():
            if k not in CHANNELS or not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                return error(400, "invalid syntax")
            if k not in self.channels:
                return error(410, "invalid subscribe action for this feed")
        new = {c: set(s) for c, s in subs.items()}
        for k, v in asked.items():
            new[k] = new[k] | set(v) if action == "subscribe" else new[k] - set(v)
        new["corrections"] = set(new["trades"])
        new["cancelErrors"] = set(new["trades"])
        distinct = set().union(*(s for c, s in new.items() if c in SUBSCRIBABLE)) - {"*"}
        if self.symbol_limit is not None and len(distinct) > self.symbol_limit:
            return error(405, "symbol limit exceeded")
        subs.update(new)
        return {"T": "subscription", **{c: sorted(subs[c]) for c in CHANNELS}}

    async def _stream(self, ws: ServerConnection, send: Any, subs: dict[str, set[str]]) -> None:
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
            frame = [m for m in chunk if _wanted(m, subs)]
            if frame:
                sending = send(frame)
                if self.slow_timeout is None:
                    await sending
                else:
                    try:
                        await asyncio.wait_for(sending, self.slow_timeout)
                    except TimeoutError:  # the frame is queued whole; queue the error behind it, close
                        _queue_error(ws, [error(407, "slow client")])
                        ws.transport.close()
                        return
            self.sent += len(chunk)
            if self.interval:
                await asyncio.sleep(self.interval)
            else:
                await asyncio.sleep(0)


def _queue_error(ws: ServerConnection, msgs: list[dict]) -> None:
    """Queue a text frame behind the unread data without waiting for the reader (the client
    is not reading: that is the point of a slow-client error)."""
    ws.protocol.send_text(msgspec.json.encode(msgs))
    for data in ws.protocol.data_to_send():
        ws.transport.write(data)


def _wanted(m: dict, subs: dict[str, set[str]]) -> bool:
    chan = _CHANNEL_OF.get(m.get("T", ""))
    if chan is None:
        return True
    s = subs[chan]
    return "*" in s or m.get("S") in s


def _redact(msg: Any) -> Any:
    if isinstance(msg, dict) and "secret" in msg:
        return {**msg, "secret": "***"}
    return msg


def _msgpack(msgs: list[dict]) -> bytes:
    """MessagePack frame; `t` times become msgpack timestamps (ns exact), as Alpaca sends them."""
    out = []
    for m in msgs:
        t = m.get("t")
        if isinstance(t, str):
            ns = int(rfc3339_ns([t])[0])
            if ns != BAD_TS:
                m = {**m, "t": msgspec.msgpack.Ext(-1, struct.pack(">IQ", ns % 1_000_000_000, ns // 1_000_000_000))}
        out.append(m)
    return msgspec.msgpack.encode(out)


class AlpacaRestServer(HttpServer):
    """`GET /v2/stocks/bars` (multi-symbol, timeframe 1Min / 1Day, `limit` bars a page over all
    symbols, `page_token` pagination) and `GET /v2/assets`. `minute_bars` and `daily_bars` map
    symbol -> BAR_DTYPE / DAILY_DTYPE arrays; `assets` are Alpaca asset dicts (see `asset`)."""

    def __init__(self, *, minute_bars: dict[str, np.ndarray] | None = None,
                 daily_bars: dict[str, np.ndarray] | None = None, assets: list[dict] | None = None,
                 key: str = "test-key", secret: str = "test-secret", max_limit: int = 10_000) -> None:
        super().__init__()
        self.minute_bars = minute_bars or {}
        self.daily_bars = daily_bars or {}
        self.assets = assets or []
        self.key, self.secret, self.max_limit = key, secret, max_limit

    def too_many(self) -> Response:
        return 429, {}, {"message": "too many requests."}

    def route(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Response:
        if headers.get("apca-api-key-id") != self.key or headers.get("apca-api-secret-key") != self.secret:
            return 401, {}, {"message": "unauthorized."}
        if path == "/v2/stocks/bars":
            return self._bars(query)
        if path == "/v2/assets":
            rows = [a for a in self.assets if a["status"] == query.get("status", a["status"])
                    and a["class"] == query.get("asset_class", a["class"])
                    and a["exchange"] == query.get("exchange", a["exchange"])]
            return 200, {}, rows
        return 404, {}, {"message": "endpoint not found."}

    def _bars(self, q: dict[str, str]) -> Response:
        symbols = [s for s in q["symbols"].split(",") if s]
        tf = q.get("timeframe")
        if tf not in ("1Min", "1Day"):
            return 422, {}, {"message": f"invalid timeframe: {tf}"}
        limit = min(int(q.get("limit", 1000)), self.max_limit)
        start, end = _time_arg(q.get("start"), 0), _time_arg(q.get("end"), 2**62)
        rows: list[tuple[str, dict]] = []
        for sym in sorted(symbols):
            if tf == "1Min":
                b = self.minute_bars.get(sym, np.empty(0))
                for r in b.tolist() if len(b) else []:
                    _s, n, t, o, h, lo, c, v, vw = r
                    if start <= t <= end:
                        rows.append((sym, {"t": rfc3339(t)[:-11] + "Z" if t % 10**9 == 0 else rfc3339(t), "o": o,
                                           "h": h, "l": lo, "c": c, "v": v, "n": n, "vw": vw}))
            else:
                d = self.daily_bars.get(sym, np.empty(0, DAILY_DTYPE))
                for day, o, h, lo, c, v in d.tolist():
                    t = day_start_ns(int(day))
                    if start <= t <= end:
                        rows.append((sym, {"t": rfc3339(t)[:-11] + "Z", "o": o, "h": h, "l": lo, "c": c, "v": v,
                                           "n": 0, "vw": c}))
        offset = int(base64.b64decode(q["page_token"]).decode()) if q.get("page_token") else 0
        page = rows[offset:offset + limit]
        out: dict[str, list] = {}
        for sym, bar in page:
            out.setdefault(sym, []).append(bar)
        more = offset + limit < len(rows)
        token = base64.b64encode(str(offset + limit).encode()).decode() if more else None
        return 200, {}, {"bars": out, "next_page_token": token, "currency": "USD"}


def asset(symbol: str, exchange: str = "NASDAQ", name: str = "", tradable: bool = True,
          status: str = "active") -> dict:
    """An Alpaca asset record (`GET /v2/assets`)."""
    return {"id": f"00000000-0000-0000-0000-{zlib.crc32(symbol.encode()):012d}", "class": "us_equity",
            "exchange": exchange, "symbol": symbol, "name": name or f"{symbol} Inc.", "status": status,
            "tradable": tradable, "marginable": True, "shortable": True, "easy_to_borrow": True,
            "fractionable": True, "attributes": []}


def _time_arg(v: str | None, default: int) -> int:
    if not v:
        return default
    if len(v) == 10:  # a date: midnight UTC
        v += "T00:00:00Z"
    ns = int(rfc3339_ns([v])[0])
    if ns == BAD_TS:
        raise ValueError(f"invalid time {v!r}")
    return ns
