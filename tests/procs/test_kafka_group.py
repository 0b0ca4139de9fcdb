"""Kafka group mode against a real broker (Tansu): two hosts in one consumer group, the bridge
producing the synthetic market; `kill -9` of one host's supervisor moves its partitions to the
survivor through the group's rebalance, and the survivor rebuilds their day from the topic."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from procs.feed_bridge import BridgeStats, run_bridge
from procs.registry import Registry
from procs.shared import Shared
from scanner.bar_kernels import ROW_LIVE
from scanner.bars import BarAggregator, new_columns, new_history
from scanner.config import Settings
from scanner.feeds.kafka_wire import decode
from scanner.group_rows import live_ranges
from scanner.metrics import CATALOGUE, HIST
from scanner.records import BAR_DTYPE
from scanner.session import MINUTE_NS
from scanner.timeframes import TIMEFRAMES, TimeframeBars
from tests.procs.instance import Instance, child
from tests.support import RedisServer, TansuServer, eventually

N, PARTS, SESSION_MS, SPEED = 200, 4, 6000, 10.0
# bars close on each symbol's next minute; a long grace keeps a busy shared machine's uneven
# delivery across partitions from making ticks late (the comparison is then exact)
GRACE_MS = 600_000


def owned(name: str) -> np.ndarray:
    """The rows a host scans now (ROW_LIVE in its `rows_state`)."""
    sh = Shared.attach(name)
    try:
        return np.array(sh.state["bars"].arrays["rows_state"]) == ROW_LIVE
    finally:
        sh.close()


def closed_bars(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """A host's bar history (copy), heads, and its table's tick count."""
    sh = Shared.attach(name)
    try:
        return (np.array(sh.history.hist), np.array(sh.history.head),
                int(np.asarray(sh.table.i8[CATALOGUE.i8("tick_count")]).sum()))
    finally:
        sh.close()


def five_minute_bars(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A host's 5-minute ring `[slot, row, field]` (copy) and heads."""
    sh = Shared.attach(name)
    try:
        tfa = sh.timeframes.arrays  # type: ignore[union-attr]
        return np.array(tfa["ring_5m"]), np.array(tfa["head_5m"])
    finally:
        sh.close()


