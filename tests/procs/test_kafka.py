"""Kafka as the feed, against a real Kafka-protocol broker (Tansu): the bridge produces the
synthetic market, two hosts each consume the partitions of their half of the universe."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer

from procs.feed_bridge import BridgeStats, run_bridge
from procs.shared import Shared
from scanner.config import Settings
from scanner.metrics import CATALOGUE
from tests.procs.instance import Instance, child
from tests.support import TansuServer, eventually


def table_ticks(name: str) -> int:
    sh = Shared.attach(name)
    try:
        return int(np.asarray(sh.table.i8[CATALOGUE.i8("tick_count")]).sum())
    finally:
        sh.close()


@pytest.mark.slow
def test_two_hosts_share_the_topic_with_no_gap_and_no_duplicate_across_an_ingest_kill(
        tmp_path: Path, kafka_broker: TansuServer) -> None:
    topic = f"ticks{os.getpid()}"
    common = {"SCANNER_FEED": "kafka", "SCANNER_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
              "SCANNER_KAFKA_TICKS_TOPIC": topic, "SCANNER_KAFKA_PARTITIONS": "4", "SCANNER_SYMBOLS": "400",
              "SCANNER_SCAN_WORKERS": "1", "SCANNER_FEED_RATE": "4000"}
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    a = Instance(tmp_path / "a", f"ka{os.getpid()}", SCANNER_RANGE_START="0", SCANNER_RANGE_END="250",
                 SCANNER_KAFKA_ALERTS_TOPIC=f"alerts{os.getpid()}", **common)
    b = Instance(tmp_path / "b", f"kb{os.getpid()}", SCANNER_RANGE_START="250", SCANNER_RANGE_END="400", **common)
    settings = Settings(feed="kafka", kafka_bootstrap=kafka_broker.bootstrap, kafka_ticks_topic=topic,
                        kafka_partitions=4, symbols=400, feed_rate=4000.0)
    stats: list[BridgeStats] = []
    bridge = threading.Thread(target=lambda: stats.append(run_bridge(settings, lambda: True, seconds=8.0)))
    try:
        a.start()
        b.start()
        eventually(lambda: a.all_running() and b.all_running(), 120, 0.2, "both hosts up")
        bridge.start()
        eventually(lambda: table_ticks(a.name) > 0 and table_ticks(b.name) > 0, 60, 0.1, "ticks on both hosts")
        old = child(a.status(), "ingest")["pid"]
        os.kill(old, signal.SIGKILL)  # mid-stream: the restart resumes from the offsets in shared memory
        eventually(lambda: child(a.status(), "ingest")["pid"] != old, 30, 0.1, "ingest restarted")
        bridge.join(timeout=120)
        assert stats and stats[0].ticks > 1000
        total = stats[0].ticks
        eventually(lambda: table_ticks(a.name) + table_ticks(b.name) >= total, 60, 0.2, "every tick consumed")
        assert table_ticks(a.name) + table_ticks(b.name) == total  # none lost, none twice
        assert child(a.status(), "ingest")["restarts"] >= 1
        alerts = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "t",
                           "auto.offset.reset": "earliest"})
        alerts.subscribe([f"alerts{os.getpid()}"])
        try:
            msg = eventually(lambda: next((m for m in alerts.consume(100, 1.0) if m.error() is None), None), 60, 0,
                             "an alert on the Kafka alerts topic")
        finally:
            alerts.close()
        alert = json.loads(msg.value())
        assert {"rule", "symbol", "kind", "event_ts"} <= set(alert) and msg.key().decode() == alert["rule"]
    finally:
        if bridge.ident is not None:
            bridge.join(timeout=30)
        a.close()
        b.close()
