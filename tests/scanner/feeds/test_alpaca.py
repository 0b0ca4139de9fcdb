"""Alpaca v2 stream protocol cases through `AlpacaParser`: every message type, the builders,
every documented error code's classification, and hostile frames (counted, never raised)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scanner.feeds.alpaca import (
    ERROR_CODES,
    AlpacaParser,
    auth_message,
    classify_error,
    subscribe_message,
)
from scanner.feeds.common import SymbolMap
from scanner.feeds.frames import unpack_code
from scanner.records import TICK_NO_HIGH_LOW, TICK_NO_LAST, TICK_ODD_LOT

T = "2021-02-22T15:51:44.208123456Z"
T_NS = 1614009104208123456


def _p() -> AlpacaParser:
    return AlpacaParser(SymbolMap(["AAPL", "MSFT"], grow=False))


def _trade(**kw: object) -> dict:
    return {"T": "t", "i": 96921, "S": "AAPL", "x": "D", "p": 126.55, "s": 100, "t": T, "c": ["@"], "z": "C", **kw}


def test_builders_follow_the_docs() -> None:
    assert json.loads(auth_message("k", "s")) == {"action": "auth", "key": "k", "secret": "s"}
    assert json.loads(subscribe_message(trades=["AAPL"], quotes=["*"], statuses=["*"], lulds=["AAPL"])) == {
        "action": "subscribe", "trades": ["AAPL"], "quotes": ["*"], "statuses": ["*"], "lulds": ["AAPL"]}
    assert json.loads(subscribe_message(trades=["X"], action="unsubscribe")) == {"action": "unsubscribe",
                                                                                 "trades": ["X"]}


def test_trade() -> None:
    f = _p().parse(json.dumps([_trade(), _trade(S="MSFT", s=10, c=["@", "I"]), _trade(c=["W"], z="C")]))
    assert f.trades.tolist() == [(0, 0, T_NS, 126.55, 100.0), (1, TICK_ODD_LOT, T_NS, 126.55, 10.0),
                                 (0, TICK_NO_LAST | TICK_NO_HIGH_LOW, T_NS, 126.55, 100.0)]
    assert (f.malformed, f.unknown_symbol, f.ignored, f.control) == (0, 0, 0, [])


def test_quote_status_luld_correction_cancel() -> None:
    msgs = [{"T": "q", "S": "MSFT", "bx": "U", "bp": 1.5, "bs": 2, "ax": "Q", "ap": 1.6, "as": 3, "c": ["R"],
             "t": T, "z": "C"},
            {"T": "s", "S": "AAPL", "sc": "H", "sm": "Trading Halt", "rc": "T1", "rm": "News Pending", "t": T,
             "z": "C"},
            {"T": "s", "S": "AAPL", "sc": "3", "sm": "Resume", "rc": "", "rm": "", "t": T, "z": "A"},
            {"T": "s", "S": "AAPL", "sc": "E", "sm": "Short Sale Restriction", "rc": "", "rm": "", "t": T, "z": "A"},
            {"T": "l", "S": "MSFT", "u": 131.0, "d": 120.5, "i": "B", "t": T, "z": "C"},
            {"T": "c", "S": "AAPL", "x": "D", "oi": 1, "op": 126.0, "os": 100, "oc": ["@"], "ci": 2, "cp": 126.5,
             "cs": 50, "cc": ["@", "I"], "t": T, "z": "C"},
            {"T": "x", "S": "MSFT", "i": 3, "x": "D", "p": 127.0, "s": 200, "a": "C", "t": T, "z": "C"}]
    f = _p().parse(json.dumps(msgs))
    assert f.quotes.tolist() == [(1, T_NS, 1.5, 1.6, 2.0, 3.0)]
    assert f.statuses[["sym", "halted"]].tolist() == [(0, 1), (0, 0)]
    assert [unpack_code(r) for r in f.statuses["reason"]] == ["T1", ""]
    assert f.lulds.tolist() == [(1, T_NS, 131.0, 120.5)]
    c = f.corrections
    assert c[["sym", "orig_price", "orig_size", "new_price", "new_size", "new_flags"]].tolist()[0] == (
        0, 126.0, 100.0, 126.5, 50.0, TICK_ODD_LOT)
    assert c["sym"][1] == 1 and np.isnan(c["new_price"][1]) and c["orig_price"][1] == 127.0
    assert f.ignored == 1 and f.malformed == 0  # the short-sale status changes no trading state


def test_control_messages_keep_the_vendor_fields() -> None:
    f = _p().parse(json.dumps([{"T": "success", "msg": "connected"}, {"T": "success", "msg": "authenticated"},
                               {"T": "subscription", "trades": ["AAPL"], "quotes": [], "bars": ["*"]},
                               {"T": "error", "code": 402, "msg": "auth failed"},
                               {"T": "b", "S": "AAPL", "o": 1, "h": 1, "l": 1, "c": 1, "v": 1, "t": T}]))
    assert f.control[:2] == [{"T": "success", "msg": "connected"}, {"T": "success", "msg": "authenticated"}]
    assert f.control[2]["T"] == "subscription" and f.control[2]["trades"] == ["AAPL"] and f.control[2]["bars"] == ["*"]
    assert f.control[3] == {"T": "error", "code": 402, "msg": "auth failed"}
    assert f.ignored == 1


@pytest.mark.parametrize(("code", "expected"), [(400, "reconnect"), (401, "reconnect"), (402, "fatal"),
                                                (403, "ignore"), (404, "reconnect"), (405, "fatal"),
                                                (406, "reconnect"), (407, "reconnect"), (409, "fatal"),
                                                (410, "fatal"), (500, "reconnect"), (499, "reconnect")])
def test_error_classification(code: int, expected: str) -> None:
    assert classify_error({"T": "error", "code": code, "msg": ERROR_CODES.get(code, ("?",))[0]}) == expected


def test_non_errors_are_ignored() -> None:
    assert classify_error({"T": "success", "msg": "authenticated"}) == "ignore"
    assert classify_error({"T": "subscription", "trades": []}) == "ignore"
    assert classify_error({"T": "error", "code": "402"}) == "reconnect"  # a code of the wrong type


def test_unknown_symbols_are_counted() -> None:
    f = _p().parse(json.dumps([_trade(S="ZZZZ"), _trade(), {"T": "q", "S": "NOPE", "bp": 1, "bs": 1, "ap": 1,
                                                            "as": 1, "t": T}]))
    assert len(f.trades) == 1 and f.unknown_symbol == 2 and f.malformed == 0


def test_growing_map_assigns_rows() -> None:
    smap = SymbolMap()
    f = AlpacaParser(smap).parse(json.dumps([_trade(S="B"), _trade(S="A"), _trade(S="B")]))
    assert f.trades["sym"].tolist() == [0, 1, 0] and smap.names == ["B", "A"]


HOSTILE = [
    (b'[{"T":"t","S":"AAPL","p":1', 0, 1),  # truncated JSON: the frame is lost, counted once
    (b"", 0, 1),
    (b"not json at all", 0, 1),
    (b"[" * 100_000 + b"]" * 100_000, 0, 1),  # deeply nested
    (json.dumps([_trade(p="126.55"), _trade()]).encode(), 1, 1),  # wrong type
    (json.dumps([_trade(p=None), _trade(s=[1]), _trade(t=5), _trade()]).encode(), 1, 3),
    (json.dumps([_trade(p=-1), _trade(p=0), _trade(s=0), _trade(s=-5), _trade()]).encode(), 1, 4),
    (b'[{"T":"t","S":"AAPL","p":NaN,"s":1,"t":"2021-02-22T15:51:44Z"},' + json.dumps(_trade()).encode() + b"]", 1, 1),
    (b'[{"T":"t","S":"AAPL","p":Infinity,"s":1,"t":"2021-02-22T15:51:44Z"},' + json.dumps(_trade()).encode()
     + b"]", 1, 1),
    (json.dumps([_trade(p=1e308), _trade(s=1)]).encode(), 2, 0),  # absurd but finite: kept
    (b'[{"T":"t","S":"AAPL","p":1e999,"s":1,"t":"2021-02-22T15:51:44Z"},' + json.dumps(_trade()).encode() + b"]",
     1, 1),
    (json.dumps([_trade(t="yesterday"), _trade(t="2021-02-30T00:00:00Z"), _trade()]).encode(), 1, 2),
    (json.dumps([5, "x", None, [], {}, {"T": 7}, {"T": "zz"}, _trade()]).encode(), 1, 7),
    (json.dumps(_trade()).encode(), 1, 0),  # a bare object instead of an array
    (json.dumps([_trade(S="A" * 10_000)]).encode(), 0, 0),  # a huge unknown symbol: counted as unknown
    ("[" + json.dumps(_trade(S="\u00e9\u00e9")) + "]", 0, 0),
    (b"\xff\xfe[garbage", 0, 1),
]


@pytest.mark.parametrize(("frame", "good", "bad"), HOSTILE)
def test_hostile_frames_are_counted_and_good_messages_survive(frame: bytes, good: int, bad: int) -> None:
    f = _p().parse(frame)
    assert len(f.trades) == good and f.malformed == bad
    assert bool(f.reasons) is bool(bad)


def test_a_10_mb_frame() -> None:
    good = [_trade(p=100 + i * 0.01, s=100 + i) for i in range(80_000)]
    frame = json.dumps(good).encode()
    assert len(frame) > 10_000_000
    f = _p().parse(frame)
    assert len(f.trades) == 80_000 and f.malformed == 0
    assert f.trades["size"][-1] == 100 + 79_999
    # with a hostile message in the middle: per-message decoding keeps the rest
    bad = json.dumps(good[:40_000] + [{"T": "t", "S": 1}] + good[40_000:]).encode()
    f = _p().parse(bad)
    assert len(f.trades) == 80_000 and f.malformed == 1
    # over the configured frame limit: refused whole, counted
    f = AlpacaParser(SymbolMap(["AAPL"], grow=False), max_frame_bytes=1_000_000).parse(frame)
    assert len(f.trades) == 0 and f.malformed == 1 and "limit" in f.reasons[0]
