"""Benchmark of the vendor-protocol parsers: recorded Alpaca and Polygon trade frames of 1 to
1,000 trades each, decoded into TICK_DTYPE columns, against the same-run baseline of stdlib
`json.loads` plus one Python object (a dataclass) per trade.

`bench_feed()` reports (medians of interleaved rounds, one core, trades per second):

- `alpaca_trades_per_s`, `polygon_trades_per_s`: `AlpacaParser.parse` / `PolygonParser.parse`
  over every frame (compiled fast path, msgspec for frames it gives up);
- `json_baseline_trades_per_s`: `json.loads` + a dataclass per trade over the Alpaca frames
  (`json_baseline_polygon_trades_per_s` over the Polygon ones); `alpaca_vs_json`,
  `polygon_vs_json` are the ratios against the baseline of the same frames;
- `alpaca_msgspec_trades_per_s`, `polygon_msgspec_trades_per_s`: the parsers with the fast path
  off (typed msgspec Structs, then numpy), to show what the compiled path adds;
- `by_frame_size`: trades/s of each parser and of the baseline for frames of exactly 1, 10, 100
  and 1,000 trades (small frames pay the per-frame cost).

Frames hold synthetic trades over 2,000 symbols (prices of a random walk, a third odd lots, the
vendors' field layout and condition codes), sizes drawn uniformly from 1 to 1,000.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from procs.bench.bars import synthetic_ticks
from scanner.feeds.alpaca import AlpacaParser
from scanner.feeds.common import SymbolMap
from scanner.feeds.polygon import PolygonParser
from scanner.records import TICK_ODD_LOT

SYMBOLS = 2_000


@dataclass
class _Trade:
    """The baseline's object per trade."""

    symbol: str
    price: float
    size: float
    timestamp: Any
    conditions: list
    tape: Any


def _names() -> list[str]:
    return [f"S{i:04d}" for i in range(SYMBOLS)]


