"""Ticks on Kafka: the wire format and the partition map shared by the feed bridge and the hosts.

Topic `ticks` (name configurable), P partitions. Every host of a cluster and the bridge slice the
same universe (the ordered symbol list), so a symbol's universe index names it everywhere.

* **Partitions by symbol range**: symbol i of a universe of n goes to partition `i * P // n`, so
  each partition holds a contiguous range of the universe and a host with rows [lo, hi) reads
  exactly the partitions that range touches (`partitions_for_range`); a partition shared with a
  neighbour costs reading its ticks too, dropped as "not ours" (not as bad ticks).
* **Messages keyed by symbol**: one message per symbol per bridge batch; the key is the symbol
  (so compaction, ordering per key and tooling see symbols), the value is that symbol's ticks in
  the batch as packed `TICK_DTYPE` records whose `sym` is the *universe* index, so a consumer
  turns a whole poll into one array with one `np.frombuffer`, with no per-tick decoding.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from scanner.records import TICK_DTYPE


def partition_of(index: np.ndarray | int, universe_size: int, partitions: int) -> np.ndarray | int:
    """Partition of universe index (or indices) `index`."""
    if universe_size <= 0 or partitions <= 0:
        raise ValueError(f"need positive sizes, was universe_size={universe_size} partitions={partitions}")
    return index * partitions // universe_size  # type: ignore[operator]


def partitions_for_range(lo: int, hi: int, universe_size: int, partitions: int) -> list[int]:
    """The partitions holding any symbol of universe rows [lo, hi)."""
    if not 0 <= lo < hi <= universe_size:
        raise ValueError(f"range {lo}:{hi} is outside the universe of {universe_size} symbols")
    first = int(partition_of(lo, universe_size, partitions))
    last = int(partition_of(hi - 1, universe_size, partitions))
    return list(range(first, last + 1))


def encode(ticks: np.ndarray, names: list[str], universe_size: int,
           partitions: int) -> Iterator[tuple[int, bytes, bytes]]:
    """(partition, key, value) per symbol present in `ticks` (TICK_DTYPE, `sym` = universe index),
    in symbol order, each symbol's ticks in feed order."""
    if len(ticks) == 0:
        return
    order = np.argsort(ticks["sym"], kind="stable")
    ordered = ticks[order]
    syms = ordered["sym"]
    cuts = np.flatnonzero(np.diff(syms)) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [len(ordered)]))
    parts = partition_of(syms[starts].astype(np.int64), universe_size, partitions)
    raw = ordered.tobytes()
    size = TICK_DTYPE.itemsize
    for s, e, p in zip(starts.tolist(), ends.tolist(), parts.tolist(), strict=True):
        yield p, names[int(syms[s])].encode(), raw[s * size:e * size]


def decode(values: list[bytes]) -> tuple[np.ndarray, int]:
    """The ticks of many message values as one TICK_DTYPE array (`sym` = universe index), and the
    number of values dropped as malformed (a length that is not a whole number of records)."""
    size = TICK_DTYPE.itemsize
    good = [v for v in values if v and len(v) % size == 0]
    bad = sum(1 for v in values if v and len(v) % size)
    if not good:
        return np.empty(0, TICK_DTYPE), bad
    return np.frombuffer(b"".join(good), TICK_DTYPE).copy(), bad
