"""The vendor WebSocket connection of the ingest process: connect, authenticate, subscribe,
receive, detect a dead connection, reconnect with backoff. No decoding of market data here.

Runs in a daemon thread (`FeedConnection`) so that the ingest loop keeps beating its heartbeat
while a connect or a backoff waits; it hands everything to the loop through one queue of events:

* `("frame", data, wall_ns)`: a data frame, as received (text or bytes), for the parser;
* `("up", wall_ns)`: authenticated and subscribed (the first time and after each reconnect);
* `("down", wall_ns, reason)`: the connection is gone; a reconnect follows after a backoff;
* `("fatal", message)`: authentication or entitlement refused: the loop raises `BootError`, the
  supervisor stops the instance instead of reconnecting in a loop.

The handshake follows the vendors' documented sequence (Alpaca market data v2: welcome
`{"T":"success","msg":"connected"}`, auth -> `"authenticated"` or an error with a code,
subscribe -> a `"subscription"` message; Polygon/Massive: `{"ev":"status","status":"connected"}`,
auth -> `"auth_success"` / `"auth_failed"`, subscribe -> `"success"`). Vendor error frames are
classified by the protocol module's `classify_error` (fatal / reconnect / ignore).

Backoff: the project's one jittered backoff (`scanner.backoff.Backoff`: doubling from
`feed_backoff_min_s` up to `feed_backoff_max_s`, half of each wait random so that many hosts do
not reconnect in step), reset by a successful subscription. A connection is dead when no
frame arrived for `feed_dead_after_s` while the market is open (`market_open(wall_ns)`); it is then
closed and reconnected. Credentials are only ever put on the wire, never logged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.sync.client import ClientConnection, connect

from scanner.backoff import Backoff

log = logging.getLogger("scanner.ingest")


class FatalFeedError(Exception):
    """The vendor refused us for good (credentials, entitlement): reconnecting will not help."""


class _Reconnect(Exception):
    """Drop this connection and connect again (after the backoff)."""


@dataclass(frozen=True)
class Protocol:
    """What the connection needs to know of one vendor's session protocol."""

    name: str
    auth: Callable[[], str]  # the auth message (credentials inside: never log it)
    subscribe: Callable[[], str]
    classify_error: Callable[[dict], str]  # "fatal" | "reconnect" | "ignore"
    is_welcome: Callable[[dict], bool]
    is_authenticated: Callable[[dict], bool]
    is_subscribed: Callable[[dict], bool]
    is_error: Callable[[dict], bool]


def alpaca_session(auth: Callable[[], str], subscribe: Callable[[], str],
                   classify_error: Callable[[dict], str]) -> Protocol:
    return Protocol(
        "alpaca", auth, subscribe, classify_error,
        is_welcome=lambda m: m.get("T") == "success" and m.get("msg") == "connected",
        is_authenticated=lambda m: m.get("T") == "success" and m.get("msg") == "authenticated",
        is_subscribed=lambda m: m.get("T") == "subscription",
        is_error=lambda m: m.get("T") == "error")


def polygon_session(auth: Callable[[], str], subscribe: Callable[[], str],
                    classify_error: Callable[[dict], str]) -> Protocol:
    def status(m: dict) -> str:
        return str(m.get("status", "")) if m.get("ev") == "status" else ""

    return Protocol(
        "polygon", auth, subscribe, classify_error,
        is_welcome=lambda m: status(m) == "connected",
        is_authenticated=lambda m: status(m) == "auth_success",
        is_subscribed=lambda m: status(m) == "success" and "subscribed" in str(m.get("message", "")),
        is_error=lambda m: status(m) not in ("", "connected", "auth_success", "success"))


_decoder = msgspec.json.Decoder()


def control_messages(frame: str | bytes) -> list[dict]:
    """The dict messages of a frame (both vendors send JSON arrays); [] for anything else."""
    try:
        doc = _decoder.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return []
    items = doc if isinstance(doc, list) else [doc]
    return [m for m in items if isinstance(m, dict)]


