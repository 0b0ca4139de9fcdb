"""Byte-level JSON scanners for the compiled trade parser (`scanner.feeds.fastjson`).

Each takes the frame as a uint8 array `b`, a start index `i` and the length `n`, and answers the
end index of what it read (with the value, for numbers), or -1 when the bytes are not exactly
the JSON it expects, or not on its fast path: the caller then gives the frame up to msgspec.

Numbers: a JSON number whose decimal mantissa fits 15 digits and whose power of ten is within
10^±22 converts with one IEEE multiply or divide of two exact values, which is correctly
rounded (Clinger's fast path): the same double as `float(text)`. Others answer -1.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_POW10 = np.array([10.0 ** k for k in range(23)])


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def at(b: np.ndarray, i: int) -> int:
    """b[i] for 0 <= i < len(b), which every caller has checked: an unsigned index compiles
    without numba's negative-index wraparound, ~25% of a byte loop's time."""
    return b[np.uint64(i)]


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def skip_ws(b: np.ndarray, i: int, n: int) -> int:
    while i < n and (at(b, i) == 32 or at(b, i) == 10 or at(b, i) == 13 or at(b, i) == 9):
        i += 1
    return i


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def string_end(b: np.ndarray, i: int, n: int) -> int:
    """b[i] is '"': index of the closing quote; -1 on an escape, a control byte or the end."""
    j = i + 1
    while j < n:
        c = at(b, j)
        if c == 34:
            return j
        if c == 92 or c < 32:
            return -1
        j += 1
    return -1


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def number(b: np.ndarray, i: int, n: int) -> tuple[float, int]:
    """(value, end) of the JSON number at i; end -1 when not a number on the exact fast path."""
    neg = False
    if i < n and at(b, i) == 45:
        neg = True
        i += 1
    m = 0
    digits = 0
    exp10 = 0
    start = i
    while i < n and 48 <= at(b, i) <= 57:
        if digits > 0 or at(b, i) != 48:
            digits += 1
        m = m * 10 + (at(b, i) - 48)
        i += 1
        if digits > 15:
            return 0.0, -1
    if i == start or (i - start > 1 and at(b, start) == 48):
        return 0.0, -1
    if i < n and at(b, i) == 46:
        i += 1
        fs = i
        while i < n and 48 <= at(b, i) <= 57:
            if digits > 0 or at(b, i) != 48:
                digits += 1
            m = m * 10 + (at(b, i) - 48)
            exp10 -= 1
            i += 1
            if digits > 15:
                return 0.0, -1
        if i == fs:
            return 0.0, -1
    if i < n and (at(b, i) == 101 or at(b, i) == 69):
        i += 1
        eneg = False
        if i < n and (at(b, i) == 43 or at(b, i) == 45):
            eneg = at(b, i) == 45
            i += 1
        es = i
        e = 0
        while i < n and 48 <= at(b, i) <= 57:
            e = e * 10 + (at(b, i) - 48)
            i += 1
            if e > 400:
                return 0.0, -1
        if i == es:
            return 0.0, -1
        exp10 += -e if eneg else e
    if exp10 < -22 or exp10 > 22:
        return 0.0, -1
    v = float(m)
    v = v / _POW10[-exp10] if exp10 < 0 else v * _POW10[exp10]
    return (-v if neg else v), i


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def uint(b: np.ndarray, i: int, n: int) -> tuple[int, int]:
    """(value, end) of a JSON non-negative integer of at most 18 digits at i; end -1 otherwise."""
    v = 0
    j = i
    while j < n and 48 <= at(b, j) <= 57:
        v = v * 10 + (at(b, j) - 48)
        j += 1
    if j == i or j - i > 18 or (j - i > 1 and at(b, i) == 48):
        return 0, -1
    if j < n and (at(b, j) == 46 or at(b, j) == 101 or at(b, j) == 69):
        return 0, -1
    return v, j


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _skip_number(b: np.ndarray, i: int, n: int) -> int:
    """End of the JSON number at i (any size, strict grammar); -1 if it is not one."""
    if i < n and at(b, i) == 45:
        i += 1
    s = i
    while i < n and 48 <= at(b, i) <= 57:
        i += 1
    if i == s or (i - s > 1 and at(b, s) == 48):
        return -1
    if i < n and at(b, i) == 46:
        i += 1
        s = i
        while i < n and 48 <= at(b, i) <= 57:
            i += 1
        if i == s:
            return -1
    if i < n and (at(b, i) == 101 or at(b, i) == 69):
        i += 1
        if i < n and (at(b, i) == 43 or at(b, i) == 45):
            i += 1
        s = i
        while i < n and 48 <= at(b, i) <= 57:
            i += 1
        if i == s:
            return -1
    return i


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def _literal(b: np.ndarray, i: int, n: int, w0: int, w1: int, w2: int, w3: int, w4: int, ln: int) -> int:
    if i + ln > n or at(b, i) != w0 or at(b, i + 1) != w1 or at(b, i + 2) != w2 or at(b, i + 3) != w3:
        return -1
    if ln == 5 and at(b, i + 4) != w4:
        return -1
    return i + ln


@njit(cache=True, nogil=True, _nrt=False, inline="always")
def skip_value(b: np.ndarray, i: int, n: int) -> int:
    """End of the scalar JSON value at i (string, number, true/false/null); -1 otherwise. Vendor
    trade messages hold no nested values in the fields we skip: a container gives up."""
    c = at(b, i)
    if c == 34:
        e = string_end(b, i, n)
        return -1 if e < 0 else e + 1
    if c == 45 or 48 <= c <= 57:
        return _skip_number(b, i, n)
    if c == 116:
        return _literal(b, i, n, 116, 114, 117, 101, 0, 4)  # true
    if c == 110:
        return _literal(b, i, n, 110, 117, 108, 108, 0, 4)  # null
    if c == 102:
        return _literal(b, i, n, 102, 97, 108, 115, 101, 5)  # false
    return -1