def _messages(n: int, seed: int) -> tuple[list[dict], list[dict]]:
    t = synthetic_ticks(SYMBOLS, n, seed=seed)
    rng = np.random.default_rng(seed)
    odd = rng.random(n) < 0.3
    t["size"][odd] = rng.integers(1, 100, int(odd.sum()))
    t["flags"][odd] = TICK_ODD_LOT
    names = _names()
    times = np.datetime_as_string(t["ts_ns"].astype("datetime64[ns]"), unit="ns")
    alpaca, polygon = [], []
    for k, (sym, _fl, ts, px, size) in enumerate(t.tolist()):
        o = bool(odd[k])
        alpaca.append({"T": "t", "S": names[sym], "i": 52983525029461 + k, "x": "V", "p": px, "s": int(size),
                       "c": ["@", "I"] if o else ["@"], "t": str(times[k]) + "Z", "z": "C"})
        msg = {"ev": "T", "sym": names[sym], "x": 4, "i": str(1000 + k), "z": 3, "p": px, "s": int(size),
               "t": ts // 1_000_000, "q": 4_000_000 + k}
        if o:
            msg["c"] = [37]
        polygon.append(msg)
    return alpaca, polygon


def _frames(msgs: list[dict], sizes: np.ndarray) -> list[bytes]:
    out, i = [], 0
    for s in sizes.tolist():
        if i + s > len(msgs):
            break
        out.append(json.dumps(msgs[i:i + s], separators=(",", ":")).encode())
        i += s
    return out


def _baseline_alpaca(frame: bytes) -> int:
    return len([_Trade(m["S"], m["p"], m["s"], m["t"], m["c"], m["z"]) for m in json.loads(frame)])


def _baseline_polygon(frame: bytes) -> int:
    return len([_Trade(m["sym"], m["p"], m["s"], m["t"], m.get("c", []), m["z"]) for m in json.loads(frame)])


def _rate(fn: Callable[[bytes], Any], frames: list[bytes], trades: int) -> float:
    t0 = time.perf_counter()
    for f in frames:
        fn(f)
    return trades / (time.perf_counter() - t0)


def _median_rates(fns: dict[str, Callable[[bytes], Any]], frames: dict[str, list[bytes]], trades: dict[str, int],
                  rounds: int) -> dict[str, float]:
    """Interleaved rounds (each runner once per round), median per runner."""
    got: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            got[k].append(_rate(fn, frames[k], trades[k]))
    return {k: statistics.median(v) for k, v in got.items()}


def bench_feed(quick: bool = False) -> dict[str, Any]:
    n = 30_000 if quick else 600_000
    rounds = 3 if quick else 7
    alpaca_msgs, polygon_msgs = _messages(n, seed=11)
    sizes = np.random.default_rng(5).integers(1, 1001, n)
    fa, fp = _frames(alpaca_msgs, sizes), _frames(polygon_msgs, sizes)
    n_a = sum(len(json.loads(f)) for f in fa)
    n_p = sum(len(json.loads(f)) for f in fp)
    smap = SymbolMap(_names(), grow=False)
    ap, pp = AlpacaParser(smap), PolygonParser(smap)
    ap_slow, pp_slow = AlpacaParser(smap, fast=False), PolygonParser(smap, fast=False)
    # the whole tape decodes, and both paths agree (a benchmark of wrong answers is no benchmark)
    for fast, slow, frames, total in ((ap, ap_slow, fa, n_a), (pp, pp_slow, fp, n_p)):
        got = [fast.parse(f) for f in frames]
        assert sum(len(g.trades) for g in got) == total and not any(g.malformed for g in got)
        ref = np.concatenate([slow.parse(f).trades for f in frames[:50]])
        np.testing.assert_array_equal(np.concatenate([g.trades for g in got[:50]]), ref)

    fns = {"alpaca": ap.parse, "polygon": pp.parse, "json_alpaca": _baseline_alpaca,
           "json_polygon": _baseline_polygon, "alpaca_msgspec": ap_slow.parse, "polygon_msgspec": pp_slow.parse}
    frames = {"alpaca": fa, "polygon": fp, "json_alpaca": fa, "json_polygon": fp, "alpaca_msgspec": fa,
              "polygon_msgspec": fp}
    trades = {k: (n_a if v is fa else n_p) for k, v in frames.items()}
    r = _median_rates(fns, frames, trades, rounds)

    by_size: dict[str, dict[str, float]] = {}
    for size in (1, 10, 100, 1000):
        m = max(1, (2_000 if quick else 20_000) // size)
        fsa = _frames(alpaca_msgs, np.full(m, size))
        fsp = _frames(polygon_msgs, np.full(m, size))
        k = len(fsa) * size
        rs = _median_rates({"alpaca": ap.parse, "polygon": pp.parse, "json_alpaca": _baseline_alpaca},
                           {"alpaca": fsa, "polygon": fsp, "json_alpaca": fsa}, {"alpaca": k, "polygon": k,
                                                                                 "json_alpaca": k}, rounds)
        by_size[str(size)] = {key: round(v) for key, v in rs.items()}

    return {
        "alpaca_trades_per_s": round(r["alpaca"]),
        "polygon_trades_per_s": round(r["polygon"]),
        "json_baseline_trades_per_s": round(r["json_alpaca"]),
        "json_baseline_polygon_trades_per_s": round(r["json_polygon"]),
        "alpaca_vs_json": round(r["alpaca"] / r["json_alpaca"], 2),
        "polygon_vs_json": round(r["polygon"] / r["json_polygon"], 2),
        "alpaca_msgspec_trades_per_s": round(r["alpaca_msgspec"]),
        "polygon_msgspec_trades_per_s": round(r["polygon_msgspec"]),
        "frames": len(fa),
        "trades": n_a,
        "mean_trades_per_frame": round(n_a / len(fa), 1),
        "by_frame_size": by_size,
    }
