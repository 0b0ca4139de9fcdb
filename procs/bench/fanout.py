"""`scanner bench fanout`: alert delivery to many WebSocket clients, and publisher throughput.

One run, starting what it needs: a private redis-server (for the publisher figure) and a real
instance (all processes, synthetic feed, 100 ms scan cadence) whose gateway serves N clients
connected from this process. Latency is scan match (the alert's `scan_ts`, stamped by the
scanner worker) to the client's receive time, on one host clock. Publisher throughput is
alerts/s through `RedisSink` (pipelined PUBLISH x2 + XADD per alert) against the unpipelined
baseline, in the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from procs.bench.services import RedisService, free_port
from procs.redis_out import RedisSink
from procs.shared import instance_segments


def _start_instance(tmp: Path, port: int, symbols: int, rate: float) -> subprocess.Popen:
    env = dict(os.environ)
    env.update({"SCANNER_INSTANCE": f"fanout{os.getpid()}", "SCANNER_DATA_DIR": str(tmp / "data"),
                "SCANNER_SYMBOLS": str(symbols), "SCANNER_HTTP_PORT": str(port), "SCANNER_FEED_RATE": str(rate),
                "SCANNER_SCAN_INTERVAL_MS": "100"})
    log = open(tmp / "instance.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "cli.app", "start", "--foreground"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


async def _clients(port: int, n: int, seconds: float) -> tuple[list[float], int, int]:
    import msgspec
    import websockets

    decode = msgspec.json.Decoder().decode
    url = f"ws://127.0.0.1:{port}/ws"
    lat: list[float] = []
    frames = 0
    connected = 0

    async def one(i: int) -> None:
        nonlocal frames, connected
        async with websockets.connect(url, max_queue=None, open_timeout=60) as ws:
            connected += 1
            end = time.time() + seconds
            while time.time() < end:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=max(0.01, end - time.time()))
                except TimeoutError:
                    break
                now = time.time()
                msg = decode(raw)
                if msg.get("type") == "alerts":
                    frames += 1
                    lat.extend((now - a["scan_ts"]) * 1e3 for a in msg["alerts"])

    await asyncio.gather(*(one(i) for i in range(n)))
    return lat, frames, connected


def _wait_http(port: int, timeout: float = 90.0) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("instance did not come up")


def bench_publisher(url: str, workdir: Path, n: int = 100_000) -> dict:
    """Alert records -> JSON -> Redis (the publisher's whole path), vs unpipelined PUBLISH."""
    import redis

    from scanner.alert_json import AlertEncoder
    from scanner.records import ALERT_DTYPE, rule_key
    from scanner.rules.store import install_default_pack

    rules = workdir / "rules.json"
    install_default_pack(rules)
    rule_keys = np.array([rule_key(r["id"]) for r in json.loads(rules.read_text())], np.uint64)
    recs = np.zeros(n, ALERT_DTYPE)
    recs["seq"] = np.arange(n)
    recs["sym"] = np.arange(n) % 1000
    recs["rule"] = rule_keys[np.arange(n) % len(rule_keys)]
    recs["values"] = 1.5
    encoder = AlertEncoder([f"S{i}" for i in range(1000)], rules)
    sink = RedisSink(url, stream_maxlen=n)
    t0 = time.perf_counter()
    for i in range(0, n, 5000):  # publisher-sized batches
        sink.send(encoder.encode(recs[i:i + 5000]))
        sink.flush()
    batched = n / (time.perf_counter() - t0)
    payload = encoder.encode(recs[:1])[0][1]
    client = redis.Redis.from_url(url)
    m = min(n, 5_000)
    t0 = time.perf_counter()
    for _ in range(m):
        client.publish("alerts", payload)
    plain = m / (time.perf_counter() - t0)
    return {"publisher_alerts_per_s": round(batched), "unpipelined_publish_per_s": round(plain),
            "publisher_speedup_vs_unpipelined": round(batched / plain, 1), "publisher_ops_per_alert": 3}


def bench_fanout(clients: int = 500, seconds: float = 15.0, symbols: int = 5000, rate: float = 5000.0) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="scanner-fanout-"))
    redis_srv = RedisService(tmp / "redis")
    port = free_port()
    inst = _start_instance(tmp, port, symbols, rate)
    try:
        _wait_http(port)
        time.sleep(2.0)  # let the first cycles and alerts start
        lat, frames, connected = asyncio.run(_clients(port, clients, seconds))
        out: dict = {"benchmark": "fanout", "clients": clients, "clients_connected": connected,
                     "seconds": seconds, "symbols": symbols, "feed_ticks_per_s": rate,
                     "frames_received": frames, "alerts_received": len(lat)}
        if lat:
            a = np.array(lat)
            out.update({"latency_ms_p50": round(float(np.percentile(a, 50)), 2),
                        "latency_ms_p99": round(float(np.percentile(a, 99)), 2),
                        "latency_ms_max": round(float(a.max()), 2),
                        "frames_per_s": round(frames / seconds),
                        "client_alerts_per_s": round(len(lat) / seconds)})
        else:
            out.update({"latency_ms_p50": None, "latency_ms_p99": None})
        out.update(bench_publisher(redis_srv.url, tmp))
        return out
    finally:
        inst.terminate()
        try:
            inst.wait(timeout=60)
        except subprocess.TimeoutExpired:
            inst.kill()
        for name in instance_segments(f"fanout{os.getpid()}"):
            os.unlink(f"/dev/shm/{name}")
        redis_srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
