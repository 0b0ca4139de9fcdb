"""Session metrics and volume metrics through `IndicatorEngine.update_live`, on hand-made values
and a real intraday volume profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scanner.feeds.lean import read_lean_minute
from scanner.indicators.engine import IndicatorEngine
from scanner.indicators.volume import volume_profile
from scanner.records import BAR_DTYPE
from scanner.session import MINUTE_NS, NS, minute_of_day, session_bounds_ns, trading_days
from tests.scanner.helpers import data_path, table_columns

B = session_bounds_ns(20131008)


def _cols(**values: list[float]) -> dict[str, np.ndarray]:
    n = len(next(iter(values.values())))
    c = table_columns(n)
    c["bar_start_ns"][:] = 0
    c["bar_volume"][:] = 0.0
    c["bars_closed"][:] = 0
    for k, v in values.items():
        c[k][:] = v
    return c


def test_price_metrics() -> None:
    c = _cols(price=[11.0, 9.0, np.nan], prev_close=[10.0, 10.0, 10.0], day_open=[10.5, 10.0, 10.0],
              day_high=[12.0, 10.0, 11.0], day_low=[10.0, 9.5, 9.0], day_volume=[1000.0, 0.0, 0.0])
    c["hod_ts_ns"][:] = [B["open"] + 5 * MINUTE_NS, B["open"], 0]
    IndicatorEngine(3).update_live(c, B["open"] + 65 * MINUTE_NS)
    np.testing.assert_allclose(c["change_pct"], [10.0, -10.0, np.nan])
    np.testing.assert_allclose(c["change_from_open_pct"], [100 * (11 / 10.5 - 1), -10.0, np.nan])
    np.testing.assert_allclose(c["gap_pct"], [5.0, 0.0, 0.0])
    np.testing.assert_allclose(c["dist_from_hod_pct"], [100 / 12, 10.0, np.nan])
    np.testing.assert_allclose(c["minutes_since_hod"], [60.0, 65.0, np.nan])
    np.testing.assert_allclose(c["range_pct"], [20.0, 100 * 0.5 / 9.5, 100 * 2 / 9])
    np.testing.assert_allclose(c["range_position"], [50.0, -100.0, np.nan])  # below the regular range
    assert c["minutes_since_open"].tolist() == [65.0] * 3


def test_minutes_since_open_is_negative_before_the_open() -> None:
    c = _cols(price=[1.0])
    IndicatorEngine(1).update_live(c, B["premarket"] + 30 * NS)
    assert c["minutes_since_open"][0] == pytest.approx(-329.5)
    assert np.isnan(c["relative_volume"][0])  # flat fallback: nothing expected before the open


def test_volume_windows() -> None:
    eng = IndicatorEngine(2)
    b = np.zeros(6, BAR_DTYPE)
    o = B["open"]
    b["sym"] = [0, 0, 0, 0, 0, 1]
    b["minute_ns"] = [o, o + 2 * MINUTE_NS, o + 3 * MINUTE_NS, o + 5 * MINUTE_NS, o + 6 * MINUTE_NS, o]
    b["close"] = b["high"] = b["low"] = 10.0
    b["volume"] = [100, 200, 300, 400, 500, 7]
    eng.on_bars_closed(b)
    c = _cols(bar_volume=[50.0, 0.0], day_volume=[1550.0, 7.0], avg_daily_volume=[39_000.0, np.nan])
    c["bar_start_ns"][:] = [o + 7 * MINUTE_NS, 0]
    c["bar_close"][:] = [10.0, np.nan]
    c["bars_closed"][:] = [5, 1]
    eng.update_live(c, o + 7 * MINUTE_NS + 10 * NS)
    assert c["volume_1m"].tolist() == [50.0, 0.0]
    assert c["volume_5m"].tolist() == [50.0 + 300 + 400 + 500, 0.0]  # minutes 3..7
    assert c["avg_volume_1m"].tolist() == [1500 / 5, 7.0]
    # flat fallback: 39,000 a day is 100 a minute; 7 min 10 s into the session
    assert c["relative_volume"][0] == pytest.approx(1550 / (100 * (7 + 1 / 6)))
    assert np.isnan(c["relative_volume"][1])


def test_relative_volume_from_a_real_intraday_profile() -> None:
    syms = ("aig", "bac", "ibm", "spy")
    past = np.concatenate([read_lean_minute(data_path("lean-us-equity", "minute", s, f"{d}_trade.zip"), r)
                           for r, s in enumerate(syms) for d in (20131004, 20131007)])
    prof = volume_profile(past["sym"], trading_days(past["minute_ns"]), minute_of_day(past["minute_ns"]),
                          past["volume"], len(syms))
    eng = IndicatorEngine(len(syms))
    eng.load_volume_profile(prof)
    now = session_bounds_ns(20131008)["open"] + 45 * MINUTE_NS + 15 * NS  # 10:15:15
    day_volume = np.array([1e6, 2e6, 3e5, 4e7])
    c = _cols(day_volume=day_volume.tolist())
    eng.update_live(c, now)
    # independent reference: average over the two days of the volume traded before 10:15,
    # plus a quarter of the 10:15 minute
    df = pd.DataFrame({"sym": past["sym"], "mod": minute_of_day(past["minute_ns"]), "v": past["volume"]})
    before = df[df["mod"] < 615].groupby("sym").v.sum() / 2
    during = df[df["mod"] == 615].groupby("sym").v.sum().reindex(range(4), fill_value=0) / 2
    want = day_volume / (before.to_numpy() + 0.25 * during.to_numpy())
    np.testing.assert_allclose(c["relative_volume"], want, rtol=1e-12)
    with pytest.raises(ValueError, match="'profile' must be"):
        eng.load_volume_profile(prof[:, :10])
