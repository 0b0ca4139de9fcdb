"""Fixed-size record layouts that cross process boundaries through shared-memory rings.

Defined once here; sizes asserted at import so a layout change is caught before it corrupts
a ring.
"""

from __future__ import annotations

import hashlib

import numpy as np

# One trade. `sym` is the row in this host's symbol table; `ts_ns` is event time (epoch ns,
# UTC); `flags` carries TICK_* bits.
TICK_DTYPE = np.dtype(
    {"names": ["sym", "flags", "ts_ns", "price", "size"],
     "formats": ["<u4", "<u4", "<i8", "<f8", "<f8"],
     "offsets": [0, 4, 8, 16, 24], "itemsize": 32}
)
TICK_ODD_LOT = 1  # under 100 shares: counts for volume, not for last/high/low (as the SIPs do)
TICK_NO_LAST = 2  # condition code says "does not update last" (e.g. out-of-sequence prints)
TICK_NO_HIGH_LOW = 4  # condition code says "does not update high/low" (e.g. average-price prints)
TICK_NO_VOLUME = 8  # not a trade for volume: official open/close reports, corrected consolidated close
TICK_NO_PRICE = TICK_ODD_LOT | TICK_NO_LAST | TICK_NO_HIGH_LOW  # any of these: never moves O/H/L/C or HOD
# A vendor cancel (or the cancelled half of a correction): takes back an earlier print of the same
# symbol, event time, price and size. Carries TICK_NO_LAST too; see scanner.bars for what it undoes.
TICK_CANCEL = 16
# Kafka group mode (`procs.ingest_kafka`): a tick of a symbol's day replayed from the topic after its
# partition moved to this host (the bars process aggregates it without a watermark), and
# marks, which are not trades but ownership changes of one row, in ring order with its ticks:
# BEGIN (reset the row, rebuild follows), END (rebuilt: scan it), RELEASE (no longer ours).
TICK_REBUILD = 32
TICK_MARK_BEGIN, TICK_MARK_END, TICK_MARK_RELEASE = 64, 128, 256
TICK_MARKS = TICK_MARK_BEGIN | TICK_MARK_END | TICK_MARK_RELEASE

# One closed 1-minute bar, produced by the bar process for the storage writer and indicators.
BAR_DTYPE = np.dtype(
    {"names": ["sym", "trades", "minute_ns", "open", "high", "low", "close", "volume", "vwap"],
     "formats": ["<u4", "<u4", "<i8", "<f8", "<f8", "<f8", "<f8", "<f8", "<f8"],
     "offsets": [0, 4, 8, 16, 24, 32, 40, 48, 56], "itemsize": 64}
)

# One alert, written by a scanner worker into its SPSC ring. `rule` is the rule's stable key
# (`rule_key(rule id)`), never its position in a rule list: positions shift when a rule is
# added or deleted between the scan and the encoder (issue 10.8). `values` holds the values of
# up to ALERT_VALUES metrics the rule reads (in the rule's own metric order; NaN pads); `price`
# is the symbol's last trade price in the same snapshot (the entry price of a backtest).
ALERT_VALUES = 6
ALERT_DTYPE = np.dtype(
    {"names": ["seq", "event_ns", "scan_ns", "sym", "generation", "worker", "kind", "rule",
               "values", "price"],
     "formats": ["<i8", "<i8", "<i8", "<u4", "<u4", "<u2", "<u2", "<u8", ("<f8", ALERT_VALUES), "<f8"],
     "offsets": [0, 8, 16, 24, 28, 32, 34, 40, 48, 96], "itemsize": 128}
)
ALERT_ENTER, ALERT_EXIT = 0, 1



def rule_key(rule_id: str) -> int:
    """The stable 64-bit key of a rule id (BLAKE2b): the same on every host, process and
    generation, so an alert names its rule whatever happened to the rule list since."""
    return int.from_bytes(hashlib.blake2b(rule_id.encode(), digest_size=8).digest(), "little")


def rule_positions(rule_ids: list[str], keys: np.ndarray) -> np.ndarray:
    """Position in `rule_ids` of each alert's rule key (`ALERT_DTYPE["rule"]`), int64;
    `len(rule_ids)` for a key no rule of the list has (a rule deleted since)."""
    n = len(rule_ids)
    if n == 0:
        return np.zeros(len(keys), np.int64)
    own = np.array([rule_key(r) for r in rule_ids], np.uint64)
    order = np.argsort(own, kind="stable")
    at = order[np.minimum(np.searchsorted(own[order], keys.astype(np.uint64)), n - 1)]
    return np.where(own[at] == keys, at, n).astype(np.int64)


assert TICK_DTYPE.itemsize == 32
assert BAR_DTYPE.itemsize == 64
assert ALERT_DTYPE.itemsize == 128
