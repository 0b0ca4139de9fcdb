"""Quotes, trading status and LULD bands into the ingest-owned table columns, vectorised.

Batches come from the vendor parsers (`scanner.feeds.frames` QUOTE/STATUS/LULD records) or the
synthetic feed. In each batch the last record of a symbol in feed order wins (as the last trade
does in `scanner.ticks`): `np.unique` over the reversed symbol column finds it, no Python loop
per record. The caller brackets `apply_*` with the ingest seqlock for the rows returned by
`rows_of` (or every block).

Status semantics: a halt sets `halted = 1`, `halt_reason` and, when the symbol was not already
halted, `halt_ts_ns`; a resume (trading again) after a halt sets `halted = 0` and
`resume_ts_ns`. A batch holding both a halt and a later resume of one symbol leaves it trading
with both times set; the order inside the batch decides the final state. (A halt, resume and
second halt of one symbol inside one batch keep the first halt's time.)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

QUOTE_COLUMNS = ("bid", "ask", "bid_size", "ask_size", "spread_pct")
STATUS_COLUMNS = ("halted", "halt_reason", "halt_ts_ns", "resume_ts_ns")
LULD_COLUMNS = ("luld_upper", "luld_lower")


def last_per_symbol(sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, index of each row's last record) for a symbol column in feed order."""
    n = len(sym)
    if n == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    rows, first_rev = np.unique(sym[::-1], return_index=True)
    return rows.astype(np.intp), (n - 1 - first_rev).astype(np.intp)


def spread_pct(bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """(ask - bid) / midpoint in percent; NaN unless 0 < bid <= ask (one-sided or crossed quote)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (ask - bid) / ((ask + bid) * 0.5) * 100.0
    out[~((bid > 0) & (ask >= bid))] = np.nan
    return out


class MarketStateWriter:
    """Writes quote / status / LULD batches into table columns given as name -> 1-D array."""

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        missing = set(QUOTE_COLUMNS + STATUS_COLUMNS + LULD_COLUMNS) - set(columns)
        if missing:
            raise ValueError(f"market-state columns missing: {sorted(missing)}")
        self.c = columns
        self.n_rows = len(columns["bid"])
        self.quotes = self.statuses = self.lulds = self.halts = self.resumes = 0

    def valid(self, records: np.ndarray) -> np.ndarray:
        """Records whose row is inside the table (the parsers already dropped unknown symbols)."""
        ok = records["sym"] < self.n_rows
        return records if ok.all() else records[ok]

    def apply_quotes(self, quotes: np.ndarray) -> np.ndarray:
        """Last quote per symbol -> bid/ask/sizes/spread_pct. Non-finite or negative prices
        make that side unknown (NaN) rather than a bogus spread. Returns the rows written."""
        q = self.valid(quotes)
        rows, last = last_per_symbol(q["sym"])
        if len(rows) == 0:
            return rows
        c = self.c
        bid = q["bid"][last].astype(np.float64)
        ask = q["ask"][last].astype(np.float64)
        bid[~(np.isfinite(bid) & (bid >= 0))] = np.nan
        ask[~(np.isfinite(ask) & (ask >= 0))] = np.nan
        c["bid"][rows] = bid
        c["ask"][rows] = ask
        c["bid_size"][rows] = q["bid_size"][last]
        c["ask_size"][rows] = q["ask_size"][last]
        c["spread_pct"][rows] = spread_pct(bid, ask)
        self.quotes += len(q)
        return rows

    def apply_statuses(self, statuses: np.ndarray) -> np.ndarray:
        """Halts and resumes (module docstring). Returns the rows written."""
        s = self.valid(statuses)
        if len(s) == 0:
            return np.empty(0, np.intp)
        c = self.c
        halted = s["halted"] != 0
        hi = np.flatnonzero(halted)
        ri = np.flatnonzero(~halted)
        h_rows, h_last = last_per_symbol(s["sym"][hi])
        h_first = hi[np.unique(s["sym"][hi], return_index=True)[1]]  # same row order as h_rows
        h_last = hi[h_last]
        was_halted = c["halted"][h_rows] == 1
        new_halt = h_rows[~was_halted]
        c["halt_ts_ns"][new_halt] = s["ts_ns"][h_first[~was_halted]]
        c["halt_reason"][h_rows] = s["reason"][h_last]
        c["halted"][h_rows] = 1.0
        self.halts += int(len(new_halt))
        r_rows, r_last = last_per_symbol(s["sym"][ri])
        r_last = ri[r_last]
        # a resume counts when it follows a halt of the same row (earlier batch or this one)
        last_halt = np.full(self.n_rows, -1, np.int64)
        last_halt[h_rows] = h_last
        later = r_last > last_halt[r_rows]
        resumed = later & (c["halted"][r_rows] == 1)
        c["resume_ts_ns"][r_rows[resumed]] = s["ts_ns"][r_last[resumed]]
        c["halted"][r_rows[later]] = 0.0
        self.resumes += int(resumed.sum())
        self.statuses += len(s)
        return np.union1d(h_rows, r_rows)

    def apply_lulds(self, lulds: np.ndarray) -> np.ndarray:
        """Last LULD band per symbol. Returns the rows written."""
        b = self.valid(lulds)
        rows, last = last_per_symbol(b["sym"])
        if len(rows) == 0:
            return rows
        up = b["upper"][last].astype(np.float64)
        lo = b["lower"][last].astype(np.float64)
        up[~(np.isfinite(up) & (up > 0))] = np.nan
        lo[~(np.isfinite(lo) & (lo > 0))] = np.nan
        self.c["luld_upper"][rows] = up
        self.c["luld_lower"][rows] = lo
        self.lulds += len(b)
        return rows
