"""The whole instance with a storage writer: a PostgreSQL outage and `kill -9` of the writer
(during the outage and while it replays the spool) end with every closed bar in PostgreSQL and
ClickHouse exactly once, and every alert of the Redis stream in both alert tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
import redis

from procs.bench.services import PostgresServer
from procs.shared import instance_segments
from procs.storage.ch import client
from scanner.metrics import HIST
from scanner.session import MINUTE_NS
from scanner.storage.rows import SPOOL_BAR_DTYPE
from scanner.storage.spool import FILE_DTYPE
from tests.support import RedisServer, eventually, free_port

SCANNER = [sys.executable, "-m", "cli.app"]


class Instance:
    def __init__(self, tmp: Path, **env: str) -> None:
        self.name = f"st{os.getpid()}"
        self.data = tmp / "data"
        self.env = dict(os.environ, SCANNER_INSTANCE=self.name, SCANNER_DATA_DIR=str(self.data),
                        SCANNER_SYMBOLS="200", SCANNER_SCAN_WORKERS="1", SCANNER_HTTP_PORT=str(free_port()),
                        SCANNER_FEED_RATE="200", SCANNER_FEED_SPEED="30", SCANNER_SCAN_INTERVAL_MS="200",
                        SCANNER_STORAGE_FLUSH_MS="100", SCANNER_CHECKPOINT_INTERVAL_S="600", **env)
        self.log = tmp / "instance.log"
        self.proc = subprocess.Popen([*SCANNER, "start", "--foreground"], env=self.env,
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

    def status(self) -> dict:
        out = subprocess.run([*SCANNER, "status", "--json"], env=self.env, capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def storage(self) -> dict | None:
        p = self.proc_status("storage")
        return p if p["alive"] and p["state"] == "running" else None

    def proc_status(self, name: str) -> dict:
        return next(p for p in self.status()["processes"] if p["name"] == name)

    def spool_bytes(self) -> int:
        path = self.data / "spool" / f"{self.name}.bars.spool"
        return path.stat().st_size if path.exists() else 0

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    srv = PostgresServer.temporary()
    yield srv
    srv.remove()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own: it counts every entry of the `alerts` stream, which the
    session's Redis shares with whatever tests ran before in the same worker."""
    srv = RedisServer(tmp_path / "redis")
    yield srv
    srv.stop()


def pg_bars(url: str) -> int:
    with psycopg.connect(url, connect_timeout=2) as c:
        row = c.execute("SELECT count(*) FROM bars_1m").fetchone()
        return int(row[0]) if row else 0


def kill_storage(inst: Instance) -> int:
    p = eventually(inst.storage, 20, what="storage running")
    os.kill(p["pid"], signal.SIGKILL)
    eventually(lambda: (q := inst.storage()) and q["pid"] != p["pid"], 20, what="storage restarted")
    return int(p["pid"])


