"""WebSocket client of `scanner bench e2e`, run in its own process (`run_client`).

It connects to a gateway's `/ws`, waits for the `hello` frame, says "ready", then for every
alerts frame takes the receive time (`time.time()`, the host clock the replay's pacing anchor is
read on) and records, per alert, that time, the symbol's row in the universe (names `S00042` ->
42) and the scan's event time (`event_ts`, a scan boundary: whole milliseconds). The bench maps
each alert to the tick that preceded it (`procs.bench.e2e`). Until told to stop; the samples go
back through the pipe as numpy arrays.

`run_redis_tap`, in a process of its own too, timestamps each alert as it leaves Redis, to split
the time after the scan into publisher + Redis and gateway + socket + client.
"""

from __future__ import annotations

import asyncio
import os
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

import msgspec
import numpy as np


class _Frame(msgspec.Struct):
    type: str
    scan_ts: float = 0.0
    alerts: list[dict] = []


class _Alert(msgspec.Struct):
    scan_ts: float
    event_ts: float


async def _run(port: int, pipe: Connection, stop: Event) -> None:
    import websockets

    decode = msgspec.json.Decoder(_Frame).decode
    recv_s: list[float] = []
    syms: list[int] = []
    events_ms: list[int] = []
    scans_s: list[float] = []
    frames = 0
    deadline = time.monotonic() + 120  # the gateway binds its port a moment after it reports running
    while True:
        try:
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws", max_size=None)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    async with ws:
        if decode(await ws.recv()).type != "hello":
            raise RuntimeError("the gateway did not open with a hello frame")
        pipe.send("ready")
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                continue
            now = time.time()
            frame = decode(raw)
            if frame.type != "alerts":
                continue
            frames += 1
            for a in frame.alerts:
                recv_s.append(now)
                syms.append(int(a["symbol"][1:]))
                events_ms.append(round(a["event_ts"] * 1000))
                scans_s.append(a["scan_ts"])
    pipe.send({"recv_s": np.array(recv_s, np.float64), "sym": np.array(syms, np.int64),
               "event_ms": np.array(events_ms, np.int64), "scan_s": np.array(scans_s, np.float64),
               "frames": frames})


def run_client(port: int, cores: list[int] | None, pipe: Connection, stop: Event) -> None:
    """Process entry point: pin (when given cores), connect, collect until `stop` is set."""
    if cores:
        os.sched_setaffinity(0, cores)
    asyncio.run(_run(port, pipe, stop))


def run_redis_tap(port: int, pipe: Connection, stop: Event) -> None:
    """Process entry point: subscribe to the `alerts` channel of the bench's Redis on a plain
    socket (hiredis parses), and record per alert the time it left Redis, its scan's wall time
    (`scan_ts`) and event time: the publisher + Redis part of the latency, apart from the
    gateway's. Says "ready" once subscribed; the samples go back through the pipe on `stop`."""
    import socket

    import hiredis

    decode = msgspec.json.Decoder(_Alert).decode
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$6\r\nalerts\r\n")
    sock.settimeout(0.2)
    reader = hiredis.Reader()
    recv_s: list[float] = []
    scans_s: list[float] = []
    events_ms: list[int] = []
    pipe.send("ready")
    while not stop.is_set():
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not data:
            break
        now = time.time()
        reader.feed(data)
        while (msg := reader.gets()) is not False:
            if msg[0] == b"message":
                a = decode(msg[2])
                recv_s.append(now)
                scans_s.append(a.scan_ts)
                events_ms.append(round(a.event_ts * 1000))
    sock.close()
    pipe.send({"recv_s": np.array(recv_s, np.float64), "scan_s": np.array(scans_s, np.float64),
               "event_ms": np.array(events_ms, np.int64)})
