"""Vendor messages built from our own records: trades from TICK_DTYPE ticks (e.g. real Lean
ticks read by `scanner.feeds.lean`), quotes, statuses and LULD bands from plain values, REST
bars from BAR_DTYPE / DAILY_DTYPE arrays. Field names and units follow the vendors' docs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scanner.feeds.common import SymbolMap
from scanner.feeds.lean import lean_tick_files, read_lean_ticks
from scanner.records import TICK_NO_LAST, TICK_ODD_LOT

MS = 1_000_000


def rfc3339(ts_ns: int) -> str:
    """RFC-3339 UTC time with nanoseconds, as Alpaca writes it."""
    return str(np.datetime64(int(ts_ns), "ns")) + "Z"


def lean_ticks(root: str | Path, symbols: Sequence[str], day: int, limit: int | None = None
               ) -> tuple[np.ndarray, list[str]]:
    """Real ticks of one day (TICK_DTYPE, time order) and the row -> symbol names."""
    smap = SymbolMap()
    parts = [b.ticks for b in read_lean_ticks(lean_tick_files(root, symbols, [day]), smap)]
    ticks = np.concatenate(parts) if parts else np.empty(0)
    return (ticks if limit is None else ticks[:limit]), smap.names


def alpaca_trades(ticks: np.ndarray, names: Sequence[str], tape: str = "C", exchange: str = "V",
                  first_id: int = 1) -> list[dict]:
    """Alpaca trade messages ("T":"t"): odd lots carry condition "I", no-last prints "Z"."""
    out = []
    for k, t in enumerate(ticks.tolist()):
        sym, flags, ts, px, size = t
        cond = ["@"] + (["I"] if flags & TICK_ODD_LOT else []) + (["Z"] if flags & TICK_NO_LAST else [])
        out.append({"T": "t", "S": names[sym], "i": first_id + k, "x": exchange, "p": px, "s": int(size),
                    "c": cond, "t": rfc3339(ts), "z": tape})
    return out


def polygon_trades(ticks: np.ndarray, names: Sequence[str], exchange: int = 4, tape: int = 3,
                   first_id: int = 1) -> list[dict]:
    """Polygon trade messages ("ev":"T", t in Unix ms): odd lots carry condition 37, no-last
    prints 33 (sold out of sequence)."""
    out = []
    for k, t in enumerate(ticks.tolist()):
        sym, flags, ts, px, size = t
        cond = ([37] if flags & TICK_ODD_LOT else []) + ([33] if flags & TICK_NO_LAST else [])
        msg = {"ev": "T", "sym": names[sym], "x": exchange, "i": str(first_id + k), "z": tape, "p": px,
               "s": int(size), "t": ts // MS, "q": first_id + k}
        if cond:
            msg["c"] = cond
        out.append(msg)
    return out


def alpaca_quote(sym: str, ts_ns: int, bid: float, ask: float, bid_size: int = 1, ask_size: int = 1) -> dict:
    return {"T": "q", "S": sym, "bx": "V", "bp": bid, "bs": bid_size, "ax": "V", "ap": ask, "as": ask_size,
            "c": ["R"], "t": rfc3339(ts_ns), "z": "C"}


def polygon_quote(sym: str, ts_ns: int, bid: float, ask: float, bid_size: int = 100, ask_size: int = 100) -> dict:
    return {"ev": "Q", "sym": sym, "bx": 4, "bp": bid, "bs": bid_size, "ax": 7, "ap": ask, "as": ask_size,
            "c": 0, "t": ts_ns // MS, "q": 1, "z": 3}


def alpaca_status(sym: str, ts_ns: int, halted: bool, reason: str = "LUDP") -> dict:
    """A UTP trading status: "H" trading halt or "T" trading resumption."""
    return {"T": "s", "S": sym, "sc": "H" if halted else "T", "sm": "Trading Halt" if halted else "Trading Resumption",
            "rc": reason, "rm": "Volatility Trading Pause" if reason == "LUDP" else "", "t": rfc3339(ts_ns), "z": "C"}


def alpaca_luld(sym: str, ts_ns: int, upper: float, lower: float) -> dict:
    return {"T": "l", "S": sym, "u": upper, "d": lower, "i": "B", "t": rfc3339(ts_ns), "z": "C"}


def polygon_luld(sym: str, ts_ns: int, upper: float, lower: float, indicators: Sequence[int] = ()) -> dict:
    return {"ev": "LULD", "T": sym, "h": upper, "l": lower, "i": list(indicators), "z": 3, "t": ts_ns // MS, "q": 1}


def alpaca_correction(sym: str, ts_ns: int, orig: tuple[float, int], new: tuple[float, int]) -> dict:
    return {"T": "c", "S": sym, "x": "V", "oi": 1, "op": orig[0], "os": orig[1], "oc": ["@"], "ci": 2,
            "cp": new[0], "cs": new[1], "cc": ["@"], "t": rfc3339(ts_ns), "z": "C"}


def alpaca_cancel(sym: str, ts_ns: int, price: float, size: int) -> dict:
    return {"T": "x", "S": sym, "i": 1, "x": "V", "p": price, "s": size, "a": "C", "t": rfc3339(ts_ns), "z": "C"}


def bars_from_ticks(ticks: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """1-minute BAR_DTYPE bars per symbol, built by our own aggregator (what a vendor's REST
    minute bars of the same ticks would hold)."""
    from scanner.bars import BarAggregator, new_columns, new_history

    n = len(names)
    hist, head = new_history(n, 8)
    agg = BarAggregator(new_columns(n), hist, head)
    bars = np.concatenate([agg.on_ticks(ticks), agg.close_all()])
    return {names[r]: bars[bars["sym"] == r] for r in range(n)}
