"""Issue 10.9: a gateway whose pub/sub subscription drops reads the alerts published meanwhile
back from the `alerts` stream (real Redis, the publisher's own RedisSink), without repeats, and
counts what the stream had already trimmed."""

from __future__ import annotations

import asyncio
import json
import time

import redis.asyncio as aioredis

from procs.api.resume import StreamResume
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


async def receive(pubsub: aioredis.client.PubSub, n: int) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + 30
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} messages arrived"
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)  # None: a subscribe reply
        if msg is not None:
            got.append(json.loads(msg["data"]))
    return got


def test_missed_alerts_are_read_back_once(redis_server: RedisServer) -> None:
    async def run() -> None:
        r = aioredis.Redis.from_url(redis_server.url)
        await r.delete("alerts")
        resume = StreamResume(sample_s=0.0)
        pubsub = r.pubsub()
        await pubsub.subscribe("alerts")
        assert await resume.replay(r) == []  # first subscription: nothing missed
        publish(redis_server.url, alerts(0, 5))
        live = resume.fresh(await receive(pubsub, 5))
        assert [a["seq"] for a in live] == [0, 1, 2, 3, 4]
        await resume.mark(r)
        publish(redis_server.url, alerts(5, 7))  # delivered, but after the last mark
        assert len(resume.fresh(await receive(pubsub, 2))) == 2
        await pubsub.aclose()  # the subscription is lost ...
        publish(redis_server.url, alerts(7, 12))  # ... while these are published
        pubsub = r.pubsub()
        await pubsub.subscribe("alerts")
        missed = await resume.replay(r)
        assert [a["seq"] for a in missed] == [7, 8, 9, 10, 11]  # 5 and 6 not twice
        assert resume.replayed == 5 and resume.gap == 0
        publish(redis_server.url, alerts(12, 13))  # the new subscription carries on
        assert [a["seq"] for a in resume.fresh(await receive(pubsub, 1))] == [12]
        await pubsub.aclose()
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
        missed = await resume.replay(r)
        assert [a["seq"] for a in missed] == [9, 10, 11, 12] and resume.gap == 6
        await r.aclose()

    asyncio.run(run())
