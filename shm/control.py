"""The control block: one small segment per instance with the header and per-process slots.

Layout (offsets in bytes; defined once by the dtypes below, sizes asserted at import):

| offset | size | field |
| --- | --- | --- |
| 0 | 128 | header: magic, layout version, table layout hash, n_symbols, created, trading day,
  feed clock anchor (event ns at wall ns, speed) so that a restarted feed continues the clock |
| 128 | 64 | rules generation counter (own cache line: bumped by rule changes, read every cycle) |
| 192 | 64 | shutdown flag (own cache line: written by the supervisor, read by every loop) |
| 256 | 192 x MAX_SLOTS | process slots, one per process, each three cache lines |
| 256 + 192 x MAX_SLOTS | 17 x 8 x MAX_SLOTS | cycle-time histogram per slot: 16 bucket counts
  (BUCKETS_US, +Inf), then the sum in µs |
| PROGRESS_OFF (64-aligned) | 64 x MAX_SLOTS | event-time progress per slot, each slot's words on
  their own cache line: word 0 "done up to event time T" (ns), word 1 "read up to T" (a scan
  worker's snapshot; 0 elsewhere), written only by that slot's process |

Writers of the shared words (the caller keeps to this; the block does not enforce it):

* header identity (magic, layout, n_symbols, trading day, created, supervisor pid) and the
  shutdown flag: the supervisor, at creation and on stop.
* the feed clock anchor (`set_clock`): one writer at a time, but not always the supervisor. It
  anchors the clock at start-up; with a replay feed it leaves it stopped and replay ingest
  (`procs/ingest_replay.py`) writes it from then on.
* the rules generation: whoever changes the rules - the CLI and gateways under the rule store's
  lock file (`procs/rules_admin.py`), the supervisor on SIGHUP without it.

Each process writes only its own slot (heartbeat, counters, timings), from its work loop, so a
stalled loop shows as a stale heartbeat. The supervisor writes pid/core/restarts of a slot
before the child starts (and `hold_until_ns` while a crash-looping child is held back) and
reads the rest. Heartbeats are `time.monotonic_ns()` (one clock for
all processes of the host). All fields are aligned 8-byte words: see `shm.platform`.

**Event-time progress** (replay only; live processes leave it at 0). A replay is a chain of
hand-offs on one event clock: ingest publishes every tick up to a scan boundary T, then anchors
the feed clock at T; bars drains the tick ring, closes what the watermark T - grace closes, then
stores `progress[bars] = T`; indicators take the closed bars, refresh the live values at T, then
store `progress[indicators] = T`; each scan worker scans at T, publishes its alerts, then stores
`progress[scan-i] = T` ("scanned up to T"). Before it evaluates, a worker stores
`read_progress[scan-i] = T` once its snapshot of the table and the history for T is taken;
ingest publishes nothing after T before every worker's read word reached T, so the next
boundary's ticks, bars and indicators overlap the evaluation of T (which reads only its
snapshot). One writer per word, and each writer stores its word *after* the data
it covers (ring heads, table columns under their seqlocks, the alert ring); a reader loads the
word *before* the data. x86-64 keeps stores in program order and loads in program order (TSO,
checked by `shm.platform`), so a reader that sees T also sees everything written for T. A word
only grows; a restarted process continues from the value it finds.
"""

from __future__ import annotations

import numpy as np

from shm.segment import Segment

MAGIC = int.from_bytes(b"SCANCTL1", "little")
LAYOUT_VERSION = 2  # 2: event-time progress words
MAX_SLOTS = 64

HEADER_DTYPE = np.dtype(
    {
        "names": [
            "magic", "layout_version", "n_symbols", "created_ns", "trading_day",
            "clock_event_ns", "supervisor_pid", "n_slots", "layout_hash", "clock_wall_ns",
            "clock_speed",
        ],
        "formats": ["<u8", "<i8", "<i8", "<i8", "<i8", "<i8", "<i8", "<i8", "S16", "<i8", "<f8"],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 88],
        "itemsize": 128,
    }
)

SLOT_DTYPE = np.dtype(
    {
        "names": [
            "name", "pid", "core", "started_ns", "heartbeat_ns", "restarts", "state",
            "n_in", "n_out", "drops", "errors", "overruns",
            "rate_in", "rate_out", "p50_us", "p99_us", "max_us", "cycles", "hold_until_ns",
        ],
        "formats": [
            "S24", "<i8", "<i8", "<i8", "<i8", "<i8", "<i8",
            "<i8", "<i8", "<i8", "<i8", "<i8",
            "<f8", "<f8", "<f8", "<f8", "<f8", "<i8", "<i8",
        ],
        "offsets": [0, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128, 136, 144, 152, 160],
        "itemsize": 192,
    }
)

# Slot states, written by the process itself (STARTING/RUNNING/STOPPING) or the supervisor
# (DEAD; HELD: in a crash loop, held back until the slot's `hold_until_ns`, wall clock).
STATE_EMPTY, STATE_STARTING, STATE_RUNNING, STATE_STOPPING, STATE_DEAD, STATE_HELD = 0, 1, 2, 3, 4, 5

HEADER_OFF = 0
GENERATION_OFF = 128
SHUTDOWN_OFF = 192
SLOTS_OFF = 256
HIST_OFF = SLOTS_OFF + SLOT_DTYPE.itemsize * MAX_SLOTS
# upper bounds (µs) of the cycle-time histogram buckets; the last bucket is +Inf
BUCKETS_US = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
              1_000_000, 2_500_000, 5_000_000)
