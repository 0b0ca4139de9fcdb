"""What a vendor-protocol parser returns for one WebSocket frame: numpy columns plus counts.

Both `AlpacaParser` and `PolygonParser` produce a `ParsedFrame`: trades as TICK_DTYPE (sym =
row of the caller's `SymbolMap`, flags from the vendor's condition table), and quotes, trading
statuses, LULD bands and trade corrections as the dtypes below. Control messages (welcome,
auth, subscription, errors) stay small dicts with the vendor's own fields, for the socket
client to act on. Malformed messages and unknown symbols are counted, never raised.

`STATUS_DTYPE.reason` holds the vendor's halt/resume reason code (e.g. Alpaca "LUDP", "T1")
packed as up to 8 ASCII bytes into an int64 (`pack_code` / `unpack_code`), so it fits a
fixed-width column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
from numba import njit

from scanner.feeds.common import SymbolMap
from scanner.feeds.jsonbytes import at
from scanner.records import TICK_DTYPE

QUOTE_DTYPE = np.dtype([("sym", "<u4"), ("ts_ns", "<i8"), ("bid", "<f8"), ("ask", "<f8"), ("bid_size", "<f8"),
                        ("ask_size", "<f8")])
STATUS_DTYPE = np.dtype([("sym", "<u4"), ("ts_ns", "<i8"), ("halted", "u1"), ("reason", "<i8")])
LULD_DTYPE = np.dtype([("sym", "<u4"), ("ts_ns", "<i8"), ("upper", "<f8"), ("lower", "<f8")])
CORRECTION_DTYPE = np.dtype([("sym", "<u4"), ("ts_ns", "<i8"), ("orig_price", "<f8"), ("orig_size", "<f8"),
                             ("new_price", "<f8"), ("new_size", "<f8"), ("new_flags", "<u4")])
MAX_REASONS = 5  # malformed reasons kept per frame
BAD_TS = np.iinfo(np.int64).min  # what `rfc3339_ns` answers for an unparsable time


def pack_code(code: str) -> int:
    """Up to 8 ASCII characters as one int64 (little-endian bytes; longer codes truncate,
    non-ASCII characters become '?')."""
    raw = code.encode("ascii", "replace")[:8].ljust(8, b"\0")
    return int.from_bytes(raw, "little", signed=True)


def unpack_code(value: int) -> str:
    """Inverse of `pack_code`."""
    return int(value).to_bytes(8, "little", signed=True).rstrip(b"\0").decode("ascii", "replace")


def _none(dtype: np.dtype) -> np.ndarray:
    """A read-only empty array: one shared default per kind, not five allocations per frame."""
    a = np.empty(0, dtype)
    a.flags.writeable = False
    return a


_NO_TRADES, _NO_QUOTES, _NO_STATUSES = _none(TICK_DTYPE), _none(QUOTE_DTYPE), _none(STATUS_DTYPE)
_NO_LULDS, _NO_CORRECTIONS = _none(LULD_DTYPE), _none(CORRECTION_DTYPE)


@dataclass
class ParsedFrame:
    """Everything decoded from one frame, in frame order within each kind."""

    trades: np.ndarray = field(default_factory=lambda: _NO_TRADES)
    quotes: np.ndarray = field(default_factory=lambda: _NO_QUOTES)
    statuses: np.ndarray = field(default_factory=lambda: _NO_STATUSES)
    lulds: np.ndarray = field(default_factory=lambda: _NO_LULDS)
    corrections: np.ndarray = field(default_factory=lambda: _NO_CORRECTIONS)
    control: list[dict] = field(default_factory=list)
    malformed: int = 0  # messages (or whole frames) that could not be decoded or were out of range
    unknown_symbol: int = 0  # well-formed data messages for a symbol outside the map
    ignored: int = 0  # well-formed messages of a kind we do not consume (bars, imbalances, ...)
    reasons: list[str] = field(default_factory=list)  # the first MAX_REASONS malformed reasons

    def bad(self, reason: str, n: int = 1) -> None:
        """Count `n` malformed messages for `reason`."""
        if n <= 0:
            return
        self.malformed += n
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason if n == 1 else f"{reason} (x{n})")


def keep_valid(frame: ParsedFrame, ok: np.ndarray, rows: np.ndarray, what: str) -> np.ndarray:
    """Mask of messages to keep: in range (`ok`) and of a known symbol (`rows` >= 0);
    counts the others in `frame`."""
    frame.bad(f"{what}: value out of range", int(np.count_nonzero(~ok)))
    unknown = ok & (rows < 0)
    frame.unknown_symbol += int(np.count_nonzero(unknown))
    return ok & (rows >= 0)


_TS_WIDTH = 40  # a valid RFC-3339 time is at most 35 bytes ("...T15:51:44.123456789+00:00")


def rfc3339_ns(texts: list[str]) -> np.ndarray:
    """Epoch ns (int64) of RFC-3339 times ("2021-02-22T15:51:44.208123456Z", any fraction
    length up to 9 digits, "Z" or a +hh:mm offset), exact to the ns; BAD_TS where unparsable.
    Vectorised: the strings become one fixed-width byte matrix parsed by a compiled kernel."""
    if not texts:
        return np.empty(0, np.int64)
    try:
        buf = np.array(texts, dtype=f"S{_TS_WIDTH}")
    except (UnicodeEncodeError, TypeError, ValueError):
        buf = np.array([t.encode("ascii", "replace")[:_TS_WIDTH] if isinstance(t, str) else b"" for t in texts],
                       dtype=f"S{_TS_WIDTH}")
    return _parse_rfc3339(buf.view(np.uint8).reshape(len(texts), _TS_WIDTH))


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _digits(row: np.ndarray, i: int, n: int) -> int:
    v = 0
    for k in range(i, i + n):
        d = at(row, k) - 48
        if d < 0 or d > 9:
            return -1
        v = v * 10 + d
    return v


@njit(cache=True, nogil=True, _nrt=False)
def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@njit(cache=True, nogil=True)
def _parse_rfc3339(buf: np.ndarray) -> np.ndarray:
    n, width = buf.shape
    out = np.empty(n, np.int64)
    for r in range(n):
        row = buf[r]
        e = 0
        while e < width and at(row, e) != 0:
            e += 1
        out[r] = ts_span(row, 0, e) if e < width else BAD_TS  # a full row: longer than any valid time
    return out


@njit(cache=True, nogil=True, _nrt=False)
def ts_span(row: np.ndarray, s: int, e: int) -> int:
    """Epoch ns of the RFC-3339 time in bytes row[s:e]; BAD_TS when it is not one."""
    if e - s < 20 or e - s > 35:
        return BAD_TS
    if at(row, s + 4) != 45 or at(row, s + 7) != 45:  # '-' '-'
        return BAD_TS
    if at(row, s + 13) != 58 or at(row, s + 16) != 58:  # ':' ':'
        return BAD_TS
    sep = at(row, s + 10)
    if sep != 84 and sep != 116 and sep != 32:  # 'T' 't' ' '
        return BAD_TS
    y, mo, d = _digits(row, s, 4), _digits(row, s + 5, 2), _digits(row, s + 8, 2)
    hh, mi, ss = _digits(row, s + 11, 2), _digits(row, s + 14, 2), _digits(row, s + 17, 2)
    if y < 0 or mo < 1 or mo > 12 or d < 1 or d > _MDAYS[mo - 1] or hh < 0 or hh > 23 or mi < 0 or mi > 59:
        return BAD_TS
    if ss < 0 or ss > 60 or (mo == 2 and d == 29 and (y % 4 != 0 or (y % 100 == 0 and y % 400 != 0))):
        return BAD_TS
    i = s + 19
    frac = 0
    if at(row, i) == 46:  # '.'
        i += 1
        nd = 0
        while i < e and 48 <= at(row, i) <= 57:
            frac = frac * 10 + (at(row, i) - 48)
            nd += 1
            i += 1
        if nd == 0 or nd > 9:
            return BAD_TS
        for _ in range(9 - nd):
            frac *= 10
    off = 0
    if i < e and (at(row, i) == 90 or at(row, i) == 122):  # 'Z' 'z'
        i += 1
    elif i + 6 <= e and (at(row, i) == 43 or at(row, i) == 45) and at(row, i + 3) == 58:  # +hh:mm
        oh, om = _digits(row, i + 1, 2), _digits(row, i + 4, 2)
        if oh < 0 or om < 0 or oh > 23 or om > 59:
            return BAD_TS
        off = (oh * 60 + om) * 60
        if at(row, i) == 45:
            off = -off
        i += 6
    else:
        return BAD_TS
    if i != e:
        return BAD_TS
    secs = _days_from_civil(y, mo, d) * 86400 + hh * 3600 + mi * 60 + ss - off
    return secs * 1_000_000_000 + frac


_MDAYS = np.array([31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def ts_quoted_ns(row: np.ndarray, s: int, n: int, d_at: int, d_secs: int) -> tuple[int, int, int]:
    """The vendors' usual time, `YYYY-MM-DDTHH:MM:SS.fffffffffZ"` at row[s:s+31] (the closing
    quote included), in straight-line code: (epoch ns, d_at, d_secs), or BAD_TS when the bytes
    are not exactly that layout (the caller then takes `ts_span`, which decides). The date's
    seconds are cached by the caller across calls (`d_at`: where the last date parsed starts,
    -1 none; `d_secs`: its epoch seconds): a frame's trades share a date, so 10 byte compares
    replace the date's checks and arithmetic. Same answer as `ts_span` for every input it takes."""
    if s + 30 >= n or at(row, s + 30) != 34 or at(row, s + 29) != 90 or at(row, s + 19) != 46 or at(row, s + 10) != 84:
        return BAD_TS, d_at, d_secs
    same = d_at >= 0
    if same:
        for j in range(10):
            if at(row, s + j) != at(row, d_at + j):
                same = False
                break
    if not same:
        if at(row, s + 4) != 45 or at(row, s + 7) != 45:
            return BAD_TS, d_at, d_secs
        y, mo, d = _digits(row, s, 4), _digits(row, s + 5, 2), _digits(row, s + 8, 2)
        if y < 0 or mo < 1 or mo > 12 or d < 1 or d > _MDAYS[mo - 1]:
            return BAD_TS, d_at, d_secs
        if mo == 2 and d == 29 and (y % 4 != 0 or (y % 100 == 0 and y % 400 != 0)):
            return BAD_TS, d_at, d_secs
        d_at, d_secs = s, _days_from_civil(y, mo, d) * 86400
    if at(row, s + 13) != 58 or at(row, s + 16) != 58:
        return BAD_TS, d_at, d_secs
    hh, mi, ss = _digits(row, s + 11, 2), _digits(row, s + 14, 2), _digits(row, s + 17, 2)
    frac = _digits(row, s + 20, 9)
    if hh < 0 or hh > 23 or mi < 0 or mi > 59 or ss < 0 or ss > 60 or frac < 0:
        return BAD_TS, d_at, d_secs
    return (d_secs + hh * 3600 + mi * 60 + ss) * 1_000_000_000 + frac, d_at, d_secs