@pytest.mark.slow
def test_outage_and_kill9_lose_nothing(tmp_path: Path, pg: PostgresServer, own_redis: RedisServer) -> None:
    ch_dir = tmp_path / "ch"
    inst = Instance(tmp_path, SCANNER_DATABASE_URL=pg.url, SCANNER_CLICKHOUSE_URL=f"chdb://{ch_dir}",
                    SCANNER_REDIS_URL=own_redis.url, SCANNER_CAPTURE_TRADES="true")
    try:
        # events, not the minute clock: a minute closed, then the writer committed bars
        eventually(lambda: inst.proc_status("bars")["out"] > 0, 90, 0.2, "a minute closed")
        eventually(lambda: pg_bars(pg.url) > 0, 90, what="first bars in PostgreSQL")
        pg.stop()  # outage: the writer keeps spooling
        minute = FILE_DTYPE.itemsize + 150 * SPOOL_BAR_DTYPE.itemsize  # about one minute close pending
        # measured from when the writer has seen the outage: before, the file may still hold frames
        # both sinks committed but not trimmed yet (a writer that started a second ago), which a
        # restarted writer rightly does not replay
        eventually(lambda: "postgres unavailable" in inst.log.read_text(errors="replace"), 60,
                   what="the writer to see the outage")
        base = max(inst.spool_bytes(), FILE_DTYPE.itemsize)  # the file's header counted once
        eventually(lambda: inst.spool_bytes() > base + minute - FILE_DTYPE.itemsize, 60,
                   what="a minute close spooled during the outage")
        kill_storage(inst)  # kill -9 while the database is down
        grown = inst.spool_bytes()
        eventually(lambda: inst.spool_bytes() > grown + minute, 60, what="the restarted writer to spool more")
        pg.start()
        kill_storage(inst)  # kill -9 while it reconnects and replays the backlog
        eventually(lambda: inst.spool_bytes() == FILE_DTYPE.itemsize, 40, what="the spool to drain")
        drained = pg_bars(pg.url)  # then another minute close, written in steady state (an event, not a sleep)
        eventually(lambda: pg_bars(pg.url) > drained, 90, 0.2, "another minute close in steady state")
    finally:
        code = inst.stop()
        for name in instance_segments(inst.name):
            os.unlink(f"/dev/shm/{name}")
    log = inst.log.read_text(errors="replace")
    assert code == 0, log[-3000:]
    writer_lines = "\n".join(ln for ln in log.splitlines() if "storage[" in ln or "postgres" in ln)
    assert "postgres unavailable" in log and "records from a previous run to write" in log, writer_lines[-4000:]

    # ground truth: every bar the bar process closed, from its history in the final checkpoint
    with np.load(inst.data / f"{inst.name}.checkpoint.npz") as z:
        hist, head, keys = z["hist_rows"].transpose(1, 0, 2), z["head"], z["keys"]  # stored row-major
    assert head.max() < hist.shape[2]  # the ring still holds every bar of the run
    want = {}
    for r in np.nonzero(head)[0]:
        for j in range(head[r]):
            want[(keys[r].decode(), int(hist[HIST["minute"], r, j]) * MINUTE_NS)] = (
                hist[HIST["close"], r, j], hist[HIST["volume"], r, j])
    # several minutes of 200 symbols (a quiet symbol may skip a minute: no trade, no bar)
    assert len({m for _, m in want}) >= 3 and len(want) >= 2 * 200
    with psycopg.connect(pg.url) as c:
        rows = c.execute("SELECT symbol, (extract(epoch FROM bucket) * 1e9)::int8, close, volume "
                         "FROM bars_1m").fetchall()
        alerts_pg = c.execute("SELECT count(*), count(DISTINCT stream_id) FROM alert_history").fetchone()
    got = {(s, m): (cl, v) for s, m, cl, v in rows}
    assert len(rows) == len(got) == len(want)
    assert got == want

    ch = client(f"chdb://{ch_dir}")
    try:
        n, n_final = ch.query("SELECT (SELECT count() FROM bars_1m), "
                              "(SELECT count() FROM bars_1m FINAL)").result_rows[0]
        alerts_ch = ch.query("SELECT count() FROM alerts FINAL").result_rows[0][0]
        trades, distinct = ch.query("SELECT count(), uniqExact(symbol, ts, price, size) FROM trades").result_rows[0]
        per_minute = dict(((s, int(m)), int(c)) for s, m, c in ch.query(
            "SELECT symbol, intDiv(toUnixTimestamp64Nano(ts), 60000000000) * 60000000000, count() FROM trades "
            "GROUP BY 1, 2").result_rows)
    finally:
        ch.close()
    assert n == n_final == len(want)
    # every trade of every closed bar was captured (late ticks the bars dropped are stored too), none twice
    assert trades == distinct > 0
    bar_trades = {(keys[r].decode(), int(hist[HIST["minute"], r, j]) * MINUTE_NS): int(hist[HIST["trades"], r, j])
                  for r in np.nonzero(head)[0] for j in range(head[r])}
    assert all(per_minute.get(k, 0) >= v for k, v in bar_trades.items())

    r = redis.Redis.from_url(own_redis.url)
    groups = {g["name"].decode(): g for g in r.xinfo_groups("alerts")}
    for name, count in (("storage-postgres", alerts_pg[0]), ("storage-clickhouse", alerts_ch)):
        g = groups[name]
        assert g["pending"] == 0 and count == g["entries-read"] > 0
    assert alerts_pg[0] == alerts_pg[1]
