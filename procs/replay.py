"""Watching a replay instance from outside (`scanner replay`): progress, end of data, closed bars.

The watcher attaches the instance's segments like `scanner status` does and takes consumer slot
`BAR_CONSUMER_REPLAY` of the closed-bar ring and `ALERT_CONSUMER_REPLAY` of every scanner
worker's alert ring (from the oldest record still kept), so it sees every bar the bar process
closes and every alert the workers raise, however long the replay (a lapped ring is counted).
The replay is *finished* when:

1. ingest's slot says feed done (`cycles` = 1, see `procs.ingest_replay`),
2. bars has taken every tick from the tick ring,
3. no live bar is left (`bar_start_ns` is 0 on every row: the clock passed the last minute),
4. indicators and this watcher have taken every closed bar, and
5. the bars process's output counter has not moved for `settle_s`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from procs.ingest_replay import report_path
from procs.shared import ALERT_CONSUMER_REPLAY, BAR_CONSUMER_INDICATORS, TICK_CONSUMER_BARS, Shared
from scanner.config import Settings
from scanner.metrics import CATALOGUE
from scanner.records import ALERT_DTYPE, BAR_DTYPE
from shm.records import concat, copied

BAR_CONSUMER_REPLAY = 7  # the replay watcher's slot on the closed-bar ring (indicators 0, storage 1)


@dataclass
class Snapshot:
    """Counters of a running replay, read from the control block and the rings."""

    ticks: int = 0  # published by ingest
    dropped: int = 0  # refused by ingest's validation
    malformed: int = 0  # rows the decoders could not read (so far)
    late: int = 0  # ticks the bar process dropped (late) or lost (lapped ring)
    bars: int = 0  # closed by the bar process
    alerts: int = 0  # raised by the scanner workers
    event_ns: int = 0  # the feed clock
    done: bool = False  # ingest: end of data reached


class ReplayWatch:
    """Attached view of a replay instance; `poll` also collects the closed bars."""

    def __init__(self, shared: Shared) -> None:
        self.sh = shared
        ctl = shared.control
        self.ingest = ctl.slot_index("ingest")
        self.bars_slot = ctl.slot_index("bars")
        self.scans = [i for i in range(len(ctl.slots)) if bytes(ctl.slots[i]["name"]).startswith(b"scan-")]
        self.consumer = shared.bars.consumer(BAR_CONSUMER_REPLAY, from_start=True)
        self.alert_consumers = [r.consumer(ALERT_CONSUMER_REPLAY, from_start=True) for r in shared.alerts]
        self.parts: list[np.ndarray] = []
        self.alert_parts: list[np.ndarray] = []
        self.n_collected = 0
        self._bars_seen = (-1, 0.0)

    @classmethod
    def attach(cls, instance: str) -> ReplayWatch | None:
        """The watcher once every child has a slot; None while the instance is still starting."""
        try:
            sh = Shared.attach(instance)
        except Exception:  # noqa: BLE001 - segments missing or half-created: not up yet
            return None
        try:
            return cls(sh)
        except KeyError:  # children not spawned yet
            sh.close()
            return None

    def poll(self) -> Snapshot:
        """Take the new closed bars and alerts, read the counters."""
        while True:
            got = self.consumer.poll(1 << 16)
            if not len(got):
                break
            self.parts.append(copied(got))
            self.n_collected += len(got)
        for c in self.alert_consumers:
            while len(got := c.poll(1 << 16)):
                self.alert_parts.append(copied(got))
        slots = self.sh.control.slots
        ing, bars = slots[self.ingest], slots[self.bars_slot]
        return Snapshot(
            ticks=int(ing["n_out"]), dropped=int(ing["drops"]), malformed=int(ing["errors"]),
            late=int(bars["drops"]), bars=int(bars["n_out"]),
            alerts=sum(int(slots[i]["n_out"]) for i in self.scans),
            event_ns=self.sh.control.event_time_ns(time.time_ns()), done=int(ing["cycles"]) >= 1,
        )

    def finished(self, snap: Snapshot, settle_s: float = 0.3) -> bool:
        """Feed done and everything drained (module docstring)."""
        if not snap.done:
            return False
        sh = self.sh
        if int(sh.ticks.consumers[TICK_CONSUMER_BARS]["cursor"]) < sh.ticks.head:
            return False
        if sh.table.i8[CATALOGUE.i8("bar_start_ns")].any():
            return False
        if int(sh.bars.consumers[BAR_CONSUMER_INDICATORS]["cursor"]) < sh.bars.head or self.consumer.backlog():
            return False
        now = time.monotonic()
        if snap.bars != self._bars_seen[0]:
            self._bars_seen = (snap.bars, now)
            return False
        return now - self._bars_seen[1] >= settle_s

    def bars(self) -> np.ndarray:
        """Every closed bar collected so far, in the order they closed (BAR_DTYPE)."""
        return concat(self.parts) if self.parts else np.empty(0, BAR_DTYPE)

    def bars_lost(self) -> int:
        return self.consumer.lost

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """The bars and alerts collected since the last `take` (handed over, no longer kept)."""
        bars, alerts = self.bars(), self.alerts()
        self.parts, self.alert_parts = [], []
        return bars, alerts

    def alerts(self) -> np.ndarray:
        """Every alert collected so far (ALERT_DTYPE), ordered by event time, rule key, symbol."""
        a = concat(self.alert_parts) if self.alert_parts else np.empty(0, ALERT_DTYPE)
        return a[np.lexsort((a["sym"], a["rule"], a["event_ns"]))]

    def alerts_lost(self) -> int:
        return sum(c.lost for c in self.alert_consumers)

    def symbols(self) -> list[str]:
        return self.sh.table.key_list()

    def close(self) -> None:
        self.sh.close()


def read_report(settings: Settings) -> dict | None:
    """Ingest's end-of-data report (decoder counts, malformed rows), or None."""
    try:
        return json.loads(report_path(settings).read_text())
    except (OSError, ValueError):
        return None


def write_bars(path: Path, bars: np.ndarray, symbols: list[str]) -> None:
    """Closed bars to `.npz` (`bars`: BAR_DTYPE, `symbols`: row names) or `.csv` (one row per bar)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npz":
        np.savez(path, bars=bars, symbols=np.array(symbols, dtype=str))
        return
    prices = ("open", "high", "low", "close", "volume", "vwap")
    with open(path, "w") as f:
        f.write("symbol,minute_ns,open,high,low,close,volume,vwap,trades\n")
        for b in bars.tolist():  # tuples in BAR_DTYPE field order
            rec = dict(zip(BAR_DTYPE.names, b, strict=True))
            vals = ",".join(repr(float(rec[k])) for k in prices)
            f.write(f"{symbols[rec['sym']]},{rec['minute_ns']},{vals},{rec['trades']}\n")


def write_alerts(path: Path, alerts: np.ndarray, symbols: list[str], settings: Settings) -> int:
    """Alerts to `.csv` or `.parquet` (`scanner.alert_table`), rule ids from the instance's rule
    store; returns the number written."""
    from procs.rules_admin import open_store
    from scanner.alert_table import alert_columns, write_table

    return write_table(path, alert_columns(alerts, symbols, open_store(settings).list()))
