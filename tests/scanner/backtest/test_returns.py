"""Forward returns, excursions and statistics on hand-made bars with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scanner.backtest.inputs import check_file, parse_rules_file
from scanner.backtest.report import PriceChart, render
from scanner.backtest.returns import DAY_BARS_DTYPE, DayBars, bucket_of, forward_returns
from scanner.backtest.stats import cumulative_by_day, rule_stats
from scanner.session import MINUTE_NS, NS, session_bounds_ns

DAY = 20240102
OPEN = session_bounds_ns(DAY)["open"]


def bars_of(rows: list[tuple[int, int, float, float, float]]) -> DayBars:
    """(sym, minutes after the open, high, low, close) -> DayBars."""
    b = np.zeros(len(rows), DAY_BARS_DTYPE)
    for i, (s, m, h, lo, c) in enumerate(rows):
        b[i] = (s, OPEN + m * MINUTE_NS, h, lo, c)
    return DayBars(DAY, b[::-1])  # any order in


def test_forward_returns_long_and_short() -> None:
    rows = [(0, m, 10 + m / 10 + 0.05, 10 + m / 10 - 0.05, 10 + m / 10) for m in range(0, 120)]
    rows += [(1, 0, 20.0, 20.0, 20.0)]  # symbol 1 trades once: its later prices are that close
    bars = bars_of(rows)
    t = OPEN + 30 * NS  # 09:30:30, inside minute 0
    out = forward_returns(bars, np.array([0, 0, 1]), np.array([t, t, t]), np.array([10.0, 10.0, 19.0]),
                          np.array([False, True, False]))
    # +1 min: the bar of 09:31 (minute 1) closes at 10.1; +5: minute 5 -> 10.5
    assert out["ret_1m"][0] == pytest.approx(0.01)
    assert out["ret_5m"][0] == pytest.approx(0.05)
    assert out["ret_60m"][0] == pytest.approx(0.6)
    assert out["ret_5m"][1] == pytest.approx(-0.05)  # short: inverted
    assert out["ret_30m"][2] == pytest.approx(20 / 19 - 1)
    # close: the last bar before 16:00 of symbol 0 is minute 119 (11:29), close 21.9
    assert out["ret_close"][0] == pytest.approx(21.9 / 10 - 1)
    # 30 min excursions from minute 1 to minute 30: high 13.05 -> +0.305, low 10.05 -> +0.005
    assert out["mfe_30m"][0] == pytest.approx(0.305) and out["mae_30m"][0] == pytest.approx(0.005)
    assert out["mfe_30m"][1] == pytest.approx(-0.005) and out["mae_30m"][1] == pytest.approx(-0.305)
    assert np.isnan(out["mfe_30m"][2])  # symbol 1 has no bar after the alert minute


def test_horizons_past_the_data_are_nan() -> None:
    bars = bars_of([(0, m, 10, 10, 10) for m in range(10)])
    t = OPEN + 2 * MINUTE_NS
    out = forward_returns(bars, np.array([0]), np.array([t]), np.array([10.0]), np.array([False]),
                          data_end_ns=t + 6 * MINUTE_NS)
    assert out["ret_5m"][0] == 0.0 and np.isnan(out["ret_15m"][0]) and np.isnan(out["ret_close"][0])
    assert np.isnan(out["mfe_30m"][0])


def test_buckets_and_stats() -> None:
    assert bucket_of(np.array([3 * 60, 4 * 60, 9 * 60 + 30, 11 * 60, 15 * 60 + 59, 16 * 60, 20 * 60])).tolist() == \
        [-1, 0, 1, 2, 3, 4, -1]
    cols = {"rule": np.array([0, 0, 0, 1]), "symbol": np.array([0, 1, 1, 0]), "bucket": np.array([1, 1, 2, 1]),
            "day": np.array([1, 1, 2, 2])}
    for h in ("1m", "5m", "15m", "30m", "60m", "close"):
        cols[f"ret_{h}"] = np.array([0.01, -0.02, np.nan, 0.03])
    cols["mfe_30m"] = cols["mae_30m"] = np.array([0.0, 0.0, 0.0, 0.0])
    st = rule_stats(cols, ["a", "b"])
    a = st["a"]["all"]
    assert (a["alerts"], a["symbols"]) == (3, 2)
    assert a["30m"] == {"n": 2, "hit_rate": 0.5, "mean": pytest.approx(-0.005), "median": pytest.approx(-0.005)}
    assert st["a"]["open"]["alerts"] == 2 and st["a"]["midday"]["30m"]["n"] == 0
    cum = cumulative_by_day(cols, 2, [1, 2])
    np.testing.assert_allclose(cum, [[-0.01, -0.01], [0.0, 0.03]])


def test_bad_rules_name_the_rule_and_field() -> None:
    with pytest.raises(ValueError, match=r"rule 'x' \(#2\): field 'cooldown_seconds'"):
        parse_rules_file(json.dumps([{"id": "ok", "metric": "price", "operator": ">", "value": 1},
                                     {"id": "x", "metric": "price", "operator": ">", "value": 1,
                                      "cooldown_seconds": -1}]), "r.json")
    with pytest.raises(ValueError, match=r"rule 'y' \(#1\): field 'side'"):
        parse_rules_file(json.dumps({"id": "y", "metric": "price", "operator": ">", "value": 1, "side": "up"}),
                         "r.json")
    with pytest.raises(ValueError, match="not JSON"):
        parse_rules_file("[", "r.json")


def test_damaged_files_are_told_apart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "20240102_trade.zip"
    bad.write_bytes(b"not a zip")
    assert "BadZipFile" in (check_file(bad) or "")
    good = tmp_path / "t.csv"
    good.write_text("symbol,ts,price,size\n")
    assert check_file(good) is None


def test_report_escapes_user_text() -> None:
    from scanner.rules.model import Rule

    rule = Rule.model_validate({"id": "r1", "name": "<script>alert(1)</script>", "metric": "price",
                                "operator": ">", "value": 1})
    cols = {"rule": np.array([0]), "symbol": np.array([0]), "bucket": np.array([1]), "day": np.array([DAY])}
    for h in ("1m", "5m", "15m", "30m", "60m", "close"):
        cols[f"ret_{h}"] = np.array([0.01])
    cols["mfe_30m"] = cols["mae_30m"] = np.array([0.01])
    st = rule_stats(cols, ["r1"])
    chart = PriceChart(0, "<b>X", DAY, 1, np.array([OPEN, OPEN + MINUTE_NS]), np.array([1.0, 2.0]), np.array([OPEN]))
    html = render({"note": "<i>"}, [{"id": rule.id, "name": rule.name, "side": rule.side}], st, cols, [DAY],
                  cumulative_by_day(cols, 1, [DAY]), [chart])
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;X" in html and "<i>" not in html
    assert html.count("<svg") == 4 and "src=" not in html
