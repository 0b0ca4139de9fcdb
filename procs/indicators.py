"""Indicators: closed bars + live bar -> every indicator-owned column, at the scan cadence.

Finalised state is rebuilt from the bar history at start (so a restart loses nothing), then
advanced by the closed-bar ring. The history is read a chunk of rows at a time
(`warm_from_history`), never copied whole: a copy would add 245 MB at 10,000 symbols to every
(re)start (issue 15). Live values are computed from a seqlock-consistent copy of the input
columns into private output buffers, then copied into the table under this writer's seqlock in
one step, a little before each scan cycle. In a replay the cycle is on event time
(`procs.eventtime`): once bars is done up to a scan boundary T, every closed bar is taken, the
live values are computed at T, and "done up to T" is published for the scan workers, so scans
see the same indicator values at any replay speed and batch size.

A replay's refresh needs neither copy: while the chain is at the indicators, nothing writes
their input columns (ingest publishes no tick after T, and bars has drained up to T, before
every scan worker is done with T; the supervisor writes the reference columns only between two
days, when every boundary is scanned), so the kernels read the table's columns as they are and
write the outputs straight into it, under this writer's seqlock. And only the rows whose inputs,
bars or minute changed since the last boundary are recomputed by the per-row kernels
(`scanner.indicators.live_rows`); the others keep the values they have in the table, which this
process alone writes.

In both modes a helper thread shares the work with the process's own (`RefreshHelper`). The
live refresh is six tasks that both threads take in turn: the 1-minute engine's own columns, its
rolling moves, and each timeframe's columns. The fold of a minute close of many symbols is six
too: each timeframe's bars and engine (at 16:00 each of those closes 10,000 bars), then the
1-minute engine's bar indicators and its rolling moves. The tasks read the same inputs and write
disjoint state and columns, and their numba kernels release the GIL, so a refresh or a close
waits for about half their sum.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from procs.eventtime import HandoffBell, event_mode, slots_named
from procs.runtime import Context
from procs.shared import BAR_CONSUMER_INDICATORS, WRITERS
from procs.storage.history import warm_start
from scanner.bar_kernels import META_PUBLISHED
from scanner.indicators import live_rows
from scanner.indicators.engine import INDICATOR_COLUMNS, IndicatorEngine, warm_kernels
from scanner.indicators.timeframes import TimeframeIndicators
from scanner.indicators.timeframes import warm_kernels as warm_timeframe_kernels
from scanner.metrics import CATALOGUE, Owner
from scanner.records import BAR_DTYPE
from scanner.storage.history import StoredBars
from scanner.timeframes import TIMEFRAMES, TimeframeBars
from shm.records import concat, copied

log = logging.getLogger("scanner.indicators")
HIST_CHUNK_ROWS = 256  # history rows read and folded at a time (6.5 MB at K = 400)


def _float_over(cores: set[int]) -> None:
    """Let the calling thread run on `cores`; where that is refused (a cpuset changed since), it
    stays on the process's core: slower, never wrong (a failing initializer would break the pool)."""
    try:
        os.sched_setaffinity(0, cores)
    except OSError as exc:
        log.warning("refresh helper stays on this process's cores: %s", exc)


class RefreshHelper:
    """A thread that shares a refresh's or a close's tasks with the caller (module docstring).
    The supervisor pins this process to one core; the thread may run on any core of the
    instance (the supervisor's own set), or there is no helper when that is a single core
    (`share` then calls in turn)."""

    def __init__(self, supervisor_pid: int) -> None:
        try:
            cores = os.sched_getaffinity(supervisor_pid)
        except OSError:  # the supervisor is gone (we are about to be stopped): no helper
            cores = os.sched_getaffinity(0)
        self.pool = (ThreadPoolExecutor(1, "tf-refresh", initializer=_float_over, initargs=(cores,))
                     if len(cores) > 1 else None)

    def share(self, tasks: Sequence[Callable[[], None]]) -> None:
        """Run independent `tasks` on this thread and the helper, each taking the next one as it
        becomes free (list the longest first); returns when all are done. An exception stops the
        thread it happened on and is raised here once the other has finished."""
        if self.pool is None:
            for task in tasks:
                task()
            return
        todo = iter(tasks)
        lock = threading.Lock()

        def pull() -> None:
            while True:
                with lock:
                    task = next(todo, None)
                if task is None:
                    return
                task()

        done = self.pool.submit(pull)
        try:
            pull()
        finally:
            done.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


