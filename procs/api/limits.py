"""Per-client REST rate limits: a token bucket per API key (per client address for requests
without a valid key), answered with 429 and `Retry-After`. Limits are per gateway process
(`gateway_workers` processes share the port, so a key may get up to that many times the rate).
The WebSocket side has its own limits (procs/api/alerts.py)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from fastapi import Request
from fastapi.responses import JSONResponse

from procs.api.deps import bearer as bearer_token  # one parser of the Authorization header
from procs.api.deps import key_scope
from scanner.config import Settings
from scanner.notify.limits import TokenBucket

MAX_CLIENTS = 10_000  # buckets kept; the least recently seen is forgotten first (it restarts full)
UNLIMITED_PATHS = frozenset({"/health"})  # liveness probes are never throttled


class RateLimiter:
    """`rate` requests per second with bursts of `burst`, per client identity."""

    def __init__(self, rate: float, burst: int, max_clients: int = MAX_CLIENTS) -> None:
        self.rate, self.burst, self.max_clients = rate, burst, max_clients
        self.buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()
        self.limited = 0  # requests answered 429 (a counter for status and tests)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def wait_s(self, who: tuple[str, str], now: float) -> float:
        """0 when `who` may go on now (a token is spent), else the seconds until it may."""
        b = self.buckets.get(who)
        if b is None:
            b = self.buckets[who] = TokenBucket(self.rate, self.burst, now)
            if len(self.buckets) > self.max_clients:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(who)
        if b.take(now):
            return 0.0
        self.limited += 1
        return max(b.wait_s(now), 1e-3)


def client_identity(request: Request, settings: Settings) -> tuple[str, str]:
    """The API key when it is a valid one (kept in memory only, never logged), else the address."""
    token = bearer_token(request.headers.get("authorization"))
    if token is not None and settings.api_keys and key_scope(settings.api_keys, token) is not None:
        return "key", token
    return "addr", request.client.host if request.client else "?"


def too_many(wait_s: float) -> JSONResponse:
    return JSONResponse({"detail": f"rate limit exceeded; retry in {wait_s:.2f} s"}, status_code=429,
                        headers={"Retry-After": str(max(1, math.ceil(wait_s)))})


def install(app, settings: Settings) -> RateLimiter:  # type: ignore[no-untyped-def]
    """Add the limiter as an HTTP middleware of `app` (outermost: before body checks and routing)."""
    limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.state.rate_limiter = limiter

    @app.middleware("http")
    async def rate_limit(request: Request, call_next):  # type: ignore[no-untyped-def]
        if limiter.enabled and request.url.path not in UNLIMITED_PATHS:
            wait = limiter.wait_s(client_identity(request, settings), time.monotonic())
            if wait:
                return too_many(wait)
        return await call_next(request)

    return limiter
