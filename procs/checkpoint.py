"""Checkpoint of the day's shared state, so that restarting the host does not wipe the day.

A checkpoint is one `.npz` file (written to a temp name, fsynced, renamed): the table's float
and int blocks, the bar history (row-major, streamed in chunks: see `save`) and its heads,
each process's private state arrays (the bar aggregator's running sums and day), and a small
meta record (layout hash, control layout version, trading day, feed clock). `restore`
refuses, with a message saying why, a file from another layout, another trading day or
another universe size.

A file that cannot be read at all (truncated by a crash or a full disk, garbage, a member
missing or of the wrong shape) must not keep the instance down: `restore` moves it aside as
`<name>.corrupt-<UTC time>` (kept for a post-mortem, never read again), says why, and raises
`CheckpointRefused`, so the instance starts with a fresh day. Every array is read and checked
before the first one is copied into shared memory, so a failure half-way leaves the segments
untouched.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np

from procs.shared import Shared
from shm.control import LAYOUT_VERSION
from shm.history import History

log = logging.getLogger("scanner.supervisor")

# What numpy/zipfile raise for a file that is not a whole, well-formed checkpoint.
CORRUPT_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, KeyError, OSError, EOFError,
                  UnicodeDecodeError, TypeError)


class CheckpointRefused(RuntimeError):
    """The checkpoint exists but does not belong to this layout, day or universe."""


CHUNK_ROWS = 256  # rows of the bar history copied and written at a time (~6.5 MB at K = 400)


def save(shared: Shared, path: Path, event_ns: int) -> int:
    """Write a consistent copy of the table and history; returns bytes written.

    The bar history (245 MB at 10,000 symbols) is streamed: CHUNK_ROWS rows at a time are
    copied under the seqlock and written, row-major (`hist_rows[row, field, slot]`, so each
    chunk is one contiguous run of the member), instead of one full copy in memory, which
    doubled the history's footprint during every checkpoint (issue 15's memory budget)."""
    t, h = shared.table, shared.history
    f8 = np.empty_like(t.f8)
    i8 = np.empty_like(t.i8)
    t.snapshot(0, t.n_rows, np.arange(t.f8.shape[0]), f8, np.arange(t.i8.shape[0]), i8)
    meta = {
        "layout_hash": t.layout_hash,
        "control_layout": LAYOUT_VERSION,
        "trading_day": int(shared.control.header["trading_day"]),
        "n_rows": t.n_rows,
        "hist_depth": h.depth,
        "event_ns": int(event_ns),
        "rules_generation": shared.control.rules_generation,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        with zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            head = np.empty_like(h.head)
            _stream_history(zf, h, head)
            states = {f"state.{proc}.{k}": a.copy() for proc, na in shared.state.items() for k, a in na.arrays.items()}
            for name, a in {"f8": f8, "i8": i8, "keys": t.keys.copy(), "head": head,
                            "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8), **states}.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, np.asanyarray(a), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path.stat().st_size


def _stream_history(zf: zipfile.ZipFile, h: History, head: np.ndarray) -> None:
    """Member `hist_rows.npy` (n_rows, n_fields, K) float64, CHUNK_ROWS rows (a whole number of
    seqlock blocks, `History.chunks`) at a time; `head` gets each chunk's heads from the same
    consistent copy."""
    rows = np.empty((h.chunk_rows(CHUNK_ROWS), h.n_fields, h.depth), np.float64)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float64)), "fortran_order": False,
              "shape": (h.n_rows, h.n_fields, h.depth)}
    with zf.open("hist_rows.npy", "w", force_zip64=True) as out:
        np.lib.format.write_array_header_2_0(out, header)
        for lo, hist, hd in h.chunks(CHUNK_ROWS):
            n = len(hd)
            head[lo:lo + n] = hd
            rows[:n] = hist.transpose(1, 0, 2)
            out.write(memoryview(rows[:n]).cast("B"))  # no bytes copy of the chunk


def move_aside(path: Path, reason: str) -> Path:
    """Rename an unreadable checkpoint to `<name>.corrupt-<UTC time>` and log why."""
    dest = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    try:
        os.replace(path, dest)
    except OSError as exc:  # e.g. a read-only directory: the next checkpoint replaces the file anyway
        log.error("checkpoint %s is unreadable (%s) and could not be moved aside (%s); starting a fresh day",
                  path, reason, exc)
        return path
    log.error("checkpoint %s is unreadable (%s): moved aside to %s; starting a fresh day", path, reason, dest)
    return dest


def restore(shared: Shared, path: Path, trading_day: int) -> dict:
    """Load a checkpoint into freshly created segments; returns its meta, or raises
    `CheckpointRefused` (the segments are left untouched). An unreadable file is moved aside
    first (see the module docstring)."""
    try:
        meta, arrays = _read(shared, path, trading_day)
    except CheckpointRefused:
        raise
    except CORRUPT_ERRORS as exc:
        dest = move_aside(path, f"{type(exc).__name__}: {exc}")
        raise CheckpointRefused(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); "
                                f"moved aside to {dest.name}: not restored") from None
    t, h = shared.table, shared.history
    for proc, na in shared.state.items():
        for k, a in na.arrays.items():
            a[...] = arrays[f"state.{proc}.{k}"]
    t.f8[:] = arrays["f8"]
    t.i8[:] = arrays["i8"]
    h.hist[:] = arrays["hist_rows"].transpose(1, 0, 2)
    h.head[:] = arrays["head"]
    return meta


def _read(shared: Shared, path: Path, trading_day: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and check the whole file (meta first, then every array against its segment)."""
    t, h = shared.table, shared.history
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        if not isinstance(meta, dict):
            raise ValueError(f"meta is a {type(meta).__name__}, not an object")
        if meta.get("layout_hash") != t.layout_hash or meta.get("control_layout") != LAYOUT_VERSION:
            raise CheckpointRefused(
                f"checkpoint {path} has table layout {meta.get('layout_hash')} "
                f"(control v{meta.get('control_layout')}), this build has {t.layout_hash} "
                f"(v{LAYOUT_VERSION}): not restored"
            )
        if meta.get("trading_day") != trading_day:
            raise CheckpointRefused(
                f"checkpoint {path} is from trading day {meta.get('trading_day')}, "
                f"today is {trading_day}: not restored"
            )
        if meta.get("n_rows") != t.n_rows or meta.get("hist_depth") != h.depth:
            raise CheckpointRefused(
                f"checkpoint {path} holds {meta.get('n_rows')} symbols x {meta.get('hist_depth')} bars, "
                f"this instance has {t.n_rows} x {h.depth}: not restored"
            )
        if not np.array_equal(z["keys"], t.keys):
            raise CheckpointRefused(f"checkpoint {path} holds another symbol list: not restored")
        arrays = {}
        # process state from another build (a changed aggregator) is refused, not corrupt
        for proc, na in shared.state.items():
            for k, target in na.arrays.items():
                key = f"state.{proc}.{k}"
                a = z[key] if key in z.files else None
                if a is None or a.shape != target.shape:
                    raise CheckpointRefused(f"checkpoint {path} lacks process state {key}: not restored")
                arrays[key] = a
        # the layout hash fixed these shapes: a mismatch is a damaged file
        if "hist_rows" not in z.files and "hist" in z.files:
            raise CheckpointRefused(f"checkpoint {path} was written by an older build (field-major history): "
                                    "not restored")
        rows = (h.n_rows, h.n_fields, h.depth)
        for key, dtype, shape in (("f8", t.f8.dtype, t.f8.shape), ("i8", t.i8.dtype, t.i8.shape),
                                  ("hist_rows", h.hist.dtype, rows), ("head", h.head.dtype, h.head.shape)):
            a = z[key]  # reads and decompresses the member: a truncated one raises here
            if a.shape != shape or a.dtype != dtype:
                raise ValueError(f"{key} is {a.dtype}{a.shape}, expected {dtype}{shape}")
            arrays[key] = a
    return meta, arrays


class Periodic:
    """The supervisor's checkpoints: every `interval_s` in a thread (copying and fsyncing a large
    table and history, ~130 MB for 5,000 symbols x 400 bars, must not hold up reaping and
    heartbeat checks), and a last one on stop."""

    def __init__(self, shared: Shared, path: Path, interval_s: float) -> None:
        self.shared, self.path, self.interval_s = shared, path, interval_s
        self._last = time.monotonic()
        self._thread: threading.Thread | None = None

    def maybe(self) -> None:
        """Start a checkpoint in the background when one is due and none is running."""
        if time.monotonic() - self._last < self.interval_s:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self.save, name="checkpoint", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def save(self) -> None:
        """One checkpoint now; a failure is logged, never raised (it must not stop trading)."""
        self._last = time.monotonic()
        try:
            ev = self.shared.control.event_time_ns(time.time_ns())
            size = save(self.shared, self.path, ev)
            log.info("checkpoint written (%d bytes)", size)
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint must not stop trading
            log.error("checkpoint failed: %s", exc)
