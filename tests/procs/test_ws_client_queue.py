"""A slow WebSocket client's bounded queue: the oldest frames go, the count is kept for the
client, and filters decide which alerts a client gets."""

from __future__ import annotations

import asyncio

from procs.api.state import Client


def test_full_queue_drops_oldest_and_counts() -> None:
    c = Client(asyncio.Queue(3))
    for i in range(5):
        c.offer(f"frame-{i}")
    assert c.dropped == 2
    assert [c.queue.get_nowait() for _ in range(3)] == ["frame-2", "frame-3", "frame-4"]


def test_filters() -> None:
    alert = {"rule": "gap-up", "symbol": "AAPL", "tags": ["gap", "momentum"]}
    assert Client(asyncio.Queue(1)).wants(alert)  # no filter: everything
    assert Client(asyncio.Queue(1), rules={"gap-up"}).wants(alert)
    assert Client(asyncio.Queue(1), symbols={"AAPL"}).wants(alert)
    assert Client(asyncio.Queue(1), tags={"momentum"}).wants(alert)
    assert not Client(asyncio.Queue(1), rules={"other"}, symbols={"MSFT"}, tags={"x"}).wants(alert)
