"""WebSocket limits as pure functions: admission (path, clients, Host, Origin), subscription and
top-list bounds, the per-key token bucket, and subscription filters."""

from __future__ import annotations

from procs.api.wire import heads_of
from procs.api.wsfeed import Sub
from procs.api.wslimits import RateLimiter, admission, subscription, top_request
from scanner.config import Settings

OPEN = Settings(instance="wsl", ws_max_clients=2)
KEYED = Settings(instance="wsl", api_keys={"k" * 20: "read"}, http_host="0.0.0.0", cors_origins=["https://desk.example"])


def test_admission_path_clients_host_origin() -> None:
    h = {"Host": "127.0.0.1:8700"}
    assert admission(OPEN, "/ws", h, 0) is None
    assert admission(OPEN, "/other", h, 0)[0] == 404
    assert admission(OPEN, "/ws", h, 2)[0] == 503
    # no keys: DNS rebinding names a foreign Host (and is same-origin with itself)
    rebind = {"Host": "evil.example:8700", "Origin": "http://evil.example:8700"}
    assert admission(OPEN, "/ws", rebind, 0) == (403, admission(OPEN, "/ws", rebind, 0)[1])
    assert "Host" in admission(OPEN, "/ws", rebind, 0)[1]
    assert admission(OPEN, "/ws", {"Host": "localhost:8700", "Origin": "http://localhost:8700"}, 0) is None
    assert admission(OPEN, "/ws", {"Host": "[::1]:8700"}, 0) is None
    assert admission(OPEN, "/ws", {"Host": "127.0.0.1:8700", "Origin": "http://evil.example"}, 0)[0] == 403
    # with keys any Host is served, but a foreign browser Origin is still refused unless configured
    assert admission(KEYED, "/ws", {"Host": "scanner.lan:8700"}, 0) is None
    assert admission(KEYED, "/ws", {"Host": "scanner.lan:8700", "Origin": "http://evil.example"}, 0)[0] == 403
    assert admission(KEYED, "/ws", {"Host": "scanner.lan:8700", "Origin": "https://desk.example"}, 0) is None


def test_subscription_bounds() -> None:
    assert subscription({"rules": ["a"], "symbols": ["aapl"]}, 10) == ({"a"}, {"AAPL"}, set())
    assert "too large" in subscription({"rules": [str(i) for i in range(200_000)]}, 1000)
    assert "list of strings" in subscription({"tags": "x"}, 10)
    assert "list of strings" in subscription({"symbols": ["x" * 10_000]}, 10)
    assert "list of strings" in subscription({"rules": [[["deep"]]]}, 10)


def test_top_request_bounds() -> None:
    assert top_request({"metric": "day_volume", "limit": 3, "interval_s": 0.5}) == ("day_volume", "desc", 3, 0.5)
    assert "metric" in top_request({"metric": ["x"]})
    assert "limit" in top_request({"limit": True})
    assert "limit" in top_request({"limit": 10_000})
    assert "interval_s" in top_request({"interval_s": 0})


def test_rate_limiter_per_key() -> None:
    r = RateLimiter(rate=10, burst=5)
    assert all(r.allow("a", now=100.0) for _ in range(5))
    assert not r.allow("a", now=100.0)
    assert r.allow("b", now=100.0)  # another key has its own bucket
    assert r.allow("a", now=100.2)  # 0.2 s refills two tokens
    assert r.allow("a", now=100.2) and not r.allow("a", now=100.2)


def test_filters() -> None:
    heads, _ = heads_of([b'{"rule": "gap-up", "symbol": "AAPL", "tags": ["gap", "momentum", 7]}'])
    alert = heads[0]
    assert Sub().wants(alert)  # no filter: everything
    assert Sub(rules=frozenset({"gap-up"})).wants(alert)
    assert Sub(symbols=frozenset({"AAPL"})).wants(alert)
    assert Sub(tags=frozenset({"momentum"})).wants(alert)
    assert not Sub(frozenset({"other"}), frozenset({"MSFT"}), frozenset({"x"})).wants(alert)
    assert not Sub(tags=frozenset({"7"})).wants(alert)  # a foreign non-string tag matches nothing
    # tags that are not a list: not an alert at all (counted by the gateway, never filtered)
    assert heads_of([b'{"rule": "r", "symbol": "S", "tags": "not-a-list"}']) == ([], [])


def test_gateway_workers_from_the_cores() -> None:
    import os

    from procs.instance import process_names

    cores = len(os.sched_getaffinity(0))
    assert Settings(instance="g").n_gateway_workers() == max(1, min(8, cores // 2))
    assert Settings(instance="g", gateway_workers=3).n_gateway_workers() == 3
    names = process_names(Settings(instance="g", scan_workers=1, gateway_workers=3))
    assert [n for n in names if n.startswith("gateway")] == ["gateway", "gateway-1", "gateway-2"]
