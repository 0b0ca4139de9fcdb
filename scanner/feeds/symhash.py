"""The symbol hash table of the compiled trade parser: 16-byte symbol keys (two uint64 words,
little-endian bytes, zero-padded) to table rows, open addressing with linear probing over three
power-of-two arrays (`t_lo`, `t_hi`, `t_row`) that the caller owns and keeps across frames.
"""

from __future__ import annotations

import numpy as np
from numba import njit

EMPTY = np.int64(-2)  # hash-table slot never used


@njit(cache=True, nogil=True, _nrt=False)
def _slot(lo: np.uint64, hi: np.uint64, mask: np.uint64) -> np.int64:
    h = (lo * np.uint64(0x9E3779B97F4A7C15)) ^ (hi * np.uint64(0xC2B2AE3D27D4EB4F))
    h ^= h >> np.uint64(29)
    return np.int64(h & mask)


@njit(cache=True, nogil=True, _nrt=False)
def lookup(key_lo: np.ndarray, key_hi: np.ndarray, n: int, t_lo: np.ndarray, t_hi: np.ndarray, t_row: np.ndarray,
           rows: np.ndarray) -> int:
    """rows[k] = table row of key k (-1 unknown symbol), EMPTY when not in the table yet;
    returns the number of misses."""
    mask = np.uint64(t_row.shape[0] - 1)
    miss = 0
    for k in range(n):
        lo, hi = key_lo[k], key_hi[k]
        s = _slot(lo, hi, mask)
        while True:
            r = t_row[s]
            if r == EMPTY:
                rows[k] = EMPTY
                miss += 1
                break
            if t_lo[s] == lo and t_hi[s] == hi:
                rows[k] = r
                break
            s = np.int64((np.uint64(s) + np.uint64(1)) & mask)
    return miss


@njit(cache=True, nogil=True, _nrt=False)
def insert(lo: np.uint64, hi: np.uint64, row: int, t_lo: np.ndarray, t_hi: np.ndarray, t_row: np.ndarray) -> None:
    mask = np.uint64(t_row.shape[0] - 1)
    s = _slot(lo, hi, mask)
    while t_row[s] != EMPTY and not (t_lo[s] == lo and t_hi[s] == hi):
        s = np.int64((np.uint64(s) + np.uint64(1)) & mask)
    t_lo[s], t_hi[s], t_row[s] = lo, hi, row


def key_name(lo: int, hi: int) -> str:
    """The symbol text of a 16-byte key."""
    raw = int(lo).to_bytes(8, "little") + int(hi).to_bytes(8, "little")
    return raw.rstrip(b"\0").decode("utf-8", "replace")
