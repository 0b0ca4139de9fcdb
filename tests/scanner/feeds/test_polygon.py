"""Polygon (Massive) stocks stream protocol cases through `PolygonParser`: every message type,
the builders, status classification, and hostile frames (counted, never raised)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scanner.feeds.common import SymbolMap
from scanner.feeds.frames import unpack_code
from scanner.feeds.polygon import PolygonParser, auth_message, classify_error, ms_to_ns, subscribe_message
from scanner.records import TICK_NO_HIGH_LOW, TICK_NO_LAST, TICK_NO_VOLUME, TICK_ODD_LOT

T_MS = 1536036818784
T_NS = T_MS * 1_000_000


def _p() -> PolygonParser:
    return PolygonParser(SymbolMap(["AAPL", "MSFT"], grow=False))


def _trade(**kw: object) -> dict:
    return {"ev": "T", "sym": "MSFT", "x": 4, "i": "12345", "z": 3, "p": 114.125, "s": 100, "c": [0, 12],
            "t": T_MS, "q": 3681328, **kw}


def test_builders_follow_the_docs() -> None:
    assert json.loads(auth_message("KEY")) == {"action": "auth", "params": "KEY"}
    assert json.loads(subscribe_message(trades=["*"], quotes=["AAPL", "MSFT"], lulds=["*"])) == {
        "action": "subscribe", "params": "T.*,Q.AAPL,Q.MSFT,LULD.*"}
    assert json.loads(subscribe_message(trades=["X"], action="unsubscribe")) == {"action": "unsubscribe",
                                                                                 "params": "T.X"}


def test_trades_with_conditions_and_time_units() -> None:
    f = _p().parse(json.dumps([_trade(), _trade(sym="AAPL", s=40, c=[37]), _trade(c=[2]), _trade(c=[15]),
                               _trade(t=T_NS), _trade(t=T_NS // 1000)]))
    assert f.trades.tolist() == [(1, 0, T_NS, 114.125, 100.0), (0, TICK_ODD_LOT, T_NS, 114.125, 40.0),
                                 (1, TICK_NO_LAST | TICK_NO_HIGH_LOW, T_NS, 114.125, 100.0),
                                 (1, TICK_NO_LAST | TICK_NO_HIGH_LOW | TICK_NO_VOLUME, T_NS, 114.125, 100.0),
                                 (1, 0, T_NS, 114.125, 100.0), (1, 0, T_NS, 114.125, 100.0)]
    assert ms_to_ns(np.array([1, 10**14, 10**17])).tolist() == [10**6, 10**17, 10**17]


def test_quotes_lulds_and_halts() -> None:
    msgs = [{"ev": "Q", "sym": "AAPL", "bx": 4, "bp": 114.125, "bs": 100, "ax": 7, "ap": 114.128, "as": 160,
             "c": 0, "i": [604], "t": T_MS, "q": 50385480, "z": 3},
            {"ev": "LULD", "T": "MSFT", "h": 120.0, "l": 110.0, "i": [], "z": 3, "t": T_MS, "q": 1},
            {"ev": "LULD", "T": "AAPL", "h": 0, "l": 0, "i": [17], "z": 3, "t": T_MS, "q": 2},
            {"ev": "LULD", "T": "AAPL", "h": 121.0, "l": 111.0, "i": [18], "z": 3, "t": T_MS + 1, "q": 3}]
    f = _p().parse(json.dumps(msgs))
    assert f.quotes.tolist() == [(0, T_NS, 114.125, 114.128, 100.0, 160.0)]
    assert f.lulds.tolist() == [(1, T_NS, 120.0, 110.0), (0, T_NS + 1_000_000, 121.0, 111.0)]
    assert f.statuses[["sym", "ts_ns", "halted"]].tolist() == [(0, T_NS, 1), (0, T_NS + 1_000_000, 0)]
    assert [unpack_code(r) for r in f.statuses["reason"]] == ["17", "18"]
    assert f.malformed == 0


def test_status_and_ignored_events() -> None:
    f = _p().parse(json.dumps([{"ev": "status", "status": "connected", "message": "Connected Successfully"},
                               {"ev": "AM", "sym": "AAPL", "v": 1}, {"ev": "A", "sym": "AAPL"},
                               {"ev": "status", "status": "auth_failed", "message": "authentication failed"}]))
    assert f.control == [{"ev": "status", "status": "connected", "message": "Connected Successfully"},
                         {"ev": "status", "status": "auth_failed", "message": "authentication failed"}]
    assert f.ignored == 2


@pytest.mark.parametrize(("status", "message", "expected"), [
    ("connected", "Connected Successfully", "ignore"), ("auth_success", "authenticated", "ignore"),
    ("success", "subscribed to: T.*", "ignore"), ("auth_failed", "authentication failed", "fatal"),
    ("max_connections", "Maximum number of websocket connections exceeded", "reconnect"),
    ("slow_consumer", "", "reconnect"), ("force_disconnect", "", "reconnect"),
    ("error", "not authorized", "fatal"), ("error", "Your plan doesn't include websocket access", "fatal"),
    ("error", "internal error", "reconnect"), ("something_new", "", "ignore")])
def test_status_classification(status: str, message: str, expected: str) -> None:
    assert classify_error({"ev": "status", "status": status, "message": message}) == expected


HOSTILE = [
    (b'[{"ev":"T","sym":"MSFT","p":1', 0, 1),
    (b"[" * 100_000 + b"]" * 100_000, 0, 1),
    (json.dumps([_trade(p="1"), _trade()]).encode(), 1, 1),
    (json.dumps([_trade(t=-5), _trade(t=2**70), _trade(t="x"), _trade()]).encode(), 1, 3),
    (json.dumps([_trade(p=-1), _trade(s=0), _trade(c=["a"]), _trade()]).encode(), 1, 3),
    (b'[{"ev":"T","sym":"MSFT","p":NaN,"s":1,"t":1},' + json.dumps(_trade()).encode() + b"]", 1, 1),
    (json.dumps([{"ev": "T"}, {"ev": None}, 3, _trade()]).encode(), 1, 3),
    (json.dumps([{"ev": "LULD", "T": "AAPL", "h": 1.0, "l": 2.0, "t": T_MS}, _trade()]).encode(), 1, 1),
]


@pytest.mark.parametrize(("frame", "good", "bad"), HOSTILE)
def test_hostile_frames(frame: bytes, good: int, bad: int) -> None:
    f = _p().parse(frame)
    assert len(f.trades) == good and f.malformed == bad and bool(f.reasons) is bool(bad)


def test_unknown_symbols_are_counted() -> None:
    f = _p().parse(json.dumps([_trade(sym="NOPE"), _trade()]))
    assert len(f.trades) == 1 and f.unknown_symbol == 1
