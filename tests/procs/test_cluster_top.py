"""Cluster top lists: one selection, each host's published lists in real Redis, the merge with
stale hosts named (never silently missing)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import redis

from procs.cluster_top import KEY, TopPublisher, merge_docs
from procs.registry import parse_record
from scanner.toplists import merge, top_rows
from tests.support import RedisServer


def test_top_rows_skip_nan_keep_ties_in_row_order_and_sort_both_ways() -> None:
    v = np.array([3.0, np.nan, 5.0, 3.0, -1.0, 9.0])
    assert top_rows(v, None, "desc", 3).tolist() == [5, 2, 0]
    assert top_rows(v, None, "asc", 2).tolist() == [4, 0]
    assert top_rows(v, v > 0, "asc", 10).tolist() == [0, 3, 2, 5]
    assert top_rows(v, None, "desc", 0).tolist() == []
    with pytest.raises(ValueError, match="order"):
        top_rows(v, None, "up", 3)


def test_merge_equals_a_top_list_over_both_tables() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=300), rng.normal(size=200)
    keys = [f"A{i}" for i in range(300)] + [f"B{i}" for i in range(200)]
    whole = np.concatenate([a, b])

    def items(vals: np.ndarray, names: list[str]) -> list[dict]:
        return [{"symbol": names[r], "m": float(vals[r])} for r in top_rows(vals, None, "desc", 25)]

    merged = merge([items(a, keys[:300]), items(b, keys[300:])], "m", "desc", 25)
    assert [it["symbol"] for it in merged] == [keys[r] for r in top_rows(whole, None, "desc", 25)]


def test_published_lists_merge_and_stale_hosts_are_named(redis_server: RedisServer) -> None:
    r = redis.Redis.from_url(redis_server.url)
    names = {"h1": [f"X{i}" for i in range(50)], "h2": [f"Y{i}" for i in range(50)]}
    rng = np.random.default_rng(5)
    tables = {}
    for host, keys in names.items():
        pub = TopPublisher(r, host, keys, ["change_pct", "not_a_metric"], limit=10)
        snap = rng.normal(size=(len(pub.columns), 50))
        snap[pub.columns.index("change_pct"), 3] = np.nan
        pub.publish(snap)
        tables[host] = snap[pub.columns.index("change_pct")]
    r.set(KEY + "h3", json.dumps({"instance": "h3", "ts": time.time() - 60, "tops": {}}))
    hosts = [{"instance": h, "state": "ok"} for h in ("h1", "h2", "h3", "h4")] + [{"instance": "h5",
                                                                                    "state": "stopped"}]
    live = [h for h in hosts if h["state"] != "stopped"]  # what the gateway's ClusterView reads, synchronously
    docs = {h["instance"]: d for h in live if (d := parse_record(r.get(KEY + h["instance"]))) is not None}
    merged, stale = merge_docs(docs, live, "change_pct", "asc", 10)  # exact up to the published 10
    assert stale == ["h3", "h4"]  # an old list and no list at all
    whole = np.concatenate([tables["h1"], tables["h2"]])
    keys = names["h1"] + names["h2"]
    assert [it["symbol"] for it in merged] == [keys[i] for i in top_rows(whole, None, "asc", 10)]
    assert {"symbol", "host", "change_pct", "price"} <= set(merged[0])


def test_a_group_host_lists_only_the_rows_it_scans_now(redis_server: RedisServer) -> None:
    """In Kafka group mode a host holds the whole universe; rows the group moved away (or not yet
    rebuilt here) keep stale values and stay out of its lists."""
    from scanner.bar_kernels import ROW_AWAY, ROW_LIVE, ROW_REBUILDING

    r = redis.Redis.from_url(redis_server.url)
    keys = [f"Z{i}" for i in range(40)]
    state = np.full(40, ROW_LIVE, np.uint8)
    state[:10], state[10:15] = ROW_AWAY, ROW_REBUILDING
    pub = TopPublisher(r, "g1", keys, ["change_pct"], limit=10, rows_state=state)
    snap = np.zeros((len(pub.columns), 40))
    change = pub.columns.index("change_pct")
    snap[change] = np.arange(40.0)
    snap[change, :15] = 1000.0 + np.arange(15)  # the best values are on rows this host does not scan
    doc = pub.compute(snap)
    assert [it["symbol"] for it in doc["tops"]["change_pct"]["desc"]] == [keys[i] for i in range(39, 29, -1)]
    assert [it["symbol"] for it in doc["tops"]["change_pct"]["asc"]][0] == "Z15"
