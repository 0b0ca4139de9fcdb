"""Load generator of `scanner bench fanout`: N minimal WebSocket clients in one process.

Each client does the least a real one could: the upgrade, then per frame it reads the header
(`"scan_ts":...,"count":N` at the start of an alerts frame) and counts alerts; it never decodes
the alerts. Latency = receive time - `scan_ts` (the oldest scan stamp in the frame, so each
alert is charged its frame's worst case), on the host clock the scanner also uses.

Run in its own process (`run_load`), pinned to cores the gateway is not on, so the clients'
CPU does not count against the gateway nor hide in its latency.
"""

from __future__ import annotations

import asyncio
import base64
import os
import resource
import time
from multiprocessing.connection import Connection

import numpy as np

HEAD = b'{"type":"alerts","scan_ts":'


class LoadClient(asyncio.Protocol):
    """One client; frames are parsed from a byte buffer (servers do not mask)."""

    def __init__(self, host: str, port: int, stats: Stats) -> None:
        self.stats = stats
        self.buf = bytearray()
        self.upgraded = False
        self.ready = asyncio.get_running_loop().create_future()
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(bytes(buf[:80]).decode(errors="replace")))
                return
            del buf[:end + 4]
            self.upgraded = True
            self.ready.set_result(None)
        now = time.time()
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            length = buf[pos + 1] & 0x7F
            hdr = 2
            if length == 126:
                if n - pos < 4:
                    break
                length, hdr = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, hdr = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if n - pos < hdr + length:
                break
            start = pos + hdr
            if buf.startswith(HEAD, start):
                self.stats.frame(buf, start + len(HEAD), now)
            pos = start + length
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1


class Stats:
    """Latency samples (one per frame, weighted by its alert count) inside the window."""

    def __init__(self) -> None:
        self.lat: list[float] = []
        self.weight: list[int] = []
        self.frames = 0
        self.alerts = 0
        self.closed = 0
        self.window = (float("inf"), float("inf"))

    def frame(self, buf: bytearray, at: int, now: float) -> None:
        if not self.window[0] <= now < self.window[1]:
            return
        comma = buf.index(b",", at)
        scan_ts = float(buf[at:comma])
        end = buf.index(b",", comma + 1)
        count = int(buf[comma + 9:end])  # ,"count":N
        self.lat.append((now - scan_ts) * 1e3)
        self.weight.append(count)
        self.frames += 1
        self.alerts += count


async def _run(port: int, n: int, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    stats = Stats()
    clients = []
    for i in range(n):
        _, proto = await loop.create_connection(lambda: LoadClient("127.0.0.1", port, stats), "127.0.0.1", port)
        clients.append(proto)
        if i % 100 == 99:
            await asyncio.gather(*(c.ready for c in clients[-100:]))
    await asyncio.gather(*(c.ready for c in clients))
    pipe.send("ready")
    start, end = await loop.run_in_executor(None, pipe.recv)  # the window, wall-clock
    stats.window = (start, end)
    await asyncio.sleep(max(0.0, end - time.time()) + 0.5)
    pipe.send({"lat": np.array(stats.lat, np.float32), "weight": np.array(stats.weight, np.int32),
               "frames": stats.frames, "alerts": stats.alerts, "closed": stats.closed})


def run_load(port: int, n: int, cores: list[int] | None, pipe: Connection) -> None:
    """Process entry point: pin, connect `n` clients, report ready, measure the given window."""
    if cores:
        os.sched_setaffinity(0, cores)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256 if hard == resource.RLIM_INFINITY else min(hard, n + 256),
                                                    hard))
    try:
        import uvloop

        uvloop.run(_run(port, n, pipe))
    except ImportError:
        asyncio.run(_run(port, n, pipe))
