"""The live vendor feed of the ingest process (`feed = "alpaca" | "polygon"`).

The socket lives in a thread (`procs.feed_conn.FeedConnection`); this loop beats the heartbeat
every pass, parses the frames it hands over with the vendor's parser (`scanner.feeds.alpaca` /
`scanner.feeds.polygon`: frame -> numpy batches, no object per tick) and publishes:

* trades -> `TableSink.push` (validation, tick ring, last-trade columns);
* quotes, statuses, LULD bands -> `TableSink.push_state` (their columns, last per symbol wins);
* corrections / cancels -> the tick ring as a TICK_CANCEL tick (the original print) plus, for a
  correction, the corrected print at the same event time; bars applies them to the live minute;
* vendor error frames -> `classify_error`: fatal (auth, entitlement) raises `BootError` (the
  supervisor stops the instance), reconnect asks the socket thread to reconnect.

**The feed clock** belongs to ingest, as in a replay (the supervisor leaves it at 0): every pass
it is anchored at the newest event time bars has taken from the tick ring, running at speed 1
from there, and never moved back. So bars' watermark follows the vendor's timestamps (a skewed
local clock does not close minutes early) yet quiet minutes still close in real time.

**Gap repair**: after a reconnect, the ticks of the new connection are held back until the
minutes missed are repaired: from the minute of the newest trade before the disconnect to the
minute of the first trade after it. A thread fetches the vendor's REST minute bars for them,
ingest puts them into the repair ring once bars has taken every tick from before the disconnect,
waits until bars has taken them too (in order,
`scanner.bars.BarAggregator.insert_repaired`: a symbol that already has a bar for the first
minute keeps its own, partial one), then releases the held ticks. In the reconnect minute a
symbol with ticks since the reconnect builds its (partial) bar from them; the others take the
vendor's bar, and any later tick of that minute is then late for them. A failed fetch is
counted (`repair_errors`) and the minutes stay missing. Counters: `procs.feed_stats`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from procs.feed_conn import FeedConnection, Protocol, alpaca_session, polygon_session
from procs.feed_stats import FEED, feed_counters
from procs.runtime import BootError, Context
from procs.shared import REPAIR_CONSUMER_BARS, TICK_CONSUMER_BARS
from procs.vendor_rest import RestError, vendor_rest
from scanner.config import Settings
from scanner.feeds.common import SymbolMap
from scanner.records import BAR_DTYPE, TICK_CANCEL, TICK_DTYPE, TICK_NO_LAST
from scanner.session import MINUTE_NS, session_bounds_ns, trading_day
from shm.records import concat

log = logging.getLogger("scanner.ingest")
PASS_S = 0.01
MAX_FRAMES_PER_PASS = 2_000
PASS_BUDGET_S = 0.1  # a pass stops taking frames after this long, so the heartbeat keeps going
REPAIR_TIMEOUT_S = 60.0
REPAIR_MAX_MINUTES = 24 * 60
ALPACA_STREAM = "wss://stream.data.alpaca.markets/v2/{feed}"
POLYGON_STREAM = "wss://socket.polygon.io/stocks"


def market_open(wall_ns: int) -> bool:
    """Vendors stream US equities from 04:00 to 20:00 New York time on weekdays; outside that a
    quiet connection is normal, not dead."""
    day = trading_day(wall_ns)
    b = session_bounds_ns(day)
    weekday = time.gmtime(b["open"] / 1e9).tm_wday
    return weekday < 5 and b["premarket"] <= wall_ns < b["close"] + 4 * 3600 * 1_000_000_000


def vendor_protocol(s: Settings, symbols: list[str]) -> tuple[Any, Protocol, str]:
    """(parser class, session protocol, stream URL) of the configured vendor. Missing
    credentials are a configuration error (BootError)."""
    if s.feed == "alpaca":
        from scanner.feeds import alpaca as mod

        if not (s.alpaca_key_id and s.alpaca_secret_key):
            raise BootError("feed 'alpaca' needs SCANNER_ALPACA_KEY_ID and SCANNER_ALPACA_SECRET_KEY")
        key, secret = s.alpaca_key_id, s.alpaca_secret_key
        proto = alpaca_session(lambda: mod.auth_message(key.get_secret_value(), secret.get_secret_value()),
                               lambda: mod.subscribe_message(trades=symbols, quotes=symbols, statuses=symbols,
                                                             lulds=symbols), mod.classify_error)
        return mod.AlpacaParser, proto, s.feed_url or ALPACA_STREAM.format(feed=s.alpaca_feed)
    from scanner.feeds import polygon as pmod

    if not s.polygon_api_key:
        raise BootError("feed 'polygon' needs SCANNER_POLYGON_API_KEY")
    pkey = s.polygon_api_key
    proto = polygon_session(lambda: pmod.auth_message(pkey.get_secret_value()),
                            lambda: pmod.subscribe_message(trades=symbols, quotes=symbols, lulds=symbols),
                            pmod.classify_error)
    return pmod.PolygonParser, proto, s.feed_url or POLYGON_STREAM


def warm_parser(parser: Any, feed: str, sym: str) -> None:
    """Parse one made-up trade frame of `feed` (result dropped), as bytes and as text: the
    parser's compiled kernels load (or compile) now, inside the boot allowance, not in the
    loop where a first frame would stall the heartbeat."""
    if feed == "alpaca":
        frame = (f'[{{"T":"t","S":"{sym}","i":1,"x":"V","p":1.5,"s":100,"c":["@"],'
                 f'"t":"2020-01-02T15:00:00.123456789Z","z":"C"}}]')
    else:
        frame = f'[{{"ev":"T","sym":"{sym}","x":4,"i":"1","z":3,"p":1.5,"s":100,"t":1577977200000,"q":1}}]'
    parser.parse(frame.encode())
    parser.parse(frame)


def warm_vendor_kernels() -> None:
    """Every vendor parser's kernels, on scratch parsers (the supervisor's warm-up)."""
    from scanner.feeds.alpaca import AlpacaParser
    from scanner.feeds.polygon import PolygonParser

    warm_parser(AlpacaParser(SymbolMap(["AAPL"], grow=False)), "alpaca", "AAPL")
    warm_parser(PolygonParser(SymbolMap(["AAPL"], grow=False)), "polygon", "AAPL")


def correction_ticks(corr: np.ndarray) -> np.ndarray:
    """Corrections/cancels -> ticks: the original print flagged TICK_CANCEL, then (unless the
    new price is NaN: a cancel) the corrected print with its own flags, both at the original
    event time."""
    n = len(corr)
    keep = np.isfinite(corr["new_price"])
    out = np.zeros(n + int(keep.sum()), TICK_DTYPE)
    c = out[:n]
    c["sym"], c["ts_ns"], c["price"], c["size"] = corr["sym"], corr["ts_ns"], corr["orig_price"], corr["orig_size"]
    c["flags"] = TICK_CANCEL | TICK_NO_LAST
    k = corr[keep]
    r = out[n:]
    r["sym"], r["ts_ns"], r["price"], r["size"], r["flags"] = (k["sym"], k["ts_ns"], k["new_price"], k["new_size"],
                                                               k["new_flags"])
    return out


class LiveClock:
    """Anchors the feed clock at the newest event time bars has consumed (module docstring)."""

    def __init__(self, ctx: Context) -> None:
        self.ctl = ctx.shared.control
        self.cursor = ctx.shared.ticks.consumers[TICK_CONSUMER_BARS: TICK_CONSUMER_BARS + 1]
        self.inflight: deque[tuple[int, int]] = deque()  # (ring head after a publish, newest event ns)

    def published(self, head: int, newest_ns: int) -> None:
        self.inflight.append((head, newest_ns))

    def update(self) -> None:
        cursor = int(self.cursor["cursor"][0])
        newest = None
        while self.inflight and self.inflight[0][0] <= cursor:
            newest = self.inflight.popleft()[1]
        if newest is None:
            return
        now = time.time_ns()
        if newest > self.ctl.event_time_ns(now):
            self.ctl.set_clock(newest, now, 1.0)


class LiveFeed:
    """The ingest loop for a vendor WebSocket feed (module docstring)."""

    def __init__(self, ctx: Context, sink: Any) -> None:
        s = ctx.settings
        self.ctx, self.sink, self.s = ctx, sink, s
        self.symbols = ctx.shared.table.key_list()
        parser_cls, self.proto, self.url = vendor_protocol(s, self.symbols)
        self.parser = parser_cls(SymbolMap(self.symbols, grow=False))
        self.warm_up()
        self.counters = feed_counters(ctx.shared)
        if self.counters is None:
            raise BootError("the instance has no feed-state segment (started by an older supervisor?)")
        self.counters[FEED["connected"]] = 0
        self.clock = LiveClock(ctx)
        self.ring = ctx.shared.ticks
        self.repair_ring = ctx.shared.repair.producer()
        self.repair_cursor = ctx.shared.repair.consumers[REPAIR_CONSUMER_BARS: REPAIR_CONSUMER_BARS + 1]
        self.last_trade_ns = 0  # newest trade event time published
        self.down_since = 0  # wall ns of the last disconnect (0: connected or never connected)
        self.gap_from = 0  # newest trade before the disconnect (event ns); 0: no repair due
        self.holding = False  # ticks held back until the gap is repaired
        self.held: list[np.ndarray] = []
        self.repair_thread: threading.Thread | None = None
        self.repair_result: dict[str, Any] = {}
        self.repair_published = -1  # repair ring head to wait for before releasing held ticks
        self.repair_deadline = 0.0
        self.conn = FeedConnection(self.url, self.proto, dead_after_s=s.feed_dead_after_s,
                                   backoff_min_s=s.feed_backoff_min_s, backoff_max_s=s.feed_backoff_max_s,
                                   market_open=market_open)

    def warm_up(self) -> None:
        """Load (or compile) the parser's kernels before the first heartbeat (`warm_parser`)."""
        warm_parser(self.parser, self.s.feed, self.symbols[0])

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        ctx = self.ctx
        log.info("%s feed: connecting to %s for %d symbols", self.proto.name, self.url, len(self.symbols))
        self.conn.start()
        try:
            while ctx.should_run():
                ctx.beat()
                t0 = time.perf_counter()
                n = self.drain()
                self.step_repair()
                self.clock.update()
                if n:
                    ctx.record_cycle(time.perf_counter() - t0)
                else:
                    time.sleep(PASS_S)
        finally:
            self.conn.stop()
            self.counters[FEED["connected"]] = 0

    def drain(self) -> int:
        """Handle the queued socket events (up to a pass's worth); returns frames handled.
        Records are published in batches, and always before a change of connection state, so
        that what came before a disconnect is never mistaken for what came after it."""
        batch = _Batch()
        frames = 0
        c = self.counters
        deadline = time.perf_counter() + PASS_BUDGET_S
        while frames < MAX_FRAMES_PER_PASS and time.perf_counter() < deadline:
            try:
                ev = self.conn.events.get_nowait()
            except queue.Empty:
                break
            kind = ev[0]
            if kind == "frame":
                frames += 1
                c[FEED["messages"]] += 1
                c[FEED["last_message_ns"]] = ev[2]
                p = self.parser.parse(ev[1])
                c[FEED["malformed"]] += p.malformed
                c[FEED["unknown_symbol"]] += p.unknown_symbol
                if p.malformed:
                    log.warning("%s: %d malformed messages in a frame of %d bytes (%s)", self.proto.name,
                                p.malformed, len(ev[1]), "; ".join(getattr(p, "reasons", [])[:2]))
                for m in p.control:
                    self.control(m)
                if len(p.corrections):
                    c[FEED["corrections"]] += len(p.corrections)
                batch.add(p)
                continue
            self.flush(batch)
            if kind == "up":
                self.on_up(ev[1])
            elif kind == "down":
                self.on_down(ev[1], ev[2])
            elif kind == "fatal":
                raise BootError(ev[1])
        self.flush(batch)
        return frames

    def flush(self, batch: _Batch) -> None:
        """Publish what `batch` collected, then empty it."""
        if batch.trades:
            self.publish(_cat(batch.trades))
        if batch.quotes or batch.statuses or batch.lulds:
            self.sink.push_state(quotes=_cat(batch.quotes), statuses=_cat(batch.statuses), lulds=_cat(batch.lulds))
        batch.clear()

    def control(self, m: dict) -> None:
        """A vendor control message in the stream (after the handshake)."""
        if not self.proto.is_error(m):
            return
        kind = self.proto.classify_error(m)
        text = f"{m.get('code', m.get('status', ''))} {m.get('msg', m.get('message', ''))}".strip()
        if kind == "fatal":
            raise BootError(f"{self.proto.name} refused the feed: {text}")
        if kind == "reconnect":
            log.warning("%s error %s: reconnecting", self.proto.name, text)
            self.conn.reconnect(text)
        else:
            log.warning("%s: ignored error message %s", self.proto.name, text)

    # ------------------------------------------------------------------ connection state
    def on_up(self, wall_ns: int) -> None:
        c = self.counters
        c[FEED["connected"]] = 1
        c[FEED["connects"]] += 1
        if self.down_since:
            c[FEED["lost_ms"]] += max(0, wall_ns - self.down_since) // 1_000_000
            self.down_since = 0
            if self.s.feed_gap_repair and self.last_trade_ns:
                self.gap_from = self.last_trade_ns
                self.holding = True
        log.info("%s feed subscribed (connection #%d)", self.proto.name, int(c[FEED["connects"]]))

    def on_down(self, wall_ns: int, reason: str) -> None:
        c = self.counters
        c[FEED["connected"]] = 0
        c[FEED["disconnects"]] += 1
        self.down_since = wall_ns
        log.warning("%s feed down (%s); disconnects so far: %d", self.proto.name, reason,
                    int(c[FEED["disconnects"]]))

    # ------------------------------------------------------------------ publishing
    def publish(self, ticks: np.ndarray) -> None:
        if self.holding:
            self.held.append(ticks)
            return
        n = self.sink.push(ticks)
        if n:
            newest = int(ticks["ts_ns"].max())
            self.last_trade_ns = max(self.last_trade_ns, newest)
            self.clock.published(self.ring.head, self.last_trade_ns)

    # ------------------------------------------------------------------ gap repair
    def step_repair(self) -> None:
        if not self.holding:
            return
        if self.repair_published >= 0:  # wait until bars has taken the repaired bars
            if int(self.repair_cursor["cursor"][0]) >= self.repair_published or time.monotonic() > self.repair_deadline:
                self.release()
            return
        if self.repair_thread is None:
            first = self.first_held_ns()
            if first is None:
                return  # no trade since the reconnect yet: the gap's end is unknown
            lo = self.gap_from - self.gap_from % MINUTE_NS  # its own partial bar stays; others' come in
            hi = first - first % MINUTE_NS + MINUTE_NS  # the reconnect minute: see `fetch`
            if hi - lo <= MINUTE_NS:
                self.release()
                return
            lo = max(lo, hi - REPAIR_MAX_MINUTES * MINUTE_NS)
            self.repair_result = {}
            self.repair_thread = threading.Thread(target=self.fetch, args=(lo, hi), name="gap-repair", daemon=True)
            self.repair_deadline = time.monotonic() + REPAIR_TIMEOUT_S
            self.repair_thread.start()
            log.info("gap repair: fetching %d missed minutes from the %s REST API", (hi - lo) // MINUTE_NS,
                     self.proto.name)
            return
        if self.repair_thread.is_alive() and time.monotonic() < self.repair_deadline:
            return
        bars = self.repair_result.get("bars")
        if bars is not None and int(self.clock.cursor["cursor"][0]) < self.ring.head:
            return  # bars has not taken every tick from before the disconnect yet: they go first
        if bars is None:
            self.counters[FEED["repair_errors"]] += 1
            log.error("gap repair failed: %s; the missed minutes stay missing",
                      self.repair_result.get("error", "timed out"))
            self.release()
            return
        # the reconnect minute only for symbols with no tick of it since the reconnect (the
        # others build it from their ticks); later ticks of it are then late for them
        last = self.repair_result["last"]
        held = concat(self.held) if self.held else np.empty(0, TICK_DTYPE)
        live_now = np.unique(held["sym"][held["ts_ns"] - held["ts_ns"] % MINUTE_NS == last])
        bars = bars[~((bars["minute_ns"] == last) & np.isin(bars["sym"], live_now))]
        if len(bars):
            self.repair_ring.publish(bars)
        self.repair_published = self.ctx.shared.repair.head
        self.repair_deadline = time.monotonic() + REPAIR_TIMEOUT_S
        log.info("gap repair: %d bars handed to bars", len(bars))

    def first_held_ns(self) -> int | None:
        firsts = [int(t["ts_ns"].min()) for t in self.held if len(t)]
        return min(firsts) if firsts else None

    def fetch(self, lo: int, hi: int) -> None:
        """Thread: the vendor's minute bars for [lo, hi) -> BAR_DTYPE repaired bars."""
        try:
            vb = vendor_rest(self.s).bars(self.symbols, "1Min", lo, hi)
            ok = (vb["ts_ns"] >= lo) & (vb["ts_ns"] < hi) & (vb["ts_ns"] % MINUTE_NS == 0)
            ok &= np.isfinite(vb["open"]) & np.isfinite(vb["high"]) & np.isfinite(vb["low"]) & np.isfinite(vb["close"])
            ok &= (vb["low"] > 0) & (vb["volume"] >= 0) & (vb["high"] >= vb["low"])
            vb = vb[ok]
            out = np.zeros(len(vb), BAR_DTYPE)
            out["sym"], out["minute_ns"] = vb["sym"], vb["ts_ns"]
            for f in ("open", "high", "low", "close", "volume", "vwap"):
                out[f] = vb[f]
            out["trades"] = vb["trades"]
            self.repair_result["bars"] = out
            self.repair_result["last"] = hi - MINUTE_NS
        except (RestError, KeyError, ValueError, TypeError) as exc:
            self.repair_result["error"] = str(exc)

    def release(self) -> None:
        """End of a repair: publish the held ticks, go on live."""
        held, self.held = self.held, []
        self.holding = False
        self.repair_thread = None
        self.repair_published = -1
        self.gap_from = 0
        if held:
            self.publish(concat(held))


class _Batch:
    """Records of several frames, published together (one ring publish, one seqlock round)."""

    def __init__(self) -> None:
        self.trades: list[np.ndarray] = []
        self.quotes: list[np.ndarray] = []
        self.statuses: list[np.ndarray] = []
        self.lulds: list[np.ndarray] = []

    def add(self, p: Any) -> None:
        if len(p.trades):
            self.trades.append(p.trades)
        if len(p.corrections):
            self.trades.append(correction_ticks(p.corrections))
        for lst, arr in ((self.quotes, p.quotes), (self.statuses, p.statuses), (self.lulds, p.lulds)):
            if len(arr):
                lst.append(arr)

    def clear(self) -> None:
        self.trades, self.quotes, self.statuses, self.lulds = [], [], [], []


def _cat(parts: list[np.ndarray]) -> np.ndarray | None:
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else concat(parts)
