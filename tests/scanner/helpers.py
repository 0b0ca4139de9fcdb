"""Helpers for the domain tests: the shared real-data folder (skip when absent) and tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scanner.metrics import CATALOGUE
from scanner.records import TICK_NO_PRICE, TICK_NO_VOLUME

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def data_path(*parts: str) -> Path:
    """A path under ../shared/data; skips the test when it is absent."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real market data {p} is absent (see ../shared/data/README.md)")
    return p


def table_columns(n_rows: int) -> dict[str, np.ndarray]:
    """Every catalogue column as a private array (NaN floats, zero ints)."""
    return {m.name: (np.zeros(n_rows, np.int64) if m.dtype == "i8" else np.full(n_rows, np.nan))
            for m in CATALOGUE.metrics}


def pandas_reference_bars(df: pd.DataFrame) -> pd.DataFrame:
    """Independent 1-minute bars: a pandas resample per symbol of a frame with columns sym,
    ts_ns, price, size, flags. Volume, trades and VWAP count
    every tick but reports (TICK_NO_VOLUME), which count nowhere; OHLC only ticks without
    odd-lot / no-last / no-high-low flags; a minute with only flagged ticks is flat at the
    previous bar's close (its VWAP when there is none)."""
    df = df[(df["flags"] & TICK_NO_VOLUME) == 0]
    df = df.assign(pv=df.price * df["size"], priced=(df["flags"] & TICK_NO_PRICE) == 0)
    out = []
    for sym, g in df.groupby("sym", sort=True):
        g = g.set_index(pd.to_datetime(g.ts_ns, unit="ns"))
        agg = g.resample("1min").agg({"size": "sum", "pv": "sum", "price": "count"})
        agg = agg[agg.price > 0].rename(columns={"size": "volume", "price": "trades"})
        p = g[g.priced].price.resample("1min").ohlc().reindex(agg.index)
        agg = agg.join(p)
        agg["vwap"] = agg.pv / agg.volume
        ohlc = agg[["open", "high", "low", "close"]].to_numpy(copy=True)  # pandas 3: views are read-only
        for i in np.flatnonzero(np.isnan(ohlc[:, 0])):
            ohlc[i] = ohlc[i - 1, 3] if i > 0 else agg.vwap.iloc[i]
        agg[["open", "high", "low", "close"]] = ohlc
        agg["sym"] = sym
        agg["minute_ns"] = agg.index.asi8
        out.append(agg.reset_index(drop=True))
    return pd.concat(out, ignore_index=True).sort_values(["sym", "minute_ns"], ignore_index=True)
