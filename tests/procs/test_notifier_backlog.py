"""Issue 10.9: alerts written to the stream before the notifier's first start are delivered
(the consumer group starts at id 0, not `$`)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis

from procs.notifier.delivery import Notifier
from scanner.notify.destinations import parse_destinations
from scanner.notify.limits import RetrySchedule
from tests.procs.test_notifier import Receiver, alert, hook
from tests.support import RedisServer


def test_alerts_before_the_first_start_are_delivered(redis_server: RedisServer) -> None:
    stream = f"alerts-{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(redis_server.url)
    early = [r.xadd(stream, {"alert": json.dumps(alert(s)).encode()}).decode() for s in ("AAPL", "MSFT")]
    receiver = Receiver()
    n: Any = None
    try:
        n = Notifier(redis_server.url, parse_destinations([hook(receiver, "all")]), consumer="n1", stream=stream,
                     dead_stream=f"{stream}:dead", block_ms=50,
                     retry=RetrySchedule(base_s=0.02, cap_s=0.1, max_attempts=3))
        for _ in range(200):
            n.run_once()
            if len(receiver.got("/all")) == 2 and int(r.xpending(stream, "notifier")["pending"]) == 0:
                break
        got = sorted(req.headers["X-Scanner-Delivery"] for req in receiver.got("/all"))
        assert got == sorted(early)
    finally:
        if n is not None:
            n.close(timeout=0)
        receiver.close()
        r.delete(stream, f"{stream}:dead")
