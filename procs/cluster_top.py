"""Each host's top lists for the cluster: once a second the publisher writes, per metric of
`cluster_top_metrics` and per order, its `cluster_top_n` best rows (with the columns the
dashboard shows) to Redis as `scanner:top:<instance>` (JSON, expiring after a few seconds), and
any gateway merges every host's lists (`merge_docs`, `scanner.toplists.merge`, over what
`procs.api.cluster.ClusterView` reads), marking the hosts whose list is missing or old as stale
instead of silently leaving their symbols out."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from scanner.bar_kernels import ROW_LIVE
from scanner.metrics import CATALOGUE
from scanner.toplists import merge, top_rows

KEY = "scanner:top:"
INTERVAL_S = 1.0
SHOWN = ("price", "change_pct", "day_volume", "relative_volume", "gap_pct", "rsi_14", "vwap")


class TopPublisher:
    """Computes this host's lists from a table snapshot and writes them (no I/O in `compute`)."""

    def __init__(self, client: Any, instance: str, keys: list[str], metrics: list[str], limit: int,
                 rows_state: np.ndarray | None = None) -> None:
        """`rows_state`: in Kafka group mode, the bar process's `rows_state` (shared memory): only
        the rows this host scans now (ROW_LIVE) enter its lists; a row the group moved away
        keeps the values it had, which are not this host's to publish."""
        self.client, self.instance, self.keys, self.limit = client, instance, keys, limit
        self.rows_state = rows_state
        self.metrics = [m for m in metrics if m in CATALOGUE and CATALOGUE[m].dtype == "f8"]
        self.columns = list(dict.fromkeys([*self.metrics, *(c for c in SHOWN if c in CATALOGUE)]))
        self.cols = np.array([CATALOGUE.f8(c) for c in self.columns])
        self.next_at = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def compute(self, snap: np.ndarray) -> dict[str, Any]:
        """`snap`: the table's `self.cols` columns (rows x all symbols), as `ColumnTable.snapshot` fills."""
        data = dict(zip(self.columns, snap, strict=True))
        ok = self.rows_state == ROW_LIVE if self.rows_state is not None else None
        tops: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for m in self.metrics:
            tops[m] = {}
            for order in ("desc", "asc"):
                rows = top_rows(data[m], ok, order, self.limit)
                tops[m][order] = [{"symbol": self.keys[r], "host": self.instance,
                                   **{c: _num(data[c][r]) for c in self.columns if c in SHOWN or c == m}}
                                  for r in rows.tolist()]
        return {"instance": self.instance, "ts": time.time(), "tops": tops}

    def publish(self, snap: np.ndarray) -> None:
        self.next_at = time.monotonic() + INTERVAL_S
        self.client.set(KEY + self.instance, json.dumps(self.compute(snap)), px=int(5 * INTERVAL_S * 1000))


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def merge_docs(docs: dict[str, dict[str, Any]], hosts: list[dict[str, Any]], metric: str, order: str, limit: int,
               max_age_s: float = 3.0) -> tuple[list[dict[str, Any]], list[str]]:
    """The merged list over `hosts` from their published documents, and the hosts left out (no
    list, an old list, or a list without this metric): their symbols are stale, not absent."""
    lists, stale = [], []
    now = time.time()
    for name in (h["instance"] for h in hosts):
        doc = docs.get(name)
        try:
            lst = doc["tops"][metric][order] if doc and now - float(doc["ts"]) <= max_age_s else None
        except (KeyError, TypeError, ValueError):
            lst = None
        if isinstance(lst, list):
            lists.append([it for it in lst if isinstance(it, dict)])
        else:
            stale.append(name)
    return merge(lists, metric, order, limit), stale
