"""Pure parts of the live-feed plumbing: correction ticks, control frames."""

from __future__ import annotations

import numpy as np

from procs.feed_conn import control_messages
from procs.ingest_live import correction_ticks
from scanner.feeds.frames import CORRECTION_DTYPE
from scanner.records import TICK_CANCEL, TICK_NO_LAST


def test_correction_ticks() -> None:
    c = np.zeros(2, CORRECTION_DTYPE)
    c[0] = (3, 100, 10.0, 200.0, 10.5, 100.0, 0)  # correction
    c[1] = (4, 200, 20.0, 50.0, np.nan, 0.0, 0)  # cancel
    t = correction_ticks(c)
    assert t["sym"].tolist() == [3, 4, 3]
    assert t["flags"].tolist() == [TICK_CANCEL | TICK_NO_LAST] * 2 + [0]
    assert t["price"].tolist() == [10.0, 20.0, 10.5] and t["size"].tolist() == [200.0, 50.0, 100.0]
    assert t["ts_ns"].tolist() == [100, 200, 100]


def test_control_messages_never_raise() -> None:
    assert control_messages('[{"T":"success","msg":"connected"}]') == [{"T": "success", "msg": "connected"}]
    assert control_messages(b'{"ev":"status"}') == [{"ev": "status"}]
    assert control_messages("[1, 2") == [] and control_messages(b"\xff\xfe") == []