N_BUCKETS = 16
HIST_WORDS = N_BUCKETS + 1  # + running sum of cycle time, µs
PROGRESS_OFF = -(-(HIST_OFF + HIST_WORDS * 8 * MAX_SLOTS) // 64) * 64
PROGRESS_STRIDE = 64  # one cache line per word: writers of neighbouring slots never share a line
CONTROL_SIZE = PROGRESS_OFF + PROGRESS_STRIDE * MAX_SLOTS
assert len(BUCKETS_US) == N_BUCKETS - 1

assert HEADER_DTYPE.itemsize == 128
assert SLOT_DTYPE.itemsize % 64 == 0
assert SLOTS_OFF % 64 == 0
assert PROGRESS_OFF % 64 == 0 and PROGRESS_OFF >= HIST_OFF + HIST_WORDS * 8 * MAX_SLOTS


class ControlBlock:
    """Typed views over the control segment."""

    def __init__(self, seg: Segment) -> None:
        if seg.size < CONTROL_SIZE:
            raise ValueError(f"control segment {seg.name!r} is {seg.size} bytes, need {CONTROL_SIZE}")
        self.seg = seg
        self.header = np.ndarray((), HEADER_DTYPE, seg.buf, HEADER_OFF)
        self._generation = np.ndarray((1,), "<i8", seg.buf, GENERATION_OFF)
        self._shutdown = np.ndarray((1,), "<i8", seg.buf, SHUTDOWN_OFF)
        self.slots = np.ndarray((MAX_SLOTS,), SLOT_DTYPE, seg.buf, SLOTS_OFF)
        self.cycle_hist = np.ndarray((MAX_SLOTS, HIST_WORDS), "<i8", seg.buf, HIST_OFF)
        # (MAX_SLOTS,) int64 view with a 64-byte stride: word i at PROGRESS_OFF + 64 i
        self.progress = np.ndarray((MAX_SLOTS,), "<i8", seg.buf, PROGRESS_OFF, strides=(PROGRESS_STRIDE,))
        # word 1 of each slot's line (padding zeroed at creation before it was used: no layout change)
        self.read_progress = np.ndarray((MAX_SLOTS,), "<i8", seg.buf, PROGRESS_OFF + 8, strides=(PROGRESS_STRIDE,))

    @classmethod
    def create(cls, name: str, *, n_symbols: int, layout_hash: str, trading_day: int,
               supervisor_pid: int, created_ns: int) -> ControlBlock:
        cb = cls(Segment.create(name, CONTROL_SIZE, replace=True))
        h = cb.header
        h["layout_version"] = LAYOUT_VERSION
        h["n_symbols"] = n_symbols
        h["layout_hash"] = layout_hash.encode()
        h["trading_day"] = trading_day
        h["supervisor_pid"] = supervisor_pid
        h["created_ns"] = created_ns
        h["magic"] = MAGIC  # last: a reader that sees the magic sees a complete header
        return cb

    @classmethod
    def attach(cls, name: str) -> ControlBlock:
        cb = cls(Segment.attach(name))
        if int(cb.header["magic"]) != MAGIC:
            raise ValueError(f"segment {name!r} is not a scanner control block")
        if int(cb.header["layout_version"]) != LAYOUT_VERSION:
            raise ValueError(
                f"control block layout {int(cb.header['layout_version'])} != ours ({LAYOUT_VERSION})"
            )
        return cb

    # -- rules generation: bumped (under the rule store's file lock) on every rule change
    @property
    def rules_generation(self) -> int:
        return int(self._generation[0])

    def bump_rules_generation(self) -> int:
        self._generation[0] += 1
        return int(self._generation[0])

    @property
    def shutdown(self) -> bool:
        return bool(self._shutdown[0])

    def request_shutdown(self) -> None:
        self._shutdown[0] = 1

    def set_clock(self, event_ns: int, wall_ns: int, speed: float) -> None:
        """Anchor the feed clock: event time `event_ns` at wall time `wall_ns`, running at `speed`."""
        self.header["clock_wall_ns"] = wall_ns
        self.header["clock_speed"] = speed
        self.header["clock_event_ns"] = event_ns

    def event_time_ns(self, wall_ns: int) -> int:
        h = self.header
        return int(h["clock_event_ns"]) + int((wall_ns - int(h["clock_wall_ns"])) * float(h["clock_speed"]))

    @property
    def clock_anchor_ns(self) -> int:
        """The anchored event time (a replay's clock stands still between anchors: speed 0)."""
        return int(self.header["clock_event_ns"])

    def publish_progress(self, slot: int, event_ns: int) -> None:
        """Slot `slot` is done up to event time `event_ns`; store it after the work it covers."""
        self.progress[slot] = event_ns

    def progress_of(self, slot: int) -> int:
        """Event time slot `slot` is done up to (0: nothing yet); load it before the data."""
        return int(self.progress[slot])

    def publish_read(self, slot: int, event_ns: int) -> None:
        """Scan worker `slot` holds its snapshot for event time `event_ns` (module docstring)."""
        self.read_progress[slot] = event_ns

    def read_progress_of(self, slot: int) -> int:
        """Event time scan worker `slot` has read the shared state up to (0: nothing yet)."""
        return int(self.read_progress[slot])

    def slot_index(self, name: str) -> int:
        """Index of the slot named `name`; KeyError if none."""
        key = name.encode()
        for i in range(MAX_SLOTS):
            if self.slots[i]["name"] == key:
                return i
        raise KeyError(name)

    def close(self) -> None:
        del self.header, self._generation, self._shutdown, self.slots, self.cycle_hist, self.progress
        del self.read_progress
        self.seg.close()
