"""Alerts to Redis: PUBLISH on `alerts` and `alerts:<rule id>`, XADD to the `alerts` stream.

Batched: one write of packed RESP commands and one read of the replies per batch. Redis being
down never blocks the caller: encoded alerts wait in a bounded buffer, reconnects back off
(`scanner.backoff.Backoff`: 0.1 s doubling to 5 s, jittered), and the oldest alerts beyond the
bound are dropped and counted.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from itertools import islice

import msgspec
import numpy as np
import redis

from scanner.backoff import Backoff

try:
    import hiredis as _hiredis  # redis[hiredis] brings it; the replies are read without it too
except ImportError:  # pragma: no cover
    _hiredis = None

log = logging.getLogger("scanner.redis")

CHANNEL_ALL = "alerts"
STREAM = "alerts"


class RedisSink:
    def __init__(self, url: str, *, buffer_limit: int = 100_000, stream_maxlen: int = 1_000_000,
                 batch: int = 2000) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=1.0)
        self.buffer: deque[tuple[str, bytes]] = deque()
        self.buffer_limit = buffer_limit
        self.stream_maxlen = stream_maxlen
        self.batch = batch
        self.backoff = Backoff()
        self.connected = True
        self.sent = 0
        self.dropped_total = 0
        self.failures = 0  # failed flush attempts (status shows them as publisher errors)
        self.conn: redis.connection.AbstractConnection | None = None
        self._channels: dict[str, bytes] = {}
        self._pub_all = _resp_prefix(b"PUBLISH", CHANNEL_ALL.encode())
        self._xadd = _resp_prefix(b"XADD", STREAM.encode(), b"MAXLEN", b"~", str(stream_maxlen).encode(), b"*",
                                  b"alert")

    def send(self, items: list[tuple[str, bytes]]) -> None:
        """Queue (rule id, JSON) pairs for the next flush."""
        self.buffer.extend(items)

    def flush(self) -> int:
        """Send what is buffered; returns how many alerts were dropped (beyond the buffer bound,
        or refused by Redis with an error reply)."""
        dropped = 0
        over = len(self.buffer) - self.buffer_limit
        if over > 0:
            for _ in range(over):
                self.buffer.popleft()
            dropped = over
            self.dropped_total += over
            log.error("redis buffer full: dropped %d oldest alerts", over)
        if not self.buffer or not self.backoff.ready():
            return dropped
        try:
            budget = 10 * self.batch  # per call: a large backlog goes out over several passes, each
            while self.buffer and budget > 0:  # with its heartbeat (one long pass would look stalled)
                n = min(self.batch, len(self.buffer), budget)
                budget -= n
                refused = self._send_batch(list(islice(self.buffer, n)))  # deque[i] walks from an end
                dropped += refused
                self.dropped_total += refused
                for _ in range(n):
                    self.buffer.popleft()
                self.sent += n
            if not self.connected:
                log.info("redis reconnected (%s)", self.url)
            self.connected = True
            self.backoff.succeeded()
        except (redis.RedisError, OSError) as exc:
            self.failures += 1
            self.backoff.failed()
            if self.conn is not None:
                self.conn.disconnect()
                self.conn = None
            if self.connected:
                log.error("redis unavailable (%s); buffering, retry in %.1f s", exc, self.backoff.delay)
            self.connected = False
        return dropped

    def _send_batch(self, items: list[tuple[str, bytes]]) -> int:
        """One write of pre-encoded RESP commands, then one read per reply. Packing the protocol
        ourselves is ~2x faster than redis-py pipelines for these three small commands. Returns
        the alerts whose XADD Redis refused (an error reply, e.g. OOM at maxmemory): drops."""
        if self.conn is None:
            self.conn = self.client.connection_pool.make_connection()
            self.conn.connect()
        # the whole batch on `alerts` first, then per rule, then the stream: Redis runs them in
        # order, and the gateways (and most subscribers) read `alerts`, so the last alert of a
        # burst of thousands reaches them after a third of the batch's commands, not all of them
        bodies = [b"$%d\r\n%b\r\n" % (len(payload), payload) for _rule, payload in items]
        parts: list[bytes] = []
        for body in bodies:
            parts += (self._pub_all, body)
        for (rule_id, _payload), body in zip(items, bodies, strict=True):
            chan = self._channels.get(rule_id)
            if chan is None:
                chan = self._channels[rule_id] = _resp_prefix(b"PUBLISH", f"{CHANNEL_ALL}:{rule_id}".encode())
            parts += (chan, body)
        for body in bodies:
            parts += (self._xadd, body)
        self.conn.send_packed_command([b"".join(parts)])
        # a command refused (maxmemory, wrong type) is counted, not retried; a refused XADD (the
        # last third of the replies) loses the alert's durable copy (notifier, storage): a drop
        refused = read_replies(self.conn, 3 * len(items))
        if refused:
            lost = sum(i >= 2 * len(items) for i, _ in refused)
            log.error("redis refused %d commands (%d alerts not in the stream, counted as drops): %s",
                      len(refused), lost, refused[-1][1])
            self.failures += len(refused)
            return lost
        return 0


def read_replies(conn: redis.connection.AbstractConnection, n: int) -> list[tuple[int, Exception]]:
    """Read `n` replies of pipelined commands; returns (position, error) of those refused.
    With hiredis, straight from the connection's socket into a `hiredis.Reader` of our own (a
    connection whose replies are all read here: redis-py's parser never has any buffered), about
    10x less CPU per reply than `read_response`, which a burst of alerts pays three times per
    alert; else `read_response` each."""
    refused: list[tuple[int, Exception]] = []
    sock = getattr(conn, "_sock", None)
    if _hiredis is None or sock is None:
        for i in range(n):
            try:
                conn.read_response()
            except redis.ResponseError as exc:
                refused.append((i, exc))
        return refused
    reader = _hiredis.Reader()
    i = 0
    while i < n:
        reply = reader.gets()
        if reply is False:
            data = sock.recv(1 << 18)
            if not data:
                raise redis.ConnectionError("connection closed by the server")
            reader.feed(data)
            continue
        if isinstance(reply, _hiredis.ReplyError):
            refused.append((i, redis.ResponseError(str(reply))))
        i += 1
    return refused


def _resp_prefix(*args: bytes, n_more: int = 1) -> bytes:
    """RESP array header and the leading bulk strings of a command with `n_more` args to follow."""
    out = [b"*%d\r\n" % (len(args) + n_more)]
    out += [_bulk(a) for a in args]
    return b"".join(out)


class LiveMirror:
    """Live bars and indicators as Redis hashes `live:<symbol>`: a sweep at most once per
    `interval` s writes only the fields that changed since the last write, a chunk per call (one
    per publisher pass, and only in a pass with no alert to send: see `procs.publisher`). The
    chunk's HSET commands are packed as RESP in one go with numpy over its changed cells
    (`_hset_commands`): no dict, no redis-py command per symbol. A value is the float's shortest
    round-trip text (msgspec's JSON number: `7.0`, `0.1`, `1e20`), NaN as '', infinities as
    `inf` / `-inf`; `float()` reads each back exactly. Write-only: nothing reads them back in the
    pipeline (they are for other programs).

    The mirror must not hold the alerts back. A chunk is at most `chunk` symbols and `cells`
    changed cells: when every value moves (the open, 10,000 symbols x 102 columns), a chunk of
    512 symbols kept the publisher, and Redis, busy for ~90 ms, and an alert burst arriving then
    waited behind it. And the mirror takes at most `duty` of the time: a sweep that took the
    publisher B seconds of its own (the calls to `write`) starts the next no sooner than
    B * (1 / duty - 1) after it ended (~1.7 s of work a sweep at the open on a 2-core box: the
    hashes are then ~5 s apart, not 1; a quiet market keeps the 1 s)."""

    def __init__(self, client: redis.Redis, keys: list[str], columns: list[str], interval: float = 1.0,
                 chunk: int = 512, cells: int = 4096, duty: float = 0.25) -> None:
        self.client = client
        self.keys = keys
        self.columns = columns
        self.interval = interval
        self.chunk = chunk
        self.cells = cells
        self.duty = duty
        self.next_at = 0.0
        self.last = np.full((len(columns), len(keys)), np.nan)
        self.ok = True
        self.conn: redis.connection.AbstractConnection | None = None
        self._changed: np.ndarray | None = None  # the sweep in progress: changed cells, rows still to write
        self._rows: np.ndarray | None = None
        self._busy = 0.0  # the sweep in progress: the time spent in `write`
        self._names = _objects([_bulk(c.encode()) for c in columns])
        self._heads = _objects([_bulk(b"HSET") + _bulk(f"live:{k}".encode()) for k in keys])
        self._arrays = _objects([b"*%d\r\n" % (2 + 2 * k) for k in range(len(columns) + 1)])
        self._lengths = _objects([b"$%d\r\n" % n for n in range(_MAX_REPR + 1)])

    def due(self) -> bool:
        return self._rows is not None or time.monotonic() >= self.next_at

    def sweeping(self) -> bool:
        """A sweep is under way: keep handing `write` the snapshot it started from."""
        return self._rows is not None

    def write(self, current: np.ndarray) -> int:
        """One chunk of the sweep over `current` ((len(columns), n_rows) float64, the same array
        until the sweep ends); returns the number of hashes written."""
        t0 = time.monotonic()
        if self._rows is None:
            self._busy = 0.0
            self.next_at = t0 + self.interval
            self._changed = ~((current == self.last) | (np.isnan(current) & np.isnan(self.last)))
            self._rows = np.flatnonzero(self._changed.any(axis=0))
        assert self._changed is not None
        ahead = self._rows[:self.chunk]
        fits = int(np.searchsorted(np.cumsum(self._changed[:, ahead].sum(axis=0)), self.cells, side="right"))
        take = max(1, fits)
        rows, self._rows = ahead[:take], self._rows[take:]
        try:
            if len(rows) == 0:
                return 0
            return self._write(current, rows)
        finally:
            now = time.monotonic()
            self._busy += now - t0
            if self._rows is not None and len(self._rows) == 0:
                self._rows = None
            if self._rows is None:  # the sweep ended: the next waits for its interval and the duty bound
                self.next_at = max(self.next_at, now + self._busy * (1.0 / self.duty - 1.0))

    def _write(self, current: np.ndarray, rows: np.ndarray) -> int:
        assert self._changed is not None
        try:
            if self.conn is None:
                self.conn = self.client.connection_pool.make_connection()
                self.conn.connect()
            self.conn.send_packed_command([self._hset_commands(current, rows, self._changed[:, rows])])
            refused = read_replies(self.conn, len(rows))
            if refused:  # maxmemory: the rows are rewritten next sweep
                raise redis.ResponseError(f"{len(refused)} HSETs refused: {refused[-1][1]}")
        except (redis.RedisError, OSError) as exc:
            if self.ok:
                log.error("live mirror: redis unavailable (%s); will resend what changed", exc)
            self.ok = False
            if self.conn is not None:
                self.conn.disconnect()
                self.conn = None
            self._rows = None  # `last` unchanged for what was not written: the next sweep resends it
            return 0
        self.ok = True
        self.last[:, rows] = current[:, rows]
        return len(rows)

    def _hset_commands(self, current: np.ndarray, rows: np.ndarray, changed: np.ndarray) -> bytes:
        """`HSET live:<symbol> <column> <value> ...` for each of `rows` over its changed cells
        (`changed`: (columns, len(rows)) bool), as one RESP byte string. Each row is its array
        header and key (2 parts) then 4 parts per cell (name, `$len`, value, CRLF), laid out in an
        object array by index arithmetic and joined once."""
        at, col = np.nonzero(changed.T)  # cells in row order, columns ascending within a row
        values = current[col, rows[at]]
        text = np.array(_JSON.encode(values.tolist())[1:-1].split(b","), dtype=object)  # shortest round trip
        odd = ~np.isfinite(values)  # msgspec writes NaN and infinities as null
        text[odd] = [b"" if v != v else repr(v).encode() for v in values[odd].tolist()]
        per_row = np.bincount(at, minlength=len(rows))
        row_start = np.concatenate([[0], np.cumsum(2 + 4 * per_row)])
        parts = np.empty(int(row_start[-1]), dtype=object)
        parts[row_start[:-1]] = self._arrays[per_row]
        parts[row_start[:-1] + 1] = self._heads[rows]
        first_cell = np.concatenate([[0], np.cumsum(per_row)])[:-1]
        cell = row_start[at] + 2 + 4 * (np.arange(len(at)) - first_cell[at])
        parts[cell] = self._names[col]
        parts[cell + 1] = self._lengths[np.fromiter(map(len, text), np.int64, len(text))]
        parts[cell + 2] = text
        parts[cell + 3] = b"\r\n"
        return b"".join(parts.tolist())


_JSON = msgspec.json.Encoder()
_MAX_REPR = 32  # longest repr of a float64 ('-2.2250738585072014e-308' is 24)


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(b), b)


def _objects(items: list[bytes]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out
