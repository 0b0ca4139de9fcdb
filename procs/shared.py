"""The shared-memory segments of one instance, created by the supervisor, attached by children.

| segment | name | writer | readers |
| --- | --- | --- | --- |
| control | `scanner.<instance>.ctl` | supervisor (header), each process (its slot) | all, `scanner status` |
| table | `scanner.<instance>.table` | one process per column (catalogue owner) | scanners, gateway, checkpoint |
| history | `scanner.<instance>.hist` | bars | indicators, scanners (bars_ago) |
| tick ring | `scanner.<instance>.ticks` | ingest | bars (consumer 0), storage (1) |
| bar ring | `scanner.<instance>.bars` | bars | indicators (0), storage (1) |
| alert ring i | `scanner.<instance>.alerts.<i>` | scanner worker i | publisher (0) |
| alert feed | `scanner.<instance>.feed` | publisher | gateways (one consumer slot each) |
| repair ring | `scanner.<instance>.repair` | ingest (bars from a gap repair) | bars (0) |
| state.bars | `scanner.<instance>.state.bars` | bars | bars (restarts), checkpoint, scanners (`rows_state`) |
| state.matches | `scanner.<instance>.state.matches` | scan worker i, its own rows (`shm.partitioned`) | gateways |
| state.feed | `scanner.<instance>.state.feed` | ingest; bars (`repaired_bars`, `corrections_applied`) | status |
| timeframes | `scanner.<instance>.timeframes` | indicators (the supervisor seeds the daily ring) | indicators |
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import numpy as np

from scanner.metrics import CATALOGUE, HIST_FIELDS, Owner
from scanner.records import ALERT_DTYPE, BAR_DTYPE, TICK_DTYPE
from shm.arrays import NamedArrays
from shm.control import ControlBlock
from shm.history import History
from shm.partitioned import PartitionedMatrix
from shm.ring import Ring
from shm.segment import SHM_DIR, Segment
from shm.table import ColumnTable

# Seqlock writer index of each owner in the table.
WRITERS: dict[Owner, int] = {Owner.INGEST: 0, Owner.BARS: 1, Owner.INDICATORS: 2, Owner.REFERENCE: 3}
# Processes whose death may leave odd seqlock counters in the table behind.
WRITER_OF_PROCESS = {"ingest": Owner.INGEST, "bars": Owner.BARS, "indicators": Owner.INDICATORS}

TICK_CONSUMER_BARS, TICK_CONSUMER_STORAGE = 0, 1
BAR_CONSUMER_INDICATORS, BAR_CONSUMER_STORAGE = 0, 1
ALERT_CONSUMER_PUBLISHER, ALERT_CONSUMER_REPLAY = 0, 1  # 1: `scanner replay` / `backtest` (procs.replay)
REPAIR_CONSUMER_BARS = 0
REPAIR_RING_CAPACITY = 1 << 16  # repaired closed bars in flight (a reconnect's worth)


def seg_name(instance: str, part: str) -> str:
    return f"scanner.{instance}.{part}"


def instance_segments(instance: str) -> list[str]:
    """Names of every segment of an instance that exists now."""
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(SHM_DIR, f"scanner.{instance}.*")))


@dataclass
class Shared:
    """All segments of an instance, attached (or created) in this process."""

    instance: str
    control: ControlBlock
    table: ColumnTable
    history: History
    ticks: Ring
    bars: Ring
    alerts: list[Ring]
    feed: Ring
    repair: Ring
    owner: bool = False
    state: dict[str, NamedArrays] = field(default_factory=dict)
    timeframes: NamedArrays | None = None  # higher-timeframe rings (not checkpointed: rebuilt)

    @classmethod
    def create(cls, instance: str, *, keys: list[str], n_workers: int, trading_day: int,
               tick_capacity: int, bar_capacity: int, alert_capacity: int, hist_depth: int,
               block_shift: int, supervisor_pid: int, created_ns: int,
               states: dict[str, dict[str, np.ndarray]] | None = None) -> Shared:
        """Create every segment; `states` gives each process's private arrays (initial values)."""
        n = len(keys)
        metrics = CATALOGUE.metrics
        table = ColumnTable.create(
            seg_name(instance, "table"), keys=keys,
            writer_f8=[WRITERS[m.owner] for m in metrics if m.dtype == "f8"],
            writer_i8=[WRITERS[m.owner] for m in metrics if m.dtype == "i8"],
            n_writers=len(WRITERS), layout_hash=CATALOGUE.layout_hash, block_shift=block_shift,
        )
        control = ControlBlock.create(
            seg_name(instance, "ctl"), n_symbols=n, layout_hash=CATALOGUE.layout_hash,
            trading_day=trading_day, supervisor_pid=supervisor_pid, created_ns=created_ns,
        )
        history = History.create(seg_name(instance, "hist"), n_fields=len(HIST_FIELDS), n_rows=n,
                                 depth=hist_depth, block_shift=block_shift)
        ticks = Ring.create(seg_name(instance, "ticks"), tick_capacity, TICK_DTYPE)
        bars = Ring.create(seg_name(instance, "bars"), bar_capacity, BAR_DTYPE)
        alerts = [Ring.create(seg_name(instance, f"alerts.{i}"), alert_capacity, ALERT_DTYPE)
                  for i in range(n_workers)]
        feed = Ring.create(seg_name(instance, "feed"), alert_capacity, ALERT_DTYPE)
        repair = Ring.create(seg_name(instance, "repair"), REPAIR_RING_CAPACITY, BAR_DTYPE)
        # consumers attached now, at the rings' start: a consumer first attaching in its process
        # starts at the head, so whatever the producer published before (a live feed's first burst
        # while bars still loads its kernels on a busy machine) would never reach it
        ticks.consumer(TICK_CONSUMER_BARS)
        repair.consumer(REPAIR_CONSUMER_BARS)
        for ring in alerts:
            ring.consumer(ALERT_CONSUMER_PUBLISHER)
        state = {
            name: NamedArrays.create(seg_name(instance, f"state.{name}"),
                                     {k: (v.dtype, v.shape) for k, v in arrays.items()}, fill=arrays)
            for name, arrays in (states or {}).items()
        }
        from scanner.timeframes import ring_spec  # here: numba costs ~0.25 s to import in every child

        spec = ring_spec(n)
        timeframes = NamedArrays.create(seg_name(instance, "timeframes"), spec,
                                        fill={k: (np.nan if k.startswith("ring") else 0) for k in spec})
        return cls(instance, control, table, history, ticks, bars, alerts, feed, repair, owner=True, state=state,
                   timeframes=timeframes)

    @classmethod
    def attach(cls, instance: str) -> Shared:
        control = ControlBlock.attach(seg_name(instance, "ctl"))
        table = ColumnTable.attach(seg_name(instance, "table"))
        if table.layout_hash != CATALOGUE.layout_hash:
            raise RuntimeError(
                f"table layout {table.layout_hash} does not match this code's catalogue "
                f"{CATALOGUE.layout_hash}: restart the instance after an upgrade"
            )
        history = History.attach(seg_name(instance, "hist"))
        ticks = Ring.attach(seg_name(instance, "ticks"), TICK_DTYPE)
        bars = Ring.attach(seg_name(instance, "bars"), BAR_DTYPE)
        alerts = []
        i = 0
        while os.path.exists(Segment.path(seg_name(instance, f"alerts.{i}"))):
            alerts.append(Ring.attach(seg_name(instance, f"alerts.{i}"), ALERT_DTYPE))
            i += 1
        feed = Ring.attach(seg_name(instance, "feed"), ALERT_DTYPE)
        repair = Ring.attach(seg_name(instance, "repair"), BAR_DTYPE)
        prefix = seg_name(instance, "state.")
        state = {name[len(prefix):]: NamedArrays.attach(name)
                 for name in instance_segments(instance) if name.startswith(prefix)}
        timeframes = NamedArrays.attach(seg_name(instance, "timeframes"))
        return cls(instance, control, table, history, ticks, bars, alerts, feed, repair, state=state,
                   timeframes=timeframes)

    def segments(self) -> list[Segment]:
        return [self.control.seg, self.table.seg, self.history.seg, self.ticks.seg, self.bars.seg,
                *(r.seg for r in self.alerts), self.feed.seg, self.repair.seg, *(a.seg for a in self.state.values()),
                *([self.timeframes.seg] if self.timeframes else [])]

    def close(self) -> None:
        """Unmap everything in this process (the data stays for the other processes)."""
        for part in (self.control, self.table, self.history, self.ticks, self.bars, *self.alerts, self.feed,
                     self.repair, *self.state.values(), *([self.timeframes] if self.timeframes else [])):
            part.close()

    def unlink(self) -> None:
        """Remove every segment name; owner only, once, after all children stopped."""
        for seg in self.segments():
            seg.unlink()

    def repair_writer(self, process: str) -> int:
        """After `process` died (the supervisor reaped it): make the seqlock counters it may have
        left odd, mid-write, even again; returns how many were."""
        n = 0
        owner = WRITER_OF_PROCESS.get(process)
        if owner is not None:
            n += self.table.writer(WRITERS[owner]).repair()
        if owner is Owner.BARS:
            n += self.history.writer().repair()
        if process.startswith("scan-") and "matches" in self.state:
            n += PartitionedMatrix(self.state["matches"].arrays).repair(int(process[5:]))
        return n
