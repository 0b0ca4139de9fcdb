"""Kafka group mode in the bar aggregator: tick batches carrying ownership marks, applied in order.

A host of a consumer group holds the whole universe but builds bars only for the rows of the
partitions the group assigned it (`procs.ingest_kafka`). Ingest tells the bars process what moved
*in the tick ring itself*, so a change lands exactly between the ticks it separates:

* BEGIN marks (one per row of a newly assigned partition): empty the row (`BarAggregator.
  reset_rows`); the row's day follows as TICK_REBUILD ticks, replayed from the topic and
  aggregated without a watermark (`on_rebuild_ticks`): the live one is past all of them.
* END marks (the partition's replay reached the offset where the assignment found its end): the
  row joins the live clock, and the scan workers scan it from then on.
* RELEASE marks (the partition was revoked or lost): the row freezes as it is (ROW_AWAY).

Marks are rare (one run per partition per rebalance), so a batch is cut at them with a loop over
runs; each piece between marks goes to the kernels whole. Within a piece a row has either
rebuild or live ticks, never both (its END mark separates them), so the two kinds go as two
calls without changing any row's order.
"""

from __future__ import annotations

import numpy as np

from scanner.bar_kernels import META_LEN, ROW_AWAY, ROW_LIVE
from scanner.bars import BarAggregator
from scanner.records import BAR_DTYPE, TICK_MARK_BEGIN, TICK_MARK_END, TICK_MARKS, TICK_REBUILD


def group_rows_state(n_rows: int) -> dict[str, np.ndarray]:
    """The `state.bars` arrays group mode adds: `rows_state` (every row ROW_AWAY until the group
    assigns it), the rebuilds' `rebuild_meta`, and `rows_published`: `rows_state` as of the last
    closed bars the bar process published (it copies it after each publish). A mark changes
    `rows_state` before the bars of its batch are in the ring, so a reader that must see a row's
    bars before its new state reads this copy first, then the ring (the indicators' watermark
    closes of higher timeframes, `TimeframeBars.close_due`)."""
    return {"rows_state": np.full(n_rows, ROW_AWAY, np.uint8), "rebuild_meta": np.zeros(META_LEN, np.int64),
            "rows_published": np.full(n_rows, ROW_AWAY, np.uint8)}


def live_ranges(rows_state: np.ndarray) -> list[tuple[int, int]]:
    """The [lo, hi) row ranges that are ROW_LIVE (what a group host scans), in order."""
    live = np.concatenate(([False], rows_state == ROW_LIVE, [False]))
    edges = np.flatnonzero(np.diff(live.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


class GroupRows:
    """Feeds ring batches with marks to a `BarAggregator` whose `rows_state` says who owns what;
    `rebuild_meta` counts the rebuilds' ticks (META_LEN int64, in shared memory)."""

    def __init__(self, agg: BarAggregator, rebuild_meta: np.ndarray) -> None:
        self.agg, self.rebuild_meta = agg, rebuild_meta

    def on_ticks(self, batch: np.ndarray) -> np.ndarray:
        """Apply a tick-ring batch (ticks, rebuild ticks, marks) in ring order; returns closed bars."""
        flags = batch["flags"]
        marks = np.flatnonzero(flags & TICK_MARKS)
        if len(marks) == 0:
            return self._ticks(batch)
        kinds = flags[marks] & TICK_MARKS
        cuts = np.flatnonzero((np.diff(marks) != 1) | (np.diff(kinds) != 0)) + 1
        firsts = np.concatenate(([0], cuts))
        lasts = np.concatenate((cuts, [len(marks)])) - 1
        out, pos = [], 0
        for i, j in zip(firsts.tolist(), lasts.tolist(), strict=True):  # one run per partition moved
            a, b = int(marks[i]), int(marks[j]) + 1
            out.append(self._ticks(batch[pos:a]))
            out.append(self._mark(int(kinds[i]), batch["sym"][a:b].astype(np.intp)))
            pos = b
        out.append(self._ticks(batch[pos:]))
        return _concat(out)

    def _ticks(self, part: np.ndarray) -> np.ndarray:
        if len(part) == 0:
            return np.empty(0, BAR_DTYPE)
        rebuild = (part["flags"] & TICK_REBUILD) != 0
        if not rebuild.any():
            return self.agg.on_ticks(part)
        return _concat([self.agg.on_rebuild_ticks(part[rebuild], self.rebuild_meta),
                        self.agg.on_ticks(part[~rebuild])])

    def _mark(self, kind: int, rows: np.ndarray) -> np.ndarray:
        """Apply a run of marks; returns the bars it closed: at END, the rebuilt rows' last bars
        that the live watermark has passed already. They close here, with the END, so that a
        reader who sees the rows live (`rows_published`) finds them in the ring too."""
        if kind == TICK_MARK_BEGIN:
            self.agg.reset_rows(rows, self.rebuild_meta)
        elif kind == TICK_MARK_END:
            self.agg.set_live(rows)
            if self.agg.day:
                return self.agg.close_due(self.agg.watermark_ns)
        else:
            self.agg.rows_state[rows] = ROW_AWAY
        return np.empty(0, BAR_DTYPE)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.empty(0, BAR_DTYPE)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
