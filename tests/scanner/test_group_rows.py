"""Kafka group mode in the bar aggregator: rows that move to this host mid-day are rebuilt from a
replay of their day and end with the bars an uninterrupted run built, whatever the live watermark
did meanwhile."""

from __future__ import annotations

import numpy as np

from scanner.bar_kernels import ROW_AWAY, ROW_LIVE, ROW_REBUILDING
from scanner.bars import BarAggregator, new_columns, new_history
from scanner.group_rows import GroupRows, group_rows_state, live_ranges
from scanner.records import TICK_DTYPE, TICK_MARK_BEGIN, TICK_MARK_END, TICK_MARK_RELEASE, TICK_REBUILD
from scanner.session import MINUTE_NS, NS, session_bounds_ns

N, GRACE = 8, 2 * NS
OPEN = session_bounds_ns(20260105)["open"]


def market(minutes: int, seed: int = 7) -> np.ndarray:
    """Trades of N rows over `minutes` minutes after the open, in event-time order."""
    rng = np.random.default_rng(seed)
    n = minutes * 60 * 20
    t = np.zeros(n, TICK_DTYPE)
    t["ts_ns"] = OPEN + np.sort(rng.integers(0, minutes * MINUTE_NS, n))
    t["sym"] = rng.integers(0, N, n)
    t["price"] = 10 + np.round(rng.normal(0, 0.5, n).cumsum() / 50, 2) + t["sym"]
    t["size"] = rng.integers(1, 20, n) * 100
    return t


def aggregator(rows_state: np.ndarray | None = None) -> tuple[BarAggregator, np.ndarray, np.ndarray]:
    hist, head = new_history(N, 64)
    return BarAggregator(new_columns(N), hist, head, grace_ns=GRACE, rows_state=rows_state), hist, head


def marks(rows: np.ndarray, kind: int) -> np.ndarray:
    m = np.zeros(len(rows), TICK_DTYPE)
    m["sym"], m["flags"] = rows, kind
    return m


def live_run(agg: BarAggregator, feed, ticks: np.ndarray, batch: int = 500) -> None:  # type: ignore[no-untyped-def]
    """Batches through `feed`, each followed by a sweep at the live watermark (as procs.bars does)."""
    for i in range(0, len(ticks), batch):
        part = ticks[i:i + batch]
        feed(part)
        if len(part):
            agg.close_due(int(part["ts_ns"].max()) - GRACE)


def test_moved_rows_rebuild_to_the_bars_of_an_uninterrupted_run() -> None:
    ticks = market(12)
    ref, ref_hist, ref_head = aggregator()
    live_run(ref, ref.on_ticks, ticks)
    ref.close_all()

    st = group_rows_state(N)
    agg, hist, head = aggregator(st["rows_state"])
    group = GroupRows(agg, st["rebuild_meta"])
    mine, moved = np.arange(0, 5), np.arange(5, N)
    group.on_ticks(marks(mine, TICK_MARK_BEGIN))
    group.on_ticks(marks(mine, TICK_MARK_END))  # nothing to replay yet
    cut = OPEN + 7 * MINUTE_NS + 13 * NS  # the other host dies here; its rows move to us
    before = ticks[ticks["ts_ns"] < cut]
    live_run(agg, group.on_ticks, before[np.isin(before["sym"], mine)])
    assert (head[moved] == 0).all() and (st["rows_state"][moved] == ROW_AWAY).all()

    # the rebuild replays the moved rows' day from the topic until it has caught up (`caught`),
    # while the live rows go on and their watermark sweeps, minutes past every replayed bar
    caught = cut + 50 * NS
    during = ticks[(ticks["ts_ns"] >= cut) & (ticks["ts_ns"] < caught)]
    replay = ticks[(ticks["ts_ns"] < caught) & np.isin(ticks["sym"], moved)].copy()
    replay["flags"] |= TICK_REBUILD
    # two partitions replay at their own pace: row 5's whole day first, then rows 6 and 7 from the open
    replay = replay[np.argsort(replay["sym"] >= 6, kind="stable")]
    live_during = during[np.isin(during["sym"], mine)]
    stream = [marks(moved, TICK_MARK_BEGIN)]
    pieces, live_pieces = np.array_split(replay, 9), np.array_split(live_during, 9)
    for piece, live_piece in zip(pieces, live_pieces, strict=True):
        stream += [piece, live_piece]
    stream.append(marks(moved, TICK_MARK_END))
    stream.append(ticks[ticks["ts_ns"] >= caught])  # from here on every row is live
    whole = np.concatenate(stream)
    seen = False
    for i in range(0, len(whole), 700):  # marks land inside batches, never on their edges only
        part = whole[i:i + 700]
        group.on_ticks(part)
        seen |= bool((st["rows_state"][moved] == ROW_REBUILDING).all())
        live = part[(part["flags"] & TICK_REBUILD) == 0]
        live = live[live["price"] > 0]
        if len(live):
            agg.close_due(int(live["ts_ns"].max()) - GRACE)
    assert seen
    agg.close_all()

    assert (st["rows_state"] == ROW_LIVE).all() and live_ranges(st["rows_state"]) == [(0, N)]
    np.testing.assert_array_equal(head, ref_head)
    np.testing.assert_array_equal(hist, ref_hist)  # every closed 1-minute bar of every row
    assert agg.late_ticks == 0


