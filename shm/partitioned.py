"""A matrix split by column ranges among several writers, read whole by anyone.

Used for the per-rule match matrix: scan worker w owns rows [lo_w, hi_w) of the symbol table,
publishes its last cycle's `match[rule, row]` over exactly those columns, and the gateway reads
one rule's row across every worker ("which symbols match rule r now").

Layout: three arrays of a `shm.arrays.NamedArrays` segment (`arrays(...)` builds them).

| array | dtype | shape | holds |
| --- | --- | --- | --- |
| `data` | bool | (n_items, n_cols) | columns [lo_w, hi_w) written by writer w only |
| `seq` | int64 | (n_writers, 8) | writer w's sequence counter in word 0, padded to 64 bytes |
| `tag` | int64 | (n_writers,) | what writer w's part was computed from (a rules generation); -1 none yet |

Ordering contract (the `shm.seqlock` one, with one "block" per writer):

* Writer w: bump `seq[w]` (odd), store its columns of `data` and `tag[w]`, bump `seq[w]`
  (even). Only w ever writes its columns, its tag and its counter.
* Reader: load `seq[w]` (retrying while odd), copy the columns and the tag, load `seq[w]`
  again; a moved counter means a torn copy, so copy again. Bounded: `SeqlockTimeout` after the
  retry budget, never an endless spin. x86-64 store and load ordering (TSO) is what makes an
  unchanged even counter prove the copy whole (`shm.platform` refuses other machines).
* A writer that dies mid-write leaves `seq[w]` odd; `repair(w)` makes it even again before the
  writer restarts, and the restarted writer's next publish replaces the part.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from shm.seqlock import PAD_WORDS, SeqWriter, read_blocks

_ONE = np.zeros(1, np.intp)


def arrays(n_items: int, n_cols: int, n_writers: int) -> dict[str, np.ndarray]:
    """Initial arrays of an empty matrix (for `NamedArrays.create(..., fill=...)`)."""
    if n_items <= 0 or n_cols <= 0 or n_writers <= 0:
        raise ValueError(f"need positive sizes, was n_items={n_items} n_cols={n_cols} n_writers={n_writers}")
    return {"data": np.zeros((n_items, n_cols), np.bool_), "seq": np.zeros((n_writers, PAD_WORDS), np.int64),
            "tag": np.full(n_writers, -1, np.int64)}


class PartitionedMatrix:
    """Views over the three arrays; `publish` is writer w's side, `read` anyone's."""

    def __init__(self, parts: Mapping[str, np.ndarray]) -> None:
        self.data, self.tag = parts["data"], parts["tag"]
        self.seq = parts["seq"][:, 0]  # strided view: one padded counter per writer
        self.n_items = self.data.shape[0]
        self._writer = SeqWriter(self.seq, 0)  # block i = writer i
        # rows this process's last publish wrote per writer: rows past them are False already, so
        # a publish clears only rows its predecessor wrote (not all n_items: 1,024 rules x 5,000
        # columns were 5 MB of stores per scan cycle). Unknown (a new process): all of them.
        self._rows_written: dict[int, int] = {}

    def publish(self, w: int, lo: int, hi: int, part: np.ndarray | None, tag: int) -> None:
        """Writer w stores `part` (k <= n_items rows over columns lo..hi; rows past k become
        False; None clears the part) and its tag, under its counter."""
        blocks = slice(w, w + 1)
        k = 0 if part is None else min(len(part), self.n_items)
        before = self._rows_written.get(w, self.n_items)
        self._writer.begin(blocks)
        if k:
            self.data[:k, lo:hi] = part[:k]  # type: ignore[index]
        if before > k:
            self.data[k:before, lo:hi] = False
        self.tag[w] = tag
        self._writer.end(blocks)
        self._rows_written[w] = k

    def read(self, w: int, item: int, lo: int, hi: int, max_retries: int = 10_000) -> tuple[np.ndarray | None, int]:
        """A consistent copy of writer w's columns lo..hi of row `item` (None when `item` is
        past the matrix) and the tag they were computed from."""
        out = np.zeros(hi - lo, np.bool_)
        tag = np.full(1, -1, np.int64)
        inside = 0 <= item < self.n_items

        def copy(b0: int, b1: int) -> None:
            if inside:
                out[:] = self.data[item, lo:hi]
            tag[0] = self.tag[w]

        read_blocks(self.seq[None, :], _ONE, copy, w, w + 1, max_retries)
        return (out if inside else None), int(tag[0])

    def repair(self, w: int) -> bool:
        """Even out writer w's counter if it died mid-publish (call only while w is down);
        True when it was odd."""
        odd = bool(self.seq[w] & 1)
        if odd:
            self.seq[w] += 1
        return odd
