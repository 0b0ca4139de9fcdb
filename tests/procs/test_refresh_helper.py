"""The indicators process's refresh helper: a minute close's and a refresh's parts shared by a
thread beside the process's own (`procs.indicators.RefreshHelper`)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from procs.indicators import RefreshHelper, _float_over


def test_a_supervisor_that_is_gone_leaves_the_process_own_cores() -> None:
    gone = 2**22 + 12345  # above the default pid_max: no such process
    helper = RefreshHelper(gone)
    try:
        assert (helper.pool is None) == (len(os.sched_getaffinity(0)) == 1)
        helper.share([lambda: None, lambda: None])
    finally:
        helper.close()


def test_cores_the_thread_may_not_use_leave_it_where_it_is(caplog: pytest.LogCaptureFixture) -> None:
    """A refused affinity (a cpuset changed since the supervisor's was read) must not break the
    pool: the helper runs where the process runs."""
    seen: list[set[int]] = []

    def on_thread() -> None:
        before = os.sched_getaffinity(0)
        _float_over({4095})  # no such core here
        seen.append(before)
        seen.append(os.sched_getaffinity(0))

    t = threading.Thread(target=on_thread)
    t.start()
    t.join()
    assert seen[0] == seen[1]
    assert "stays on this process's cores" in caplog.text


def test_shared_tasks_each_run_once_on_both_threads_and_errors_wait_for_the_other() -> None:
    helper = RefreshHelper(os.getpid())
    try:
        ran: list[tuple[int, str]] = []

        def task(i: int) -> None:
            time.sleep(0.02)  # long enough that the helper wakes and takes some
            ran.append((i, threading.current_thread().name))

        helper.share([lambda i=i: task(i) for i in range(6)])
        assert sorted(i for i, _ in ran) == list(range(6))
        threads = {name for _, name in ran}
        if helper.pool is None:
            assert threads == {threading.current_thread().name}
        else:
            assert threading.current_thread().name in threads and len(threads) == 2

        finished: list[int] = []

        def fail() -> None:
            raise ValueError("a task broke")

        def slow(i: int) -> None:
            time.sleep(0.05)
            finished.append(i)

        with pytest.raises(ValueError, match="a task broke"):
            helper.share([lambda: slow(0), fail, lambda: slow(1), lambda: slow(2)])
        assert 0 in finished  # the other thread's task had finished before the error was raised
        helper.share([])
    finally:
        helper.close()


def test_a_shared_minute_close_folds_what_the_serial_one_does() -> None:
    """`fold_closed` on the 16:00 close of 3,000 symbols (six tasks on two threads) leaves the
    same timeframe bars, rings and indicator values as folding everything in turn."""
    import numpy as np

    from procs.bench.bars import _table
    from procs.indicators import PARALLEL_FOLD_BARS, fold_closed, update_live
    from scanner.bars import BarAggregator, new_history
    from scanner.indicators.engine import INDICATOR_COLUMNS, IndicatorEngine
    from scanner.indicators.timeframes import COLUMNS as TF_COLUMNS
    from scanner.indicators.timeframes import TimeframeIndicators
    from scanner.records import TICK_DTYPE
    from scanner.session import MINUTE_NS, NS, session_bounds_ns
    from scanner.timeframes import TIMEFRAMES, TimeframeBars

    n = 3000
    assert n >= PARALLEL_FOLD_BARS
    rng = np.random.default_rng(5)
    close = session_bounds_ns(20260105)["close"]
    helper = RefreshHelper(os.getpid())
    runs = []
    try:
        for shared in (True, False, None):  # None: every minute's bars folded at the end, in one batch
            cols = _table(n)
            agg = BarAggregator(cols, *new_history(n, 64))
            eng, tfb, tfi = IndicatorEngine(n), TimeframeBars(n), TimeframeIndicators(n)
            got: list[list[np.ndarray]] = []
            backlog: list[np.ndarray] = []
            rng = np.random.default_rng(5)
            for m in range(75, 0, -1):  # 14:45 to 16:00: every timeframe closes on the last one
                t = np.zeros(2 * n, TICK_DTYPE)
                t["sym"] = np.tile(np.arange(n), 2)
                t["ts_ns"] = close - m * MINUTE_NS + np.repeat([5 * NS, 40 * NS], n)
                t["price"] = 10.0 + rng.normal(0, 0.2, 2 * n)
                t["size"] = 100.0 * rng.integers(1, 9, 2 * n)
                agg.on_ticks(t)
                closed = agg.close_due(close - (m - 1) * MINUTE_NS)
                if shared is None:
                    backlog.append(closed)
                    continue
                if shared:  # views, valid until the next fold: kept, so copied
                    parts = [p.copy() for p in fold_closed(helper, eng, tfb, tfi, closed)]
                else:
                    eng.on_bars_closed(closed)
                    parts = tfb.on_bars_closed(closed)
                    tfi.on_bars_closed(parts)
                got.append(parts)
            if shared is None:
                assert sum(len(b) for b in backlog) > tfb.max_fold_bars  # folded in chunks
                got.append(fold_closed(helper, eng, tfb, tfi, np.concatenate(backlog)))
            update_live(helper, eng, tfb, tfi, cols, close + 30 * NS)
            runs.append((got, tfb, cols))
    finally:
        helper.close()
    (a_bars, a_tfb, a_cols), (b_bars, b_tfb, b_cols), (c_bars, c_tfb, c_cols) = runs
    for j in range(len(TIMEFRAMES)):  # the one batch closes the same bars as the minutes did
        assert np.concatenate([p[j] for p in b_bars]).tobytes() == c_bars[0][j].tobytes()
        np.testing.assert_array_equal(c_tfb.hists[j], b_tfb.hists[j])
    for name in (*INDICATOR_COLUMNS, *TF_COLUMNS):
        np.testing.assert_array_equal(c_cols[name], b_cols[name], err_msg=name)
    assert [len(p) for p in a_bars[-1]] == [n] * len(TIMEFRAMES)
    for pa, pb in zip(a_bars, b_bars, strict=True):
        for x, y in zip(pa, pb, strict=True):
            assert x.tobytes() == y.tobytes()
    for j in range(len(TIMEFRAMES)):
        np.testing.assert_array_equal(a_tfb.hists[j], b_tfb.hists[j])
        np.testing.assert_array_equal(a_tfb.heads[j], b_tfb.heads[j])
    for name in (*INDICATOR_COLUMNS, *TF_COLUMNS):
        np.testing.assert_array_equal(a_cols[name], b_cols[name], err_msg=name)
    assert not np.isnan(a_cols["rsi_14_5m"]).all()
