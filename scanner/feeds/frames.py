"""PROVISIONAL (replaced by branch feeds-proto on merge): the record layouts of parsed vendor frames."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scanner.records import TICK_DTYPE

QUOTE_DTYPE = np.dtype([("sym", "<u4"), ("ts_ns", "<i8"), ("bid", "<f8"), ("ask", "<f8"),
                        ("bid_size", "<f8"), ("ask_size", "<f8")])
STATUS_DTYPE = np.dtype([("sym", "<u4"), ("ts_ns", "<i8"), ("halted", "u1"), ("reason", "<i8")])
LULD_DTYPE = np.dtype([("sym", "<u4"), ("ts_ns", "<i8"), ("upper", "<f8"), ("lower", "<f8")])
CORRECTION_DTYPE = np.dtype([("sym", "<u4"), ("ts_ns", "<i8"), ("orig_price", "<f8"), ("orig_size", "<f8"),
                             ("new_price", "<f8"), ("new_size", "<f8"), ("new_flags", "<u4")])


def pack_code(code: str) -> int:
    """Up to 8 ASCII characters as one int64 (little-endian)."""
    return int.from_bytes(code.encode("ascii")[:8].ljust(8, b"\0"), "little", signed=True)


def unpack_code(value: int) -> str:
    return int(value).to_bytes(8, "little", signed=True).rstrip(b"\0").decode("ascii", "replace")


@dataclass
class ParsedFrame:
    trades: np.ndarray = field(default_factory=lambda: np.empty(0, TICK_DTYPE))
    quotes: np.ndarray = field(default_factory=lambda: np.empty(0, QUOTE_DTYPE))
    statuses: np.ndarray = field(default_factory=lambda: np.empty(0, STATUS_DTYPE))
    lulds: np.ndarray = field(default_factory=lambda: np.empty(0, LULD_DTYPE))
    corrections: np.ndarray = field(default_factory=lambda: np.empty(0, CORRECTION_DTYPE))
    control: list[dict] = field(default_factory=list)
    malformed: int = 0
    unknown_symbol: int = 0
