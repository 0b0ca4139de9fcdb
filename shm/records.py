"""Copies of structured-record arrays (ticks, bars, alerts) at memcpy speed.

numpy copies a structured array field by field, each field a strided copy, even between two
arrays of the same packed dtype (numpy/numpy#28194, since numpy 1.21; measured with numpy 2.4
here): `dst[:] = src` of 65,536 32-byte ticks takes 1.33 ms, the same bytes 62 µs; a copy of
10,000 64-byte bars 355 µs against 24 µs; `np.concatenate` and boolean or index selection are
as slow. Records of one dtype are plain bytes, so the rings and the kernels' outputs move them
as bytes; anything else (another dtype, a strided view) goes through numpy's own assignment.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_bytes(a: np.ndarray) -> np.ndarray | None:
    """A uint8 view of a 1-D C-contiguous structured array without objects, else None."""
    if a.ndim != 1 or a.dtype.names is None or a.dtype.hasobject or not a.flags.c_contiguous:
        return None
    return a.view(np.uint8)


def copy_into(dst: np.ndarray, src: np.ndarray) -> None:
    """`dst[:] = src` for two arrays of the same shape (as numpy's assignment would require)."""
    if dst.dtype == src.dtype and dst.shape == src.shape:
        d, s = _as_bytes(dst), _as_bytes(src)
        if d is not None and s is not None:
            d[:] = s
            return
    dst[...] = src


def copied(src: np.ndarray) -> np.ndarray:
    """A new array holding `src`'s records (`src.copy()`)."""
    out = np.empty(src.shape, src.dtype)
    copy_into(out, src)
    return out


def concat(parts: Sequence[np.ndarray]) -> np.ndarray:
    """`np.concatenate(parts)` of 1-D record arrays of one dtype."""
    if not parts:
        raise ValueError("need at least one array to concatenate")
    dt = parts[0].dtype
    if any(p.dtype != dt or p.ndim != 1 for p in parts):
        return np.concatenate(parts)
    out = np.empty(sum(len(p) for p in parts), dt)
    i = 0
    for p in parts:
        copy_into(out[i:i + len(p)], p)
        i += len(p)
    return out


def take(src: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`src[index]` (a boolean mask or integer positions) of a 1-D record array."""
    if src.ndim != 1 or src.dtype.names is None or src.dtype.hasobject or src.dtype.itemsize % 8:
        return src[index]
    words = np.ascontiguousarray(src).view(np.uint64).reshape(len(src), src.dtype.itemsize // 8)
    return words[index].reshape(-1).view(src.dtype)
