"""REST rate limits and the 405 `Allow` header, on the real application in-process (routes that
read no shared memory: the catalogue and the rule model)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from procs.api.app import create_app
from procs.api.limits import RateLimiter
from scanner.config import Settings

K1, K2 = "limits-key-one-0001", "limits-key-two-0002"


def client(**settings: object) -> TestClient:
    return TestClient(create_app(SimpleNamespace(settings=Settings(**settings), keys=["AAA"])))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_token_bucket_per_key_answers_429_with_retry_after() -> None:
    c = client(api_keys={K1: "read", K2: "write"}, rate_limit_per_s=0.01, rate_limit_burst=3)
    codes = [c.get("/api/metrics", headers=bearer(K1)).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    over = c.get("/api/metrics", headers=bearer(K1))
    assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1 and "rate limit" in over.json()["detail"]
    assert c.get("/api/metrics", headers=bearer(K2)).status_code == 200  # each key has its own bucket
    assert all(c.get("/health").status_code != 429 for _ in range(5))  # liveness is never throttled
    # requests without a valid key share their address's bucket: random keys do not buy new buckets
    anon = [c.get("/api/metrics", headers=bearer(f"guess-{i:016d}")).status_code for i in range(5)]
    assert anon == [401, 401, 401, 429, 429]
    assert c.app.state.rate_limiter.limited == 5


def test_limits_are_configuration() -> None:
    c = client(rate_limit_per_s=0)  # off
    assert all(c.get("/api/metrics").status_code == 200 for _ in range(300))
    with pytest.raises(ValueError, match="rate_limit_burst"):
        Settings(rate_limit_burst=0)


def test_bucket_refills_at_the_rate() -> None:
    lim = RateLimiter(rate=2.0, burst=2, max_clients=2)
    who = ("key", "k")
    assert lim.wait_s(who, 0.0) == 0 and lim.wait_s(who, 0.0) == 0
    assert lim.wait_s(who, 0.0) == pytest.approx(0.5)
    assert lim.wait_s(who, 0.25) == pytest.approx(0.25)
    assert lim.wait_s(who, 0.5) == 0
    for i in range(5):  # bounded memory: the least recently seen client is forgotten
        lim.wait_s(("addr", str(i)), 1.0)
    assert len(lim.buckets) == 2


def test_405_names_every_method_of_the_path() -> None:
    c = client()
    got = c.options("/api/rules")
    assert got.status_code == 405 and got.headers["Allow"] == "GET, POST"
    got = c.patch("/api/rules/some-id", json={})
    assert got.status_code == 405 and got.headers["Allow"] == "DELETE, GET, PUT"
    assert c.delete("/api/metrics").headers["Allow"] == "GET"


def test_allow_matches_the_document_on_every_path() -> None:
    c = client()
    for path, ops in c.app.openapi()["paths"].items():
        url = path.replace("{symbol}", "AAA").replace("{rule_id}", "some-rule")
        got = c.options(url)
        assert got.status_code == 405, url
        assert got.headers["Allow"] == ", ".join(sorted(m.upper() for m in ops)), url
