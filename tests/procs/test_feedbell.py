"""The feed bell (`procs.feedbell`): the publisher's wake-up of the gateways, on real sockets."""

from __future__ import annotations

import os
import select

import numpy as np

from procs.feedbell import Bell, BellRinger
from scanner.records import ALERT_DTYPE
from shm.ring import Ring


def _readable(bell: Bell, timeout: float) -> bool:
    return bool(select.select([bell.fileno()], [], [], timeout)[0])


def test_ringing_wakes_only_the_bells_rung() -> None:
    instance = f"bell{os.getpid()}"
    b0, b1 = Bell.bind(instance, 0), Bell.bind(instance, 1)
    assert b0 is not None and b1 is not None
    ringer = BellRinger(instance, 8)
    try:
        assert not _readable(b0, 0) and not _readable(b1, 0)
        ringer.ring([0])
        assert _readable(b0, 30)
        assert not _readable(b1, 0)
        ringer.ring([0, 1])
        assert _readable(b1, 30)
        assert b0.drain() == 2 and b1.drain() == 1
        assert b0.drain() == 0 and not _readable(b0, 0)
    finally:
        for b in (b0, b1):
            b.close()
        ringer.close()


def test_ringing_nobody_and_a_full_queue_never_raise_and_drain_is_bounded() -> None:
    instance = f"bell{os.getpid()}q"
    ringer = BellRinger(instance, 8)
    ringer.ring(range(8))  # nobody bound: nothing happens
    bell = Bell.bind(instance, 3)
    assert bell is not None
    try:
        for _ in range(10_000):  # far past the socket's queue: the rest are refused, silently
            ringer.ring([3])
        assert _readable(bell, 30)
        got = bell.drain(most=5)
        assert got == 5 and _readable(bell, 0)  # the rest is still there for the next call
        while bell.drain():
            pass
        assert not _readable(bell, 0)
    finally:
        bell.close()
        ringer.close()


def test_a_name_in_use_is_refused_and_free_again_when_closed() -> None:
    instance = f"bell{os.getpid()}n"
    first = Bell.bind(instance, 0)
    assert first is not None
    assert Bell.bind(instance, 0) is None  # the gateway then polls on a timer
    first.close()
    again = Bell.bind(instance, 0)
    assert again is not None
    again.close()


def test_a_ring_comes_after_the_records_it_announces() -> None:
    """What the gateway relies on: after a ring is read, a poll returns the records published
    before it, in a real ring segment (the publisher's order: publish, then ring)."""
    instance = f"bell{os.getpid()}r"
    ring = Ring.create(f"scanner.{instance}.feed.test", 1024, ALERT_DTYPE)
    bell = Bell.bind(instance, 0)
    assert bell is not None
    ringer = BellRinger(instance, 8)
    try:
        consumer = ring.consumer(0)
        producer = ring.producer()
        attached = np.flatnonzero(ring.consumers["attached"]).tolist()
        assert attached == [0]
        for k in range(1, 50):
            batch = np.zeros(k, ALERT_DTYPE)
            batch["seq"] = np.arange(k)
            producer.publish(batch)
            ringer.ring(attached)
            assert _readable(bell, 30)
            assert bell.drain() == 1
            assert len(consumer.poll()) == k
    finally:
        bell.close()
        ringer.close()
        ring.close()
        ring.seg.unlink()
