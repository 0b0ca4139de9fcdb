"""`scanner bench faults`: fault injection with figures (issue 10.11).

One real instance (synthetic feed at a high tick rate, the event clock at `speed` x so minutes
close every few seconds) with a throwaway Redis, a throwaway PostgreSQL and its spool on a small
tmpfs of its own, then, in turn:

* `kill -9` of each child type: seconds until a new process runs, table counters intact;
* Redis stopped for `redis_s`: seconds from its return until alerts flow again, alerts dropped
  (the publisher's bounded buffer), alerts read back by the gateway;
* PostgreSQL stopped for `pg_s`: seconds from its return until the spool is drained;
* disk full in the spool directory for `full_s` (a filler file takes the tmpfs): seconds from
  freeing it until the writer spools again;
* then every closed bar of the shared-memory history is compared with PostgreSQL: missing
  and duplicate rows (the promise: none, each written exactly once);
* last, `kill -9` of the supervisor: seconds until every child is gone, and until a new start
  (stale segments removed, checkpoint restored) runs again.

Each fault gives a row: fault, recovery seconds, data lost. The machine's load shows in the
seconds; the data-lost column is what the design promises.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from procs.bench.live import LiveInstance, alive
from procs.bench.services import PostgresServer, RedisService

KILLED = ("ingest", "bars", "indicators", "scan-0", "publisher", "storage", "gateway")


def bench_faults(*, symbols: int = 1000, feed_rate: float = 20_000.0, speed: float = 10.0, redis_s: float = 30.0,
                 pg_s: float = 20.0, full_s: float = 10.0, spool_mb: int = 64, echo: Any = print) -> dict:
    work = Path(tempfile.mkdtemp(prefix="faults-"))
    redis_srv = RedisService(work / "redis")
    pg = PostgresServer.temporary()
    spool = work / "spool"
    spool.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={spool_mb}m", "tmpfs", str(spool)],
                             capture_output=True).returncode == 0
    inst = LiveInstance(f"flt{os.getpid()}", work, symbols=symbols, feed_rate=feed_rate, feed_speed=speed,
                        scan_workers=2, scan_interval_ms=250, redis_url=redis_srv.url, database_url=pg.url,
                        spool_dir=spool, storage_flush_ms=100, checkpoint_interval_s=5, boot_timeout_s=120)
    rows: list[dict] = []

    def row(fault: str, recovery_s: float | None, lost: str, **extra: Any) -> None:
        r = {"fault": fault, "recovery_s": None if recovery_s is None else round(recovery_s, 2), "data_lost": lost,
             **extra}
        rows.append(r)
        more = " ".join(f"{k}={v}" for k, v in extra.items())
        echo(f"{fault:<38} {'' if recovery_s is None else f'{recovery_s:6.2f} s':>9}  {lost}  [{more}]")

    try:
        inst.start()
        inst.wait("all processes running", inst.running, 900, 0.2)
        inst.wait("bars in PostgreSQL", lambda: pg_bars(pg.url) > 0, 300, 0.5)
        for name in KILLED:
            rows_before = inst.tick_total()
            lost_before = sum(inst.status()["ring_lost"].values())
            old = inst.child(name)
            t0 = time.monotonic()
            os.kill(old["pid"], signal.SIGKILL)
            inst.wait(f"{name} replaced", lambda o=old, n=name: (c := inst.child(n))["pid"] != o["pid"] and c["alive"],
                      120, 0.01)
            replaced = time.monotonic() - t0
            inst.wait(f"{name} running", lambda n=name: inst.child(n)["state"] == "running", 300, 0.02)
            running = time.monotonic() - t0
            intact = inst.tick_total() >= rows_before
            lapped = sum(inst.status()["ring_lost"].values()) - lost_before
            row(f"kill -9 {name}", running, ("table intact" if intact else "TABLE COUNTERS WENT BACK")
                + (f"; {lapped} ring records lapped while it was down (counted)" if lapped else "; nothing lost"),
                restart_s=round(replaced, 2), table_intact=intact, ring_lost=lapped)
        # Redis away: alerts buffered (bounded), then delivered; the gateway reads back what it missed
        pub0 = inst.child("publisher")
        redis_srv.stop()
        time.sleep(redis_s)
        redis_srv.start()  # comes back empty (no persistence): the buffered alerts refill the stream
        t0 = time.monotonic()
        import redis as redis_py

        r = redis_py.Redis.from_url(redis_srv.url)
        inst.wait("alerts in the stream again", lambda: r.xlen("alerts") > 0, 300, 0.05)
        back = time.monotonic() - t0
        pub1 = inst.child("publisher")
        dropped = pub1["drops"] - pub0["drops"]
        row(f"Redis stopped {redis_s:.0f} s", back, f"{dropped} alerts dropped (buffer bound), counted",
            alerts_dropped=dropped, publisher_errors=pub1["errors"] - pub0["errors"])
        # PostgreSQL away: bars spooled, then written once
        pg.stop()
        time.sleep(pg_s)
        spooled = spool_bytes(spool)
        pg.start()
        t0 = time.monotonic()
        inst.wait("the spool drained", lambda: spool_bytes(spool) < max(spooled, 1) and drained(spool), 600, 0.1)
        row(f"PostgreSQL stopped {pg_s:.0f} s", time.monotonic() - t0, "none (spooled, then written)",
            spooled_bytes=spooled)
        # disk full in the spool directory
        if mounted:
            filler = fill(spool)
            time.sleep(full_s)
            os.unlink(filler)
            t0 = time.monotonic()
            errors0 = inst.child("storage")["errors"]
            # the writer spools again and drains to PostgreSQL (it must not have crashed meanwhile)
            restarts0 = inst.child("storage")["restarts"]
            inst.wait("the spool drained again", lambda: drained(spool), 300, 0.1)
            crashed = inst.child("storage")["restarts"] - restarts0
            row(f"spool disk full {full_s:.0f} s (tmpfs {spool_mb} MB)", time.monotonic() - t0,
                "none (records waited in the ring)" + (f"; the writer restarted {crashed}x" if crashed else ""),
                storage_errors=inst.child("storage")["errors"] - errors0, storage_restarts=crashed)
        # every closed bar in PostgreSQL exactly once (once the writer caught up)
        missing, extra = compare_bars(inst, pg.url)
        row("bars: history vs PostgreSQL", None, f"{missing} missing, {extra} unexpected", bars_missing=missing,
            bars_unexpected=extra)
        # the supervisor itself
        st = inst.status()
        pids = [p["pid"] for p in st["processes"] if p["name"] != "supervisor"]
        assert inst.proc is not None
        t0 = time.monotonic()
        os.kill(inst.proc.pid, signal.SIGKILL)
        inst.proc.wait()
        inst.wait("children gone", lambda: not alive(pids), 60, 0.01)
        gone = time.monotonic() - t0
        inst.start()
        t1 = time.monotonic()
        inst.wait("all processes running again", inst.running, 900, 0.2)
        out = inst.output()
        row("kill -9 supervisor", time.monotonic() - t1,
            "table state since the last checkpoint (<= 5 s); spooled bars still written",
            children_gone_s=round(gone, 2), stale_cleaned="stale segments" in out,
            checkpoint_restored="restored checkpoint" in out)
    finally:
        code = inst.stop()
        inst.close()
        if mounted:
            subprocess.run(["umount", "-l", str(spool)], check=False)
        redis_srv.stop()
        pg.remove()
    return {"rows": rows, "exit_code": code, "symbols": symbols, "feed_rate": feed_rate, "feed_speed": speed,
            "spool_on_tmpfs": mounted, "log": str(inst.log)}


def pg_bars(url: str) -> int:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=2) as c:
            row = c.execute("SELECT count(*) FROM bars_1m").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def spool_bytes(spool: Path) -> int:
    return sum(p.stat().st_size for p in spool.glob("*.spool"))


def drained(spool: Path) -> bool:
    """Every spool file back to its bare header (all committed)."""
    from scanner.storage.spool import FILE_DTYPE

    return all(p.stat().st_size <= FILE_DTYPE.itemsize for p in spool.glob("*.spool"))


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def compare_bars(inst: LiveInstance, url: str, settle_s: float = 120.0) -> tuple[int, int]:
    """Closed bars of the history (all but the newest minute, which may still be on its way)
    against PostgreSQL: (missing in PG, in PG but not in the history window)."""
    import psycopg

    from procs.shared import Shared
    from scanner.session import MINUTE_NS

    deadline = time.monotonic() + settle_s
    while True:
        sh = Shared.attach(inst.name)
        try:
            keys = sh.table.key_list()
        finally:
            sh.close()
        minutes = inst.bar_minutes()
        newest = max((m[-1] for m in minutes.values() if m), default=0)
        oldest = min((m[0] for m in minutes.values() if m), default=0)
        want = {(keys[r], m) for r, ms in minutes.items() for m in ms if m < newest}
        with psycopg.connect(url) as c:
            got_rows = c.execute("SELECT symbol, (extract(epoch FROM bucket) * 1e9)::int8 FROM bars_1m").fetchall()
        got = {(s, int(ns // MINUTE_NS)) for s, ns in got_rows if oldest <= ns // MINUTE_NS < newest}
        missing, extra = len(want - got), len(got - want)
        if (missing == 0 and extra == 0) or time.monotonic() > deadline:
            return missing, extra
        time.sleep(1.0)
