"""Issue 10.9: Redis error replies are drops, not silence. A throwaway redis-server at a tiny
maxmemory refuses the XADDs (OOM) while PUBLISH still works: every alert missing from the
stream is counted."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from procs.redis_out import RedisSink
from tests.support import RedisServer


def test_refused_xadds_are_counted_as_drops(tmp_path: Path) -> None:
    srv = RedisServer(tmp_path / "redis")
    try:
        r = redis.Redis.from_url(srv.url)
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", "1")  # below what Redis already uses: every denyoom command fails
        sub = r.pubsub()
        sub.subscribe("alerts")
        sink = RedisSink(srv.url)
        sink.send([("r1", json.dumps({"seq": i}).encode()) for i in range(10)])
        assert sink.flush() == 10 and sink.dropped_total == 10 and sink.failures == 10
        assert not sink.buffer  # refused, not retried forever
        r.config_set("maxmemory", "0")
        assert r.xlen("alerts") == 0
        sink.send([("r1", json.dumps({"seq": 10}).encode())])
        assert sink.flush() == 0 and r.xlen("alerts") == 1 and sink.dropped_total == 10
        published = 0
        for _ in range(50):  # None is also returned for the subscribe confirmation
            if sub.get_message(ignore_subscribe_messages=True, timeout=0.2) is not None:
                published += 1
        assert published == 11  # pub/sub kept working at maxmemory
        sink.client.close()
    finally:
        srv.stop()
