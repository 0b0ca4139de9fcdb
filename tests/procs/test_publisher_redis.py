"""Alerts reach real Redis (pub/sub, stream, live hashes); Redis down never stops the publisher."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.procs.instance import Instance, child
from tests.support import RedisServer, eventually


@pytest.fixture
def redis_inst(tmp_path: Path) -> Iterator[tuple[Instance, RedisServer]]:
    srv = RedisServer(tmp_path / "redis")
    inst = Instance(tmp_path, f"r{os.getpid()}", SCANNER_REDIS_URL=srv.url, SCANNER_FEED_RATE="20000",
                    SCANNER_SCAN_INTERVAL_MS="200")
    inst.start()
    try:
        eventually(inst.all_running, 60, 0.2, "instance up")
        yield inst, srv
    finally:
        inst.close()
        srv.stop()


def test_alerts_stream_pubsub_live_hashes_and_outage(redis_inst: tuple[Instance, RedisServer]) -> None:
    inst, srv = redis_inst
    r = redis.Redis.from_url(srv.url)
    sub = r.pubsub()
    sub.subscribe("alerts")
    eventually(lambda: r.xlen("alerts") > 0, 60, 0.2, "alerts in the stream")
    entry = r.xrange("alerts", count=1)[0][1]
    alert = json.loads(entry[b"alert"])
    assert {"rule", "symbol", "kind", "values", "event_ts", "seq", "host"} <= set(alert)

    def published() -> dict | None:
        msg = sub.get_message(timeout=0.5)
        return json.loads(msg["data"]) if msg and msg["type"] == "message" else None

    got = eventually(published, 30, 0.0, "a PUBLISH on 'alerts'")
    assert got["symbol"] and got["rule"]
    # the per-rule channels carry the same alerts
    per_rule = r.pubsub()
    per_rule.psubscribe("alerts:*")
    msg = eventually(lambda: (m := per_rule.get_message(timeout=0.5)) and m["type"] == "pmessage" and m, 30, 0.0)
    assert msg["channel"].decode() == f"alerts:{json.loads(msg['data'])['rule']}"
    # live hashes: bars and indicators mirrored, only fields that changed. A sweep writes from the
    # table as it was when the sweep began, so a symbol that first traded after that has its hash
    # (reference fields such as the LULD bands) without a price until the next sweep
    def mirrored() -> dict | None:
        live = r.hgetall(f"live:{alert['symbol']}")
        return live if b"price" in live and b"vwap" in live else None

    eventually(mirrored, 20, 0.2, "live hash with price and vwap")

    # Redis goes away: the publisher keeps running, counts failed attempts, then catches up
    srv.stop()
    before = child(inst.status(), "publisher")
    eventually(lambda: child(inst.status(), "publisher")["errors"] > before["errors"], 30, 0.2, "errors counted")
    st = child(inst.status(), "publisher")
    assert st["alive"] and st["pid"] == before["pid"] and st["heartbeat_age_ms"] < 1000
    srv.start()  # same port, empty (no persistence)
    r2 = redis.Redis.from_url(srv.url)
    eventually(lambda: r2.xlen("alerts") > 0, 30, 0.2, "buffered alerts delivered after reconnect")
    assert child(inst.status(), "publisher")["restarts"] == 0


def test_gateways_fan_out_alerts_of_every_host_through_redis(tmp_path: Path) -> None:
    """Two gateway processes share the port; both deliver local alerts and an alert another
    host published on the shared Redis channel."""
    import asyncio

    import websockets

    srv = RedisServer(tmp_path / "redis")
    inst = Instance(tmp_path, f"m{os.getpid()}", SCANNER_REDIS_URL=srv.url, SCANNER_GATEWAY_WORKERS="2",
                    SCANNER_FEED_RATE="20000", SCANNER_SCAN_INTERVAL_MS="200")
    inst.start()
    try:
        st = eventually(inst.all_running, 60, 0.2, "instance up")
        assert {"gateway", "gateway-1"} <= {p["name"] for p in st["processes"]}

        async def run() -> None:
            url = f"ws://127.0.0.1:{inst.port}/ws"
            conns = [await websockets.connect(url) for _ in range(8)]  # spread over both processes
            try:
                for ws in conns:
                    assert json.loads(await ws.recv())["type"] == "hello"
                remote = {"seq": 1, "rule": "remote-rule", "symbol": "ZZZZ", "kind": "enter", "values": {},
                          "event_ts": 0.0, "scan_ts": 0.0, "host": "other-host", "tags": []}
                redis.Redis.from_url(srv.url).publish("alerts", json.dumps(remote))
                for ws in conns:
                    async with asyncio.timeout(20):
                        while True:
                            msg = json.loads(await ws.recv())
                            if msg["type"] == "alerts" and any(a["host"] == "other-host" for a in msg["alerts"]):
                                break
            finally:
                for ws in conns:
                    await ws.close()

        asyncio.run(run())
        served = [p for p in inst.status()["processes"] if p["name"].startswith("gateway")]
        assert all(p["in"] > 0 for p in served)  # both processes took alerts from Redis
    finally:
        inst.close()
        srv.stop()
