"""The rule store in PostgreSQL: same semantics as the file store, shared by every host; a
change made through one host reaches another host's workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import psycopg
import pytest

from procs.bench.services import PostgresServer
from procs.rules_pg import PgRuleStore
from procs.storage.pg import migrate
from scanner.rules.store import RuleStoreError
from tests.procs.instance import Instance, child
from tests.support import eventually


@pytest.fixture
def db() -> str:
    srv = PostgresServer.temporary()
    try:
        migrate(srv.url)
        yield srv.url
    finally:
        srv.remove()


def rule(rid: str, value: float = 1.0) -> dict:
    return {"id": rid, "type": "numeric", "metric": "price", "operator": ">", "value": value}


def test_store_semantics_order_and_version(db: str) -> None:
    changes: list[int] = []
    store = PgRuleStore(db, on_change=lambda rules: changes.append(len(rules)))
    assert store.list() == [] and store.version() == 0
    assert store.install_defaults() is True and store.install_defaults() is False
    n = len(store.list())
    assert n >= 15
    store.replace_all([rule("a"), rule("b"), rule("c")])
    store.add(rule("b", 5.0))  # replaces in place: positions are alert indices
    store.add(rule("d"))
    assert [r.id for r in store.list()] == ["a", "b", "c", "d"] and store.get("b").value == 5.0
    assert store.remove("a") and not store.remove("a")
    assert [r.id for r in store.list()] == ["b", "c", "d"]
    assert changes == [3, 3, 4, 3] and store.version() == 5  # defaults + four writes
    with pytest.raises(RuleStoreError):
        store.add({"id": "bad", "type": "numeric", "metric": "nope", "operator": ">", "value": 1})
    with psycopg.connect(db) as c:  # ids in the table, in order
        assert [r[0] for r in c.execute("SELECT id FROM rules ORDER BY position")] == ["b", "c", "d"]
    # a row the model refuses (stored by an older version) is skipped and reported, never fatal
    deep: dict = {"metric": "price", "operator": ">", "value": 1}
    for _ in range(199):
        deep = {"all": [deep]}
    with psycopg.connect(db) as conn:
        conn.execute("INSERT INTO rules (id, name, body, position) VALUES ('old-deep', 'x', %s, 99)",
                     (json.dumps({"id": "old-deep", "condition": deep}),))
    rules, problems = store.read()
    assert [r.id for r in rules] == ["b", "c", "d"] and len(problems) == 1 and "32 levels" in problems[0]
    store.add(rule("e"))  # the next write drops it
    assert [r.id for r in store.list()] == ["b", "c", "d", "e"] and store.read()[1] == []


def test_a_change_through_one_host_reaches_the_other(db: str, tmp_path: Path) -> None:
    for name in ("ha", "hb"):
        (tmp_path / name).mkdir()
    hosts = [Instance(tmp_path / name, f"{name}{os.getpid()}", SCANNER_DATABASE_URL=db, SCANNER_SYMBOLS="300",
                      SCANNER_SCAN_WORKERS="1", SCANNER_SCAN_INTERVAL_MS="200",
                      SCANNER_FEED_SPEED="30") for name in ("ha", "hb")]
    try:
        for h in hosts:
            h.start()
        for h in hosts:
            eventually(h.all_running, 90, 0.2, f"{h.name} up")
        a, b = (httpx.Client(base_url=f"http://127.0.0.1:{h.port}", timeout=10) for h in hosts)
        ids = [r["id"] for r in b.get("/api/rules").json()]
        assert len(ids) >= 15  # the default pack, installed once in the shared store
        gen_b = b.get("/api/status").json()["rules_generation"]
        assert a.post("/api/rules", json=rule("via-host-a", 0.0)).status_code == 201
        assert "via-host-a" in [r["id"] for r in b.get("/api/rules").json()]
        eventually(lambda: b.get("/api/status").json()["rules_generation"] > gen_b, 20, 0.2, "host B notified")
        m = eventually(lambda: (r := b.get("/api/rules/via-host-a/matches").json())["count"] > 0
                       and not r["workers_pending"] and r, 20, 0.2)  # every worker, not just the first
        assert m["workers_pending"] == []
        # bars of a symbol come from the database once the storage writer committed them. Wait for
        # the events (a minute closed, the writer committed every bar closed so far), not for a
        # minute of the clock to pass.
        hb = hosts[1]
        closed = eventually(lambda: child(hb.status(), "bars")["out"], 90, 0.2, "a minute closed on host B")
        eventually(lambda: child(hb.status(), "storage")["out"] >= closed, 90, 0.2, "host B's bars committed")
        sym = hb.symbol_with_a_closed_bar()
        got = b.get(f"/api/bars/{sym}").json()
        assert got["source"] == "postgres" and got["bars"] and all(x["high"] >= x["low"] for x in got["bars"])
    finally:
        for h in hosts:
            h.close()


