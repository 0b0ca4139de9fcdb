"""Statistics of alerts' forward returns per rule, overall and by time of day.

Input: the per-alert columns of a backtest (`rule` index, `symbol` row, `bucket` index into
`BUCKET_NAMES`, `day`, and the `ret_*`, `mfe_30m`, `mae_30m` columns of `returns.forward_returns`).
Per rule and bucket (`all` plus every time-of-day bucket): alerts, distinct symbols, and per
horizon the number of alerts with a return, hit rate (share > 0), mean and median; the mean
MFE / MAE. NaN (no data) becomes None in the JSON form.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from scanner.backtest.returns import BUCKET_NAMES, HORIZONS

GROUPS = ("all", *BUCKET_NAMES)


def _num(x: float) -> float | None:
    return None if x != x else float(x)


def summarize(cols: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
    """Statistics of the alerts selected by `mask`."""
    out: dict[str, Any] = {"alerts": int(mask.sum()), "symbols": int(len(np.unique(cols["symbol"][mask])))}
    for h in HORIZONS:
        r = cols[f"ret_{h}"][mask]
        r = r[~np.isnan(r)]
        out[h] = {"n": int(len(r)), "hit_rate": _num(float((r > 0).mean())) if len(r) else None,
                  "mean": _num(float(r.mean())) if len(r) else None,
                  "median": _num(float(np.median(r))) if len(r) else None}
    for k in ("mfe_30m", "mae_30m"):
        v = cols[k][mask]
        v = v[~np.isnan(v)]
        out[k] = _num(float(v.mean())) if len(v) else None
    return out


def rule_stats(cols: dict[str, np.ndarray], rule_ids: list[str]) -> dict[str, dict[str, Any]]:
    """rule id -> group (`all`, then each time-of-day bucket) -> `summarize` of its alerts."""
    out: dict[str, dict[str, Any]] = {}
    for i, rid in enumerate(rule_ids):
        of_rule = cols["rule"] == i
        groups = {"all": summarize(cols, of_rule)}
        for b, name in enumerate(BUCKET_NAMES):
            groups[name] = summarize(cols, of_rule & (cols["bucket"] == b))
        out[rid] = groups
    return out


def stats_rows(stats: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """The statistics as flat columns (one row per rule, group and horizon), for Parquet."""
    rows: dict[str, list[Any]] = {k: [] for k in ("rule", "group", "horizon", "alerts", "symbols", "n", "hit_rate",
                                                  "mean", "median", "mfe_30m", "mae_30m")}
    for rid, groups in stats.items():
        for g, s in groups.items():
            for h in HORIZONS:
                for k, v in (("rule", rid), ("group", g), ("horizon", h), ("alerts", s["alerts"]),
                             ("symbols", s["symbols"]), ("n", s[h]["n"]), ("hit_rate", s[h]["hit_rate"]),
                             ("mean", s[h]["mean"]), ("median", s[h]["median"]), ("mfe_30m", s["mfe_30m"]),
                             ("mae_30m", s["mae_30m"])):
                    rows[k].append(v)
    return rows


def cumulative_by_day(cols: dict[str, np.ndarray], n_rules: int, days: list[int],
                      horizon: str = "30m") -> np.ndarray:
    """float (n_rules, len(days)): running sum over the days of each rule's per-alert returns at
    `horizon` (an equal stake on every alert; NaN returns count 0)."""
    out = np.zeros((n_rules, len(days)))
    if not len(days):
        return out
    pos = np.searchsorted(np.asarray(days), cols["day"])
    r = np.nan_to_num(cols[f"ret_{horizon}"], nan=0.0)
    np.add.at(out, (cols["rule"].astype(np.int64), pos), r)
    return np.cumsum(out, axis=1)
