"""The compiled trades-only fast path gives exactly what the msgspec path gives, for every frame
it accepts (real ticks, random prices, fuzzed frames), and gives up on anything else."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scanner.feeds.alpaca import AlpacaParser
from scanner.feeds.common import SymbolMap
from scanner.feeds.fastjson import ALPACA, POLYGON, TradeScanner
from scanner.feeds.polygon import PolygonParser
from tests.vendors.messages import alpaca_trades, lean_ticks, polygon_trades


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.trades, b.trades)
    assert (a.malformed, a.unknown_symbol, a.ignored, a.control) == (b.malformed, b.unknown_symbol, b.ignored,
                                                                     b.control)


@pytest.fixture(scope="module")
def real(shared_data) -> tuple[np.ndarray, list[str]]:
    return lean_ticks(shared_data / "lean-us-equity", ["aig", "bac", "ibm", "spy"], 20131008, limit=30_000)


@pytest.mark.parametrize("vendor", ["alpaca", "polygon"])
def test_real_frames_take_the_fast_path_and_match(real, vendor: str) -> None:
    ticks, names = real
    msgs = alpaca_trades(ticks, names) if vendor == "alpaca" else polygon_trades(ticks, names)
    known = SymbolMap(names[:3], grow=False)  # the 4th symbol is unknown to the map
    cls = AlpacaParser if vendor == "alpaca" else PolygonParser
    fast, slow = cls(known), cls(known, fast=False)
    rng = np.random.default_rng(1)
    i = 0
    while i < len(msgs):
        n = int(rng.integers(1, 1001))
        frame = json.dumps(msgs[i:i + n]).encode()
        assert fast._fast.scan(frame) is not None
        _same(fast.parse(frame), slow.parse(frame))
        i += n


def test_prices_convert_exactly() -> None:
    rng = np.random.default_rng(3)
    texts = [f"{rng.integers(1, 10**d)}.{rng.integers(0, 10**f):0{f}d}" for d, f in
             zip(rng.integers(1, 9, 3000), rng.integers(0, 7, 3000), strict=True)]
    texts += ["0.1", "0.3", "1e3", "1.5E-2", "123456789012345", "9007199254740993", "1e22", "1e23"]
    frame = "[" + ",".join(f'{{"T":"t","S":"A","p":{t},"s":1,"t":"2021-02-22T15:51:44Z"}}' for t in texts) + "]"
    got = AlpacaParser(SymbolMap(["A"], grow=False)).parse(frame)
    assert got.trades["price"].tolist() == [float(t) for t in texts]


def test_growing_map_through_the_hash_table() -> None:
    smap = SymbolMap()
    p = AlpacaParser(smap)
    frame = json.dumps([{"T": "t", "S": s, "p": 1, "s": 1, "t": "2021-02-22T15:51:44Z"}
                        for s in ["B", "A", "B", "LONGSYMBOL.WS", "A"]])
    for _ in range(2):  # the second time every symbol comes from the table
        assert p.parse(frame).trades["sym"].tolist() == [0, 1, 0, 2, 1]
    assert smap.names == ["B", "A", "LONGSYMBOL.WS"]


@pytest.mark.parametrize("frame", [
    b'[{"T":"q","S":"A","bp":1,"bs":1,"ap":1,"as":1,"t":"2021-02-22T15:51:44Z"}]',  # not a trade
    b'[{"T":"t","S":"A\\u0041","p":1,"s":1,"t":"2021-02-22T15:51:44Z"}]',  # an escape
    b'[{"T":"t","S":"A","p":1.00000000000000001,"s":1,"t":"2021-02-22T15:51:44Z"}]',  # 18 digits
    b'[{"T":"t","S":"ABCDEFGHIJKLMNOPQ","p":1,"s":1,"t":"2021-02-22T15:51:44Z"}]',  # 17-byte symbol
    b'[{"T":"t","S":"A","p":1,"s":1,"t":"2021-02-22T15:51:44Z","c":["?"]}]',  # unknown condition
    b'[{"T":"t","S":"A","p":1,"s":1,"t":"2021-02-22T15:51:44Z","x":{"a":1}}]',  # a nested value
    b'[{"T":"t","S":"A","p":1,"s":1}]',  # no time
    b'[{"T":"t","S":"A","p":1,"s":1,"t":"2021-02-22T15:51:44Z"},]',  # trailing comma
    b'[{"T":"t","S":"A","p":1,"s":1,"t":"2021-02-22T15:51:44Z","i":nul}]',
    b'[{"T":"t","S":"A","p":01,"s":1,"t":"2021-02-22T15:51:44Z"}]',
])
def test_the_fast_path_gives_up_on_anything_unusual(frame: bytes) -> None:
    assert TradeScanner(ALPACA, SymbolMap(["A"], grow=False)).scan(frame) is None
    _same(AlpacaParser(SymbolMap(["A"], grow=False)).parse(frame),
          AlpacaParser(SymbolMap(["A"], grow=False), fast=False).parse(frame))


@pytest.mark.parametrize("vendor", [ALPACA, POLYGON])
def test_fuzzed_frames_either_match_or_fall_back(vendor: int) -> None:
    """Random byte edits of valid frames: whenever the fast path still accepts one, the result
    equals the msgspec path's (which counts and skips what is bad)."""
    rng = np.random.default_rng(11)
    names = ["AAA", "BB", "C"]
    t = np.zeros(40, dtype=[("sym", "<u4"), ("flags", "<u4"), ("ts_ns", "<i8"), ("price", "<f8"), ("size", "<f8")])
    t["sym"] = rng.integers(0, 3, 40)
    t["ts_ns"] = 1_381_239_000_000_000_000 + np.arange(40) * 1_000_000
    t["price"] = np.round(rng.uniform(1, 100, 40), 2)
    t["size"] = rng.integers(1, 500, 40)
    msgs = alpaca_trades(t, names) if vendor == ALPACA else polygon_trades(t, names)
    base = json.dumps(msgs, separators=(",", ":")).encode()
    cls = AlpacaParser if vendor == ALPACA else PolygonParser
    smap = SymbolMap(names[:2], grow=False)
    fast, slow = cls(smap), cls(smap, fast=False)
    alphabet = np.frombuffer(b'0123456789.-eE",:[]{}tTSpsczaxn ', np.uint8)
    accepted = 0
    for _ in range(1500):
        b = bytearray(base)
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(0, len(b)))
            op = rng.integers(0, 3)
            if op == 0:
                b[k] = int(rng.choice(alphabet))
            elif op == 1:
                del b[k]
            else:
                b.insert(k, int(rng.choice(alphabet)))
        frame = bytes(b)
        if fast._fast.scan(frame) is not None:
            accepted += 1
            _same(fast.parse(frame), slow.parse(frame))
        else:
            fast.parse(frame)  # never raises
    assert accepted > 100  # many edits keep the frame valid (a digit for a digit)
