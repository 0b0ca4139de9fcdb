"""The alert WebSocket `/ws`: handshake, limits, and fan-out written straight to the transports.

uvicorn hands every upgrade request to `FeedProtocol` (its `ws` protocol class), so REST stays on
FastAPI and the feed skips ASGI, on the same port and URL. The websockets library's sans-I/O
`ServerProtocol` does the handshake, parsing, ping/pong and close; outgoing frames are serialised
here, once per subscription group per poll (`Hub.alerts`), and the same bytes are written to
every member's transport. There is no task or queue per client: a connection's buffer is its
transport's write buffer (plus a kernel send buffer of the same size), bounded in bytes. A frame
that would overflow it is dropped and counted, and the client is told in a `dropped` frame as
soon as it has room again; nobody else waits for it (Centrifugo / `websockets.broadcast`).

Protocol: the first frame is `{"type": "hello"}`. Alert frames start with their header,
`{"type":"alerts","scan_ts":...,"count":N,"alerts":[...]}`, `scan_ts` being the oldest scan
stamp in the frame, so a client can read the latency without decoding the alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import msgspec
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from procs.api.wire import AlertHead
from procs.api.wslimits import RateLimiter, admission, subscription, top_request
from scanner.config import Settings

log = logging.getLogger("scanner.gateway.ws")
# the websockets protocol logs every open/close at INFO: thousands of lines with thousands of clients
_PROTOCOL_LOG = logging.getLogger("scanner.gateway.ws.protocol")
_PROTOCOL_LOG.setLevel(logging.WARNING)
_ENC = msgspec.json.Encoder().encode
_DEC = msgspec.json.Decoder().decode
USAGE = ('expected {"op": "subscribe", "rules": [...], "symbols": [...], "tags": [...]} or '
         '{"op": "top", "metric": "change_pct", "order": "desc", "limit": 20, "interval_s": 1}')
TOPS_IDLE_S = 1.0  # run_tops with no list due: how often it checks that it should still run
TOP_COLUMNS = ["price", "change_pct", "day_volume", "relative_volume", "rsi_14", "vwap"]


def text_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed server text frame: the bytes every subscriber is sent."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


@dataclass(frozen=True)
class Sub:
    """A subscription; connections with equal subscriptions form one group (one encode)."""

    rules: frozenset[str] = frozenset()
    symbols: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()

    @property
    def filtered(self) -> bool:
        return bool(self.rules or self.symbols or self.tags)

    def wants(self, alert: AlertHead) -> bool:
        if not self.filtered:
            return True
        return (alert.rule in self.rules or alert.symbol in self.symbols
                or (bool(self.tags) and not self.tags.isdisjoint(t for t in alert.tags if isinstance(t, str))))


ALL = Sub()


def _scan_ts(alert: AlertHead) -> float:
    """The alert's scan stamp (0.0 when a foreign alert lacks one, or it is not finite: the frame
    stays valid JSON)."""
    v = alert.scan_ts
    return v if v is not None and math.isfinite(v) else 0.0


class Hub:
    """Every feed connection of this gateway process, grouped by subscription and top list."""

    def __init__(self, settings: Settings, top: Callable[..., list[dict[str, Any]]],
                 stale: Callable[[], list[str]] = list) -> None:
        self.settings = settings
        self.top = top
        self.stale = stale  # hosts of the cluster whose symbols are stale (their rows may be missing)
        self.conns: set[FeedProtocol] = set()
        self.groups: dict[Sub, set[FeedProtocol]] = {}
        self.tops: dict[tuple[str, str, int, float], set[FeedProtocol]] = {}
        self.rate = RateLimiter(settings.ws_rate_per_s, settings.ws_rate_burst)
        self.tops_changed = asyncio.Event()  # a connection asked for a top list (wakes run_tops)
        self.deliveries = 0  # alerts written to one client, summed
        self.frames = 0
        self.dropped = 0

    def protocol_class(self) -> type[FeedProtocol]:
        """The class uvicorn instantiates per upgrade request, bound to this hub."""
        return type("BoundFeedProtocol", (FeedProtocol,), {"hub": self})

    def join(self, conn: FeedProtocol) -> None:
        self.conns.add(conn)
        self.groups.setdefault(conn.sub, set()).add(conn)

    def leave(self, conn: FeedProtocol) -> None:
        self.conns.discard(conn)
        self._ungroup(self.groups, conn.sub, conn)
        if conn.top is not None:
            self._ungroup(self.tops, conn.top, conn)

    @staticmethod
    def _ungroup(groups: dict, key: Any, conn: FeedProtocol) -> None:  # type: ignore[type-arg]
        members = groups.get(key)
        if members is not None:
            members.discard(conn)
            if not members:
                del groups[key]

    def resubscribe(self, conn: FeedProtocol, sub: Sub) -> None:
        self._ungroup(self.groups, conn.sub, conn)
        conn.sub = sub
        self.groups.setdefault(sub, set()).add(conn)

    def set_top(self, conn: FeedProtocol, key: tuple[str, str, int, float]) -> None:
        if conn.top is not None:
            self._ungroup(self.tops, conn.top, conn)
        conn.top = key
        self.tops.setdefault(key, set()).add(conn)
        self.tops_changed.set()

    def send(self, alerts: list[AlertHead], parts: list[bytes]) -> int:
        """Write one frame per subscription group of the alerts `parts` (their JSON bytes, as
        published), filtered on their heads; returns the deliveries (alert x client)."""
        if not self.groups or not alerts:
            return 0
        delivered = 0
        for sub, members in self.groups.items():
            if sub.filtered:
                idx = [i for i, a in enumerate(alerts) if sub.wants(a)]
                if not idx:
                    continue
                body, scan_ts = b",".join([parts[i] for i in idx]), min(_scan_ts(alerts[i]) for i in idx)
                n = len(idx)
            else:
                body, scan_ts, n = b",".join(parts), min(_scan_ts(a) for a in alerts), len(alerts)
            frame = text_frame(b'{"type":"alerts","scan_ts":%r,"count":%d,"alerts":[%s]}' % (scan_ts, n, body))
            delivered += n * self._write_all(members, frame)
        self.deliveries += delivered
        return delivered

    def _write_all(self, members: set[FeedProtocol], frame: bytes) -> int:
        """The same bytes to every member: the fan-out's inner loop, kept to a few calls."""
        sent = 0
        size = len(frame)
        for c in members:
            t = c.transport
            if t.is_closing():
                continue
            buffered = t.get_write_buffer_size()
            if buffered and buffered + size > c.limit:  # slow client: this frame is lost to it
                c.dropped += 1
                continue
            if c.dropped != c.reported:
                t.write(text_frame(b'{"type":"dropped","count":%d}' % c.dropped))
                c.reported = c.dropped
            t.write(frame)
            sent += 1
        self.frames += sent
        self.dropped += len(members) - sent
        return sent

    async def run_tops(self, should_run: Callable[[], bool]) -> None:
        """Top-list snapshots: computed and encoded once per (metric, order, limit, interval).
        Sleeps until the next list is due, or until a connection asks for a list (its first
        snapshot goes out at once); with no list asked for, it wakes only to check `should_run`."""
        due: dict[tuple[str, str, int, float], float] = {}
        while should_run():
            now = time.monotonic()
            self.tops_changed.clear()
            for key, members in list(self.tops.items()):
                if due.get(key, 0.0) > now or not members:
                    continue
                due[key] = now + key[3]
                metric, order, limit, _ = key
                rows = self.top(metric, order, limit, TOP_COLUMNS)
                frame = text_frame(_ENC({"type": "top", "metric": metric, "order": order, "rows": rows,
                                         "stale_hosts": self.stale()}))
                self._write_all(members, frame)
            for key in [k for k in due if k not in self.tops]:
                del due[key]
            wait = min(due.values(), default=now + TOPS_IDLE_S) - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.tops_changed.wait(), max(wait, 0.005))


