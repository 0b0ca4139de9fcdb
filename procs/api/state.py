"""Gateway state: attached shared memory, recent alerts, WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from procs.shared import Shared
from scanner.alert_json import AlertEncoder
from scanner.config import Settings
from scanner.metrics import CATALOGUE


@dataclass
class Client:
    """One WebSocket client: a bounded queue; when full the oldest frame is dropped and counted."""

    queue: asyncio.Queue[str]
    rules: set[str] = field(default_factory=set)
    symbols: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    dropped: int = 0
    reported_dropped: int = 0

    def wants(self, alert: dict[str, Any]) -> bool:
        if not (self.rules or self.symbols or self.tags):
            return True
        return (alert["rule"] in self.rules or alert["symbol"] in self.symbols
                or bool(self.tags.intersection(alert.get("tags", ()))))

    def offer(self, frame: str) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(frame)


class GatewayState:
    def __init__(self, settings: Settings, shared: Shared, feed_consumer: int = 0) -> None:
        self.settings = settings
        self.shared = shared
        self.keys = shared.table.key_list()
        self.row_of = {k: i for i, k in enumerate(self.keys)}
        self.encoder = AlertEncoder(self.keys, settings.rules_file())
        self.feed = shared.feed.consumer(feed_consumer)
        self.recent: deque[dict[str, Any]] = deque(maxlen=1000)
        self.clients: set[Client] = set()
        self.all_f8 = np.arange(CATALOGUE.n_f8)
        self.all_i8 = np.arange(CATALOGUE.n_i8)
        self.started = time.time()

    def poll_feed(self) -> int:
        """Move new alerts from the shared-memory feed to recent + every interested client."""
        recs = self.feed.poll(8192)
        if not len(recs):
            return 0
        for alert in self.encoder.to_dicts(recs):
            self.recent.append(alert)
            frame = None
            for c in self.clients:
                if c.wants(alert):
                    frame = frame or json.dumps({"type": "alert", "alert": alert})
                    c.offer(frame)
        return len(recs)

    def symbol_snapshot(self, row: int) -> dict[str, Any]:
        t = self.shared.table
        f8 = np.empty((CATALOGUE.n_f8, 1))
        i8 = np.empty((CATALOGUE.n_i8, 1), np.int64)
        t.snapshot(row, row + 1, self.all_f8, f8, self.all_i8, i8)
        out: dict[str, Any] = {"symbol": self.keys[row]}
        for m in CATALOGUE.metrics:
            v = f8[m.index, 0] if m.dtype == "f8" else i8[m.index, 0]
            out[m.name] = None if m.dtype == "f8" and not np.isfinite(v) else v.item()
        return out

    def column(self, name: str) -> np.ndarray:
        """A consistent copy of one float column over all rows."""
        t = self.shared.table
        out = np.empty((1, t.n_rows))
        t.snapshot(0, t.n_rows, np.array([CATALOGUE.f8(name)]), out)
        return out[0]
