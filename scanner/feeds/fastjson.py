"""Compiled fast path for the commonest frame: an array of trade messages only, in the vendor's
plain JSON. One pass over the bytes fills the trade columns (symbol key, price, size, time,
flags) with no Python object per trade; symbols resolve through an open-addressing hash table
kept across frames.

It is strict on purpose: anything it does not fully understand (another message type, a
string escape, a number beyond the exactly-rounded fast path, a symbol over 16 bytes, an
unknown condition code, any syntax error) makes it give the whole frame up (-1), and the
caller decodes that frame with msgspec (`scanner.feeds.frames.FrameDecoder`), which handles and
counts every case. So both paths give the same result for any frame the fast path accepts
(tests compare them on real and hostile frames).

Numbers convert on Clinger's exact fast path (`scanner.feeds.jsonbytes`); others give the frame
up. The byte scanners are in `scanner.feeds.jsonbytes`, the symbol hash table in
`scanner.feeds.symhash`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from scanner.feeds import conditions
from scanner.feeds.common import SymbolMap
from scanner.feeds.conditions import ALPACA_CTA, ALPACA_UTP, flags_of
from scanner.feeds.frames import BAD_TS, ts_quoted_ns, ts_span
from scanner.feeds.jsonbytes import at, number, skip_value, skip_ws, string_end, uint
from scanner.feeds.symhash import EMPTY, insert, key_name, lookup
from scanner.records import TICK_DTYPE

ALPACA, POLYGON = 0, 1
_K_OTHER, _K_TYPE, _K_SYM, _K_PRICE, _K_SIZE, _K_TIME, _K_COND, _K_TAPE = range(8)
MIN_TRADE_BYTES = 40  # no trade message is shorter: output capacity = len(frame) // 40 + 1
SYM_BYTES = 16
ARENA_RECORDS = 1 << 14  # records per result arena (512 KiB): frames' results are slices of it


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _key(b: np.ndarray, s: int, e: int, vendor: int) -> int:
    ln = e - s
    c = at(b, s)
    if vendor == ALPACA:
        if ln != 1:
            return _K_OTHER
        if c == 84:
            return _K_TYPE  # T
        if c == 83:
            return _K_SYM  # S
        if c == 112:
            return _K_PRICE  # p
        if c == 115:
            return _K_SIZE  # s
        if c == 116:
            return _K_TIME  # t
        if c == 99:
            return _K_COND  # c
        if c == 122:
            return _K_TAPE  # z
        return _K_OTHER
    if ln == 2 and c == 101 and at(b, s + 1) == 118:
        return _K_TYPE  # ev
    if ln == 3 and c == 115 and at(b, s + 1) == 121 and at(b, s + 2) == 109:
        return _K_SYM  # sym
    if ln == 1:
        if c == 112:
            return _K_PRICE
        if c == 115:
            return _K_SIZE
        if c == 116:
            return _K_TIME
        if c == 99:
            return _K_COND
    return _K_OTHER


@njit(cache=True, nogil=True, _nrt=False)
def scan_trades(b: np.ndarray, vendor: int, cond_bit: np.ndarray, flags_a: np.ndarray, flags_b: np.ndarray,
                key_lo: np.ndarray, key_hi: np.ndarray, px: np.ndarray, sz: np.ndarray, ts: np.ndarray,
                flags: np.ndarray) -> int:
    """Fill the columns from a frame holding only trades; returns the count, or -1 to give the
    frame up. `cond_bit[c]`: bit (0..63) of condition character / id c, 255 unknown;
    `flags_a/b[bit]`: TICK_* flags per bit (b: Alpaca tape C, UTP; a: the rest)."""
    n = b.shape[0]
    cap = px.shape[0]
    i = skip_ws(b, 0, n)
    if i >= n or at(b, i) != 91:
        return -1
    i = skip_ws(b, i + 1, n)
    k = 0
    d_at, d_secs = -1, 0  # the date `ts_quoted_ns` parsed last
    if i < n and at(b, i) == 93:
        return 0 if skip_ws(b, i + 1, n) == n else -1
    while True:
        if i >= n or at(b, i) != 123 or k >= cap:
            return -1
        i = skip_ws(b, i + 1, n)
        seen = 0
        fa = np.uint32(0)  # the message's flags under table a, and under table b (the tape decides)
        fb = np.uint32(0)
        tape = 0
        while True:
            if i >= n or at(b, i) != 34:
                return -1
            c1 = at(b, i + 1) if i + 2 < n else 0  # a one-byte key (Alpaca's, most of Polygon's): no scan
            ke = i + 2 if at(b, i + 2 if i + 2 < n else i) == 34 and c1 >= 32 and c1 != 34 and c1 != 92 \
                else string_end(b, i, n)
            if ke < 0:
                return -1
            kid = _key(b, i + 1, ke, vendor)
            i = skip_ws(b, ke + 1, n)
            if i >= n or at(b, i) != 58:
                return -1
            i = skip_ws(b, i + 1, n)
            if i >= n:
                return -1
            if kid == _K_TYPE:
                if at(b, i) != 34:
                    return -1
                e = string_end(b, i, n)
                want = 116 if vendor == ALPACA else 84  # "t" / "T"
                if e != i + 2 or at(b, i + 1) != want:
                    return -1
                i = e + 1
            elif kid == _K_SYM:
                if at(b, i) != 34:
                    return -1
                e = string_end(b, i, n)
                if e < 0 or e - i - 1 > SYM_BYTES or e == i + 1:
                    return -1
                lo = np.uint64(0)
                hi = np.uint64(0)
                for j in range(e - i - 1):
                    byte = np.uint64(at(b, i + 1 + j))
                    if j < 8:
                        lo |= byte << np.uint64(8 * j)
                    else:
                        hi |= byte << np.uint64(8 * (j - 8))
                key_lo[k] = lo
                key_hi[k] = hi
                i = e + 1
            elif kid == _K_PRICE or kid == _K_SIZE:
                v, e = number(b, i, n)
                if e < 0:
                    return -1
                if kid == _K_PRICE:
                    px[k] = v
                else:
                    sz[k] = v
                i = e
            elif kid == _K_TIME:
                if vendor == ALPACA:
                    if at(b, i) != 34:
                        return -1
                    t, d_at, d_secs = ts_quoted_ns(b, i + 1, n, d_at, d_secs)  # the usual layout
                    if t != BAD_TS:
                        e = i + 31
                    else:
                        e = string_end(b, i, n)
                        if e < 0:
                            return -1
                        t = ts_span(b, i + 1, e)
                        if t == BAD_TS:
                            return -1
                    ts[k] = t
                    i = e + 1
                else:
                    iv, e = uint(b, i, n)
                    if e < 0 or iv >= 2**62:
                        return -1
                    ts[k] = iv if iv >= 10**17 else iv * 1_000 if iv >= 10**14 else iv * 1_000_000
                    i = e
            elif kid == _K_COND:
                if at(b, i) != 91:
                    return -1
                i = skip_ws(b, i + 1, n)
                if i < n and at(b, i) == 93:
                    i += 1
                else:
                    while True:
                        if i >= n:
                            return -1
                        if vendor == ALPACA:
                            if at(b, i) != 34 or i + 2 >= n or at(b, i + 2) != 34:
                                return -1
                            bit = cond_bit[at(b, i + 1)]
                            i += 3
                        else:
                            cv, e = uint(b, i, n)
                            if e < 0 or cv > 255:
                                return -1
                            bit = cond_bit[cv]
                            i = e
                        if bit == 255:
                            return -1
                        fa |= flags_a[bit]
                        fb |= flags_b[bit]
                        i = skip_ws(b, i, n)
                        if i < n and at(b, i) == 44:
                            i = skip_ws(b, i + 1, n)
                        elif i < n and at(b, i) == 93:
                            i += 1
                            break
                        else:
                            return -1
            elif kid == _K_TAPE:
                if at(b, i) != 34:
                    return -1
                e = string_end(b, i, n)
                if e != i + 2:
                    return -1
                tape = at(b, i + 1)
                i = e + 1
            else:
                e = skip_value(b, i, n)
                if e < 0:
                    return -1
                i = e
            seen |= 1 << kid
            i = skip_ws(b, i, n)
            if i < n and at(b, i) == 44:
                i = skip_ws(b, i + 1, n)
            elif i < n and at(b, i) == 125:
                i = skip_ws(b, i + 1, n)
                break
            else:
                return -1
        need = (1 << _K_TYPE) | (1 << _K_SYM) | (1 << _K_PRICE) | (1 << _K_SIZE) | (1 << _K_TIME)
        if seen & need != need:
            return -1
        flags[k] = fb if (vendor == ALPACA and tape == 67) else fa  # tape "C": UTP
        k += 1
        if i < n and at(b, i) == 44:
            i = skip_ws(b, i + 1, n)
        elif i < n and at(b, i) == 93:
            return k if skip_ws(b, i + 1, n) == n else -1
        else:
            return -1


@njit(cache=True, nogil=True, _nrt=False)
def pack_ticks(n: int, rows: np.ndarray, px: np.ndarray, sz: np.ndarray, ts: np.ndarray, flags: np.ndarray,
               out: np.ndarray, at0: int, counts: np.ndarray) -> int:
    """The scanned trades as TICK_DTYPE records in `out` from index `at0`, in one pass, with the
    checks of `frames.valid_trades` (time parsed and positive, price and size finite and
    positive, symbol known). Returns the records kept; counts[0] = out of range, counts[1] =
    unknown symbol."""
    m = at0
    bad = 0
    unknown = 0
    for k in range(n):
        t, p, q, r = ts[k], px[k], sz[k], rows[k]
        if not (t != BAD_TS and t > 0 and np.isfinite(p) and p > 0 and np.isfinite(q) and q > 0):
            bad += 1
            continue
        if r < 0:
            unknown += 1
            continue
        rec = out[m]
        rec.sym = r
        rec.flags = flags[k]
        rec.ts_ns = t
        rec.price = p
        rec.size = q
        m += 1
    counts[0] = bad
    counts[1] = unknown
    return m - at0


@njit(cache=True, nogil=True, _nrt=False)
def scan_frame(b: np.ndarray, vendor: int, cond_bit: np.ndarray, flags_a: np.ndarray, flags_b: np.ndarray,
               t_lo: np.ndarray, t_hi: np.ndarray, t_row: np.ndarray, key_lo: np.ndarray, key_hi: np.ndarray,
               px: np.ndarray, sz: np.ndarray, ts: np.ndarray, flags: np.ndarray, rows: np.ndarray,
               out: np.ndarray, at0: int, counts: np.ndarray) -> int:
    """`scan_trades`, `lookup` and `pack_ticks` in one call from Python (each call costs ~0.5 us
    plus ~40 ns per array argument: most of a small frame's time). Returns the records packed
    at out[at0:], -1 to give the frame up, or -2 when a symbol is not in the hash table yet
    (counts[2] = trades scanned: the caller resolves them and packs)."""
    n = scan_trades(b, vendor, cond_bit, flags_a, flags_b, key_lo, key_hi, px, sz, ts, flags)
    if n < 0:
        return -1
    if lookup(key_lo, key_hi, n, t_lo, t_hi, t_row, rows):
        counts[2] = n
        return -2
    return pack_ticks(n, rows, px, sz, ts, flags, out, at0, counts)


class TradeScanner:
    """The fast path of one parser: condition tables as bit maps, reusable output buffers and
    the symbol hash table (16-byte key -> row of the caller's `SymbolMap`, -1 for a symbol
    outside a fixed map). `scan(frame)` answers the trade columns or None (give up)."""

    def __init__(self, vendor: int, symbols: SymbolMap, capacity: int = 0) -> None:
        self.vendor = vendor
        self.symbols = symbols
        self.cond_bit = np.full(256, 255, np.uint8)
        self.flags_a = np.zeros(64, np.uint32)
        self.flags_b = np.zeros(64, np.uint32)
        if vendor == ALPACA:
            codes = sorted(set(ALPACA_CTA) | set(ALPACA_UTP))
            assert len(codes) <= 64
            for bit, code in enumerate(codes):
                self.cond_bit[ord(code)] = bit
                self.flags_a[bit] = flags_of([code], ALPACA_CTA)
                self.flags_b[bit] = flags_of([code], ALPACA_UTP)
        else:
            for cid in range(64):  # ids outside the table update everything, as in `flags_of`
                self.cond_bit[cid] = cid
                self.flags_a[cid] = flags_of([cid], conditions.POLYGON)
        size = 1 << max(12, (4 * max(len(symbols), capacity, 1024) - 1).bit_length())
        self.t_lo = np.zeros(size, np.uint64)
        self.t_hi = np.zeros(size, np.uint64)
        self.t_row = np.full(size, EMPTY, np.int64)
        self.cached = 0
        self._alloc(1024)
        self._arena, self._at = np.empty(0, TICK_DTYPE), 0

    def _alloc(self, cap: int) -> None:
        self.key_lo, self.key_hi = np.empty(cap, np.uint64), np.empty(cap, np.uint64)
        self.px, self.sz = np.empty(cap), np.empty(cap)
        self.ts, self.flags = np.empty(cap, np.int64), np.empty(cap, np.uint32)
        self.rows = np.empty(cap, np.int64)
        self.counts = np.zeros(3, np.int64)

    def scan(self, frame: bytes | str) -> tuple[np.ndarray, int, int] | None:
        """(TICK_DTYPE trades kept, out of range, unknown symbol) of a trades-only frame, or
        None. The column buffers are reused across frames. The records are written straight
        into the result (a copy of structured records costs ~25 ns each), a slice of an arena
        that later frames' results follow (one allocation per ARENA_RECORDS records, not one
        per frame; the arena lives while any of its slices does)."""
        raw = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
        b = np.frombuffer(raw, np.uint8)
        cap = len(b) // MIN_TRADE_BYTES + 1
        if cap > len(self.px):
            self._alloc(max(cap, 2 * len(self.px)))
        if self._at + cap > len(self._arena):
            self._arena, self._at = np.empty(max(ARENA_RECORDS, cap), TICK_DTYPE), 0
        at0 = self._at
        m = scan_frame(b, self.vendor, self.cond_bit, self.flags_a, self.flags_b, self.t_lo, self.t_hi, self.t_row,
                       self.key_lo, self.key_hi, self.px, self.sz, self.ts, self.flags, self.rows, self._arena, at0,
                       self.counts)
        if m == -1:
            return None
        if m == -2:
            n = int(self.counts[2])
            self._resolve(n)
            m = pack_ticks(n, self.rows, self.px, self.sz, self.ts, self.flags, self._arena, at0, self.counts)
        self._at = at0 + m
        return self._arena[at0:at0 + m], int(self.counts[0]), int(self.counts[1])

    def _resolve(self, n: int) -> None:
        """Rows of keys not in the table yet (new symbols: a few per session)."""
        miss = np.flatnonzero(self.rows[:n] == EMPTY)
        found: dict[tuple[int, int], int] = {}
        grow, get = self.symbols.grow, self.symbols.rows.get
        for k in miss.tolist():
            key = (int(self.key_lo[k]), int(self.key_hi[k]))
            r = found.get(key)
            if r is None:
                name = key_name(*key)
                r = found[key] = self.symbols.row(name) if grow else get(name, -1)
                if 2 * (self.cached + 1) <= len(self.t_row):  # keep the table at most half full
                    insert(np.uint64(key[0]), np.uint64(key[1]), r, self.t_lo, self.t_hi, self.t_row)
                    self.cached += 1
            self.rows[k] = r
