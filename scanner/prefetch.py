"""A software prefetch for numba kernels that read rows in an order the hardware cannot guess.

A kernel that visits rows in order but reads each row at a slot of its own (its bar count
modulo a ring's length) misses the cache at every such read, and out-of-order execution
overlaps only the misses of the next one or two rows of a long loop body. Asking for the
lines of the row a few iterations ahead (`prefetch(a, i, j)`) overlaps many: the 1-minute
engine's fold of a minute close over 10,000 symbols with unequal bar counts went from
1.8 to 0.5-0.9 ms. The prefetch is a hint: it never faults, and an index outside the array
reads nothing wrong (nothing is read).

`cache_rows` allocates the row-major buffers such kernels read a row of at a time, each row
starting on a cache line."""

from __future__ import annotations

from typing import Any

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# the intrinsic's name carries its pointer type: opaque `ptr` from LLVM 17 (typed pointers gone)
_NAME = "llvm.prefetch.p0" if llvm.llvm_version_info[0] >= 17 else "llvm.prefetch.p0i8"


LINE = 64  # bytes in a cache line


def cache_rows(shape: tuple[int, ...]) -> np.ndarray:
    """A float64 array of `shape`, zeros written now (its pages are faulted in here, not at a
    row's first use, as calloc's would be), whose first element is on a cache line
    (with a last axis of 8 or 16 values, each row is one or two whole lines): a kernel that
    reads one row's state touches that row's lines and no neighbour's."""
    size = int(np.prod(shape))
    raw = np.full(size + LINE // 8, 0.0)
    off = (-raw.ctypes.data % LINE) // 8
    return raw[off:off + size].reshape(shape)


@njit(cache=True, nogil=True, inline="always")
def ring_slot(count: int, depth: int, inv_depth: float) -> int:
    """`count % depth` (count >= 0, below 2**52) without an integer division, with `inv_depth`
    = 1.0 / depth computed once: the float quotient is off by at most one, and corrected. For
    the slot of a row ahead that a kernel prefetches: a division per row cost more than the
    prefetch saved."""
    s = count - np.int64(count * inv_depth) * depth
    if s >= depth:
        s -= depth
    elif s < 0:
        s += depth
    return s


@intrinsic
def prefetch(typingctx: Any, arr: types.Array, *idx: types.Integer) -> Any:
    """Prefetch, for reading, the cache line of `arr[idx]` (one integer index per dimension);
    no bounds check, no wraparound."""
    if len(idx) == 1 and isinstance(idx[0], types.BaseTuple):  # how numba passes the star-args
        idx = tuple(idx[0])
    if not (isinstance(arr, types.Array) and len(idx) == arr.ndim and all(isinstance(t, types.Integer) for t in idx)):
        return None
    sig = types.void(arr, types.StarArgTuple(idx))

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        ix = [context.cast(builder, v, t, types.intp)
              for v, t in zip(cgutils.unpack_tuple(builder, args[1]), idxty, strict=True)]
        ptr = cgutils.get_item_pointer2(context, builder, ary.data, cgutils.unpack_tuple(builder, ary.shape),
                                        cgutils.unpack_tuple(builder, ary.strides), aryty.layout, ix,
                                        wraparound=False, boundscheck=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            _NAME)
        # read (0), high locality (3: keep in every cache level), data cache (1)
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen
