"""The instance's segments: what a child process finds when it attaches late."""

from __future__ import annotations

import os
import time

import numpy as np

from procs.shared import (
    ALERT_CONSUMER_PUBLISHER,
    BAR_CONSUMER_STORAGE,
    REPAIR_CONSUMER_BARS,
    TICK_CONSUMER_BARS,
    Shared,
)
from scanner.records import ALERT_DTYPE, BAR_DTYPE, TICK_DTYPE


def test_a_late_consumer_process_gets_what_was_published_before_it_attached() -> None:
    """A live feed may publish its first burst while bars still loads its kernels (a busy
    machine): bars, and the publisher for the scan workers' alerts, must still get all of it.
    Consumers that are not pre-attached keep the ring's rule (start at the head)."""
    sh = Shared.create(f"sh{os.getpid()}", keys=["AAA", "BBB"], n_workers=2, trading_day=20261130,
                       tick_capacity=1024, bar_capacity=1024, alert_capacity=1024, hist_depth=8,
                       block_shift=6, supervisor_pid=os.getpid(), created_ns=time.time_ns())
    try:
        ticks = np.zeros(300, TICK_DTYPE)
        ticks["ts_ns"] = np.arange(1, 301)
        sh.ticks.producer().publish(ticks)
        repaired = np.zeros(5, BAR_DTYPE)
        repaired["minute_ns"] = np.arange(5)
        sh.repair.producer().publish(repaired)
        alerts = np.zeros(7, ALERT_DTYPE)
        for ring in sh.alerts:
            ring.producer().publish(alerts)
        sh.bars.producer().publish(repaired)

        child = Shared.attach(sh.instance)  # what the bars and publisher processes do at their start
        try:
            np.testing.assert_array_equal(child.ticks.consumer(TICK_CONSUMER_BARS).poll()["ts_ns"], ticks["ts_ns"])
            assert len(child.repair.consumer(REPAIR_CONSUMER_BARS).poll()) == 5
            assert [len(r.consumer(ALERT_CONSUMER_PUBLISHER).poll()) for r in child.alerts] == [7, 7]
            assert len(child.bars.consumer(BAR_CONSUMER_STORAGE).poll()) == 0  # not pre-attached: the head
        finally:
            child.close()
    finally:
        sh.close()
        sh.unlink()