PARALLEL_FOLD_BARS = 2048  # fewer closed bars fold in turn: the helper's wake-up would cost more than it saves


def fold_closed(helper: RefreshHelper, engine: IndicatorEngine, tfb: TimeframeBars, tfi: TimeframeIndicators,
                closed: np.ndarray, watermark_ns: int | None = None,
                rows_state: np.ndarray | None = None) -> list[np.ndarray]:
    """Fold closed 1-minute bars into the 1-minute engine and into the higher timeframes (their
    bars, then with `watermark_ns` their close on that watermark, `TimeframeBars.close_due`,
    then their engines). For a minute close of many symbols these are six tasks shared with
    the helper: each timeframe's bars and engine (on the 16:00 close every timeframe closes
    10,000 bars), then the 1-minute engine's two parts (`IndicatorEngine.fold_tasks`). Returns
    the timeframe bars this closed (`TimeframeBars.on_bars_closed`), for a minute close of many
    symbols as views valid until the next fold or close of `tfb`."""
    if len(closed) > tfb.max_fold_bars:  # a catch-up's batch: in pieces, each shared like a minute close
        chunks = [[copied(p) for p in fold_closed(helper, engine, tfb, tfi, piece, wm, rows_state)]
                  for piece, wm in tfb.pieces(closed, watermark_ns)]
        return [concat([c[j] for c in chunks]) for j in range(len(TIMEFRAMES))]
    if len(closed) < PARALLEL_FOLD_BARS:
        engine.on_bars_closed(closed)
        parts = tfb.on_bars_closed(closed, watermark_ns, rows_state)
        tfi.on_bars_closed(parts)
        return parts
    got: list[np.ndarray] = [np.empty(0, BAR_DTYPE)] * len(TIMEFRAMES)

    def timeframe(j: int, fold: Callable[[], np.ndarray]) -> None:
        got[j] = fold()
        tfi.engines[TIMEFRAMES[j]].on_bars_closed(got[j])

    # the longest first, the 1-minute engine's two short parts last, to even out the threads' ends
    helper.share([*(partial(timeframe, j, fold)
                    for j, fold in enumerate(tfb.fold_tasks(closed, watermark_ns, rows_state))),
                  *engine.fold_tasks(closed)])
    return got


def update_live(helper: RefreshHelper, engine: IndicatorEngine, tfb: TimeframeBars, tfi: TimeframeIndicators,
                cols: dict[str, np.ndarray], event_ns: int, rows: np.ndarray | None = None) -> None:
    """Every indicator column of `cols` at `event_ns` (for `rows`, see `IndicatorEngine.update_live`):
    the 1-minute engine's two parts and each timeframe's, shared by this thread and the helper
    (the longest first)."""
    helper.share([*engine.live_tasks(cols, event_ns, rows), *tfi.live_tasks(cols, tfb, event_ns, rows)])


def _synthetic_history(ctx: Context, engine: IndicatorEngine, n: int) -> None:
    """The synthetic market's past days as a volume profile, so relative volume means something
    from the first minute (a real feed gets it from stored history, `warm_start`)."""
    from scanner.feeds.synthetic import make_universe, volume_profile
    from scanner.session import OPEN_MIN

    s = ctx.settings
    u = make_universe(s.symbols, s.feed_seed, s.feed_rate)
    engine.load_volume_profile(volume_profile(u, np.arange(n) + s.range_start, OPEN_MIN).astype(np.float32))


