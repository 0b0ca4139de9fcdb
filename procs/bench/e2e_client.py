"""WebSocket client of `scanner bench e2e`, run in its own process (`run_client`).

It connects to a gateway's `/ws`, waits for the `hello` frame, says "ready", then for every
alerts frame takes the receive time (`time.time()`, the host clock the replay's pacing anchor is
read on) and records, per alert, that time, the symbol's row in the universe (names `S00042` ->
42) and the scan's event time (`event_ts`, a scan boundary: whole milliseconds). The bench maps
each alert to the tick that preceded it (`procs.bench.e2e`). Until told to stop; the samples go
back through the pipe as numpy arrays.
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