class FrameDecoder:
    """msgspec decoding of a vendor frame (a JSON array of messages tagged by a type field)
    into typed Structs, never raising. Fast path: one typed decode of the whole array. When
    one message is bad (wrong type, unknown tag), the frame is re-read message by message so
    the good ones survive; invalid JSON syntax (e.g. a NaN literal) gets the lenient stdlib
    parser. Only a frame that is not JSON at all (truncated) is lost, as one malformed count."""

    def __init__(self, message_type: object, max_frame_bytes: int = 64 << 20) -> None:
        self.type = message_type
        self.max_frame_bytes = max_frame_bytes
        self._all = msgspec.json.Decoder(list[message_type])  # type: ignore[valid-type]
        self._one = msgspec.json.Decoder(message_type)
        self._raw = msgspec.json.Decoder(list[msgspec.Raw])

    def decode(self, frame: bytes | str, out: ParsedFrame) -> list:
        if len(frame) > self.max_frame_bytes:
            out.bad(f"frame of {len(frame)} bytes over the {self.max_frame_bytes} limit")
            return []
        try:
            return self._all.decode(frame)
        except msgspec.ValidationError:
            return self._per_message(frame, out)
        except (msgspec.DecodeError, RecursionError):
            return self._lenient(frame, out)

    def _per_message(self, frame: bytes | str, out: ParsedFrame) -> list:
        try:
            raws = self._raw.decode(frame)
        except msgspec.ValidationError:  # not an array: maybe a single message
            raws = [frame]
        except (msgspec.DecodeError, RecursionError):
            return self._lenient(frame, out)
        msgs = []
        for raw in raws:
            try:
                msgs.append(self._one.decode(raw))
            except (msgspec.DecodeError, RecursionError) as exc:
                out.bad(f"message: {_short(exc)}")
        return msgs

    def _lenient(self, frame: bytes | str, out: ParsedFrame) -> list:
        try:
            obj = json.loads(frame)
        except (ValueError, RecursionError, TypeError) as exc:
            out.bad(f"frame is not JSON: {_short(exc)}")
            return []
        msgs = []
        for item in obj if isinstance(obj, list) else [obj]:
            try:
                msgs.append(msgspec.convert(item, self.type))
            except (msgspec.ValidationError, RecursionError) as exc:
                out.bad(f"message: {_short(exc)}")
        return msgs


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def symbol_rows(symbols: SymbolMap, names: list[str]) -> np.ndarray:
    """Rows (int64, -1 unknown) of symbol names: one dict lookup each."""
    if symbols.grow:
        row = symbols.row
        return np.array([row(s) for s in names], np.int64)
    get = symbols.rows.get
    return np.array([get(s, -1) for s in names], np.int64)


