"""Checkpoint of the day's shared state, so that restarting the host does not wipe the day.

A checkpoint is one `.npz` file (written to a temp name, fsynced, renamed): the table's float
and int blocks, the bar history and its heads, each process's private state arrays (the bar
aggregator's running sums and day), and a small meta record (layout hash, control
layout version, trading day, feed clock). `restore` refuses, with a message saying why, a file
from another layout, another trading day or another universe size.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from procs.shared import Shared
from shm.control import LAYOUT_VERSION

log = logging.getLogger("scanner.supervisor")


class CheckpointRefused(RuntimeError):
    """The checkpoint exists but does not belong to this layout, day or universe."""


def save(shared: Shared, path: Path, event_ns: int) -> int:
    """Write a consistent copy of the table and history; returns bytes written."""
    t, h = shared.table, shared.history
    f8 = np.empty_like(t.f8)
    i8 = np.empty_like(t.i8)
    t.snapshot(0, t.n_rows, np.arange(t.f8.shape[0]), f8, np.arange(t.i8.shape[0]), i8)
    hist, head = np.empty_like(h.hist), np.empty_like(h.head)
    h.snapshot(hist, head)
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
        states = {f"state.{proc}.{k}": a.copy() for proc, na in shared.state.items() for k, a in na.arrays.items()}
        np.savez(fh, f8=f8, i8=i8, keys=t.keys.copy(), hist=hist, head=head,
                 meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **states)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path.stat().st_size


def restore(shared: Shared, path: Path, trading_day: int) -> dict:
    """Load a checkpoint into freshly created segments; returns its meta, or raises
    `CheckpointRefused` (the segments are left untouched)."""
    t, h = shared.table, shared.history
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
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
        keys = z["keys"]
        if not np.array_equal(keys, t.keys):
            raise CheckpointRefused(f"checkpoint {path} holds another symbol list: not restored")
        for proc, na in shared.state.items():
            for k, a in na.arrays.items():
                key = f"state.{proc}.{k}"
                if key not in z.files or z[key].shape != a.shape:
                    raise CheckpointRefused(f"checkpoint {path} lacks process state {key}: not restored")
        for proc, na in shared.state.items():
            for k, a in na.arrays.items():
                a[...] = z[f"state.{proc}.{k}"]
        t.f8[:] = z["f8"]
        t.i8[:] = z["i8"]
        h.hist[:] = z["hist"]
        h.head[:] = z["head"]
    return meta


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