def uninterrupted(bootstrap: str, topic: str) -> tuple[np.ndarray, np.ndarray]:
    """Every closed 1-minute bar of the whole topic, aggregated in one uninterrupted run."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ref{os.getpid()}", "enable.auto.commit": False})
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTS)}
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTS)])
        values, left = [], {p: e for p, e in ends.items() if e > 0}
        while left:
            for m in eventually(lambda: c.consume(10_000, 1.0), 30, 0, "the topic's messages"):
                if m.error() is None:
                    values.append(m.value())
                    if m.offset() + 1 >= ends[m.partition()]:
                        left.pop(m.partition(), None)
    finally:
        c.close()
    ticks, bad = decode(values)
    assert bad == 0
    ticks = ticks[np.argsort(ticks["ts_ns"], kind="stable")]
    hist, head = new_history(N, 400)
    agg = BarAggregator(new_columns(N), hist, head, grace_ns=GRACE_MS * 1_000_000)
    agg.on_ticks(ticks)
    agg.close_all()
    return hist, head


@pytest.mark.slow
def test_a_dead_hosts_partitions_move_to_the_survivor_with_the_bars_of_an_uninterrupted_run(
        tmp_path: Path, kafka_broker: TansuServer, redis_server: RedisServer) -> None:
    redis.Redis.from_url(redis_server.url).flushdb()
    topic, group = f"gticks{os.getpid()}", f"g{os.getpid()}"
    common = {"SCANNER_FEED": "kafka", "SCANNER_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
              "SCANNER_KAFKA_TICKS_TOPIC": topic, "SCANNER_KAFKA_PARTITIONS": str(PARTS), "SCANNER_SYMBOLS": str(N),
              "SCANNER_KAFKA_GROUP": group, "SCANNER_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_MS),
              "SCANNER_REDIS_URL": redis_server.url, "SCANNER_REGISTRY_TTL_S": "3", "SCANNER_SCAN_WORKERS": "1",
              "SCANNER_FEED_RATE": "200", "SCANNER_FEED_SPEED": str(SPEED), "SCANNER_BAR_GRACE_MS": str(GRACE_MS),
              "SCANNER_HEARTBEAT_TIMEOUT_S": "10"}  # failover is tested here, not stall detection
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    a = Instance(tmp_path / "a", f"ga{os.getpid()}", **common)
    b = Instance(tmp_path / "b", f"gb{os.getpid()}", **common)
    settings = Settings(feed="kafka", kafka_bootstrap=kafka_broker.bootstrap, kafka_ticks_topic=topic,
                        kafka_partitions=PARTS, symbols=N, feed_rate=200.0, feed_speed=SPEED)
    stop = threading.Event()
    stats: list[BridgeStats] = []
    # the bridge first: its clock leads the hosts', so the hosts' watermarks follow the ticks
    bridge = threading.Thread(target=lambda: stats.append(run_bridge(settings, lambda: not stop.is_set())))
    reg = Registry(redis_server.url, ttl_s=3.0)
    try:
        bridge.start()
        a.start()
        b.start()
        eventually(lambda: a.all_running() and b.all_running(), 180, 0.2, "both hosts up")

        def split() -> tuple[np.ndarray, np.ndarray] | None:
            oa, ob = owned(a.name), owned(b.name)
            return (oa, ob) if oa.any() and ob.any() and not (oa & ob).any() and (oa | ob).all() else None

        try:
            oa, _ = eventually(split, 120, 0.2, "the group splits the universe between both hosts")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: A scans {live_ranges(owned(a.name).astype(np.uint8) ^ 1)}, "
                                 f"B scans {live_ranges(owned(b.name).astype(np.uint8) ^ 1)}") from None
        hosts = eventually(lambda: (h := {r["instance"]: r for r in reg.hosts()}) and all(
            h.get(x.name, {}).get("partitions") for x in (a, b)) and h, 30, 0.2, "both hosts' partitions registered")
        assert sorted(hosts[a.name]["partitions"] + hosts[b.name]["partitions"]) == list(range(PARTS))
        moved = np.flatnonzero(oa)
        eventually(lambda: (closed_bars(a.name)[1][moved] >= 2).all(), 120, 0.2, "closed bars on the host to die")

        os.kill(a.status()["supervisor_pid"], signal.SIGKILL)  # its children die with it (PDEATHSIG)
        # the rebalance moves A's partitions to B after A's session times out; B rebuilds their
        # day and scans every symbol again
        eventually(lambda: owned(b.name).all(), SESSION_MS / 1000 + 60, 0.1, "the survivor scans every symbol")
        scan0 = child(b.status(), "scan-0")
        scan1 = eventually(lambda: (s := child(b.status(), "scan-0"))["cycles"] >= scan0["cycles"] + 2 and s, 30,
                           0.1, "scan cycles after the handover")
        assert scan1["in"] - scan0["in"] >= N * (scan1["cycles"] - scan0["cycles"] - 1)  # every row, every cycle
        def b_owns_all() -> dict | None:
            r = {h["instance"]: h for h in reg.hosts()}[b.name]
            return r if [o[:2] for o in r.get("owned", [])] == [[0, N]] else None

        reg_b = eventually(b_owns_all, 60, 0.2, "the registry shows B owning all")
        assert reg_b["partitions"] == list(range(PARTS))
        assert "partitions 0,1,2,3; rows 0:200" in b.cli("status", "--all").stdout

        # live minutes on the survivor after the handover, then the end of the feed
        heads = closed_bars(b.name)[1][moved]
        eventually(lambda: (closed_bars(b.name)[1][moved] >= heads + 2).all(), 120, 0.2, "live bars of moved rows")
        stop.set()
        bridge.join(timeout=60)
        assert stats and stats[0].ticks > 10_000
        eventually(lambda: closed_bars(b.name)[2] == stats[0].ticks, 60, 0.2, "every tick in the survivor's table")

        want_hist, want_head = uninterrupted(kafka_broker.bootstrap, topic)
        hist, head, _ = closed_bars(b.name)
        # B's closed bars: all of an uninterrupted run's but each row's last (still live on B)
        assert ((head == want_head) | (head == want_head - 1)).all(), (head, want_head)
        depth = np.arange(hist.shape[2])
        closed = depth[None, :] < head[:, None]
        for f in range(hist.shape[0]):
            np.testing.assert_array_equal(np.where(closed, hist[f], 0), np.where(closed, want_hist[f], 0),
                                          err_msg=f"history field {f}")
        assert (head[moved] >= 4).all()
        # the 5-minute bars, moved rows included (their day rebuilt a batch at a time): each row's
        # closed ones equal those of an uninterrupted fold of the same 1-minute bars
        ring, ring_head = five_minute_bars(b.name)
        ref = TimeframeBars(N)
        k = want_hist.shape[2]
        order = [(r, j) for r in range(N) for j in range(int(want_head[r]))]
        bars = np.zeros(len(order), BAR_DTYPE)
        bars["sym"] = [r for r, _ in order]
        for f in ("open", "high", "low", "close", "volume", "vwap", "trades"):
            bars[f] = [want_hist[HIST[f], r, j % k] for r, j in order]
        bars["minute_ns"] = [int(want_hist[HIST["minute"], r, j % k]) * MINUTE_NS for r, j in order]
        ref.on_bars_closed(bars)
        five = TIMEFRAMES.index("5m")
        depth5 = ring.shape[0]
        assert (ring_head[moved] >= 1).all()
        for r in range(N):
            n = int(min(ring_head[r], ref.heads[five][r]))
            assert n >= int(ref.heads[five][r]) - 1, (r, int(ring_head[r]), int(ref.heads[five][r]))
            slots = np.arange(n) % depth5
            np.testing.assert_array_equal(ring[slots, r], ref.hists[five][slots, r], err_msg=f"row {r}")
    finally:
        stop.set()
        if bridge.ident is not None:
            bridge.join(timeout=60)
        reg.close()
        a.close()
        b.close()
