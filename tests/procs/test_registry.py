"""The cluster's host registry against a real redis-server: claims, conflicts, states, and two
real supervisors sharing one Redis."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from procs.registry import INDEX, KEY, Registry, RegistryConflict, RegistryThread, base_record, ownership_text
from tests.procs.instance import Instance
from tests.support import RedisServer, eventually

UNIVERSE = [f"S{i:04d}" for i in range(100)]


@pytest.fixture
def reg(redis_server: RedisServer) -> Iterator[Registry]:
    r = redis.Redis.from_url(redis_server.url)
    r.flushdb()
    registry = Registry(redis_server.url, ttl_s=2.0)
    yield registry
    registry.close()
    r.flushdb()


def rec(instance: str, lo: int, hi: int, universe: list[str] = UNIVERSE, host: str = "h1") -> dict:
    return base_record(instance=instance, universe=universe, range_start=lo, range_end=hi,
                       url=f"http://{instance}:8700", host=host)


def test_claims_refuse_a_live_name_an_overlap_or_another_universe(reg: Registry) -> None:
    a = rec("a", 0, 50)
    reg.claim(a)
    reg.claim(rec("b", 50, 100))  # adjacent ranges are fine
    with pytest.raises(RegistryConflict, match="already registered"):
        reg.claim(rec("a", 60, 70, host="h2"))
    with pytest.raises(RegistryConflict, match=r"overlaps host 'a'.*0:50 \(S0000..S0049\)"):
        reg.claim(rec("c", 40, 60))
    with pytest.raises(RegistryConflict, match="another universe"):
        reg.claim(rec("d", 0, 10, universe=UNIVERSE[::-1]))
    assert [h["instance"] for h in reg.hosts()] == ["a", "b"]
    assert all(h["state"] == "ok" for h in reg.hosts())


def test_hosts_of_one_kafka_group_share_the_universe_and_show_what_they_own(reg: Registry) -> None:
    def member(name: str, group: str) -> dict:
        return base_record(instance=name, universe=UNIVERSE, range_start=0, range_end=100, url="", kafka_group=group)

    reg.claim(member("g1", "grp"))
    reg.claim(member("g2", "grp"))  # the same group: the rebalance splits the universe, not the ranges
    with pytest.raises(RegistryConflict, match="overlaps host 'g1'"):
        reg.claim(member("g3", "other"))
    with pytest.raises(RegistryConflict, match="overlaps host 'g1'"):
        reg.claim(rec("fixed", 0, 10))
    live = member("g4", "grp")
    live.update(partitions=[0, 1], owned=[[0, 50, "S0000", "S0049"]])
    assert ownership_text(live) == "group grp: partitions 0,1; rows 0:50 (S0000..S0049)"
    assert ownership_text(rec("fixed", 0, 10)) == ""


def test_a_crashed_predecessor_on_the_same_host_does_not_block_a_restart(reg: Registry) -> None:
    dead = rec("a", 0, 50)
    dead["pid"] = 2**22 + 12345  # no such process
    reg.claim(dead)
    reg.claim(rec("a", 0, 50))  # same host: the dead pid's record is taken over
    with pytest.raises(RegistryConflict):
        live_elsewhere = rec("a", 0, 50, host="h2")
        reg.claim(live_elsewhere)


def test_states_ok_stale_missing_stopped(reg: Registry, redis_server: RedisServer) -> None:
    a, b, c = rec("a", 0, 30), rec("b", 30, 60), rec("c", 60, 90)
    for r in (a, b, c):
        reg.claim(r)
    reg.withdraw(c)
    raw = redis.Redis.from_url(redis_server.url)
    stale = {**b, "updated": time.time() - 1.5}
    raw.set(KEY + "b", json.dumps(stale), px=2000)
    states = {h["instance"]: h["state"] for h in reg.hosts()}
    assert states == {"a": "ok", "b": "stale", "c": "stopped"}
    eventually(lambda: {h["instance"]: h["state"] for h in reg.hosts()}["a"] == "missing", 5, 0.1,
               "a's record to expire")
    raw.set(KEY + "junk", b"{not json", px=2000)
    raw.zadd(INDEX, {"junk": time.time()})
    assert {h["instance"] for h in reg.hosts()} >= {"a", "b", "c", "junk"}  # one bad record breaks nothing


def test_the_refresh_thread_keeps_the_record_alive_and_withdraws_on_stop(reg: Registry) -> None:
    a = rec("a", 0, 50)
    reg.claim(a)
    t = RegistryThread(reg, a, lambda: {"ticks_per_s": 123.0, "scan_p99_ms": 0.5})
    t.start()
    time.sleep(2.5)  # longer than the TTL: only the refreshes keep it alive
    (h,) = reg.hosts()
    assert h["state"] == "ok" and h["ticks_per_s"] == 123.0
    t.stop()
    assert reg.hosts()[0]["state"] == "stopped"


@pytest.mark.slow
def test_two_supervisors_share_the_registry(tmp_path: Path, redis_server: RedisServer) -> None:
    redis.Redis.from_url(redis_server.url).flushdb()
    for d in ("one", "two", "three"):
        (tmp_path / d).mkdir()
    common = {"SCANNER_REDIS_URL": redis_server.url, "SCANNER_SYMBOLS": "400", "SCANNER_REGISTRY_TTL_S": "3",
              "SCANNER_SCAN_WORKERS": "1"}
    one = Instance(tmp_path / "one", f"ra{os.getpid()}", SCANNER_RANGE_START="0", SCANNER_RANGE_END="200", **common)
    two = Instance(tmp_path / "two", f"rb{os.getpid()}", SCANNER_RANGE_START="200", SCANNER_RANGE_END="400",
                   **common)
    clash = Instance(tmp_path / "three", f"rc{os.getpid()}", SCANNER_RANGE_START="150", SCANNER_RANGE_END="250",
                     **common)
    reg = Registry(redis_server.url, ttl_s=3.0)
    try:
        one.start()
        two.start()
        eventually(lambda: one.all_running() and two.all_running(), 90, 0.2, "both hosts up")
        eventually(lambda: [h["state"] for h in reg.hosts()] == ["ok", "ok"], 10, 0.1, "both registered")
        hosts = reg.hosts()
        assert [(h["range_start"], h["range_end"]) for h in hosts] == [(0, 200), (200, 400)]
        listed = json.loads(one.cli("status", "--all", "--json").stdout.strip().splitlines()[-1])["hosts"]
        assert [h["instance"] for h in listed] == [one.name, two.name]
        clash.start()
        assert clash.proc is not None and clash.proc.wait(timeout=60) == 1
        assert "overlaps host" in clash.output()
        st = one.status()
        orphans = [p["pid"] for p in st["processes"] if p["name"] != "supervisor"]
        os.kill(st["supervisor_pid"], signal.SIGKILL)  # the host dies without a word
        eventually(lambda: {h["instance"]: h["state"] for h in reg.hosts()}[one.name] == "missing", 10, 0.2,
                   "the killed host marked missing")
        assert "MISSING" in two.cli("status", "--all").stdout
        for pid in orphans:  # children of a killed supervisor: not this test's subject
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        reg.close()
        for inst in (one, two, clash):
            inst.close()


def test_a_gateway_routes_a_group_hosts_symbols_by_what_it_owns_now(reg: Registry, redis_server: RedisServer) -> None:
    """Kafka group hosts list the whole universe; one long-lived cluster view maps each symbol to
    the host whose record owns its row now: a new member owns nothing before its first refresh,
    the view follows a rebalance, the most recently refreshed record wins a row two claim, a
    symbol no live record owns keeps its last owner (reported stale or missing, never silently
    absent), and a fixed-range host still maps by its list."""
    import asyncio

    import redis.asyncio as aioredis

    from procs.api.cluster import SYMBOLS_KEY, ClusterView, owned_ranges

    def member(name: str, owned: list[list] | None) -> dict:
        r = base_record(instance=name, universe=UNIVERSE, range_start=0, range_end=100, url="", kafka_group="grp")
        if owned is not None:
            r.update(partitions=[], owned=owned)
        return r

    plain = redis.Redis.from_url(redis_server.url)
    view = ClusterView("g1", ttl_s=2.0)

    async def refresh() -> ClusterView:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await view.refresh(client)
            return view
        finally:
            await client.aclose()

    def host(symbol: str) -> str | None:
        h = view.host_of(symbol)
        return h["instance"] if h else None

    g1 = member("g1", [[0, 40, "S0000", "S0039"], [60, 70, "S0060", "S0069"]])
    g2 = member("g2", [[40, 60, "S0040", "S0059"], [70, 100, "S0070", "S0099"]])
    g3 = member("g3", None)  # claimed, not yet refreshed with what the group gave it
    for r in (g1, g2, g3):
        reg.claim(r)
        plain.set(SYMBOLS_KEY + r["instance"], json.dumps(UNIVERSE))
    asyncio.run(refresh())
    assert host("S0005") == "g1" and host("S0065") == "g1"
    assert host("S0045") == "g2" and host("S0099") == "g2"
    # g2 dies: its record expires; before g1's record says it took the rows, they stay g2's
    plain.delete(KEY + "g2")
    asyncio.run(refresh())
    assert host("S0045") == "g2" and next(h for h in view.hosts if h["instance"] == "g2")["state"] == "missing"
    reg.refresh(g1, {"owned": [[0, 100, "S0000", "S0099"]]})
    asyncio.run(refresh())
    assert host("S0045") == "g1" and host("S0099") == "g1"
    # a rebalance gives 40:60 to g3; g1's record still claims it until its next refresh: the newer wins
    time.sleep(0.01)
    reg.refresh(g3, {"owned": [[40, 60, "S0040", "S0059"]]})
    asyncio.run(refresh())
    assert host("S0045") == "g3" and host("S0005") == "g1"
    reg.refresh(g1, {"owned": [[0, 40, "S0000", "S0039"]]})  # and 60:100 went to nobody yet
    asyncio.run(refresh())
    assert host("S0045") == "g3" and host("S0065") == "g1"  # no live record owns it: its last owner
    assert owned_ranges([[0, 5, "a", "b"], [5, 5], ["x", 9], "junk", [3]]) == [(0, 5)]
    assert owned_ranges(None) == []
