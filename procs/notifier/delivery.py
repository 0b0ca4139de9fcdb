"""The notifier's delivery state machine: a consumer group on the Redis `alerts` stream, delivering
to e-mail, webhooks and SMS (the I/O of one attempt: `procs.notifier.senders`).

Delivery contract:

* at-least-once: a stream entry is XACKed only after every matching destination took it or it was
  dead-lettered to `alerts:dead` (raw alert, destination, last error, attempts, source entry id);
* per (entry, destination): retries with jittered exponential backoff up to `max_attempts`;
  permanent failures (HTTP 4xx other than 408/425/429, SMTP 5xx) are dead-lettered at once;
* per destination: a token bucket (`rate_per_minute`, `burst`) and at most `concurrency` attempts
  in flight, so one slow or throttled destination never holds up the others;
* destinations that already took an entry are noted in `<stream>:notified:<id>` until the ack, so an
  entry taken over after a crash is not sent again where it already went;
* crash recovery: at start the consumer (a stable name per host and instance) re-reads its own
  pending entries; every `claim_idle_s / 2` it XAUTOCLAIMs entries that other consumers left idle
  longer than `claim_idle_s`, and it refreshes the idle time of the entries it holds itself so a
  long retry is not mistaken for a crash.

The pass never blocks for long: XREADGROUP BLOCK <= 500 ms (shorter while attempts run or a retry
is due); sends run in a thread pool with per-attempt timeouts and are collected without waiting.
Redis being down pauses reading and acking (retried with backoff), never the loop.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis

from procs.notifier.senders import DeliveryError, Entry, Job, Senders
from procs.redis_out import STREAM
from scanner.backoff import Backoff
from scanner.notify.destinations import Destination
from scanner.notify.limits import RetrySchedule, TokenBucket

log = logging.getLogger("scanner.notifier")
DEAD_MAXLEN = 100_000
PROGRESS_TTL_S = 7 * 86400
MAX_BLOCK_MS = 500


@dataclass
class PassStats:
    read: int = 0  # entries taken from the stream (new or reclaimed)
    delivered: int = 0  # successful deliveries
    dead: int = 0  # deliveries dead-lettered, plus unreadable entries
    failed: int = 0  # failed attempts


class Notifier:
    """The consumer: `run_once()` is one pass (collect results, start attempts, talk to Redis)."""

    def __init__(self, redis_url: str, destinations: Sequence[Destination], *, consumer: str,
                 group: str = "notifier", stream: str = STREAM, dead_stream: str = "alerts:dead",
                 retry: RetrySchedule | None = None, claim_idle_s: float = 60.0, max_entries: int = 1000,
                 block_ms: int = MAX_BLOCK_MS, rng: random.Random | None = None) -> None:
        if not 0 < block_ms <= MAX_BLOCK_MS:
            raise ValueError(f"'block_ms' must be in 1..{MAX_BLOCK_MS}, was {block_ms}")
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=0.5)
        self.dests = list(destinations)
        self.consumer, self.group, self.stream, self.dead_stream = consumer, group, stream, dead_stream
        self.retry = retry or RetrySchedule()
        self.claim_idle_s = claim_idle_s
        self.max_entries = max_entries
        self.block_ms = block_ms
        self.rng = rng or random.Random()
        now = time.monotonic()
        self.buckets = {d.name: TokenBucket(d.rate_per_minute / 60.0, d.burst, now)
                        for d in self.dests if d.rate_per_minute}
        self.queued: dict[str, deque[Job]] = {d.name: deque() for d in self.dests}
        self.retries: dict[str, list[tuple[float, int, Job]]] = {d.name: [] for d in self.dests}
        self.inflight = {d.name: 0 for d in self.dests}
        self.running: dict[Future[None], Job] = {}
        self.entries: dict[str, Entry] = {}
        # a thread for every attempt the destinations may have in flight: a slow one cannot starve the rest
        self.pool = ThreadPoolExecutor(max_workers=max(1, sum(d.concurrency for d in self.dests)),
                                       thread_name_prefix="notify")
        self.senders = Senders()
        self._seq = itertools.count()
        self._acks: list[str] = []
        self._dead: list[dict[str, Any]] = []
        self._progress: list[tuple[str, str]] = []
        self._ready = False  # group exists and this consumer's own pending entries were recovered
        self._redis_up = True
        self._redis_backoff = Backoff()
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._next_touch = now + claim_idle_s / 3

    # -- one pass
    def run_once(self) -> PassStats:
        stats = PassStats()
        now = time.monotonic()
        self._collect(now, stats)
        self._dispatch(now)
        if not self._redis_backoff.ready(now):
            time.sleep(0.01 if self.running else min(0.05, self._redis_backoff.retry_at - now))
            return stats
        try:
            if not self._ready:
                self._prepare(stats)
            self._flush()
            self._claim(stats, now)
            self._touch(now)
            self._read(stats, now)
            self._flush()  # entries that need no delivery are acked in the same pass
            if not self._redis_up:
                log.info("redis reachable again")
            self._redis_up = True
            self._redis_backoff.succeeded()
        except redis.RedisError as exc:
            self._redis_failed(exc)
        self._dispatch(time.monotonic())
        return stats

    def close(self, timeout: float = 2.0) -> PassStats:
        """Stop: wait up to `timeout` for running attempts, write what is settled, leave the rest pending
        (this consumer re-reads it at its next start, another one reclaims it when idle)."""
        stats = PassStats()
        deadline = time.monotonic() + timeout
        while self.running and time.monotonic() < deadline:
            time.sleep(0.01)
            self._collect(time.monotonic(), stats)
        try:
            self._flush()
        except redis.RedisError as exc:
            log.warning("could not write acks at stop (%s); the entries stay pending", exc)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.senders.close()
        self.redis.close()
        return stats

    # -- deliveries
    def _collect(self, now: float, stats: PassStats) -> None:
        for fut in [f for f in self.running if f.done()]:
            job = self.running.pop(fut)
            name = job.dest.name
            self.inflight[name] -= 1
            job.attempts += 1
            exc = fut.exception()
            if exc is None:
                stats.delivered += 1
                self._settle(job, delivered=True)
                continue
            stats.failed += 1
            err = exc if isinstance(exc, DeliveryError) else DeliveryError(f"{type(exc).__name__}: {exc}")
            job.error = str(err)
            if err.permanent or job.attempts >= (job.dest.max_attempts or self.retry.max_attempts):
                log.error("%s: giving up on %s after %d attempts: %s", name, job.entry.id, job.attempts, err)
                stats.dead += 1
                self._dead_letter(job)
            else:
                delay = self.retry.delay(job.attempts, self.rng)
                log.warning("%s: attempt %d for %s failed (%s); retry in %.2f s", name, job.attempts,
                            job.entry.id, err, delay)
                heapq.heappush(self.retries[name], (now + delay, next(self._seq), job))

    def _next_job(self, name: str, now: float) -> Job | None:
        retries = self.retries[name]
        if retries and retries[0][0] <= now:
            return retries[0][2]
        return self.queued[name][0] if self.queued[name] else None

    def _pop_job(self, name: str, job: Job) -> None:
        retries = self.retries[name]
        if retries and retries[0][2] is job:
            heapq.heappop(retries)
        else:
            self.queued[name].popleft()

    def _dispatch(self, now: float) -> None:
        for d in self.dests:
            name, bucket = d.name, self.buckets.get(d.name)
            while self.inflight[name] < d.concurrency:
                job = self._next_job(name, now)
                if job is None:
                    break
                if bucket is not None and not bucket.take(now):
                    if d.on_rate_limit == "delay":
                        break
                    self._pop_job(name, job)
                    job.error = "rate limited"
                    self._dead_letter(job)
                    continue
                self._pop_job(name, job)
                self.inflight[name] += 1
                self.running[self.pool.submit(self.senders.send, job)] = job

    def _settle(self, job: Job, delivered: bool) -> None:
        entry = job.entry
        entry.open -= 1
        if entry.open == 0:
            self._acks.append(entry.id)
        elif delivered and entry.track:
            self._progress.append((entry.id, job.dest.name))

    def _dead_letter(self, job: Job) -> None:
        self._dead.append(self._dead_fields(job.entry.id, job.entry.raw, job.dest.name, job.error, job.attempts))
        self._settle(job, delivered=False)

    def _dead_fields(self, entry_id: str, raw: bytes, dest: str, error: str, attempts: int) -> dict[str, Any]:
        return {"alert": raw, "destination": dest, "error": error[:1000], "attempts": attempts,
                "source_id": entry_id, "consumer": self.consumer, "ts": time.time()}

    # -- Redis
    def _progress_key(self, entry_id: str) -> str:
        return f"{self.stream}:notified:{entry_id}"

    def _prepare(self, stats: PassStats) -> None:
        """Create the group at the stream's start (id 0, not `$`: alerts written before the
        notifier's first start, e.g. while the instance was still booting it, are delivered, not
        lost) and take back this consumer's own pending entries, left by a crash or a restart."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        last: bytes | str = "0"
        while True:
            resp = self.redis.xreadgroup(self.group, self.consumer, {self.stream: last}, count=200)
            items = resp[0][1] if resp else []
            if not items:
                break
            for entry_id, fields in items:
                self._admit(entry_id, fields, stats, recovered=True)
            last = items[-1][0]
        self._ready = True

    def _claim(self, stats: PassStats, now: float) -> None:
        """XAUTOCLAIM entries other consumers left idle too long (bounded work per pass)."""
        if now < self._next_claim:
            return
        for _ in range(5):
            room = self.max_entries - len(self.entries)
            if room <= 0:
                break
            res = self.redis.xautoclaim(self.stream, self.group, self.consumer, int(self.claim_idle_s * 1000),
                                        start_id=self._claim_cursor, count=min(room, 100))
            cursor, items = res[0], res[1]
            for entry_id, fields in items:
                self._admit(entry_id, fields, stats, recovered=True)
            if len(res) > 2 and res[2]:
                log.error("%d pending entries were trimmed from the stream before delivery", len(res[2]))
                stats.dead += len(res[2])
            self._claim_cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
            if self._claim_cursor == "0-0":
                self._next_claim = now + self.claim_idle_s / 2
                return
        self._next_claim = now + 0.1  # more to scan: go on next pass

    def _touch(self, now: float) -> None:
        """Reset the idle time of the entries held here, so other consumers do not reclaim them."""
        if now < self._next_touch:
            return
        self._next_touch = now + self.claim_idle_s / 3
        ids = list(self.entries)
        for i in range(0, len(ids), 500):
            self.redis.xclaim(self.stream, self.group, self.consumer, 0, ids[i : i + 500], justid=True)

    def _read(self, stats: PassStats, now: float) -> None:
        room = self.max_entries - len(self.entries)
        if room <= 0:  # backpressure: new alerts wait in the stream
            time.sleep(self._block_ms(now) / 1000)
            return
        resp = self.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=min(room, 500),
                                     block=self._block_ms(now))
        for _stream, items in resp or []:
            for entry_id, fields in items:
                self._admit(entry_id, fields, stats, recovered=False)

    def _block_ms(self, now: float) -> int:
        """Wait for new entries only as long as nothing else needs this loop."""
        if self.running or self._acks or self._dead:
            return 10
        wake = now + self.block_ms / 1000
        for d in self.dests:
            if self.retries[d.name]:
                wake = min(wake, self.retries[d.name][0][0])
            if self.queued[d.name] and d.name in self.buckets:
                wake = min(wake, now + self.buckets[d.name].wait_s(now))
        return max(1, min(self.block_ms, int((wake - now) * 1000)))

    def _admit(self, raw_id: bytes | str, fields: dict[bytes, bytes] | None, stats: PassStats,
               recovered: bool) -> None:
        """Take one entry in: parse it, queue a job per matching destination not yet served."""
        entry_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        if entry_id in self.entries:
            return
        stats.read += 1
        raw = fields.get(b"alert") if fields else None
        alert: Any = None
        if raw is not None:
            try:
                alert = json.loads(raw)
            except (ValueError, RecursionError):  # deep JSON too: one entry must not crash-loop us
                pass
        if not isinstance(alert, dict):
            why = "entry gone (trimmed)" if not fields else "no 'alert' JSON object in the entry"
            log.error("dropping stream entry %s: %s", entry_id, why)
            stats.dead += 1
            if fields:
                self._dead.append(self._dead_fields(entry_id, raw or b"", "-", why, 0))
            self.entries[entry_id] = Entry(entry_id, raw or b"", {})
            self._acks.append(entry_id)
            return
        done: set[str] = set()
        if recovered:
            done = {m.decode() for m in self.redis.smembers(self._progress_key(entry_id))}
        targets = [d for d in self.dests if d.name not in done and d.accepts(alert)]
        entry = Entry(entry_id, raw, alert, open=len(targets), track=len(targets) > 1)
        self.entries[entry_id] = entry
        if not targets:
            self._acks.append(entry_id)
        for d in targets:
            self.queued[d.name].append(Job(entry, d))

    def _flush(self) -> None:
        """Dead letters, progress notes and acks in one MULTI/EXEC (dead letters before their acks)."""
        if not (self._acks or self._dead or self._progress):
            return
        acked = set(self._acks)
        pipe = self.redis.pipeline(transaction=True)
        for fields in self._dead:
            pipe.xadd(self.dead_stream, fields, maxlen=DEAD_MAXLEN, approximate=True)
        for entry_id, name in self._progress:
            if entry_id not in acked:
                pipe.sadd(self._progress_key(entry_id), name)
                pipe.expire(self._progress_key(entry_id), PROGRESS_TTL_S)
        if self._acks:
            pipe.xack(self.stream, self.group, *self._acks)
            pipe.delete(*(self._progress_key(i) for i in self._acks))
        pipe.execute()
        for entry_id in self._acks:
            self.entries.pop(entry_id, None)
        self._acks, self._dead, self._progress = [], [], []

    def _redis_failed(self, exc: redis.RedisError) -> None:
        if "NOGROUP" in str(exc):
            self._ready = False  # stream or group deleted under us: create it again
        self._redis_backoff.failed()
        if self._redis_up:
            log.error("redis unavailable (%s); retry in %.1f s", exc, self._redis_backoff.delay)
        self._redis_up = False
