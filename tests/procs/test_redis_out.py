"""Issue 10.9: Redis error replies are drops, not silence. A throwaway redis-server at a tiny
maxmemory refuses the XADDs (OOM) while PUBLISH still works: every alert missing from the
stream is counted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import redis

from procs.redis_out import LiveMirror, RedisSink
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


def test_live_mirror_sweeps_in_chunks_and_writes_only_what_changed(redis_server: RedisServer) -> None:
    """A sweep of 1,200 symbols goes out 500 per call (the publisher's passes in between carry
    alerts); the next sweep writes only the cells that changed; NaN is written as ''."""
    r = redis.Redis.from_url(redis_server.url)
    keys = [f"LM{i}" for i in range(1200)]
    r.delete(*[f"live:{k}" for k in keys])
    m = LiveMirror(r, keys, ["price", "vwap"], interval=3600.0, chunk=500)
    cur = np.vstack([np.arange(1200.0), np.full(1200, np.nan)])  # NaN as it starts: nothing to write
    assert m.due() and [m.write(cur), m.sweeping(), m.write(cur), m.write(cur), m.sweeping()] == [500, True, 500, 200,
                                                                                                  False]
    assert not m.due()  # the next sweep waits for its interval
    assert r.hgetall("live:LM7") == {b"price": b"7.0"}
    r.hset("live:LM7", "price", "stale")  # not rewritten unless it changes
    nxt = cur.copy()
    nxt[1, 3], nxt[0, 4] = 2.5, np.nan
    m.next_at = 0.0
    assert m.write(nxt) == 2 and not m.sweeping()
    assert r.hgetall("live:LM3") == {b"price": b"3.0", b"vwap": b"2.5"} and r.hget("live:LM7", "price") == b"stale"
    assert r.hget("live:LM4", "price") == b""


def test_live_mirror_writes_each_changed_cell_exactly(redis_server: RedisServer) -> None:
    """The packed HSETs (RESP built with numpy over the changed cells) hold, per symbol, exactly
    the changed columns, each a text float() reads back exactly (NaN as '', infinities as
    'inf'), whatever mix of columns changed."""
    r = redis.Redis.from_url(redis_server.url)
    keys = [f"LR{i}" for i in range(300)]
    cols = [f"c{j}" for j in range(40)]
    r.delete(*[f"live:{k}" for k in keys])
    m = LiveMirror(r, keys, cols, interval=3600.0, chunk=128)
    rng = np.random.default_rng(5)
    cur = np.full((len(cols), len(keys)), np.nan)
    mask = rng.random(cur.shape) < 0.3
    cur[mask] = rng.normal(0, 1, mask.sum()) * 10.0 ** rng.integers(-300, 300, mask.sum())
    cur[0, :3] = [np.inf, -np.inf, -0.0]
    mask[0, :3] = True
    cur[5, 7], mask[5, 7], cur[6, 7], mask[6, 7] = 2.0, True, np.nan, False
    while m.write(cur) or m.sweeping():
        pass
    for i in rng.choice(len(keys), 40, replace=False).tolist() + [0]:
        got = r.hgetall(f"live:{keys[i]}")
        assert set(got) == {c.encode() for j, c in enumerate(cols) if mask[j, i]}
        assert all(float(got[c.encode()]) == cur[j, i] for j, c in enumerate(cols) if mask[j, i])
    assert [r.hget(f"live:{keys[i]}", "c0") for i in range(3)] == [b"inf", b"-inf", b"-0.0"]
    nxt = cur.copy()
    nxt[5, 7], nxt[6, 7] = np.nan, 1.5  # one cell to NaN, one from NaN: only symbol 7 is rewritten
    m.next_at = 0.0
    assert m.write(nxt) == 1
    got = r.hgetall(f"live:{keys[7]}")
    assert got[b"c5"] == b"" and got[b"c6"] == b"1.5"
