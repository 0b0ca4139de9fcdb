"""Limits of the alert WebSocket: who may connect (path, clients, Origin, Host), what a client
may ask (subscription and top-list bounds), and how often (a token bucket per API key).

Pure functions over settings and headers, so each limit is tested on its own; `wsfeed` applies
them. The Host check matters in the no-key loopback mode: a page from an attacker's domain that
re-resolves to 127.0.0.1 (DNS rebinding) is same-origin with itself, but names its own Host.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from scanner.config import Settings

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
MAX_NAME = 200  # longest rule id, symbol or tag in a subscription


def _hostname(host_header: str) -> str:
    """'Host' header -> bare lower-case host name ('[::1]:8700' -> '::1')."""
    try:
        return (urlsplit(f"//{host_header}").hostname or "").lower()
    except ValueError:
        return ""


def admission(settings: Settings, path: str, headers: Mapping[str, str], n_clients: int) -> tuple[int, str] | None:
    """(HTTP status, reason) when an upgrade request must be refused, else None."""
    if path != "/ws":
        return 404, "no WebSocket here; the feed is /ws"
    if n_clients >= settings.ws_max_clients:
        return 503, f"too many clients (limit {settings.ws_max_clients}); retry later"
    host = headers.get("Host", "")
    if not settings.api_keys and _hostname(host) not in LOOPBACK_NAMES | {settings.http_host.lower()}:
        return 403, "Host not allowed: without API keys only a loopback host name is served"
    origin = headers.get("Origin")
    if origin is not None and origin not in settings.cors_origins:
        try:
            same = urlsplit(origin).netloc.lower() == host.lower()
        except ValueError:
            same = False
        if not same:
            return 403, "Origin not allowed"
    return None


def subscription(msg: dict[str, Any], max_entries: int) -> tuple[set[str], set[str], set[str]] | str:
    """Validate a subscribe message; returns (rules, symbols, tags) or an error text."""
    sets = []
    total = 0
    for key in ("rules", "symbols", "tags"):
        v = msg.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and len(x) <= MAX_NAME for x in v):
            return f"field {key!r} must be a list of strings of at most {MAX_NAME} characters"
        total += len(v)
        if total > max_entries:
            return f"subscription too large: at most {max_entries} rules, symbols and tags in all"
        sets.append({x.upper() for x in v} if key == "symbols" else set(v))
    return sets[0], sets[1], sets[2]


def top_request(msg: dict[str, Any]) -> tuple[str, str, int, float] | str:
    """Validate a top-list subscription; returns (metric, order, limit, interval) or an error."""
    from procs.api.symbols import F8_METRICS

    metric, order = msg.get("metric", "change_pct"), msg.get("order", "desc")
    limit, interval = msg.get("limit", 20), msg.get("interval_s", 1.0)
    if not isinstance(metric, str) or metric not in F8_METRICS:
        return f"field 'metric': unknown metric; allowed: {', '.join(F8_METRICS)}"
    if order not in ("asc", "desc"):
        return "field 'order' must be 'asc' or 'desc'"
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 500:
        return "field 'limit' must be an integer 1..500"
    if not isinstance(interval, (int, float)) or isinstance(interval, bool) or not 0.2 <= interval <= 60:
        return "field 'interval_s' must be a number 0.2..60"
    return metric, order, limit, float(interval)


class RateLimiter:
    """Token buckets by key: `rate` messages/s sustained, `burst` at once. Buckets idle long
    enough to be full again are forgotten, so the table stays bounded by active keys."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._swept = time.monotonic()

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, at = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        ok = tokens >= 1.0
        self.buckets[key] = (tokens - 1.0 if ok else tokens, now)
        if now - self._swept > 60:
            full = self.burst / self.rate
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < full}
            self._swept = now
        return ok
