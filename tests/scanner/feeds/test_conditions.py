"""Sale-condition tables, case by case: each code's update rules as the CTA/UTP tapes (via the
vendors' docs) give them, our deliberate deviations, combinations, and the flags the parsers put
on trades (then honoured by the bars)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scanner.bars import BarAggregator, new_columns, new_history
from scanner.feeds.alpaca import AlpacaParser
from scanner.feeds.common import SymbolMap
from scanner.feeds.conditions import (
    ALPACA_CTA,
    ALPACA_UTP,
    POLYGON,
    POLYGON_NO_LAST,
    POLYGON_NO_VOLUME,
    POLYGON_ODD_LOT,
    alpaca_flags,
    flags_of,
    polygon_flags,
)
from scanner.feeds.polygon import PolygonParser
from scanner.records import TICK_NO_HIGH_LOW, TICK_NO_LAST, TICK_NO_VOLUME, TICK_ODD_LOT

ALL, ODD = 0, TICK_ODD_LOT
VOL = TICK_NO_LAST | TICK_NO_HIGH_LOW  # volume only
REPORT = VOL | TICK_NO_VOLUME  # counts nowhere

# (code, flags): every letter of Alpaca's CTA table
CTA_CASES = [("@", ALL), ("B", VOL), ("C", VOL), ("E", ALL), ("F", ALL), ("H", VOL), ("I", ODD), ("K", ALL),
             ("L", VOL), ("M", REPORT), ("N", VOL), ("O", ALL), ("P", VOL), ("Q", REPORT), ("R", VOL), ("T", ALL),
             ("U", VOL), ("V", VOL), ("X", ALL), ("Z", VOL), ("4", VOL), ("5", ALL), ("6", ALL), ("7", VOL),
             ("9", REPORT)]
# every letter of Alpaca's UTP table
UTP_CASES = [("@", ALL), ("A", ALL), ("B", ALL), ("C", VOL), ("D", ALL), ("F", ALL), ("G", VOL), ("H", VOL),
             ("I", ODD), ("K", ALL), ("L", VOL), ("M", REPORT), ("N", VOL), ("O", ALL), ("P", VOL), ("Q", REPORT),
             ("R", VOL), ("S", ALL), ("T", ALL), ("U", VOL), ("V", VOL), ("W", VOL), ("X", ALL), ("Y", ALL),
             ("Z", VOL), ("1", ALL), ("4", VOL), ("5", ALL), ("6", ALL), ("7", VOL), ("8", ALL), ("9", REPORT)]
POLYGON_CASES = [(0, ALL), (1, ALL), (2, VOL), (3, ALL), (4, ALL), (5, VOL), (7, VOL), (8, ALL), (9, ALL), (10, VOL),
                 (11, ALL), (12, ALL), (13, VOL), (14, ALL), (15, REPORT), (16, REPORT), (17, ALL), (18, ALL),
                 (19, ALL), (20, VOL), (21, VOL), (22, VOL), (23, ALL), (24, ALL), (25, ALL), (27, ALL), (28, ALL),
                 (29, VOL), (30, VOL), (32, VOL), (33, VOL), (34, ALL), (36, ALL), (37, ODD), (38, REPORT),
                 (41, ALL), (52, VOL), (53, VOL), (59, ALL)]


@pytest.mark.parametrize(("code", "flags"), CTA_CASES)
def test_alpaca_cta_codes(code: str, flags: int) -> None:
    assert ALPACA_CTA[code].flags == flags
    assert alpaca_flags(("A", (code,))) == flags and alpaca_flags(("B", (code,))) == flags


@pytest.mark.parametrize(("code", "flags"), UTP_CASES)
def test_alpaca_utp_codes(code: str, flags: int) -> None:
    assert ALPACA_UTP[code].flags == flags
    assert alpaca_flags(("C", (code,))) == flags


@pytest.mark.parametrize(("code", "flags"), POLYGON_CASES)
def test_polygon_codes(code: int, flags: int) -> None:
    assert POLYGON[code].flags == flags and polygon_flags((code,)) == flags


def test_every_table_entry_is_covered_case_by_case() -> None:
    assert {c for c, _ in CTA_CASES} == set(ALPACA_CTA) - {" "}
    assert {c for c, _ in UTP_CASES} == set(ALPACA_UTP) - {" "}
    assert {c for c, _ in POLYGON_CASES} == set(POLYGON)


def test_tape_decides_letters_the_sips_use_differently() -> None:
    """CTA "B" is an average-price trade, UTP "B" a bunched trade."""
    assert alpaca_flags(("A", ("B",))) == VOL and alpaca_flags(("C", ("B",))) == ALL


def test_combinations_restrict_and_unknown_codes_update() -> None:
    assert flags_of(["@", "F", "I"], ALPACA_UTP) == ODD
    assert flags_of(["I", "W"], ALPACA_UTP) == ODD | VOL
    assert flags_of([12, 37], POLYGON) == ODD  # an extended-hours odd lot
    assert flags_of([14, 15], POLYGON) == REPORT
    assert flags_of(["?"], ALPACA_CTA) == 0 and flags_of([999], POLYGON) == 0


def test_flat_file_sets_come_from_the_same_table() -> None:
    assert POLYGON_ODD_LOT == {37}
    assert {2, 7, 10, 13, 15, 16, 20, 21, 22, 29, 30, 33, 52, 53} <= POLYGON_NO_LAST
    assert POLYGON_NO_VOLUME == {15, 16, 38}


T0 = 1_381_239_000_000_000_000 + 60_000_000_000  # 2013-10-08 09:31 New York


def _bars_of(ticks: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    cols = new_columns(1)
    agg = BarAggregator(cols, *new_history(1, 4))
    return np.concatenate([agg.on_ticks(ticks), agg.close_all()]), cols


@pytest.mark.parametrize(("cond", "moves"), [(["@"], True), (["@", "F"], True), (["W"], False), (["4"], False),
                                             (["P"], False), (["Z"], False), (["L"], False), (["I"], False),
                                             (["M"], False), (["Q"], False), (["6"], True)])
def test_alpaca_print_conditions_through_parser_and_bars(cond: list[str], moves: bool) -> None:
    """A print at 20 after a regular print at 10: it moves the bar and the day high only if its
    conditions allow it; official open/close reports do not even count volume."""
    msgs = [{"T": "t", "S": "X", "p": 10.0, "s": 100, "c": ["@"], "t": "2013-10-08T13:31:00.5Z", "z": "C"},
            {"T": "t", "S": "X", "p": 20.0, "s": 100, "c": cond, "t": "2013-10-08T13:31:01.5Z", "z": "C"}]
    frame = AlpacaParser(SymbolMap(["X"], grow=False)).parse(json.dumps(msgs))
    bars, cols = _bars_of(frame.trades)
    assert bool(bars["high"][0] == 20.0) is moves and bool(cols["day_high"][0] == 20.0) is moves
    assert bars["volume"][0] == (100.0 if cond in (["M"], ["Q"]) else 200.0)


@pytest.mark.parametrize(("cond", "moves"), [([], True), ([14], True), ([2], False), ([10], False), ([22], False),
                                             ([33], False), ([30], False), ([37], False), ([15], False), ([8], True)])
def test_polygon_print_conditions_through_parser_and_bars(cond: list[int], moves: bool) -> None:
    msgs = [{"ev": "T", "sym": "X", "p": 10.0, "s": 100, "t": T0 // 1_000_000 + 500},
            {"ev": "T", "sym": "X", "p": 20.0, "s": 100, "c": cond, "t": T0 // 1_000_000 + 1500}]
    frame = PolygonParser(SymbolMap(["X"], grow=False)).parse(json.dumps(msgs))
    bars, cols = _bars_of(frame.trades)
    assert bool(bars["high"][0] == 20.0) is moves and bool(cols["day_high"][0] == 20.0) is moves
    assert bars["volume"][0] == (100.0 if cond == [15] else 200.0)
