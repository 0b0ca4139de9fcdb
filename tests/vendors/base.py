"""What both local vendor servers share: a WebSocket server on its own asyncio loop in a thread,
a stdlib HTTP server in a thread, and 429 throttling. Started and stopped from pytest (see
`tests/vendors/conftest.py`); nothing here talks to a network other than loopback."""

from __future__ import annotations

import asyncio
import fcntl
import json
import socket
import struct
import termios
import threading
import time
from collections.abc import Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve

HOST = "127.0.0.1"


class WsServer:
    """A websockets server on a free loopback port, running its own event loop in a daemon
    thread. Subclasses implement `session(ws)`; `send_raw` pushes any frame (hostile ones
    included) to every open connection."""

    path = "/"

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=type(self).__name__, daemon=True)
        self._server: Server | None = None
        self.port = 0
        self.open: set[ServerConnection] = set()
        self.connections = 0  # connections accepted so far
        self.received: list[Any] = []  # every client message, decoded
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}{self.path}"

    def start(self) -> WsServer:
        self._thread.start()
        async def open_server() -> Server:
            return await serve(self._handle, HOST, 0, max_size=None, ping_interval=None)

        self._server = self.call(open_server())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            try:
                self.call(self._server.wait_closed(), timeout=5)
            except TimeoutError:
                pass
            self._server = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        """Run a coroutine on the server loop from the test thread; return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def send_raw(self, frame: bytes | str) -> int:
        """Send one frame as is to every open connection; returns how many got it."""
        async def go() -> int:
            n = 0
            for ws in list(self.open):
                try:
                    await ws.send(frame)
                    n += 1
                except Exception:  # noqa: BLE001 - a closing client just misses it
                    pass
            return n
        return self.call(go())

    def drop_all(self) -> None:
        """Cut every connection without a close handshake (a network failure)."""
        def cut() -> None:
            for ws in list(self.open):
                ws.transport.abort()
        self.loop.call_soon_threadsafe(cut)

    async def _handle(self, ws: ServerConnection) -> None:
        with self.lock:
            self.connections += 1
        self.open.add(ws)
        try:
            await self.session(ws)
        except Exception:  # noqa: BLE001 - a client going away mid-session ends it, nothing more
            pass
        finally:
            self.open.discard(ws)

    async def session(self, ws: ServerConnection) -> None:
        raise NotImplementedError

    def __enter__(self) -> WsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tight_socket(port: int) -> socket.socket:
    """A loopback client socket with a tiny receive buffer: with `max_queue=1` on the client,
    a peer that does not read stalls its server within a frame or two (slow-consumer tests)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((HOST, port))
    return s


async def cut_after_sent(ws: ServerConnection, limit_s: float = 60.0) -> None:
    """Cut a connection without a close handshake once everything already sent has left: the
    transport's buffer and the kernel's send queue (TIOCOUTQ) are empty. A vendor's network
    failure loses what it published while the client was away, not frames it had sent before;
    aborting at once would drop the frames a slow (loaded) client had not read yet, a random
    number of them."""
    sock = ws.transport.get_extra_info("socket")
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        queued = ws.transport.get_write_buffer_size()
        if sock is not None and not queued:
            queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        if not queued:
            break
        await asyncio.sleep(0.005)
    ws.transport.abort()


def tighten(ws: ServerConnection) -> None:
    """Small kernel send buffer on the server side of a connection (slow-consumer mode)."""
    sock = ws.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


Response = tuple[int, dict[str, str], Any]  # status, headers, JSON body


class HttpServer:
    """A stdlib threaded HTTP server on a free loopback port answering JSON. Subclasses
    implement `route(path, query, headers) -> (status, headers, body)`. `throttle(n,
    retry_after)` makes the next n requests answer 429 with a Retry-After header."""

    def __init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                server._serve(self)

            def log_message(self, *args: object) -> None:  # quiet test output
                pass

        self._httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=type(self).__name__, daemon=True)
        self.requests: list[str] = []  # request paths with query, in arrival order
        self._throttle = 0
        self._retry_after = 1
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def throttle(self, n: int, retry_after: int = 1) -> None:
        with self._lock:
            self._throttle, self._retry_after = n, retry_after

    def too_many(self) -> Response:
        raise NotImplementedError

    def route(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Response:
        raise NotImplementedError

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        headers = {k.lower(): v for k, v in h.headers.items()}
        with self._lock:
            self.requests.append(h.path)
            throttled = self._throttle > 0
            if throttled:
                self._throttle -= 1
        try:
            if throttled:
                status, extra, body = self.too_many()
                extra = {**extra, "Retry-After": str(self._retry_after)}
            else:
                status, extra, body = self.route(parts.path, query, headers)
        except (KeyError, ValueError) as exc:
            status, extra, body = 400, {}, {"message": f"bad request: {exc}"}
        raw = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(raw)))
        for k, v in extra.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(raw)

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