class FeedProtocol(asyncio.Protocol):
    """One `/ws` connection, from the upgrade request uvicorn hands over to its close."""

    hub: ClassVar[Hub]

    def __init__(self, config: Any = None, server_state: Any = None, app_state: Any = None,
                 _loop: Any = None) -> None:
        s = self.hub.settings
        self.server_state = server_state
        self.ws = ServerProtocol(max_size=s.ws_max_message_bytes, logger=_PROTOCOL_LOG)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.limit = s.ws_client_buffer_bytes
        self.sub = ALL
        self.top: tuple[str, str, int, float] | None = None
        self.dropped = self.reported = 0
        self.joined = False
        self.rate_key = ""
        self.last_rate_error = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.server_state is not None:
            self.server_state.connections.add(self)
        sock = transport.get_extra_info("socket")
        try:  # bound the kernel's share of the per-client buffer too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limit)
        except (OSError, AttributeError):
            pass

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif event.opcode in (Opcode.TEXT, Opcode.BINARY) and self.joined:
                try:
                    self._message(event.data)
                except Exception:  # a bug here must not cost the connection, nor print client data
                    log.exception("WebSocket message handling failed")
                    self._error("internal error handling this message")
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.leave(self)
        self.joined = False
        if self.server_state is not None:
            self.server_state.connections.discard(self)

    def shutdown(self) -> None:
        """uvicorn's server shutdown: close with 1012 (service restart)."""
        if not self.transport.is_closing():
            if self.joined:
                self.ws.send_close(1012, "server shutting down")
                self._flush()
            self.transport.close()

    # internals
    def _flush(self) -> None:
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:  # end of stream: the close handshake (or a rejected upgrade) is done
                self.transport.close()
                return

    def _handshake(self, request: Request) -> None:
        hub = self.hub
        url = urlsplit(request.path)
        token = parse_qs(url.query).get("token", [None])[0]
        problem = admission(hub.settings, url.path, request.headers, len(hub.conns))
        if problem is not None:
            status, text = problem
            self.ws.send_response(self.ws.reject(status, text))
            return
        response = self.ws.accept(request)
        self.ws.send_response(response)
        self._flush()  # the 101 before any frame of ours
        if response.status_code != 101:
            return
        from procs.api.deps import bearer, key_scope

        key = bearer(request.headers.get("Authorization")) or token
        if hub.settings.api_keys and key_scope(hub.settings.api_keys, key) is None:
            self.ws.send_close(4401, "missing or unknown API key")
            return
        self.rate_key = key or f"peer:{(self.transport.get_extra_info('peername') or ('?',))[0]}"
        self._send({"type": "hello", "instance": hub.settings.instance})
        self.joined = True
        hub.join(self)  # only now: "hello" is always the first frame

    def _send(self, msg: dict[str, Any]) -> None:
        self.transport.write(text_frame(_ENC(msg)))

    def _error(self, text: str) -> None:
        self._send({"type": "error", "error": text})

    def _message(self, data: bytes | bytearray) -> None:
        """One client message: never raises, whatever the client sent."""
        hub = self.hub
        if not hub.rate.allow(self.rate_key):
            now = time.monotonic()
            if now - self.last_rate_error >= 1.0:  # one notice a second, not one per message
                self.last_rate_error = now
                self._error(f"rate limit: over {hub.settings.ws_rate_per_s:g} messages/s for this key; "
                            "messages are being ignored")
            return
        try:
            msg = _DEC(data)
        except RecursionError:
            self._error("invalid JSON: nested too deeply")
            return
        except (msgspec.DecodeError, UnicodeDecodeError):
            self._error("invalid JSON")
            return
        op = msg.get("op") if isinstance(msg, dict) else None
        if op == "top":
            top = top_request(msg)
            if isinstance(top, str):
                self._error(top)
            else:
                hub.set_top(self, top)
            return
        if op != "subscribe":
            self._error(USAGE)
            return
        sub = subscription(msg, hub.settings.ws_max_subscription)
        if isinstance(sub, str):
            self._error(sub)
            return
        hub.resubscribe(self, Sub(*(frozenset(s) for s in sub)))
        self._send({"type": "subscribed", "rules": sorted(sub[0]), "symbols": sorted(sub[1]),
                    "tags": sorted(sub[2])})
