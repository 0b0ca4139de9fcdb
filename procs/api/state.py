"""Gateway state: attached shared memory, recent alerts, WebSocket clients."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from procs.rules_admin import rules_source
from procs.shared import Shared
from scanner.alert_json import AlertEncoder
from scanner.config import Settings
from scanner.metrics import CATALOGUE
from shm.partitioned import PartitionedMatrix
from shm.seqlock import SeqlockTimeout

_ENCODE = msgspec.json.Encoder().encode


@dataclass(eq=False)  # identity semantics: clients live in a set
class Client:
    """One WebSocket client: a bounded queue; when full the oldest frame is dropped and counted."""

    queue: asyncio.Queue[str]
    rules: set[str] = field(default_factory=set)
    symbols: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    dropped: int = 0
    reported_dropped: int = 0

    @property
    def filtered(self) -> bool:
        return bool(self.rules or self.symbols or self.tags)

    def wants(self, alert: dict[str, Any]) -> bool:
        if not self.filtered:
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
        self.encoder = AlertEncoder(self.keys, rules_source(settings))
        self.feed = shared.feed.consumer(feed_consumer)
        self.recent: deque[dict[str, Any]] = deque(maxlen=1000)
        self.clients: set[Client] = set()
        self.all_f8 = np.arange(CATALOGUE.n_f8)
        self.all_i8 = np.arange(CATALOGUE.n_i8)
        from procs.scan import partition

        n_workers = len(shared.alerts)
        self.partitions = [partition(len(self.keys), n_workers, i, settings.block_rows) for i in range(n_workers)]
        self.started = time.time()

    def poll_feed(self) -> int:
        """Move new alerts from the shared-memory feed to `recent` and to every interested
        client: one frame per client per poll ({"type": "alerts", "alerts": [...]}), encoded
        once for all clients without a filter."""
        self.encoder.watch(self.shared.control.rules_generation)
        recs = self.feed.poll(8192)
        if not len(recs):
            return 0
        return self.dispatch(self.encoder.to_dicts(recs))

    def dispatch(self, alerts: list[dict[str, Any]]) -> int:
        """Hand decoded alerts to `recent` and the clients (from the feed ring or Redis)."""
        self.recent.extend(alerts)
        shared_frame = None
        for c in self.clients:
            if c.filtered:
                mine = [a for a in alerts if c.wants(a)]
                if mine:
                    c.offer(_ENCODE({"type": "alerts", "alerts": mine}).decode())
            else:
                if shared_frame is None:
                    shared_frame = _ENCODE({"type": "alerts", "alerts": alerts}).decode()
                c.offer(shared_frame)
        return len(alerts)

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

    def top(self, metric: str, order: str, limit: int, columns: list[str], *, min_price: float | None = None,
            max_price: float | None = None, min_volume: float | None = None) -> list[dict[str, Any]]:
        """Top `limit` rows by a float metric (NaN excluded), filtered, with extra columns."""
        key = self.column(metric)
        ok = np.isfinite(key)
        if min_price is not None or max_price is not None:
            price = self.column("price")
            if min_price is not None:
                ok &= price >= min_price
            if max_price is not None:
                ok &= price <= max_price
        if min_volume is not None:
            ok &= self.column("day_volume") >= min_volume
        rows = np.flatnonzero(ok)
        vals = key[rows] if order == "asc" else -key[rows]
        if len(rows) > limit:
            part = np.argpartition(vals, limit - 1)[:limit]
            rows, vals = rows[part], vals[part]
        rows = rows[np.argsort(vals, kind="stable")]
        data = {c: self.column(c)[rows] for c in dict.fromkeys([metric, *columns])}
        out = []
        for j, r in enumerate(rows.tolist()):
            item: dict[str, Any] = {"symbol": self.keys[r]}
            for c, v in data.items():
                x = float(v[j])
                item[c] = x if np.isfinite(x) else None
            out.append(item)
        return out

    def matches(self, rule_index: int) -> tuple[list[str], list[int]]:
        """Symbols matching rule `rule_index` at each worker's last cycle, and the workers whose
        last cycle ran an older rule generation (their rows are left out)."""
        arrays = self.shared.state.get("matches")
        if arrays is None:
            return [], []
        m = PartitionedMatrix(arrays.arrays)
        gen = self.shared.control.rules_generation
        syms: list[str] = []
        stale: list[int] = []
        for w, (lo, hi) in enumerate(self.partitions):
            try:
                row, wgen = m.read(w, rule_index, lo, hi)
            except SeqlockTimeout:
                stale.append(w)
                continue
            if wgen != gen or row is None:
                stale.append(w)
                continue
            syms.extend(self.keys[lo + i] for i in np.flatnonzero(row).tolist())
        return syms, stale

    def column(self, name: str) -> np.ndarray:
        """A consistent copy of one float column over all rows."""
        t = self.shared.table
        out = np.empty((1, t.n_rows))
        t.snapshot(0, t.n_rows, np.array([CATALOGUE.f8(name)]), out)
        return out[0]
