"""The gateway against hostile clients, on a real instance with API keys and real Redis:
authorisation of every state-changing route, rules that once poisoned the API, a bad item
already in the store, garbage on the Redis alerts channel, and no key in any log."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import redis
import websockets

from procs.api.app import create_app
from procs.api.openapi import api_routes, route_scope
from scanner.config import Settings
from tests.procs.instance import Instance, child
from tests.support import REPO, RedisServer, eventually

READ, WRITE = "sec-read-key-7f3a9c1e", "sec-write-key-2b8d4e6f"
PUBLIC = {"/health", "/"}  # liveness, and the dashboard page (which asks for a key itself)
FUZZ_EXAMPLES = 12  # per operation with the write key (~200-250 cases); 4 without a key (~80)
READ_ONLY_POSTS = {("POST", "/api/rules/validate")}  # non-GET routes that change nothing (read scope)


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Instance]:
    tmp = tmp_path_factory.mktemp("sec")
    inst = Instance(tmp, f"sec{os.getpid()}", SCANNER_API_KEYS=json.dumps({READ: "read", WRITE: "write"}),
                    SCANNER_REDIS_URL=redis_server.url, SCANNER_FEED_RATE="20000", SCANNER_SCAN_INTERVAL_MS="200",
                    SCANNER_RATE_LIMIT_PER_S="100000", SCANNER_RATE_LIMIT_BURST="100000",
                    SCANNER_HEARTBEAT_TIMEOUT_S="30", SCANNER_BOOT_TIMEOUT_S="120")  # a shared, busy machine
    inst.start()
    try:
        # these tests need the gateway only: on a loaded machine the numba-compiling workers
        # may still be restarting (issue 10.1) while the gateway already serves
        eventually(lambda: api(inst).get("/health").status_code == 200, 240, 0.5, "gateway up")
        yield inst
    finally:
        inst.close()


def api(inst: Instance, key: str | None = READ) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=f"http://127.0.0.1:{inst.port}", headers=headers, timeout=30)


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every API route, read from the application itself."""
    app = create_app(SimpleNamespace(settings=Settings(api_keys={READ: "read", WRITE: "write"})))
    return sorted((m, r.path_format) for r in api_routes(app) for m in r.methods)


def nested(depth: int) -> dict:
    node: dict = {"metric": "price", "operator": ">", "value": 1}
    for _ in range(depth - 1):
        node = {"all": [node]}
    return node


def test_every_state_changing_route_is_declared_write() -> None:
    """Enumerated from the app: a new POST/PUT/PATCH/DELETE route without WriteAuth fails here."""
    app = create_app(SimpleNamespace(settings=Settings()))
    changing = [(m, r) for r in api_routes(app) for m in r.methods if m not in ("GET", "HEAD")]
    assert changing and {(m, r.path_format) for m, r in changing} >= READ_ONLY_POSTS
    for m, r in changing:
        want = "read" if (m, r.path_format) in READ_ONLY_POSTS else "write"
        assert route_scope(r) == want, f"{m} {r.path_format} is guarded by {route_scope(r)!r}, not {want!r}"
    for r in api_routes(app):
        assert r.path_format in PUBLIC or route_scope(r) is not None, f"{r.path_format} has no API key check"


def test_no_state_change_without_a_write_key(sec: Instance) -> None:
    rules_before = api(sec).get("/api/rules").json()
    rule = {"id": "sec-auth", "metric": "price", "operator": ">", "value": 1}
    for method, path in app_routes():
        if method in ("GET", "HEAD"):
            continue
        url = path.replace("{rule_id}", rules_before[0]["id"])
        body = rule if method in ("POST", "PUT") else None
        if "{rule_id}" in path and method == "PUT":
            body = rules_before[0]
        for key, want in ((None, 401), ("not-a-key-at-all-0000", 401), (READ, 403)):
            if key == READ and (method, path) in READ_ONLY_POSTS:
                want = 200
            got = api(sec, key).request(method, url, json=body)
            assert got.status_code == want, f"{method} {url} with {key}: {got.status_code} {got.text[:200]}"
    assert api(sec).get("/api/rules").json() == rules_before  # nothing changed
    created = api(sec, WRITE).post("/api/rules", json=rule)  # and the write key does write
    assert created.status_code == 201
    assert api(sec, WRITE).delete("/api/rules/sec-auth").status_code == 204


def test_deep_or_non_finite_rules_are_refused_with_422(sec: Instance) -> None:
    c = api(sec, WRITE)
    for depth in (33, 128, 200, 250):
        got = c.post("/api/rules", json={"id": f"deep{depth}", "condition": nested(depth)})
        assert got.status_code == 422, got.text[:300]
        (err,) = got.json()["detail"]
        assert err["loc"] == ["body", "condition"] and "32 levels" in err["msg"]
    # deeper than the JSON parser goes: 400, never a 500
    text = '{"id": "d", "condition": ' + '{"all": [' * 3000 + '{"metric": "price"}' + "]}" * 3000 + "}"
    got = c.post("/api/rules", content=text, headers={"Content-Type": "application/json"})
    assert got.status_code == 400
    for raw in ("NaN", "Infinity", "-Infinity", "1e999"):
        body = '{"id": "nan", "metric": "price", "operator": ">", "value": ' + raw + "}"
        got = c.post("/api/rules", content=body, headers={"Content-Type": "application/json"})
        assert got.status_code == 422, got.text[:300]
        assert got.json()["detail"][0]["loc"][:2] == ["body", "value"]
        got = c.post("/api/rules/validate", content=body, headers={"Content-Type": "application/json"})
        assert got.status_code == 422
    listed = c.get("/api/rules")
    assert listed.status_code == 200
    assert not {r["id"] for r in listed.json()} & {"deep33", "deep128", "deep200", "deep250", "d", "nan"}


