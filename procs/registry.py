"""The cluster's host registry in Redis: every supervisor with `redis_url` registers itself.

Keys (one Redis shared by every host of the cluster):

| key | type | holds |
| --- | --- | --- |
| `scanner:host:<instance>` | string, JSON, TTL `registry_ttl_s` | the host's record, refreshed every `ttl / 4` |
| `scanner:hosts` | sorted set | every instance ever registered; score = last refresh (epoch s), -1 after a clean stop |
| `scanner:registry:lock` | string, PX 5 s | held while a host checks for conflicts and claims its name |

A record: instance, host, pid, start id, universe hash and size, symbol range (rows and first /
last symbol), gateway URL, rules generation, ticks/s, scan p99, version, start and refresh times.
A host of a Kafka consumer group (`kafka_group`) claims the whole universe; its record also says
which partitions the group gave it and which row ranges it scans now (`partitions`, `owned`:
[lo, hi, first symbol, last symbol]), refreshed with the live figures.

A host whose key expired while it is still in the index is *missing* (it died or lost Redis); one
whose record is older than half the TTL is *stale*. At start a host is refused, with a message
saying who holds what, when a live host already has its instance name or a range that overlaps
its own in the same universe (hosts of one consumer group share the universe by design: the group
assigns the partitions). The refresh runs in a thread of the supervisor, so Redis being slow
or down never holds up reaping and heartbeats; it reconnects with the shared backoff.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import redis

from procs.status import pid_alive
from scanner.backoff import Backoff

log = logging.getLogger("scanner.registry")
KEY = "scanner:host:"
INDEX = "scanner:hosts"
LOCK = "scanner:registry:lock"
STOPPED = -1.0


class RegistryConflict(RuntimeError):
    """Another live host holds this instance name or an overlapping symbol range."""


def universe_hash(names: list[str]) -> str:
    """Identity of a universe (the full, ordered symbol list every host slices its range from)."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def _version() -> str:
    try:
        return version("scanner")
    except PackageNotFoundError:
        return "dev"


def base_record(*, instance: str, universe: list[str], range_start: int, range_end: int, url: str,
                host: str | None = None, kafka_group: str | None = None) -> dict[str, Any]:
    """The fixed part of a host's record; `Registry.refresh` adds the live figures."""
    return {
        "instance": instance, "host": host or socket.gethostname(), "pid": os.getpid(),
        "start_id": uuid.uuid4().hex, "universe": universe_hash(universe), "universe_size": len(universe),
        "range_start": range_start, "range_end": range_end,
        "first_symbol": universe[range_start] if range_end > range_start else "",
        "last_symbol": universe[range_end - 1] if range_end > range_start else "",
        "url": url, "version": _version(), "started": time.time(),
        **({"kafka_group": kafka_group} if kafka_group else {}),
    }


def ownership_text(rec: dict[str, Any]) -> str:
    """A group host's holdings for `status --all`: "group g: partitions 0,1; rows 0:200 (A..M)"."""
    if not rec.get("kafka_group"):
        return ""
    parts = ",".join(str(p) for p in rec.get("partitions", [])) or "none"
    rows = ", ".join(f"{lo}:{hi} ({a}..{b})" for lo, hi, a, b in rec.get("owned", [])) or "none"
    return f"group {rec['kafka_group']}: partitions {parts}; rows {rows}"


def conflict(mine: dict[str, Any], other: dict[str, Any]) -> str | None:
    """Why `mine` may not join next to the live host `other`; None when both can run."""
    if other.get("start_id") == mine.get("start_id"):
        return None
    if other.get("instance") == mine.get("instance"):
        if other.get("host") == mine.get("host") and not pid_alive(int(other.get("pid") or 0)):
            return None  # our own crashed predecessor, its record not yet expired: take the name over
        return (f"instance name {mine['instance']!r} is already registered by a live host "
                f"({other.get('host')}, pid {other.get('pid')}); choose another name or stop that host")
    if other.get("universe") != mine.get("universe"):
        return (f"host {other.get('instance')!r} ({other.get('host')}) scans another universe "
                f"({other.get('universe_size')} symbols, {other.get('universe')}); every host of a cluster "
                f"must slice the same symbol list")
    if mine.get("kafka_group") and mine.get("kafka_group") == other.get("kafka_group"):
        return None  # one consumer group: Kafka's rebalance splits the universe, not the ranges
    if mine["range_start"] < other["range_end"] and other["range_start"] < mine["range_end"]:
        return (f"symbol range {mine['range_start']}:{mine['range_end']} overlaps host {other['instance']!r} "
                f"({other.get('host')}), which scans {other['range_start']}:{other['range_end']} "
                f"({other.get('first_symbol')}..{other.get('last_symbol')})")
    return None


