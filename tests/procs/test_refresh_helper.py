"""The indicators process's refresh helper: the higher timeframes' refresh on a thread beside
the 1-minute one in a replay (`procs.indicators.RefreshHelper`)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from procs.indicators import RefreshHelper, _float_over


def test_both_parts_run_the_other_on_the_helper_thread_and_both_finish_before_run_returns() -> None:
    helper = RefreshHelper(os.getpid())
    try:
        seen: dict[str, str] = {}

        def theirs() -> None:
            time.sleep(0.05)  # still running when `mine` is done: run must wait for it
            seen["theirs"] = threading.current_thread().name

        helper.run(lambda: seen.__setitem__("mine", threading.current_thread().name), theirs)
        assert seen["mine"] == threading.current_thread().name
        if helper.pool is None:  # a one-core machine: in turn, on this thread
            assert seen["theirs"] == seen["mine"]
        else:
            assert seen["theirs"].startswith("tf-refresh")
    finally:
        helper.close()


def test_an_error_in_either_part_is_raised_after_both_have_finished() -> None:
    helper = RefreshHelper(os.getpid())
    try:
        finished: list[str] = []

        def slow_ok() -> None:
            time.sleep(0.05)
            finished.append("theirs")

        def fail() -> None:
            raise ValueError("mine broke")

        with pytest.raises(ValueError, match="mine broke"):
            helper.run(fail, slow_ok)
        assert finished == ["theirs"]

        def fail_theirs() -> None:
            raise RuntimeError("theirs broke")

        with pytest.raises(RuntimeError, match="theirs broke"):
            helper.run(lambda: finished.append("mine"), fail_theirs)
        assert finished == ["theirs", "mine"]
        helper.run(lambda: finished.append("again"), lambda: None)  # still usable after an error
        assert finished[-1] == "again"
    finally:
        helper.close()


def test_a_supervisor_that_is_gone_leaves_the_process_own_cores() -> None:
    gone = 2**22 + 12345  # above the default pid_max: no such process
    helper = RefreshHelper(gone)
    try:
        assert (helper.pool is None) == (len(os.sched_getaffinity(0)) == 1)
        helper.run(lambda: None, lambda: None)
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
