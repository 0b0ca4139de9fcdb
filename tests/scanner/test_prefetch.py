"""`scanner.prefetch.prefetch`: a hint that compiles into a prefetch instruction and changes nothing."""

from __future__ import annotations

import platform

import numpy as np
import pytest
from numba import njit

from scanner.prefetch import prefetch


@njit(cache=False)
def _sum_ahead(a: np.ndarray, b: np.ndarray, ahead: int) -> float:
    s = 0.0
    for i in range(a.shape[0]):
        prefetch(a, i + ahead, np.uint64(0))  # past the end for the last rows: a hint, never a read
        prefetch(b, 0, i + ahead, 1)
        s += a[i, 0] + b[0, i, 1]
    return s


def test_prefetch_changes_no_result_even_past_the_end() -> None:
    a = np.arange(20.0).reshape(10, 2)
    b = np.arange(60.0).reshape(3, 10, 2)
    assert _sum_ahead(a, b, 8) == _sum_ahead(a, b, 0) == a[:, 0].sum() + b[0, :, 1].sum()
    assert _sum_ahead(a, b, 1 << 40) == a[:, 0].sum() + b[0, :, 1].sum()


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="checks the x86 instruction")
def test_prefetch_emits_the_instruction() -> None:
    a, b = np.zeros((4, 2)), np.zeros((2, 4, 2))
    _sum_ahead(a, b, 1)
    asm = _sum_ahead.inspect_asm(_sum_ahead.signatures[0])
    assert asm.count("prefetcht0") >= 2


def test_prefetch_rejects_a_wrong_number_of_indices() -> None:
    @njit(cache=False)
    def bad(a: np.ndarray) -> None:
        prefetch(a, 1)

    with pytest.raises(Exception, match="prefetch"):
        bad(np.zeros((2, 2)))


def test_ring_slot_is_the_modulo_without_a_division() -> None:
    from numba import njit

    from scanner.prefetch import ring_slot

    @njit
    def slots(counts: np.ndarray, depth: int) -> np.ndarray:
        out = np.empty_like(counts)
        inv = 1.0 / depth
        for i in range(counts.shape[0]):
            out[i] = ring_slot(counts[i], depth, inv)
        return out

    counts = np.concatenate([np.arange(200_000), np.arange(2**44, 2**44 + 50_000), [2**51 - 1]]).astype(np.int64)
    for depth in (1, 3, 7, 160, 260, 400, 4096):
        np.testing.assert_array_equal(slots(counts, depth), counts % depth, err_msg=str(depth))
