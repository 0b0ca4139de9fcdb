"""Checkpoint of the day's shared state, so that restarting the host does not wipe the day.

A checkpoint is one `.npz` file (written to a temp name, fsynced, renamed): the table's float
and int blocks, the bar history and its heads, each process's private state arrays (the bar
aggregator's running sums and day), and a small meta record (layout hash, control
layout version, trading day, feed clock). `restore` refuses, with a message saying why, a file
from another layout, another trading day or another universe size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from procs.shared import Shared
from shm.control import LAYOUT_VERSION


class CheckpointRefused(RuntimeError):
    """The checkpoint exists but does not belong to this layout, day or universe."""


def save(shared: Shared, path: Path, event_ns: int) -> int:
    """Write a consistent copy of the table and history; returns bytes written."""
    t, h = shared.table, shared.history
    f8 = np.empty_like(t.f8)
    i8 = np.empty_like(t.i8)
    t.snapshot(0, t.n_rows, np.arange(t.f8.shape[0]), f8, np.arange(t.i8.shape[0]), i8)
    hist = h.hist.copy()  # bars closes are rare; an in-flight close is re-done after restore
    head = h.head.copy()
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


def read_meta(path: Path) -> dict:
    with np.load(path) as z:
        return json.loads(bytes(z["meta"]).decode())


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
