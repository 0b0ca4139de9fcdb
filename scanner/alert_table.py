"""Alert records (ALERT_DTYPE) as a flat table: one row per alert, for CSV and Parquet files.

Columns: `event_ns` (the scan boundary, epoch ns), `event_time` (New York, ISO), `symbol`,
`rule` (id), `kind` (`enter` / `exit`), `price` (last trade at the scan), `seq`, `worker`,
`generation`, `metrics` (the names of the values, `|`-separated, the rule's own order) and
`value_1` .. `value_6` (NaN pads). The wall clock of the scan (`scan_ns`) is left out: it is
the one field that differs between two runs of the same replay. Rows come in (event time, rule, symbol) order.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from scanner.records import ALERT_ENTER, ALERT_VALUES, rule_positions
from scanner.rules.model import Rule, rule_metric_names
from scanner.session import NY

VALUE_COLUMNS = [f"value_{i + 1}" for i in range(ALERT_VALUES)]
COLUMNS = ["event_ns", "event_time", "symbol", "rule", "kind", "price", "seq", "worker", "generation", "metrics",
           *VALUE_COLUMNS]


def alert_columns(recs: np.ndarray, symbols: list[str], rules: list[Rule]) -> dict[str, Any]:
    """Column name -> numpy array (object arrays for text), rows sorted (module docstring).
    `rules` is the rule list whose stable keys the records' `rule` fields carry."""
    recs = recs[np.lexsort((recs["sym"], recs["rule"], recs["event_ns"]))]
    ids = np.array([r.id for r in rules] + ["?"], dtype=object)
    metrics = np.array(["|".join(rule_metric_names(r)) for r in rules] + [""], dtype=object)
    rule = rule_positions([r.id for r in rules], recs["rule"])
    names = np.array(symbols + ["?"], dtype=object)
    sym = np.minimum(recs["sym"].astype(np.int64), len(symbols))
    event_ns = recs["event_ns"].astype(np.int64)
    # alerts share their scan boundaries (a replay's 180,000 alerts fall on 1,200): format each once
    boundaries, at = np.unique(event_ns, return_inverse=True)
    times = np.array([datetime.fromtimestamp(t / 1e9, NY).isoformat(timespec="milliseconds")
                      for t in boundaries.tolist()], dtype=object)
    cols: dict[str, Any] = {
        "event_ns": event_ns,
        "event_time": times[at.reshape(-1)],
        "symbol": names[sym], "rule": ids[rule],
        "kind": np.where(recs["kind"] == ALERT_ENTER, "enter", "exit").astype(object),
        "price": recs["price"].astype(np.float64),
        "seq": recs["seq"].astype(np.int64), "worker": recs["worker"].astype(np.int64),
        "generation": recs["generation"].astype(np.int64), "metrics": metrics[rule],
    }
    for i, c in enumerate(VALUE_COLUMNS):
        cols[c] = recs["values"][:, i].astype(np.float64)
    return cols


def write_table(path: Path, cols: dict[str, Any]) -> int:
    """Columns to `.csv` (header row; floats as repr, NaN empty) or `.parquet`; rows written."""
    n = len(next(iter(cols.values()))) if cols else 0
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({k: (v.tolist() if v.dtype == object else v) for k, v in cols.items()}), path)
        return n
    if path.suffix != ".csv":
        raise ValueError(f"'path' must end in .csv or .parquet, was {path.name!r}")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(cols))
        columns = [[("" if x != x else repr(x)) if isinstance(x, float) else x for x in v.tolist()]
                   for v in cols.values()]
        w.writerows(zip(*columns, strict=True))
    return n
