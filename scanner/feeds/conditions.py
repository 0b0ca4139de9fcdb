"""Sale conditions: what each vendor condition code lets a trade update (last, high/low, volume).

One table per vendor, one `Rule` per code. A trade carrying several codes updates a field only
if every code allows it (the consolidated-tape rule: any restricting modifier wins). The rules
become TICK_* flag bits (`scanner.records`), which `scanner.bars` and `scanner.ticks` honour.

Sources:
- Alpaca (letters, as the SIPs publish them; the tape `z` picks the table: A/B = CTA, C = UTP):
  Alpaca docs "Our Sources of Market Data" / "Market Data FAQ", the CTA and UTP condition
  tables (https://docs.alpaca.markets/docs/market-data-faq), which follow the CTA Plan's
  "Consolidated Processing Guidelines" and the UTP Plan's "Trade Update Rules" matrix.
- Polygon / Massive (integer ids): the `update_rules.consolidated` block (updates_high_low,
  updates_open_close, updates_volume) of each trade condition returned by
  `GET /v3/reference/conditions?asset_class=stocks&data_type=trade`
  (https://massive.com/docs/rest/stocks/market-operations/condition-codes), with its
  `sip_mapping` to the same CTA/UTP letters.

Deliberate deviations from the tape rules, because this project's bars need them (the issue
says so; `docs/` repeats it):
- Odd-lot, average-price, derivatively-priced, prior-reference, out-of-sequence (Z, U, G),
  seller and sold-last prints and the market centers' official open/close never move the
  open, high, low or close, even where a tape lets a code update high/low (e.g. UTP "Z"
  updates high/low but not last): such prints are late or not at the market, and one alone
  must not create a new high of day.
- Form T (extended-hours) prints update bars: the tapes exclude them from the regular-session
  last sale, and `scanner.bars` already keeps every pre-/post-market print out of the day
  open/high/low; the extended-hours bars and the pre-market high are built from exactly those
  prints.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import NamedTuple

import numpy as np

from scanner.records import TICK_NO_HIGH_LOW, TICK_NO_LAST, TICK_NO_VOLUME, TICK_ODD_LOT


class Rule(NamedTuple):
    """What one condition code lets a trade update."""

    name: str
    last: bool = True
    high_low: bool = True
    volume: bool = True
    odd_lot: bool = False

    @property
    def flags(self) -> int:
        """The TICK_* bits that say what this code forbids."""
        return ((0 if self.last else TICK_NO_LAST) | (0 if self.high_low else TICK_NO_HIGH_LOW)
                | (0 if self.volume else TICK_NO_VOLUME) | (TICK_ODD_LOT if self.odd_lot else 0))


_ALL = Rule  # updates last, high/low and volume
_VOLUME_ONLY = {"last": False, "high_low": False}  # counts for volume, moves no price
_REPORT = {"last": False, "high_low": False, "volume": False}  # a report, not a trade

# Letters both SIPs share (Alpaca's CTA and UTP tables agree on them).
_COMMON: dict[str, Rule] = {
    "@": _ALL("Regular Sale"),
    " ": _ALL("Regular Sale (blank)"),
    "C": Rule("Cash Sale", **_VOLUME_ONLY),
    "F": _ALL("Intermarket Sweep"),
    "H": Rule("Price Variation Trade", **_VOLUME_ONLY),
    "I": Rule("Odd Lot Trade", odd_lot=True),  # TICK_ODD_LOT alone already means "volume only"
    "K": _ALL("Rule 127 (NYSE) / Rule 155 (NYSE American)"),
    "L": Rule("Sold Last (late reporting)", **_VOLUME_ONLY),
    "M": Rule("Market Center Official Close", **_REPORT),
    "N": Rule("Next Day", **_VOLUME_ONLY),
    "O": _ALL("Market Center Opening Trade / Opening Prints"),
    "P": Rule("Prior Reference Price", **_VOLUME_ONLY),
    "Q": Rule("Market Center Official Open", **_REPORT),
    "R": Rule("Seller", **_VOLUME_ONLY),
    "T": _ALL("Form T / Extended Hours Trade"),
    "U": Rule("Extended Hours Sold (Out of Sequence)", **_VOLUME_ONLY),
    "V": Rule("Contingent Trade", **_VOLUME_ONLY),
    "X": _ALL("Cross Trade"),
    "Z": Rule("Sold (Out of Sequence)", **_VOLUME_ONLY),
    "4": Rule("Derivatively Priced", **_VOLUME_ONLY),
    "5": _ALL("Market Center Reopening Trade / Re-Opening Prints"),
    "6": _ALL("Market Center Closing Trade / Closing Prints"),
    "7": Rule("Qualified Contingent Trade", **_VOLUME_ONLY),
    "9": Rule("Corrected Consolidated Close (per listing market)", **_REPORT),
}

# CTA (tapes A and B): "B" is the average-price trade and "E" an automatic execution.
ALPACA_CTA: dict[str, Rule] = {
    **_COMMON,
    "B": Rule("Average Price Trade", **_VOLUME_ONLY),
    "E": _ALL("Automatic Execution"),
}

# UTP (tape C): "B" is a bunched trade, "W" the average-price trade.
ALPACA_UTP: dict[str, Rule] = {
    **_COMMON,
    "A": _ALL("Acquisition"),
    "B": _ALL("Bunched Trade"),
    "D": _ALL("Distribution"),
    "G": Rule("Bunched Sold Trade", **_VOLUME_ONLY),
    "S": _ALL("Split Trade"),
    "W": Rule("Average Price Trade", **_VOLUME_ONLY),
    "Y": _ALL("Yellow Flag Regular Trade"),
    "1": _ALL("Stopped Stock (Regular Trade)"),
    "8": _ALL("Placeholder for 611 Exempt"),
}

# Polygon / Massive trade condition ids (SIP letter in the name).
POLYGON: dict[int, Rule] = {
    0: _ALL("Regular Trade (@)"),
    1: _ALL("Acquisition (A)"),
    2: Rule("Average Price Trade (W / B)", **_VOLUME_ONLY),
    3: _ALL("Automatic Execution (E)"),
    4: _ALL("Bunched Trade (B)"),
    5: Rule("Bunched Sold Trade (G)", **_VOLUME_ONLY),
    7: Rule("Cash Sale (C)", **_VOLUME_ONLY),
    8: _ALL("Closing Prints (6)"),
    9: _ALL("Cross Trade (X)"),
    10: Rule("Derivatively Priced (4)", **_VOLUME_ONLY),
    11: _ALL("Distribution (D)"),
    12: _ALL("Form T (T)"),
    13: Rule("Extended Trading Hours, Sold Out of Sequence (U)", **_VOLUME_ONLY),
    14: _ALL("Intermarket Sweep (F)"),
    15: Rule("Market Center Official Close (M)", **_REPORT),
    16: Rule("Market Center Official Open (Q)", **_REPORT),
    17: _ALL("Market Center Opening Trade (O)"),
    18: _ALL("Market Center Reopening Trade (5)"),
    19: _ALL("Market Center Closing Trade (6)"),
    20: Rule("Next Day (N)", **_VOLUME_ONLY),
    21: Rule("Price Variation Trade (H)", **_VOLUME_ONLY),
    22: Rule("Prior Reference Price (P)", **_VOLUME_ONLY),
    23: _ALL("Rule 155 Trade, NYSE American (K)"),
    24: _ALL("Rule 127, NYSE (K)"),
    25: _ALL("Opening Prints (O)"),
    27: _ALL("Stopped Stock, Regular Trade (1)"),
    28: _ALL("Re-Opening Prints (5)"),
    29: Rule("Seller (R)", **_VOLUME_ONLY),
    30: Rule("Sold Last (L)", **_VOLUME_ONLY),
    32: Rule("Sold Out", **_VOLUME_ONLY),
    33: Rule("Sold Out of Sequence (Z)", **_VOLUME_ONLY),
    34: _ALL("Split Trade (S)"),
    36: _ALL("Yellow Flag Regular Trade (Y)"),
    37: Rule("Odd Lot Trade (I)", odd_lot=True),
    38: Rule("Corrected Consolidated Close (9)", **_REPORT),
    41: _ALL("Trade Thru Exempt"),
    52: Rule("Contingent Trade (V)", **_VOLUME_ONLY),
    53: Rule("Qualified Contingent Trade (7)", **_VOLUME_ONLY),
    59: _ALL("Placeholder for 611 Exempt (8)"),
}

# Codes not in a table update everything (as a regular sale) but are counted by the parser.
UNKNOWN_FLAGS = 0


def flags_of(codes: Iterable[Hashable], table: dict) -> int:
    """TICK_* bits of a trade carrying `codes`: the union of what each code forbids."""
    f = 0
    for c in codes:
        rule = table.get(c)
        f |= rule.flags if rule is not None else UNKNOWN_FLAGS
    return f


class FlagCache:
    """Condition key -> TICK_* flags, memoised: a feed uses a few dozen distinct condition
    combinations, so the per-trade cost is one dict lookup. `compute(key)` gives the flags of
    a key not seen yet. Bounded: past `limit` entries a hostile stream of distinct
    combinations is still computed but no longer remembered."""

    def __init__(self, compute: Callable[[Hashable], int], limit: int = 4096) -> None:
        self.compute = compute
        self.memo: dict[Hashable, int] = {}
        self.limit = limit

    def lookup(self, key: Hashable) -> int:
        f = self.memo.get(key)
        if f is None:
            f = self.compute(key)
            if len(self.memo) < self.limit:
                self.memo[key] = f
        return f

    def many(self, keys: list) -> np.ndarray:
        """Flags of many keys (uint32)."""
        memo = self.memo
        got = [memo.get(k, -1) for k in keys]
        if -1 in got:
            got = [g if g >= 0 else self.lookup(k) for g, k in zip(got, keys, strict=True)]
        return np.array(got, np.uint32)


def alpaca_flags(key: tuple[str, tuple[str, ...]]) -> int:
    """Flags of an Alpaca (tape, conditions) key: tape "C" reads the UTP table, A/B the CTA one."""
    tape, codes = key
    return flags_of(codes, ALPACA_UTP if tape == "C" else ALPACA_CTA)


def polygon_flags(codes: tuple[int, ...]) -> int:
    """Flags of a Polygon condition-id tuple."""
    return flags_of(codes, POLYGON)


# The Polygon flat-file decoder (`scanner.feeds.csv_trades`) reads the same table.
POLYGON_ODD_LOT = frozenset(k for k, r in POLYGON.items() if r.odd_lot)
POLYGON_NO_LAST = frozenset(k for k, r in POLYGON.items() if not r.last)
POLYGON_NO_VOLUME = frozenset(k for k, r in POLYGON.items() if not r.volume)