def warm_from_history(chunks: Iterable[tuple[int, np.ndarray, np.ndarray]], engine: IndicatorEngine,
                      tfb: TimeframeBars | None = None, stored: StoredBars | None = None,
                      beat: Callable[[], None] | None = None) -> None:
    """Warm `engine` (reset first) and resume `tfb` from the 1-minute history given as chunks of
    rows (lo, hist[field, i, slot], head[i]), e.g. `History.chunks`: each chunk is folded into
    both, merged with its rows' `stored` bars for the engine, then dropped. Rows are independent,
    so this equals `engine.warm_up` + `tfb.resume` over a whole copy taken at once, except that a
    later chunk may hold newer bars: those are also in the closed-bar ring after the consumer's
    cursor (bars writes the history before it publishes), and every fold skips a bar not newer
    than its row's last one, so the first poll leaves the same state."""
    engine.reset()
    for lo, hist, head in chunks:
        merged, merged_head = stored.merge(hist, head, lo) if stored is not None else (hist, head)
        engine.fold_history(merged, merged_head, lo)
        if tfb is not None:
            tfb.resume_rows(hist, head, lo)
        if beat is not None:
            beat()


def main(ctx: Context) -> None:
    warm_kernels()  # every kernel compiled or loaded before the first heartbeat (boot_timeout_s applies)
    warm_timeframe_kernels()
    live_rows.warm_kernels()
    sh = ctx.shared
    t, h = sh.table, sh.history
    n = t.n_rows
    engine = IndicatorEngine(n)
    # attached before the history is read: every bar published from here on is polled later,
    # every bar published before is in the history (bars writes it first); the overlap is skipped
    bars = sh.bars.consumer(BAR_CONSUMER_INDICATORS)
    stored = warm_start(ctx, engine, h.depth)  # past days from PostgreSQL / the archive, when configured
    if ctx.settings.feed == "synthetic" and engine.profile is None:
        _synthetic_history(ctx, engine, n)
    # higher timeframes: rings in the `timeframes` segment (only this process reads and writes
    # them once running), live bars rebuilt from the 1-minute ring, engines from the rings
    tfa = sh.timeframes.arrays  # type: ignore[union-attr]
    rings, heads = [tfa[f"ring_{tf}"] for tf in TIMEFRAMES], [tfa[f"head_{tf}"] for tf in TIMEFRAMES]
    tfb = TimeframeBars(n, rings, heads)
    tfi = TimeframeIndicators(n)
    # seqlocked chunk by chunk against bars, which may be writing
    warm_from_history(h.chunks(HIST_CHUNK_ROWS), engine, tfb, stored, ctx.beat)
    del stored
    tfi.warm_up(rings, heads)
    published = sh.state["bars"].arrays["meta"]
    # inputs: every non-indicator column, copied consistently; outputs: private buffers
    inputs = [m for m in CATALOGUE.metrics if m.owner != Owner.INDICATORS]
    in_f8 = np.array([m.index for m in inputs if m.dtype == "f8"])
    in_i8 = np.array([m.index for m in inputs if m.dtype == "i8"])
    buf_f8 = np.empty((len(in_f8), n))
    buf_i8 = np.empty((len(in_i8), n), np.int64)
    cols: dict[str, np.ndarray] = {}
    for i, m in enumerate(m for m in inputs if m.dtype == "f8"):
        cols[m.name] = buf_f8[i]
    for i, m in enumerate(m for m in inputs if m.dtype == "i8"):
        cols[m.name] = buf_i8[i]
    out_idx = np.array([CATALOGUE.f8(name) for name in INDICATOR_COLUMNS])
    out = np.full((len(INDICATOR_COLUMNS), n), np.nan)
    for i, name in enumerate(INDICATOR_COLUMNS):
        cols[name] = out[i]
    seq = t.writer(WRITERS[Owner.INDICATORS])
    blocks = seq.block_range(0, n)
    contiguous = bool(np.all(np.diff(out_idx) == 1))
    # replay: the per-row kernels run only for the rows whose inputs, bars or minute changed
    # since the last refresh (the others' values would come out the same), in place (module doc)
    changed = live_rows.ChangedRows(n) if event_mode(ctx.settings) else None
    helper = RefreshHelper(int(sh.control.header["supervisor_pid"]))

    def mark(parts: Iterable[np.ndarray]) -> None:
        if changed is not None:
            for part in parts:
                changed.mark(part["sym"])

    # Kafka group mode: which rows may close higher-timeframe bars on the watermark (the live ones;
    # `TimeframeBars.close_due`), as of the last bars published (`scanner.group_rows`)
    rows_published = sh.state["bars"].arrays.get("rows_published")
    rows_seen = rows_published.copy() if rows_published is not None else None
    moved = False  # rows changed state since the last watermark close

    def take_closed() -> int:
        nonlocal moved
        wm = int(published[META_PUBLISHED])  # read before the poll: all bars it closed are in the ring
        if rows_published is not None and not np.array_equal(rows_published, rows_seen):
            # also before the poll (after the watermark: procs.bars stores them in the other
            # order): a row seen live here has all its rebuilt bars in the ring
            np.copyto(rows_seen, rows_published)
            tfb.rows_changed()
            moved = True
        closed = bars.poll(1 << 16)
        due = (wm > tfb.watermark_ns or moved) and len(closed) < (1 << 16)  # every bar it closed is folded
        if due:
            moved = False
        if len(closed):  # the watermark's close in the fold's tasks (`fold_closed`)
            mark([closed, *fold_closed(helper, engine, tfb, tfi, closed, wm if due else None, rows_seen)])
            ctx.count(n_in=len(closed))
        elif due:
            parts = tfb.close_due(wm, rows_seen)
            tfi.on_bars_closed(parts)
            mark(parts)
        return len(closed)

    def refresh(event_ns: int) -> None:
        t0 = time.perf_counter()
        t.snapshot(0, n, in_f8, buf_f8, in_i8, buf_i8)
        update_live(helper, engine, tfb, tfi, cols, event_ns)
        seq.begin(blocks)
        if contiguous:
            t.f8[out_idx[0]:out_idx[-1] + 1] = out
        else:
            t.f8[out_idx] = out
        seq.end(blocks)
        ctx.record_cycle(time.perf_counter() - t0)
        ctx.count(n_out=n)

    def refresh_in_place(event_ns: int, table_cols: dict[str, np.ndarray]) -> None:
        """A replay's refresh at boundary `event_ns`: straight from and into the table's columns."""
        assert changed is not None
        t0 = time.perf_counter()
        seq.begin(blocks)
        try:
            update_live(helper, engine, tfb, tfi, table_cols, event_ns, changed.take(table_cols, event_ns))
        finally:
            seq.end(blocks)
        ctx.record_cycle(time.perf_counter() - t0)
        ctx.count(n_out=n)

    if event_mode(ctx.settings):
        table_cols = {m.name: (t.f8[m.index] if m.dtype == "f8" else t.i8[m.index]) for m in CATALOGUE.metrics}
        ctl = sh.control
        me, bars_slot = ctx.slot_index, ctl.slot_index("bars")
        done = ctl.progress_of(me)
        bell, scans = HandoffBell.of(ctx), slots_named(ctx, b"scan-")  # bars rings it; it rings the scans
        try:
            while ctx.should_run():
                ctx.beat()
                up_to = ctl.progress_of(bars_slot)  # loaded before the bar ring: see shm.control
                if up_to <= done:
                    take_closed()
                    bell.wait()
                    continue
                while take_closed() == 1 << 16:
                    pass
                refresh_in_place(up_to, table_cols)
                ctl.publish_progress(me, up_to)
                bell.ring(scans)
                done = up_to
        finally:
            helper.close()
        return
    period = ctx.settings.scan_interval_ms / 1000.0
    lead = min(0.02, period / 4)  # finish just before the scanners' aligned cycle
    next_at = (time.time() // period + 1) * period - lead
    try:
        while ctx.should_run():
            ctx.beat()
            take_closed()
            now = time.time()
            if now >= next_at:
                refresh(ctx.event_now_ns())
                next_at += period * max(1, int((now - next_at) // period) + 1)
            time.sleep(0.002)
    finally:
        helper.close()