def test_a_bad_stored_rule_never_breaks_a_read(sec: Instance) -> None:
    """An item the model refuses (a tree stored by an older version, garbage) is skipped and
    counted in a header; every read keeps working, and the workers keep the valid rules."""
    path = Path(sec.data_dir) / "rules.json"
    good = json.loads(path.read_text())
    path.write_text(json.dumps([*good, {"id": "old-deep", "condition": nested(200)}, "garbage"]))
    try:
        c = api(sec)
        got = c.get("/api/rules")
        assert got.status_code == 200 and got.headers["X-Rules-Skipped"] == "2"
        assert [r["id"] for r in got.json()] == [r["id"] for r in good]
        assert c.get(f"/api/rules/{good[0]['id']}").status_code == 200
        assert c.get("/api/rules/old-deep").status_code == 404
        assert c.get(f"/api/rules/{good[0]['id']}/matches").status_code == 200
    finally:
        path.write_text(json.dumps(good))
    assert "X-Rules-Skipped" not in api(sec).get("/api/rules").headers


def test_garbage_on_the_alerts_channel_is_counted_and_alerts_go_on(sec: Instance,
                                                                  redis_server: RedisServer) -> None:
    """Anyone who can PUBLISH may send anything: each malformed message is a counted drop of
    the gateway, and a good alert published after the garbage still reaches a WebSocket."""
    r = redis.Redis.from_url(redis_server.url)
    gw_drops = child(sec.status(), "gateway")["drops"]
    garbage = [b"not json", b"\xff\xfe", b"[1, 2]", b"42", b'{"rule": 1, "symbol": "A"}',
               b'{"rule": "r", "symbol": "A", "tags": 7}', b"[" * 5000 + b"]" * 5000, b"{}"]
    good = {"rule": "sec-probe", "rule_name": "probe", "symbol": "PROBE", "kind": "enter", "values": {},
            "event_ts": 1.0, "scan_ts": 1.0, "seq": 1, "tags": []}

    async def probe_arrives() -> dict:
        async with websockets.connect(f"ws://127.0.0.1:{sec.port}/ws?token={READ}") as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            await ws.send(json.dumps({"op": "subscribe", "rules": ["sec-probe"]}))
            async with asyncio.timeout(60):
                while True:
                    msg = json.loads(await ws.recv())
                    if msg["type"] == "subscribed":
                        for g in garbage:
                            r.publish("alerts", g)
                        r.publish("alerts", json.dumps(good))
                    if msg["type"] == "alerts":
                        return msg

    msg = asyncio.run(probe_arrives())
    assert [a["rule"] for a in msg["alerts"]] == ["sec-probe"]
    eventually(lambda: child(sec.status(), "gateway")["drops"] >= gw_drops + len(garbage), 30, 0.1,
               "malformed messages counted")
    assert "scanner_drops_total" in api(sec).get("/metrics").text


def schemathesis(inst: Instance, tmp: Path, examples: int, *headers: str) -> subprocess.CompletedProcess:
    """`schemathesis run` (the CLI: its pytest plugin does not load under pytest 9) against the
    document the running gateway serves. Every check but `positive_data_acceptance`: the model
    refuses some schema-valid rules on cross-field grounds JSON Schema cannot state (lo <= hi,
    min_price <= max_price, a history field needs bars_ago >= 1), each with a 422 naming the field.
    Fuzzing phase only, a fixed seed and `examples` per operation keep it to a few hundred
    cases; the coverage phase's unexpected-method cases (405 + Allow) are checked for every
    documented path in tests/procs/test_api_limits.py."""
    st = Path(sys.executable).with_name("schemathesis")
    cmd = [str(st), "run", f"http://127.0.0.1:{inst.port}/openapi.json", "--phases", "fuzzing", "--checks", "all",
           "--exclude-checks", "positive_data_acceptance", "--max-examples", str(examples), "--seed", "10",
           "--generation-database", "none", "--workers", "1", "--request-timeout", "120", "--no-color",
           "--max-response-time", "120"]  # a limit on slowness is for the benchmarks, not this shared box
    for h in headers:
        cmd += ["-H", h]
    return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_fuzz_the_live_api_with_and_without_keys(sec: Instance, tmp_path: Path) -> None:
    """No 5xx and every response as the document says (status, headers, content type, body),
    with the write key (the full API) and without a key (401s as documented)."""
    for examples, headers in ((FUZZ_EXAMPLES, [f"Authorization: Bearer {WRITE}"]), (4, [])):
        run = schemathesis(sec, tmp_path, examples, *headers)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-6000:]
        assert "generated" in out and " passed" in out


def test_no_api_key_reaches_a_log(sec: Instance) -> None:
    """Runs last in this module: every request above sent these keys (and wrong ones)."""
    api(sec, "wrong-key-but-logged-9999").get("/api/symbols")
    texts = [sec.output()] + [p.read_text(errors="replace") for p in Path(sec.data_dir).rglob("*.log")]
    assert texts and any(t for t in texts)
    for t in texts:
        for key in (READ, WRITE, "wrong-key-but-logged-9999"):
            assert key not in t


def test_openapi_document_is_in_sync() -> None:
    """docs/openapi.json is the app's document (regenerate with the snippet in docs/api.md)."""
    app = create_app(SimpleNamespace(settings=Settings()))
    assert json.loads((REPO / "docs" / "openapi.json").read_text()) == json.loads(json.dumps(app.openapi()))
