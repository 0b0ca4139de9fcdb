"""A backtest's collector: the replay's closed bars and alerts in, one trading day at a time,
per-alert forward returns out (`scanner.backtest`).

Memory stays bounded by one day of bars (kept as five columns per bar) plus the per-alert
results: a day's bars are dropped once its alerts are scored. A day is complete when a bar of a
later day has arrived: the replay closes every bar of a day (day roll) before any bar of the
next, and every alert of a day is in the alert rings before the next day's first tick is
published (scans on event time, `procs.eventtime`); the watcher polls the bar ring before the
alert rings, so the alerts taken with that later bar include all of the day's. At the end (or
on Ctrl-C) the remaining days are scored with the data replayed so far (later horizons NaN).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scanner.backtest.report import PriceChart
from scanner.backtest.returns import DAY_BARS_DTYPE, HORIZONS, DayBars, bucket_of, forward_returns
from scanner.records import ALERT_ENTER, rule_positions
from scanner.rules.model import Rule
from scanner.session import MINUTE_NS, minute_of_day, trading_days

RESULT_COLUMNS = ("day", "event_ns", "rule", "symbol", "price", "bucket",
                  *(f"ret_{h}" for h in HORIZONS), "mfe_30m", "mae_30m")


@dataclass
class Collector:
    """Scores alerts day by day; `columns()` gives every scored alert so far."""

    rules: list[Rule]
    symbols: list[str]
    charts_per_rule: int = 3
    days: list[int] = field(default_factory=list)
    charts: list[PriceChart] = field(default_factory=list)
    _bars: list[np.ndarray] = field(default_factory=list)
    _alerts: list[np.ndarray] = field(default_factory=list)
    _results: list[dict[str, np.ndarray]] = field(default_factory=list)
    _open_day: int | None = None  # the newest day a bar came from (not complete yet)

    def __post_init__(self) -> None:
        self.short = np.array([r.side == "short" for r in self.rules] + [False], bool)

    def add(self, bars: np.ndarray, alerts: np.ndarray) -> None:
        """New closed bars (BAR_DTYPE) and alerts (ALERT_DTYPE) from the replay; scores every
        day completed by them."""
        if len(bars):
            b = np.empty(len(bars), DAY_BARS_DTYPE)
            for k in DAY_BARS_DTYPE.names:
                b[k] = bars[k]
            self._bars.append(b)
        enters = alerts[alerts["kind"] == ALERT_ENTER] if len(alerts) else alerts
        if len(enters):
            self._alerts.append(enters.copy())
        if len(bars):
            newest = int(trading_days(np.array([int(bars["minute_ns"].max())]))[0])
            if self._open_day is not None and newest > self._open_day:
                self._score_days_before(newest)
            self._open_day = newest if self._open_day is None else max(self._open_day, newest)

    def finish(self, data_end_ns: int | None = None) -> None:
        """Score what is left (the last day, or a partial day after an interruption)."""
        self._score_days_before(None, data_end_ns)

    def _score_days_before(self, day: int | None, data_end_ns: int | None = None) -> None:
        bars = np.concatenate(self._bars) if self._bars else np.empty(0, DAY_BARS_DTYPE)
        alerts = np.concatenate(self._alerts) if self._alerts else None
        bar_day = trading_days(bars["minute_ns"]) if len(bars) else np.empty(0, np.int64)
        al_day = trading_days(alerts["event_ns"]) if alerts is not None else np.empty(0, np.int64)
        done = sorted({int(d) for d in np.concatenate((bar_day, al_day)).tolist() if day is None or d < day})
        for d in done:
            self._score_day(d, bars[bar_day == d], alerts[al_day == d] if alerts is not None else None,
                            data_end_ns)
        keep_b = np.isin(bar_day, done, invert=True)
        self._bars = [bars[keep_b]] if keep_b.any() else []
        if alerts is not None:
            keep_a = np.isin(al_day, done, invert=True)
            self._alerts = [alerts[keep_a]] if keep_a.any() else []

    def _score_day(self, day: int, bars: np.ndarray, alerts: np.ndarray | None, data_end_ns: int | None) -> None:
        if day not in self.days:
            self.days.append(day)
        if alerts is None or not len(alerts):
            return
        db = DayBars(day, bars)
        sym = alerts["sym"].astype(np.int64)
        rule = rule_positions([r.id for r in self.rules], alerts["rule"])
        ev = alerts["event_ns"].astype(np.int64)
        res = forward_returns(db, sym, ev, alerts["price"], self.short[np.minimum(rule, len(self.rules))],
                              data_end_ns)
        res.update(day=np.full(len(alerts), day, np.int64), event_ns=ev, rule=rule, symbol=sym,
                   price=alerts["price"].astype(np.float64), bucket=bucket_of(minute_of_day(ev)))
        self._results.append(res)
        self._keep_charts(day, bars, rule, sym, ev)

    def _keep_charts(self, day: int, bars: np.ndarray, rule: np.ndarray, sym: np.ndarray, ev: np.ndarray) -> None:
        """For each rule, the day's most-alerted symbols; the `charts_per_rule` best over all days
        are kept (a day's price path is ~1,000 points)."""
        for r in np.unique(rule).tolist():
            of = rule == r
            syms, counts = np.unique(sym[of], return_counts=True)
            for s, c in sorted(zip(syms.tolist(), counts.tolist(), strict=True), key=lambda x: -x[1])[
                    :self.charts_per_rule]:
                mine = [ch for ch in self.charts if ch.rule == r]
                if len(mine) >= self.charts_per_rule and min(ch.count for ch in mine) >= c:
                    continue
                b = bars[bars["sym"] == s]
                b = b[np.argsort(b["minute_ns"])]
                # the close of minute m is the last trade before m + 1 min: plot it there
                chart = PriceChart(r, self.symbols[s] if s < len(self.symbols) else f"#{s}", day, c,
                                   b["minute_ns"] + MINUTE_NS, b["close"].copy(), ev[of & (sym == s)].copy())
                self.charts.append(chart)
                if len(mine) >= self.charts_per_rule:
                    self.charts.remove(min(mine, key=lambda ch: ch.count))

    def columns(self) -> dict[str, np.ndarray]:
        """Every scored alert: RESULT_COLUMNS, in (day, event time) order."""
        if not self._results:
            return {k: np.empty(0, np.float64 if k.startswith(("ret_", "m", "price")) else np.int64)
                    for k in RESULT_COLUMNS}
        cols = {k: np.concatenate([r[k] for r in self._results]) for k in RESULT_COLUMNS}
        order = np.lexsort((cols["symbol"], cols["rule"], cols["event_ns"]))
        return {k: v[order] for k, v in cols.items()}
