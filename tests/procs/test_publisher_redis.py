"""Alerts reach real Redis (pub/sub, stream, live hashes); Redis down never stops the publisher."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from procs.shared import instance_segments
from tests.procs.test_supervisor import Instance, child
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
        if inst.proc and inst.proc.poll() is None:
            inst.stop()
        for name in instance_segments(inst.name):
            os.unlink(f"/dev/shm/{name}")
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
    # live hashes: bars and indicators mirrored, only fields that changed
    live = eventually(lambda: r.hgetall(f"live:{alert['symbol']}"), 20, 0.2, "live hash")
    assert b"price" in live and b"vwap" in live

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