class FeedConnection:
    """The socket thread (module docstring). `stop()` ends it; `reconnect(reason)` asks the
    thread to drop the connection (e.g. the loop met a vendor error frame mid-stream)."""

    def __init__(self, url: str, proto: Protocol, *, dead_after_s: float, backoff_min_s: float,
                 backoff_max_s: float, market_open: Callable[[int], bool], handshake_timeout_s: float = 10.0,
                 max_frame_bytes: int = 64 << 20, queue_frames: int = 100_000) -> None:
        self.url, self.proto = url, proto
        self.dead_after_s, self.handshake_timeout_s = dead_after_s, handshake_timeout_s
        self.backoff = Backoff(backoff_min_s, backoff_max_s)
        self.market_open = market_open
        self.max_frame_bytes = max_frame_bytes
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue(queue_frames)
        self._stop = threading.Event()
        self._drop = threading.Event()
        self._drop_reason = ""
        self._ws: ClientConnection | None = None
        self.thread = threading.Thread(target=self._run, name=f"{proto.name}-socket", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            ws.close()
        self.thread.join(timeout=5.0)

    def reconnect(self, reason: str) -> None:
        self._drop_reason = reason
        self._drop.set()

    # ------------------------------------------------------------------ the thread
    def _emit(self, *event: Any) -> None:
        while not self._stop.is_set():
            try:
                self.events.put(event, timeout=0.1)
                return
            except queue.Full:  # the loop is behind: wait (TCP pushes back on the vendor: "slow client")
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            subscribed = False
            try:
                with connect(self.url, open_timeout=self.handshake_timeout_s, max_size=self.max_frame_bytes,
                             close_timeout=1.0, compression=None) as ws:
                    self._ws = ws
                    self._handshake(ws)
                    subscribed = True
                    self.backoff.succeeded()
                    self._emit("up", time.time_ns())
                    self._receive(ws)
            except FatalFeedError as exc:
                self._emit("fatal", str(exc))
                return
            except InvalidStatus as exc:
                code = exc.response.status_code
                if code in (401, 403):
                    self._emit("fatal", f"{self.proto.name} refused the connection with HTTP {code}: "
                               "check the API key and the data subscription")
                    return
                self._lost(subscribed, f"HTTP {code} on connect")
            except _Reconnect as exc:
                self._lost(subscribed, str(exc))
            except (OSError, TimeoutError, ConnectionClosed, WebSocketException) as exc:
                self._lost(subscribed, f"{type(exc).__name__}: {exc}")
            finally:
                self._ws = None
            if self._stop.is_set():
                return
            delay = self.backoff.failed()
            log.info("%s: reconnect attempt %d in %.2f s", self.proto.name, self.backoff.failures, delay)
            self._stop.wait(delay)

    def _lost(self, subscribed: bool, reason: str) -> None:
        if self._stop.is_set():
            return
        log.warning("%s feed connection lost: %s", self.proto.name, reason)
        if subscribed:
            self._emit("down", time.time_ns(), reason)

    def _recv(self, ws: ClientConnection, timeout: float) -> str | bytes | None:
        try:
            return ws.recv(timeout=timeout)
        except TimeoutError:
            return None

    def _handshake(self, ws: ClientConnection) -> None:
        """Welcome, auth, subscribe; each step waits for its acknowledgement (errors classified).
        Data frames met on the way go to the loop."""
        p = self.proto
        self._expect(ws, p.is_welcome, "welcome")
        ws.send(p.auth())
        self._expect(ws, p.is_authenticated, "authentication")
        ws.send(p.subscribe())
        self._expect(ws, p.is_subscribed, "subscription")

    def _expect(self, ws: ClientConnection, done: Callable[[dict], bool], step: str) -> None:
        deadline = time.monotonic() + self.handshake_timeout_s
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Reconnect(f"no {step} acknowledgement within {self.handshake_timeout_s:g} s")
            frame = self._recv(ws, min(left, 0.5))
            if frame is None:
                continue
            ok = False
            data = False
            for m in control_messages(frame):
                if self.proto.is_error(m):
                    self._vendor_error(m, step)
                elif done(m):
                    ok = True
                else:
                    data = True
            if data:
                self._emit("frame", frame, time.time_ns())
            if ok:
                return
        raise _Reconnect("stopping")

    def _vendor_error(self, m: dict, step: str) -> None:
        kind = self.proto.classify_error(m)
        text = f"{self.proto.name} {step}: {m.get('code', m.get('status', ''))} {m.get('msg', m.get('message', ''))}"
        if kind == "fatal":
            raise FatalFeedError(f"{text.strip()} (fatal: check the API key, the feed and the plan)")
        if kind == "reconnect":
            raise _Reconnect(text)
        log.warning("ignored vendor message: %s", text)

    def _receive(self, ws: ClientConnection) -> None:
        """Frames to the loop until the connection ends, goes quiet while the market is open,
        or the loop asks for a reconnect."""
        last = time.monotonic()
        while not self._stop.is_set():
            if self._drop.is_set():
                self._drop.clear()
                raise _Reconnect(self._drop_reason or "asked by the ingest loop")
            frame = self._recv(ws, 0.25)
            now = time.monotonic()
            if frame is None:
                if now - last > self.dead_after_s and self.market_open(time.time_ns()):
                    raise _Reconnect(f"no message for {now - last:.1f} s while the market is open (dead)")
                continue
            last = now
            self._emit("frame", frame, time.time_ns())
