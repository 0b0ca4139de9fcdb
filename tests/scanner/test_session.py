"""New York exchange time: offsets, session boundaries, vectorised minute-of-day and days."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from scanner.session import (
    HOUR_NS,
    MINUTE_NS,
    NS,
    minute_of_day,
    next_day,
    session_bounds_ns,
    session_of,
    session_open_ns,
    trading_day,
    trading_days,
    utc_offset_ns,
)

NY = ZoneInfo("America/New_York")


def _ns(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, s, tzinfo=NY).timestamp()) * NS


def test_offsets_summer_and_winter() -> None:
    assert utc_offset_ns(20131008) == -4 * HOUR_NS
    assert utc_offset_ns(20240110) == -5 * HOUR_NS
    with pytest.raises(ValueError, match="yyyymmdd"):
        utc_offset_ns(2013108)


def test_session_bounds_match_zoneinfo() -> None:
    for day in (20131008, 20240110, 20240311):  # EDT, EST, the Monday after the March switch
        y, m, d = day // 10000, day // 100 % 100, day % 100
        b = session_bounds_ns(day)
        assert b["premarket"] == _ns(y, m, d, 4, 0)
        assert b["open"] == _ns(y, m, d, 9, 30)
        assert b["close"] == _ns(y, m, d, 16, 0)
        assert b["after_close"] == _ns(y, m, d, 20, 0)
        assert b["day_end"] - b["day_start"] == 24 * HOUR_NS


def test_minute_of_day_vectorised_across_dst_switch() -> None:
    # 2024-03-10 02:00 EST -> 03:00 EDT: the UTC offset changes inside the array
    ts = np.array([_ns(2024, 3, 9, 9, 30), _ns(2024, 3, 10, 1, 59), _ns(2024, 3, 10, 3, 0),
                   _ns(2024, 3, 11, 15, 59, 59), _ns(2024, 11, 3, 23, 0)])
    assert minute_of_day(ts).tolist() == [570, 119, 180, 959, 1380]
    assert trading_days(ts).tolist() == [20240309, 20240310, 20240310, 20240311, 20241103]
    assert [trading_day(int(t)) for t in ts] == trading_days(ts).tolist()


def test_trading_day_near_midnight_utc() -> None:
    # 23:58 UTC on 2024-07-01 is 19:58 in New York; 00:01 UTC is still July 1st there
    assert trading_day(1719878281 * NS) == 20240701
    assert trading_day(1719878281 * NS + 3 * 60 * NS) == 20240701
    assert next_day(20240229) == 20240301 and next_day(20231231) == 20240101


def test_session_codes() -> None:
    b = session_bounds_ns(20131008)
    ts = np.array([b["day_start"], b["premarket"], b["open"] - 1, b["open"], b["close"] - MINUTE_NS,
                   b["close"], b["after_close"] - 1, b["after_close"]])
    assert session_of(ts).tolist() == [0, 1, 1, 2, 2, 3, 3, 0]


def test_latest_weekday() -> None:
    from scanner.session import latest_weekday

    assert latest_weekday(20261127) == 20261127  # a Friday is itself
    assert latest_weekday(20261128) == 20261127  # Saturday -> Friday
    assert latest_weekday(20261129) == 20261127  # Sunday -> Friday
    assert latest_weekday(20261130) == 20261130  # Monday


@pytest.mark.parametrize("first, last", [
    ((2024, 3, 10, 1, 0), (2024, 3, 10, 5, 0)),  # an hour apart in offsets: the March switch inside
    ((2024, 3, 4, 9, 30), (2024, 3, 10, 12, 0)),  # under a week, the switch near the end
    ((2024, 3, 11, 9, 30), (2024, 3, 12, 16, 0)),  # under a week, one offset: the quick path
    ((2013, 11, 1, 12, 0), (2014, 3, 20, 12, 0)),  # the same offset at both ends, two switches between
])
def test_minute_of_day_of_a_spread_batch_matches_zoneinfo(first: tuple, last: tuple) -> None:
    """Batches whose ends are near each other skip the per-hour sort (`_offsets_by_hour`): every
    stamp still gets its own offset, across switches inside the batch too."""
    a, b = _ns(*first), _ns(*last)
    ts = np.sort(np.random.default_rng(5).integers(a, b + 1, 5000))
    ts[0], ts[-1] = a, b
    want = [(lambda d: d.hour * 60 + d.minute)(datetime.fromtimestamp(int(t) // NS, NY)) for t in ts.tolist()]
    assert minute_of_day(ts).tolist() == want


@pytest.mark.parametrize("first, last", [
    ((2024, 3, 11, 4, 0), (2024, 3, 12, 19, 59)),  # one offset: the numba pass
    ((2024, 3, 8, 9, 30), (2024, 3, 11, 16, 0)),  # the March switch inside: numpy over zoneinfo offsets
    ((2013, 11, 1, 12, 0), (2014, 3, 20, 12, 0)),  # the same offset at both ends, two switches between
])
def test_session_open_of_a_batch_matches_zoneinfo(first: tuple, last: tuple) -> None:
    """`session_open_ns`: 09:30 New York of each stamp's local day (stamps of the extended session,
    04:00 on); with `regular_only`, -1 outside 09:30-16:00 (minute starts on both edges
    included), whichever path the batch takes."""
    a, b = _ns(*first), _ns(*last)
    ts = np.sort(np.random.default_rng(6).integers(a // MINUTE_NS, b // MINUTE_NS + 1, 4000)) * MINUTE_NS
    ts = ts[minute_of_day(ts) >= 4 * 60]  # from 04:00 local (a switch day's 09:30 has another offset before 02:00)
    days = sorted({datetime.fromtimestamp(int(t) // NS, NY).date() for t in ts.tolist()})
    edges = [_ns(d.year, d.month, d.day, h, m) for d in days for h, m in ((9, 29), (9, 30), (15, 59), (16, 0))]
    ts = np.concatenate([ts, np.array(edges, np.int64)])
    opens, regular = [], []
    for t in ts.tolist():
        d = datetime.fromtimestamp(t // NS, NY)
        o = _ns(d.year, d.month, d.day, 9, 30)
        opens.append(o)
        regular.append(o if o <= t < _ns(d.year, d.month, d.day, 16, 0) else -1)
    assert session_open_ns(ts).tolist() == opens
    assert session_open_ns(ts, regular_only=True).tolist() == regular
    assert session_open_ns(ts[:1]).tolist() == opens[:1]
    assert session_open_ns(np.empty(0, np.int64)).tolist() == []
