"""Two real hosts on one machine, each with half the universe, sharing Redis and PostgreSQL: one
scanner behind either gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import websockets

from procs.registry import Registry
from procs.shared import Shared
from scanner.metrics import CATALOGUE
from scanner.toplists import top_rows
from tests.procs.instance import Instance
from tests.support import PostgresServer, RedisServer, eventually

N, HALF = 400, 200


def column(name: str, metric: str) -> tuple[list[str], np.ndarray]:
    sh = Shared.attach(name)
    try:
        return sh.table.key_list(), np.array(sh.table.f8[CATALOGUE.f8(metric)])
    finally:
        sh.close()


PROBE = {"id": "cluster-probe", "name": "probe", "type": "numeric", "metric": "price", "operator": ">", "value": 0}


async def probe_reaches_both_gateways(urls: list[str], ports: list[int], a_syms: set[str], b_syms: set[str],
                                      counters: Callable[[], list[dict]]) -> None:
    """Clients on both gateways, then a rule (through the first host) that every traded symbol of
    both hosts matches: each client must see alerts of both hosts' symbols. On a timeout, what
    each client saw, what each host says it matched and published, and each host's scan and
    publisher counters (`counters`) go into the failure."""
    seen = [{"a": 0, "b": 0, "frames": 0, "other": 0} for _ in ports]

    async def collect(ws: websockets.ClientConnection, mine: dict[str, int]) -> None:
        while not (mine["a"] and mine["b"]):
            msg = json.loads(await ws.recv())
            if msg.get("type") != "alerts":
                mine["other"] += 1
                continue
            mine["frames"] += 1
            for a in msg.get("alerts", []):
                mine["a"] += a["symbol"] in a_syms
                mine["b"] += a["symbol"] in b_syms

    conns = [await websockets.connect(f"ws://127.0.0.1:{p}/ws") for p in ports]
    try:
        for ws in conns:
            assert json.loads(await ws.recv())["type"] == "hello"
        async with httpx.AsyncClient() as http:
            assert (await http.post(f"{urls[0]}/api/rules", json=PROBE)).status_code in (200, 201)
            try:
                async with asyncio.timeout(120):
                    await asyncio.gather(*(collect(ws, mine) for ws, mine in zip(conns, seen, strict=True)))
            except TimeoutError:
                hosts = []
                for url in urls:
                    matches = (await http.get(f"{url}/api/rules/{PROBE['id']}/matches")).text[:300]
                    recent = (await http.get(f"{url}/api/alerts/recent")).text[:300]
                    hosts.append({"url": url, "matches": matches, "recent": recent})
                raise AssertionError(f"clients saw {seen}; hosts: {hosts}; processes: {counters()}") from None
    finally:
        for ws in conns:
            await ws.close()


@pytest.mark.slow
def test_two_hosts_behave_as_one_scanner(tmp_path: Path, redis_server: RedisServer) -> None:
    redis.Redis.from_url(redis_server.url).flushdb()
    pg = PostgresServer.temporary()
    common = {"SCANNER_REDIS_URL": redis_server.url, "SCANNER_DATABASE_URL": pg.url, "SCANNER_SYMBOLS": str(N),
              "SCANNER_REGISTRY_TTL_S": "3", "SCANNER_SCAN_WORKERS": "1", "SCANNER_FEED_RATE": "4000",
              "SCANNER_CLUSTER_TOP_METRICS": '["prev_close", "change_pct"]', "SCANNER_CLUSTER_TOP_N": "50"}
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    a = Instance(tmp_path / "a", f"ca{os.getpid()}", SCANNER_RANGE_START="0", SCANNER_RANGE_END=str(HALF), **common)
    b = Instance(tmp_path / "b", f"cb{os.getpid()}", SCANNER_RANGE_START=str(HALF), SCANNER_RANGE_END=str(N),
                 **common)
    reg = Registry(redis_server.url, ttl_s=3.0)
    try:
        a.start()
        b.start()
        eventually(lambda: a.all_running() and b.all_running(), 180, 0.2, "both hosts up")
        eventually(lambda: [h["state"] for h in reg.hosts()] == ["ok", "ok"], 20, 0.2, "both registered")
        a_keys, a_prev = column(a.name, "prev_close")
        b_keys, b_prev = column(b.name, "prev_close")
        a_url, b_url = f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"

        # a rule change through one host reaches both, and a WebSocket client on either gateway
        # receives the alerts of both hosts. The probe's alerts are one burst per symbol ("enter"),
        # so both gateways must be subscribed to the alerts channel before it is posted (a
        # gateway that starts later misses what was published before; it is not the case tested)
        r = redis.Redis.from_url(redis_server.url)
        eventually(lambda: r.pubsub_numsub("alerts")[0][1] >= 2, 60, 0.2, "both gateways subscribed to alerts")
        def counters() -> list[dict]:  # what each host's scan worker and publisher counted (in, out, drops ...)
            keep = ("name", "alive", "state", "restarts", "in", "out", "drops", "errors")
            return [{inst.name: [{k: p.get(k) for k in keep} for p in inst.status()["processes"]
                                 if p["name"] in ("scan-0", "publisher")]} for inst in (a, b)]

        asyncio.run(probe_reaches_both_gateways([a_url, b_url], [a.port, b.port], set(a_keys), set(b_keys), counters))
        eventually(lambda: any(r["id"] == "cluster-probe" for r in httpx.get(f"{b_url}/api/rules").json()), 30, 0.2,
                   "the rule on the other host")

        # the merged top list equals a top list over both hosts' tables (prev_close: static)
        keys, whole = a_keys + b_keys, np.concatenate([a_prev, b_prev])
        want = [keys[r] for r in top_rows(whole, None, "desc", 20)]

        def merged() -> dict | None:
            r = httpx.get(f"{b_url}/api/top", params={"metric": "prev_close", "limit": 20}).json()
            return r if [x["symbol"] for x in r["rows"]] == want and not r["stale_hosts"] else None

        got = eventually(merged, 30, 0.5, "the merged top list")
        assert {x["host"] for x in got["rows"]} == {a.name, b.name}

        # another host's symbol through either gateway
        sym_b = b_keys[0]
        snap = httpx.get(f"{a_url}/api/symbols/{sym_b}").json()
        assert snap["symbol"] == sym_b and snap["host"] == b.name and snap["prev_close"] == pytest.approx(b_prev[0])

        m = eventually(lambda: (r := httpx.get(f"{a_url}/api/rules/cluster-probe/matches").json())["count"] > HALF
                       and r, 30, 0.5, "matches from both hosts")
        assert set(m["symbols"]) & set(b_keys) and set(m["symbols"]) & set(a_keys)

        # kill -9 of one host: missing in the registry within the TTL, its symbols stale, not absent
        st = b.status()
        os.kill(st["supervisor_pid"], signal.SIGKILL)
        eventually(lambda: {h["instance"]: h["state"] for h in reg.hosts()}[b.name] == "missing", 15, 0.2,
                   "the killed host marked missing")
        assert "MISSING" in a.cli("status", "--all").stdout
        eventually(lambda: httpx.get(f"{a_url}/api/symbols/{sym_b}").status_code == 503, 10, 0.2, "stale symbol")
        assert httpx.get(f"{a_url}/api/symbols/{sym_b}").json()["detail"]["stale"] is True
        eventually(lambda: b.name in httpx.get(f"{a_url}/api/top", params={"metric": "prev_close"}).json()
                   ["stale_hosts"], 10, 0.2, "the top list names the stale host")
    finally:
        reg.close()
        for inst in (a, b):
            inst.close()
        pg.remove()
