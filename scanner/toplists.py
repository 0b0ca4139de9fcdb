"""Top lists: the rows of the best `limit` values of a metric, and the merge of several hosts' lists.

One selection for every top list (the gateway's REST and WebSocket tops, and the per-host lists
a cluster publishes): NaN rows are out, ties keep row order, `asc` takes the smallest values.
A cluster's merged list is exact for the unfiltered top `limit` as long as each host published
at least `limit` rows; filters applied after the merge (price, volume) can only see the rows
the hosts published.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np


def top_rows(values: np.ndarray, ok: np.ndarray | None, order: str, limit: int) -> np.ndarray:
    """Rows of the `limit` largest (`desc`) or smallest (`asc`) finite values where `ok`, best first."""
    if order not in ("asc", "desc"):
        raise ValueError(f"'order' must be 'asc' or 'desc', was {order!r}")
    if limit <= 0:
        return np.empty(0, np.intp)
    keep = np.isfinite(values) if ok is None else ok & np.isfinite(values)
    rows = np.flatnonzero(keep)
    vals = values[rows] if order == "asc" else -values[rows]
    if len(rows) > limit:  # the values better than the limit-th, then its ties in row order
        kth = np.partition(vals, limit - 1)[limit - 1]
        better = np.flatnonzero(vals < kth)
        ties = np.flatnonzero(vals == kth)[: limit - len(better)]
        keep_at = np.concatenate([better, ties])
        rows, vals = rows[keep_at], vals[keep_at]
    return rows[np.argsort(vals, kind="stable")]


def merge(lists: Iterable[list[dict[str, Any]]], metric: str, order: str, limit: int) -> list[dict[str, Any]]:
    """One list from several hosts' lists of items (dicts with `symbol` and `metric`), best first;
    an item whose metric is missing or None is left out."""
    items = [it for lst in lists for it in lst if isinstance(it.get(metric), (int, float))]
    items.sort(key=lambda it: it[metric], reverse=order == "desc")
    return items[:limit]
