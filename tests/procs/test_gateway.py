"""The gateway against a running instance: REST, auth, Prometheus, WebSocket, rule changes."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.procs.instance import Instance, child
from tests.support import eventually

READ, WRITE = "read-key-0123456789", "write-key-0123456789"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    tmp = tmp_path_factory.mktemp("gw")
    inst = Instance(tmp, f"g{os.getpid()}", SCANNER_API_KEYS=json.dumps({READ: "read", WRITE: "write"}),
                    SCANNER_FEED_RATE="20000", SCANNER_SCAN_INTERVAL_MS="100",
                    SCANNER_FEED_SPEED="30")  # a minute of event time every 2 s: bars close quickly
    inst.start()
    try:  # a failed start-up must not leave an instance running behind the test run
        eventually(inst.all_running, 60, 0.2, "instance up")
        yield inst
    finally:
        inst.close()


def api(inst: Instance, key: str | None = READ) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=f"http://127.0.0.1:{inst.port}", headers=headers, timeout=10)


def test_auth_scopes(gw: Instance) -> None:
    assert api(gw, None).get("/health").status_code == 200  # liveness stays open
    assert api(gw, None).get("/api/symbols").status_code == 401
    assert api(gw, "wrong").get("/api/symbols").status_code == 401
    assert api(gw, READ).get("/api/symbols").status_code == 200
    rule = {"id": "t-auth", "type": "numeric", "metric": "price", "operator": ">", "value": 1}
    assert api(gw, READ).post("/api/rules", json=rule).status_code == 403
    assert api(gw, WRITE).delete("/api/rules/does-not-exist").status_code == 404


def test_catalogue_snapshot_top(gw: Instance) -> None:
    c = api(gw)
    metrics = c.get("/api/metrics").json()
    names = {m["name"] for m in metrics}
    assert {"price", "vwap", "rsi_14", "relative_volume"} <= names
    assert all({"unit", "owner", "description"} <= set(m) for m in metrics)
    sym = c.get("/api/symbols").json()[0]
    snap = eventually(lambda: (s := c.get(f"/api/symbols/{sym}").json())["tick_count"] > 0 and s, 20)
    assert snap["symbol"] == sym and set(names) <= set(snap)
    assert c.get("/api/symbols/NOSUCHSYM").status_code == 404
    # issue 15: the new metrics are listed, and the daily timeframe (its ring seeded from the
    # synthetic daily history by the supervisor) and the 52 weeks reach the table
    assert {"change_5m_pct", "or_high_5m", "rsi_14_5m", "vwap_15m", "sma_50_1d", "high_52w"} <= names
    snap = eventually(lambda: (s := c.get(f"/api/symbols/{sym}").json())["sma_200_1d"] is not None and s, 30)
    assert snap["high_52w"] >= snap["prev_high"] and snap["rsi_14_1d"] is not None
    top = eventually(lambda: (t := c.get("/api/top", params={"metric": "day_volume", "limit": 5}).json())
                     ["count"] == 5 and t, 20)
    vols = [r["day_volume"] for r in top["rows"]]
    assert vols == sorted(vols, reverse=True)
    bad = c.get("/api/top", params={"metric": "nope"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "metric"]
    assert "rsi_14" in bad.json()["detail"][0]["allowed"]


def test_rule_crud_validation_and_reload(gw: Instance) -> None:
    c = api(gw, WRITE)
    bad = c.post("/api/rules", json={"id": "x", "type": "numeric", "metric": "no_such_metric", "operator": ">",
                                     "value": 1})
    assert bad.status_code == 422
    detail = json.dumps(bad.json()["detail"])
    assert "metric" in detail and "relative_volume" in detail  # names the field and the allowed values
    bad_op = c.post("/api/rules", json={"id": "x", "type": "numeric", "metric": "price", "operator": "~",
                                        "value": 1})
    assert bad_op.status_code == 422 and "operator" in json.dumps(bad_op.json()["detail"])
    gen0 = c.get("/api/status").json()["rules_generation"]
    rule = {"id": "t-all-priced", "name": "Any price", "type": "numeric", "metric": "price", "operator": ">",
            "value": 0}
    created = c.post("/api/rules", json=rule)
    assert created.status_code == 201 and created.json()["generation"] > gen0
    assert c.get("/api/rules/t-all-priced").json()["metric"] == "price"
    # the workers run it from their next cycle: its current matches fill up, and once every worker
    # has scanned with the new generation none is pending (one may lag the other by a cycle)
    m = eventually(lambda: (r := c.get("/api/rules/t-all-priced/matches").json())["count"] > 0
                   and not r["workers_pending"] and r, 30, 0.1)
    assert m["workers_pending"] == []
    # its alerts reach `recent` (no WebSocket client here: kept as records, decoded when asked)
    params = {"rule": "t-all-priced", "limit": 5}
    recent = eventually(lambda: (a := c.get("/api/alerts/recent", params=params).json()) and a, 30, 0.1)
    assert 0 < len(recent) <= 5 and {a["rule"] for a in recent} == {"t-all-priced"}
    assert all(a["rule_name"] == "Any price" and a["kind"] == "enter" and a["price"] > 0 for a in recent)
    # newest first: in the order they arrived, which per worker is its scan order (across the two
    # workers it need not be: a worker descheduled between its scan and its write arrives later)
    for w in {a["worker"] for a in recent}:
        mine = [(a["event_ts"], a["seq"]) for a in recent if a["worker"] == w]
        assert mine == sorted(mine, reverse=True)
    sym = recent[-1]["symbol"]
    one = c.get("/api/alerts/recent", params={**params, "symbol": sym.lower()}).json()
    assert one and {a["symbol"] for a in one} == {sym}
    assert c.delete("/api/rules/t-all-priced").status_code == 204
    assert c.get("/api/rules/t-all-priced").status_code == 404


def test_bars_from_shared_memory(gw: Instance) -> None:
    c = api(gw)
    # wait for the event (the bar process closed a minute), not for the minute clock
    eventually(lambda: child(gw.status(), "bars")["out"] > 0, 90, 0.2, "a minute closed")
    sym = gw.symbol_with_a_closed_bar()
    got = c.get(f"/api/bars/{sym}").json()
    assert got["source"] == "memory" and got["bars"]
    for b in got["bars"]:
        assert b["low"] <= min(b["open"], b["close"]) <= max(b["open"], b["close"]) <= b["high"]
        assert b["volume"] > 0 and b["trades"] >= 1
    times = [b["t"] for b in got["bars"]]
    assert times == sorted(times)
    assert c.get("/api/bars/NOSUCH").status_code == 404
    bad = c.get(f"/api/bars/{sym}", params={"start": "2026-01-02T00:00", "end": "2026-01-01T00:00"})
    assert bad.status_code == 422


def test_prometheus_metrics(gw: Instance) -> None:
    text = api(gw).get("/metrics").text
    for name in ("scanner_ticks_total", "scanner_alerts_total", "scanner_restarts_total",
                 "scanner_cycle_seconds_bucket", "scanner_drops_total"):
        assert name in text
    assert api(gw, None).get("/metrics").status_code == 401


def test_request_size_limit(gw: Instance) -> None:
    big = {"id": "big", "type": "numeric", "metric": "price", "operator": ">", "value": 1, "name": "x" * 300_000}
    assert api(gw, WRITE).post("/api/rules", json=big).status_code == 413


async def recv_type(ws, kind: str) -> dict:  # type: ignore[no-untyped-def]
    """The next frame of type `kind` (alert frames may arrive in between at any time)."""
    async with asyncio.timeout(30):
        while True:
            msg = json.loads(await ws.recv())
            if msg["type"] == kind:
                return msg


def test_websocket_alerts_errors_and_top(gw: Instance) -> None:
    async def run() -> None:
        url = f"ws://127.0.0.1:{gw.port}/ws?token={READ}"
        async with websockets.connect(url) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            await ws.send("not json")
            assert "JSON" in (await recv_type(ws, "error"))["error"]
            await ws.send(json.dumps({"op": "subscribe", "rules": "not-a-list"}))
            assert "rules" in (await recv_type(ws, "error"))["error"]
            await ws.send(json.dumps({"op": "top", "metric": "day_volume", "limit": 3, "interval_s": 0.5}))
            seen: set[str] = set()
            async with asyncio.timeout(30):
                while not {"top", "alerts"} <= seen:
                    msg = json.loads(await ws.recv())
                    seen.add(msg["type"])
                    if msg["type"] == "alerts":
                        assert msg["alerts"]
                        for a in msg["alerts"]:
                            assert {"rule", "symbol", "values", "event_ts", "seq"} <= set(a)
                    if msg["type"] == "top":
                        assert len(msg["rows"]) == 3

    asyncio.run(run())
    # the alerts came on the publisher's feed bell, not (only) on the gateway's fallback poll
    text = api(gw).get("/metrics").text
    bell = re.search(r'^scanner_gateway_feed_alerts_total\{wake="bell"\} (\S+)$', text, re.M)
    assert bell is not None and float(bell.group(1)) > 0, text[-2000:]


def test_websocket_rejects_unknown_key(gw: Instance) -> None:
    async def run() -> int | None:
        async with websockets.connect(f"ws://127.0.0.1:{gw.port}/ws?token=bad") as ws:
            try:
                await ws.recv()
            except websockets.ConnectionClosed as exc:
                return exc.rcvd.code if exc.rcvd else None
        return None

    assert asyncio.run(run()) == 4401


def test_dashboard_page(gw: Instance) -> None:
    page = httpx.get(f"http://127.0.0.1:{gw.port}/", timeout=10)
    assert page.status_code == 200 and 'src="/static/dashboard.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: every asset is local
    csp = page.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text and not re.search(r"\son\w+=", page.text)  # no inline handlers
    js = httpx.get(f"http://127.0.0.1:{gw.port}/static/dashboard.js", timeout=10)
    assert js.status_code == 200 and "/ws" in js.text and ".innerHTML" not in js.text


def test_websocket_refuses_foreign_origin(gw: Instance) -> None:
    async def run() -> int:
        url = f"ws://127.0.0.1:{gw.port}/ws?token={READ}"
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, origin="http://evil.example"):
                pass
        return refused.value.response.status_code

    assert asyncio.run(run()) == 403