def ticks_of(rows: np.ndarray, ts: np.ndarray, px: np.ndarray, sz: np.ndarray, flags: np.ndarray,
             keep: np.ndarray) -> np.ndarray:
    """TICK_DTYPE array of the kept trades."""
    if not keep.all():
        rows, ts, px, sz, flags = rows[keep], ts[keep], px[keep], sz[keep], flags[keep]
    t = np.empty(len(rows), TICK_DTYPE)
    t["sym"], t["flags"], t["ts_ns"], t["price"], t["size"] = rows, flags, ts, px, sz
    return t


def fill(dtype: np.dtype, keep: np.ndarray, **cols: np.ndarray | float | int) -> np.ndarray:
    """A `dtype` array of the kept rows from columns (scalars broadcast)."""
    n = int(np.count_nonzero(keep))
    out = np.empty(n, dtype)
    for name, col in cols.items():
        out[name] = col[keep] if isinstance(col, np.ndarray) else col
    return out


def good_ts(ts: np.ndarray) -> np.ndarray:
    """Mask of parsed, positive times."""
    return (ts != BAD_TS) & (ts > 0)


def positive(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & (x > 0)


def non_negative(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(x) & (x >= 0)


class VendorParser:
    """The frame loop the vendor parsers share: a frame of trades only takes the compiled path
    (`_fast`, when the subclass has one); anything else is decoded by msgspec (`_decoder`) into
    the vendor's trades (`_trades`) and the other messages (`_others`)."""

    trade_type: type
    _fast: Any
    _decoder: Any

    def parse(self, frame: bytes | str) -> ParsedFrame:
        out = ParsedFrame()
        if self._fast is not None and len(frame) <= self._decoder.max_frame_bytes:
            got = self._fast.scan(frame)  # a frame of trades only, in the plain layout: compiled
            if got is not None:  # the checks of `valid_trades`, done in the same pass
                out.trades, bad, unknown = got
                out.bad("trade: value out of range", bad)
                out.unknown_symbol += unknown
                return out
        msgs = self._decoder.decode(frame, out)
        trades = [m for m in msgs if m.__class__ is self.trade_type]
        if trades:
            self._trades(trades, out)
        if len(trades) != len(msgs):
            self._others([m for m in msgs if m.__class__ is not self.trade_type], out)
        return out

    def _trades(self, trades: list[Any], out: ParsedFrame) -> None:
        raise NotImplementedError

    def _others(self, msgs: list[Any], out: ParsedFrame) -> None:
        raise NotImplementedError


def valid_trades(out: ParsedFrame, rows: np.ndarray, ts: np.ndarray, px: np.ndarray, sz: np.ndarray,
                 flags: np.ndarray) -> np.ndarray:
    """The trades with a parsed time and a positive price and size; the others are counted in `out`."""
    ok = good_ts(ts) & positive(px) & positive(sz)
    return ticks_of(rows, ts, px, sz, flags, keep_valid(out, ok, rows, "trade"))