def test_released_rows_freeze_and_a_later_begin_starts_them_over() -> None:
    ticks = market(4, seed=3)
    st = group_rows_state(N)
    agg, hist, head = aggregator(st["rows_state"])
    group = GroupRows(agg, st["rebuild_meta"])
    rows = np.arange(N)
    group.on_ticks(np.concatenate([marks(rows, TICK_MARK_BEGIN), marks(rows, TICK_MARK_END)]))
    first = ticks[ticks["ts_ns"] < OPEN + 2 * MINUTE_NS]
    live_run(agg, group.on_ticks, first)
    group.on_ticks(marks(np.arange(4), TICK_MARK_RELEASE))
    frozen = head[:4].copy()
    agg.close_due(OPEN + 10 * MINUTE_NS)  # the live watermark moves on: released rows stay as they were
    assert live_ranges(st["rows_state"]) == [(4, N)]
    np.testing.assert_array_equal(head[:4], frozen)
    group.on_ticks(marks(np.arange(2), TICK_MARK_BEGIN))
    assert (head[:2] == 0).all() and np.isnan(hist[:, :2]).all()
    assert list(st["rows_state"][:4]) == [ROW_REBUILDING, ROW_REBUILDING, ROW_AWAY, ROW_AWAY]


def test_an_end_mark_closes_the_rebuilt_rows_bars_the_live_watermark_has_passed() -> None:
    """A rebuilt row's last bar is still open when its END mark arrives; if the live watermark is
    past it, it closes with the END, in the same batch's bars, so a reader that sees the row live
    (`rows_published`, after the publish) finds it in the ring, before it closes any higher
    timeframe on that watermark."""
    st = group_rows_state(N)
    agg, _, _ = aggregator(st["rows_state"])
    group = GroupRows(agg, st["rebuild_meta"])
    live = market(70)
    rows = np.array([0])
    group.on_ticks(marks(np.arange(1, N), TICK_MARK_BEGIN))
    group.on_ticks(marks(np.arange(1, N), TICK_MARK_END))
    late = live[live["ts_ns"] >= OPEN + 60 * MINUTE_NS]
    late = late[late["sym"] != 0]
    live_run(agg, group.on_ticks, late)  # the other rows are live at 10:30+
    day = live[(live["sym"] == 0) & (live["ts_ns"] < OPEN + 3 * MINUTE_NS)].copy()
    day["flags"] |= TICK_REBUILD
    batch = np.concatenate([marks(rows, TICK_MARK_BEGIN), day, marks(rows, TICK_MARK_END)])  # END last
    closed = group.on_ticks(batch)
    mine = closed[closed["sym"] == 0]
    assert sorted(int(m) for m in mine["minute_ns"]) == [OPEN, OPEN + MINUTE_NS, OPEN + 2 * MINUTE_NS]
    assert st["rows_state"][0] == ROW_LIVE
