"""Alerts to Redis: PUBLISH on `alerts` and `alerts:<rule id>`, XADD to the `alerts` stream.

Batched in pipelines (one round trip per pass). Redis being down never blocks the caller:
encoded alerts wait in a bounded buffer, reconnects back off (0.1 s doubling to 5 s), and the
oldest alerts beyond the bound are dropped and counted.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import redis

log = logging.getLogger("scanner.redis")

CHANNEL_ALL = "alerts"
STREAM = "alerts"


class RedisSink:
    def __init__(self, url: str, *, buffer_limit: int = 100_000, stream_maxlen: int = 1_000_000,
                 batch: int = 2000) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0)
        self.buffer: deque[tuple[str, bytes]] = deque()
        self.buffer_limit = buffer_limit
        self.stream_maxlen = stream_maxlen
        self.batch = batch
        self.backoff = 0.0
        self.retry_at = 0.0
        self.connected = True
        self.sent = 0
        self.dropped_total = 0
        self.failures = 0  # failed flush attempts (status shows them as publisher errors)

    def send(self, items: list[tuple[str, bytes]]) -> None:
        """Queue (rule id, JSON) pairs for the next flush."""
        self.buffer.extend(items)

    def flush(self) -> int:
        """Send what is buffered; returns how many alerts were dropped for the bound."""
        dropped = 0
        over = len(self.buffer) - self.buffer_limit
        if over > 0:
            for _ in range(over):
                self.buffer.popleft()
            dropped = over
            self.dropped_total += over
            log.error("redis buffer full: dropped %d oldest alerts", over)
        if not self.buffer or time.monotonic() < self.retry_at:
            return dropped
        try:
            while self.buffer:
                n = min(self.batch, len(self.buffer))
                pipe = self.client.pipeline(transaction=False)
                for i in range(n):
                    rule_id, payload = self.buffer[i]
                    pipe.publish(CHANNEL_ALL, payload)
                    pipe.publish(f"{CHANNEL_ALL}:{rule_id}", payload)
                    pipe.xadd(STREAM, {"alert": payload}, maxlen=self.stream_maxlen, approximate=True)
                pipe.execute()
                for _ in range(n):
                    self.buffer.popleft()
                self.sent += n
            if not self.connected:
                log.info("redis reconnected (%s)", self.url)
            self.connected, self.backoff = True, 0.0
        except redis.RedisError as exc:
            self.failures += 1
            self.backoff = min(5.0, self.backoff * 2 if self.backoff else 0.1)
            self.retry_at = time.monotonic() + self.backoff
            if self.connected:
                log.error("redis unavailable (%s); buffering, retry in %.1f s", exc, self.backoff)
            self.connected = False
        return dropped


class LiveMirror:
    """Live bars and indicators as Redis hashes `live:<symbol>`: at most once per `interval` s,
    only the fields that changed since the last write. Write-only: nothing reads them back in
    the pipeline (they are for other programs)."""

    def __init__(self, client: redis.Redis, keys: list[str], columns: list[str], interval: float = 1.0) -> None:
        import numpy as np

        self.client = client
        self.keys = keys
        self.columns = columns
        self.interval = interval
        self.next_at = 0.0
        self.last = np.full((len(columns), len(keys)), np.nan)
        self.ok = True

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def write(self, current) -> int:  # type: ignore[no-untyped-def]
        """`current` (len(columns), n_rows) float64; returns the number of hashes written."""
        import numpy as np

        self.next_at = time.monotonic() + self.interval
        changed = ~((current == self.last) | (np.isnan(current) & np.isnan(self.last)))
        rows = np.flatnonzero(changed.any(axis=0))
        if len(rows) == 0:
            return 0
        try:
            pipe = self.client.pipeline(transaction=False)
            for r in rows.tolist():
                cols = np.flatnonzero(changed[:, r])
                mapping = {self.columns[c]: ("" if np.isnan(current[c, r]) else repr(float(current[c, r])))
                           for c in cols.tolist()}
                pipe.hset(f"live:{self.keys[r]}", mapping=mapping)
            pipe.execute()
        except redis.RedisError as exc:
            if self.ok:
                log.error("live mirror: redis unavailable (%s); will resend what changed", exc)
            self.ok = False
            return 0  # `last` unchanged: the next write resends everything that differs
        self.ok = True
        self.last[:, rows] = current[:, rows]
        return len(rows)
