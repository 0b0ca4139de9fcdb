"""Issue 10.9: a gateway whose pub/sub subscription drops reads the alerts published meanwhile
back from the `alerts` stream (real Redis, the publisher's own RedisSink), without repeats, and
counts what the stream had already trimmed; the subscription (`AlertSubscription`, replies read in
bulk with hiredis) loses nothing of a burst and `heads_of` leaves out what is not an alert."""

from __future__ import annotations

import asyncio
import json
import time

import redis.asyncio as aioredis

from procs.api.resume import StreamResume
from procs.api.subscriber import AlertSubscription
from procs.api.wire import AlertHead, heads_of
from procs.redis_out import RedisSink
from tests.support import RedisServer


def alerts(lo: int, hi: int) -> list[tuple[str, bytes]]:
    return [("r1", json.dumps({"host": "h", "worker": 0, "seq": i, "rule": "r1", "symbol": "AAA"}).encode())
            for i in range(lo, hi)]


def publish(url: str, items: list[tuple[str, bytes]]) -> None:
    sink = RedisSink(url, stream_maxlen=1000)
    sink.send(items)
    assert sink.flush() == 0 and not sink.buffer
    sink.client.close()


async def receive(sub: AlertSubscription, n: int) -> tuple[list[AlertHead], list[bytes]]:
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} messages arrived"
        got += await sub.read(1.0)
    assert len(got) == n
    heads, parts = heads_of(got)
    assert len(heads) == n
    return heads, parts


def seqs(alerts: tuple[list[AlertHead], list[bytes]]) -> list[int | None]:
    heads, parts = alerts
    assert [json.loads(p)["seq"] for p in parts] == [h.seq for h in heads]  # the bytes as published
    return [h.seq for h in heads]


def test_missed_alerts_are_read_back_once(redis_server: RedisServer) -> None:
    async def run() -> None:
        r = aioredis.Redis.from_url(redis_server.url)
        await r.delete("alerts")
        resume = StreamResume(sample_s=0.0)
        sub = AlertSubscription(r)
        await sub.open()
        assert await resume.replay(r) == ([], [])  # first subscription: nothing missed
        publish(redis_server.url, alerts(0, 5))
        assert seqs(resume.fresh(*await receive(sub, 5))) == [0, 1, 2, 3, 4]
        await resume.mark(r)
        publish(redis_server.url, alerts(5, 7))  # delivered, but after the last mark
        assert len(resume.fresh(*await receive(sub, 2))[0]) == 2
        await sub.close()  # the subscription is lost ...
        publish(redis_server.url, alerts(7, 12))  # ... while these are published
        await sub.open()
        assert seqs(await resume.replay(r)) == [7, 8, 9, 10, 11]  # 5 and 6 not twice
        assert resume.replayed == 5 and resume.gap == 0
        publish(redis_server.url, alerts(12, 13))  # the new subscription carries on
        assert seqs(resume.fresh(*await receive(sub, 1))) == [12]
        await sub.close()
        await r.aclose()

    asyncio.run(run())


def test_a_burst_arrives_whole_and_junk_is_left_out(redis_server: RedisServer) -> None:
    """Thousands of messages read in bulk, in order, none lost; what is not an alert (not JSON,
    NaN, a wrong type, nested too deep) is left out by `heads_of`, and the rest go on."""
    async def run() -> None:
        r = aioredis.Redis.from_url(redis_server.url)
        sub = AlertSubscription(r)
        await sub.open()
        junk = [b"not json", b'{"rule": "r", "symbol": "A", "scan_ts": NaN}', b'{"rule": 1, "symbol": "A"}',
                b'{"rule": "r", "symbol": "A", "host": ["x"]}', b'{"rule": "r", "symbol": "A", "tags": "t"}',
                b'{"rule": "r", "symbol": "A", "v": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"\xff\xfe"]
        pipe = r.pipeline(transaction=False)
        for i in range(5000):
            pipe.publish("alerts", junk[i // 700] if i % 700 == 699 else
                         json.dumps({"rule": "r", "symbol": "A", "host": "h", "worker": 0, "seq": i}))
        await pipe.execute()
        got: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(got) < 5000:
            assert time.monotonic() < deadline, f"only {len(got)} of 5000 messages arrived"
            got += await sub.read(1.0)
        heads, parts = heads_of(got)
        assert [h.seq for h in heads] == [i for i in range(5000) if i % 700 != 699]
        assert [json.loads(p)["seq"] for p in parts] == [h.seq for h in heads]
        await sub.close()
        await r.aclose()

    asyncio.run(run())


def test_alerts_trimmed_from_the_stream_are_counted(redis_server: RedisServer) -> None:
    async def run() -> None:
        r = aioredis.Redis.from_url(redis_server.url)
        await r.delete("alerts")
        resume = StreamResume(sample_s=0.0)
        publish(redis_server.url, alerts(0, 3))
        await resume.replay(r)  # first subscription: marks the stream's end
        publish(redis_server.url, alerts(3, 13))  # missed ...
        await r.xtrim("alerts", maxlen=4, approximate=False)  # ... and 6 of the 10 trimmed before the reconnect
        assert seqs(await resume.replay(r)) == [9, 10, 11, 12] and resume.gap == 6
        await r.aclose()

    asyncio.run(run())