def parse_record(raw: bytes | str | None) -> dict[str, Any] | None:
    """A stored record, or None when it is absent or unreadable (one bad record never breaks a listing)."""
    if raw is None:
        return None
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def host_states(index: dict[str, float], live: dict[str, dict[str, Any]], now: float,
                ttl_s: float) -> list[dict[str, Any]]:
    """Every host of the index with `state`: ok, stale (record older than half the TTL), missing
    (record expired without a clean stop) or stopped; sorted by range."""
    out = []
    for name, score in index.items():
        rec = live.get(name)
        if rec is not None:
            age = now - float(rec.get("updated", 0))
            rec = {**rec, "state": "stale" if age > ttl_s / 2 else "ok", "age_s": round(age, 1)}
        else:
            rec = {"instance": name, "state": "stopped" if score == STOPPED else "missing",
                   "age_s": None if score == STOPPED else round(now - score, 1)}
        out.append(rec)
    return sorted(out, key=lambda r: (r.get("range_start", 1 << 62), r["instance"]))


class Registry:
    """Claim, refresh and withdraw this host's record; list every host with its state."""

    def __init__(self, url: str, ttl_s: float = 10.0) -> None:
        if ttl_s < 1.0:
            raise ValueError(f"'ttl_s' must be at least 1 s, was {ttl_s}")
        self.client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0)
        self.ttl_s = ttl_s

    def _live(self) -> list[dict[str, Any]]:
        names = [n.decode() for n in self.client.zrange(INDEX, 0, -1)]
        raws = self.client.mget([KEY + n for n in names]) if names else []
        return [rec for rec in map(parse_record, raws) if rec is not None]

    def claim(self, record: dict[str, Any]) -> None:
        """Register `record`, or raise `RegistryConflict` saying who is in the way."""
        lock = self.client.lock(LOCK, timeout=5.0, blocking_timeout=10.0)
        if not lock.acquire():
            raise RegistryConflict("the host registry stayed locked for 10 s (another host starting?)")
        try:
            for other in self._live():
                why = conflict(record, other)
                if why:
                    raise RegistryConflict(why)
            self._write(record)
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                pass

    def _write(self, record: dict[str, Any]) -> None:
        now = time.time()
        record["updated"] = now
        pipe = self.client.pipeline()
        pipe.set(KEY + record["instance"], json.dumps(record), px=int(self.ttl_s * 1000))
        pipe.zadd(INDEX, {record["instance"]: now})
        pipe.execute()

    def refresh(self, record: dict[str, Any], live: dict[str, Any]) -> None:
        """Store the record with this moment's figures (`live`) and a fresh TTL."""
        record.update(live)
        self._write(record)

    def withdraw(self, record: dict[str, Any]) -> None:
        """A clean stop: the record goes, the index keeps the name as stopped (not missing)."""
        key = KEY + record["instance"]
        raw = self.client.get(key)
        if raw is not None and json.loads(raw).get("start_id") != record["start_id"]:
            return  # someone else holds the name now
        pipe = self.client.pipeline()
        pipe.delete(key)
        pipe.zadd(INDEX, {record["instance"]: STOPPED})
        pipe.execute()

    def hosts(self) -> list[dict[str, Any]]:
        """Every registered host with its `state` (`host_states`)."""
        index = {n.decode(): s for n, s in self.client.zrange(INDEX, 0, -1, withscores=True)}
        return host_states(index, {r.get("instance"): r for r in self._live()}, time.time(), self.ttl_s)

    def close(self) -> None:
        self.client.close()


class RegistryThread(threading.Thread):
    """Refreshes this host's record every `ttl / 4` with `live()` (ticks/s, scan p99, rules
    generation, ...); Redis errors are logged once per outage and retried with backoff."""

    def __init__(self, registry: Registry, record: dict[str, Any], live: Callable[[], dict[str, Any]]) -> None:
        super().__init__(name="registry", daemon=True)
        self.registry, self.record, self.live = registry, record, live
        self.stop_event = threading.Event()
        self.backoff = Backoff(base_s=0.5, cap_s=max(1.0, registry.ttl_s / 4))

    def run(self) -> None:
        period = self.registry.ttl_s / 4
        while not self.stop_event.is_set():
            try:
                self.registry.refresh(self.record, self.live())
                if self.backoff.succeeded():
                    log.info("host registry reachable again")
                wait = period
            except (redis.RedisError, OSError) as exc:
                if not self.backoff.failing:
                    log.error("host registry unreachable (%s); this host shows as missing until it is back", exc)
                wait = self.backoff.failed()
            except Exception as exc:  # noqa: BLE001 - figures unavailable for a moment: keep the record alive
                log.warning("host registry refresh skipped: %s", exc)
                wait = period
            self.stop_event.wait(wait)

    def stop(self) -> None:
        """Stop refreshing and withdraw the record (best effort: Redis may be gone)."""
        self.stop_event.set()
        self.join(timeout=5.0)
        try:
            self.registry.withdraw(self.record)
        except (redis.RedisError, OSError) as exc:
            log.warning("could not withdraw from the host registry: %s", exc)
        self.registry.close()
