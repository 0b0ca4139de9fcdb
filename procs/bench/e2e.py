"""`scanner bench e2e --json`: the whole pipeline at rising tick rates, one host and two.

**Source.** A binary replay: a synthetic session (`procs.bench.bars.synthetic_ticks`, 10,000
symbols over four event minutes from 10:00, inside the default rule pack's time windows) written
as a Databento DBN trades file and replayed by real instances (`scanner start --foreground`,
`feed = "replay"`, `replay_speed` X): ingest decodes
the file (`np.frombuffer`), paces it by event time and publishes into the tick ring; bars,
indicators, two scan workers, the publisher (into a private redis-server,
`procs.bench.services.RedisService`) and the gateway run as in production, and a WebSocket client
in a separate process (`procs.bench.e2e_client`) receives every alert. The offered rate is
`R = X * D` (D: the file's ticks per event second). Replay scans on event time, so the scan
interval is set to `cadence * X` event ms: the scans then run once per `cadence` of wall time,
as live. (An event minute lasts 60 / X wall seconds, so bars close more often than live: the
bench is pessimistic there.)

**Steps.** Each step starts fresh instances at one offered rate, waits until ticks flow, skips
`warm_s`, then reads ingest's published-tick counter and every process's CPU time (/proc) over
`window_s`. A step is sustained when ingest kept >= 95% of the offered rate, no process counted a
drop and no ring consumer was lapped (`scanner status`: `drops`, `ring_lost`). Rates double from
`start_rate` until a step fails (or the file would run out), then `refine` bisections (the same
number for two hosts: one bisection left their rate a quarter below the step that failed).

**Keys.**

- `max_sustained_ticks_per_s`: one host, 10,000 symbols, 1 s scan cadence.
- `two_host_max_sustained_ticks_per_s`: two instances on this machine, symbol ranges 0:5000 and
  5000:10000 sharing the Redis (`range_start`/`range_end`, the host registry checks them); each
  host replays a file holding its range's ticks (as its vendor subscription or Kafka partitions
  would) plus one opening print per symbol of the other range, so both index the same universe.
  The total offered to both is the rate.
- `latency_ms_p50_1000ms`, `latency_ms_p99_1000ms`, `latency_ms_p50_100ms`,
  `latency_ms_p99_100ms`: at half the one-host maximum, scan cadence 1,000 ms and 100 ms, the
  replay run to its end. **What is measured**: for each alert the client received, the triggering
  tick is the alerted symbol's last tick at or before the scan's event time (`event_ts`, the scan
  boundary), and its arrival is the wall time the pacing makes it due,
  `wall_first + (tick_ts - first_ts) / X` (`wall_first`, `first_ts`: the replay report's first
  publish and first event time); latency = client receive time - that arrival, one host clock.
  It includes any lag of ingest behind the pacing (`feed_lag_ms_at_end_*`), the wait for the next
  scan boundary (up to one cadence), bars, indicators, the scan, the publisher, Redis pub/sub, the
  gateway and the socket. Alerts whose tick arrived in the first `warm_s` are left out (first
  kernels, first connections). The part after the scan is reported apart
  (`scan_to_client_ms_p50_*`, `_p99_*`: receive time - the alert's `scan_ts`), and within it the
  publisher + Redis part (`scan_to_redis_ms_p50_*`, `_p99_*`: when a subscriber of its own,
  `e2e_client.run_redis_tap`, got the alert from Redis - the scan's `scan_ts`); the rest is the
  gateway, the socket and the client. `alerts_per_scan_p50_*`, `_max_*`: alerts per scan
  boundary past the warm-up (both workers), the bursts these latencies are made of.
- `rate_capped_by_file`: no one-host step failed; the maximum is the highest rate the file can
  feed for a whole step (`--ticks` raises it), a lower bound.
- `ticks_per_s_per_core`: the one-host maximum divided by the cores the instance, Redis and the
  client used at that step (CPU seconds per second); `cores`: usable cores of this machine.
- `bottleneck`: at the first failing one-host step, the process that used the most CPU, and
  every process's CPU share (`cpu_pct_at_fail`); `loadavg_1m_*`: the machine's load around it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from procs.bench.bars import BENCH_DAY, synthetic_ticks
from procs.bench.e2e_client import run_client, run_redis_tap
from procs.bench.live import LiveInstance
from procs.bench.services import RedisService
from scanner.feeds.dbn import encode_dbn_trades
from scanner.session import MINUTE_NS, NS

KEEP_UP = 0.95  # share of the offered rate ingest must publish for a step to count as sustained
EVENT_MINUTES = 4
START_AFTER_OPEN_MIN = 30  # the default pack's windows open at 09:35 or later
REL_BITS = 47  # a tick's ns since the session start fits in 47 bits; the symbol row goes above


def _names(n: int) -> list[str]:
    return [f"S{i:05d}" for i in range(n)]


def write_file(path: Path, ticks: np.ndarray, symbols: int) -> None:
    d = BENCH_DAY
    path.write_bytes(encode_dbn_trades(ticks["ts_ns"], ticks["sym"], ticks["price"], ticks["size"],
                                       _names(symbols), (d // 10_000, d // 100 % 100, d % 100)))


def host_ticks(ticks: np.ndarray, lo: int, hi: int, symbols: int) -> np.ndarray:
    """The ticks of rows [lo, hi) plus one print per other row at the first tick's time (decoded
    and skipped by the host: its universe stays the whole list, as the registry requires)."""
    mine = ticks[(ticks["sym"] >= lo) & (ticks["sym"] < hi)]
    other = np.setdiff1d(np.arange(symbols), np.arange(lo, hi))
    opening = np.repeat(ticks[:1], len(other))
    opening["sym"] = other
    return np.concatenate([opening, mine])


class Pipeline:
    """Hosts (LiveInstance each) replaying their files at one offered rate, plus the client."""

    def __init__(self, work: Path, redis_url: str, files: list[Path], ranges: list[tuple[int, int]],
                 speed: float, scan_interval_ms: int, symbols: int, client: bool, tap: bool = False) -> None:
        self.hosts = []
        for i, (f, (lo, hi)) in enumerate(zip(files, ranges, strict=True)):
            name = f"e2e{os.getpid()}h{i}"
            (work / name).mkdir(parents=True, exist_ok=True)
            self.hosts.append(LiveInstance(
                name, work / name, feed="replay", replay_files=json.dumps([str(f)]), replay_speed=repr(speed),
                scan_interval_ms=scan_interval_ms, redis_url=redis_url, range_start=lo, range_end=hi,
                scan_workers=2, gateway_workers=1,
                # a benchmark, not a supervision test: no restarts while a shared machine is slow
                boot_timeout_s=240, heartbeat_timeout_s=30))
        self.symbols = symbols
        self.want_client = client
        self.client: Any = None
        self.redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        self.want_tap = tap
        self.tap: Any = None

    def start(self) -> None:
        if self.want_tap:  # subscribed before any alert can be published
            self.tap = _spawn(run_redis_tap, (self.redis_port,), "the Redis tap did not subscribe")
        for h in self.hosts:
            h.start()
        for h in self.hosts:
            h.wait("all processes running", h.running, 300, 0.1)
        if self.want_client:
            port = int(self.hosts[0].env["SCANNER_HTTP_PORT"])
            self.client = _spawn(run_client, (port, None), "the WebSocket client did not connect")

    def published(self) -> int:
        return sum(_slot(h.status(), "ingest")["out"] for h in self.hosts)

    def flowing(self) -> bool:
        """Every host's ingest has published: the hosts boot one after the other, and a window
        that opened with one host still booting counted its boot as falling behind."""
        return all(_slot(h.status(), "ingest")["out"] > 0 for h in self.hosts)

    def done(self) -> bool:
        return all(_slot(h.status(), "ingest")["cycles"] >= 1 for h in self.hosts)

    def pids(self) -> dict[str, int]:
        out = {}
        for i, h in enumerate(self.hosts):
            pre = f"h{i}:" if len(self.hosts) > 1 else ""
            out.update({pre + p["name"]: p["pid"] for p in h.status()["processes"] if p["alive"]})
            out[pre + "supervisor"] = h.proc.pid if h.proc else 0
        if self.client:
            out["ws-client"] = self.client[0].pid
        return out

    def faults(self) -> tuple[int, int]:
        """(drops, ring records lost) over every host."""
        drops = lost = 0
        for h in self.hosts:
            st = h.status()
            drops += st["drops"]
            lost += sum(st["ring_lost"].values())
        return drops, lost

    def alerts(self) -> dict:
        got = _collect(self.client, "the WebSocket client")
        self.client = None
        return got

    def tapped(self) -> dict | None:
        """The Redis tap's samples (`e2e_client.run_redis_tap`); None without a tap."""
        got = _collect(self.tap, "the Redis tap") if self.tap else None
        self.tap = None
        return got

    def close(self) -> None:
        for side in (self.client, self.tap):
            if side:
                side[2].set()
                side[0].join(10)
                if side[0].is_alive():
                    side[0].kill()
        for h in self.hosts:
            h.close()


def _spawn(target: Callable[..., None], args: tuple, fails: str) -> tuple[Any, Any, Any]:
    """A sampling process (client or tap): `target(*args, pipe, stop)`, waited for until it
    says "ready"."""
    ctx = mp.get_context("spawn")
    mine, theirs = ctx.Pipe()
    stop = ctx.Event()
    proc = ctx.Process(target=target, args=(*args, theirs, stop), daemon=True)
    proc.start()
    theirs.close()  # ours closed: a process that dies shows as EOF here
    if not mine.poll(180) or mine.recv() != "ready":
        raise RuntimeError(fails)
    return proc, mine, stop


def _collect(side: tuple[Any, Any, Any], what: str) -> dict:
    """Stop a sampling process and take its samples."""
    proc, pipe, stop = side
    stop.set()
    got = pipe.recv() if pipe.poll(60) else None
    proc.join(10)
    if got is None:
        raise RuntimeError(f"{what} sent no samples")
    return got


def _slot(st: dict, name: str) -> dict:
    return next(p for p in st["processes"] if p["name"] == name)


def cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (/proc/PID/stat fields 14 and 15); 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _wait(what: str, fn: Callable[[], Any], timeout: float, every: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Bench:
    """The files, the Redis, and the steps."""

    def __init__(self, work: Path, symbols: int, ticks: int, warm_s: float, window_s: float, seed: int) -> None:
        self.work, self.symbols, self.warm_s, self.window_s = work, symbols, warm_s, window_s
        self.ticks = synthetic_ticks(symbols, ticks, seed, EVENT_MINUTES)
        self.ticks["ts_ns"] += START_AFTER_OPEN_MIN * MINUTE_NS  # inside every default rule's time window
        self.density = len(self.ticks) / (EVENT_MINUTES * 60)  # ticks per event second
        self.one = work / f"e2e-{BENCH_DAY}.dbn"
        write_file(self.one, self.ticks, symbols)
        half = symbols // 2
        self.ranges2 = [(0, half), (half, symbols)]
        self.two = []
        for i, (lo, hi) in enumerate(self.ranges2):
            p = work / f"e2e-h{i}-{BENCH_DAY}.dbn"
            write_file(p, host_ticks(self.ticks, lo, hi, symbols), symbols)
            self.two.append(p)
        self.redis = RedisService(work / "redis")
        self.extra_pids = {"redis-server": self.redis.proc.pid if self.redis.proc else 0}
        # the highest rate whose step the file can feed: start-up skew + warm-up + window + margin
        self.rate_cap = len(self.ticks) / (warm_s + window_s + 3.0)

    def speed(self, rate: float) -> float:
        return rate / self.density

    def step(self, rate: float, hosts: int, echo: Callable[[str], None]) -> dict:
        """One offered rate (all hosts together) with the 1 s cadence; the step's figures."""
        x = self.speed(rate)
        files, ranges = ([self.one], [(0, self.symbols)]) if hosts == 1 else (self.two, self.ranges2)
        pipe = Pipeline(self.work / f"step{hosts}-{int(rate)}", self.redis.url, files, ranges, x,
                        max(50, round(1000 * x)), self.symbols, client=True)
        t_boot = time.monotonic()
        try:
            pipe.start()
            _wait("ticks to flow on every host", pipe.flowing, 120)
            boot_s = time.monotonic() - t_boot
            time.sleep(self.warm_s)
            pids = {**pipe.pids(), **self.extra_pids}
            c0 = {k: cpu_s(p) for k, p in pids.items()}
            n0, t0 = pipe.published(), time.monotonic()
            time.sleep(self.window_s)
            n1, t1 = pipe.published(), time.monotonic()
            c1 = {k: cpu_s(p) for k, p in pids.items()}
            ran_out = pipe.done()
            drops, lost = pipe.faults()
        finally:
            pipe.close()
        achieved = (n1 - n0) / (t1 - t0)
        cpu = {k: round(100 * (c1[k] - c0[k]) / (t1 - t0), 1) for k in pids}
        ok = achieved >= KEEP_UP * rate and drops == 0 and lost == 0 and not ran_out
        out = {"offered": round(rate), "achieved": round(achieved), "ok": ok, "drops": drops, "ring_lost": lost,
               "file_ran_out": ran_out, "boot_s": round(boot_s, 1), "cores_used": round(sum(cpu.values()) / 100, 2),
               "cpu_pct": dict(sorted(cpu.items(), key=lambda kv: -kv[1])),
               "loadavg_1m": round(os.getloadavg()[0], 2)}
        echo(f"  {hosts} host(s) offered {rate:>12,.0f}/s achieved {achieved:>12,.0f}/s  "
             f"{'ok' if ok else 'BEHIND'}  drops {drops} lost {lost}  cores {out['cores_used']}  "
             f"top {list(out['cpu_pct'].items())[:3]}  load {out['loadavg_1m']}  boot {out['boot_s']} s")
        return out

    def ladder(self, start: float, hosts: int, refine: int, echo: Callable[[str], None]) -> tuple[dict | None,
                                                                                                 dict | None, list]:
        """Double from `start` until a step fails (halve first while even `start` fails), then
        bisect `refine` times; (best sustained step, lowest failing step above it, all steps)."""
        steps: list[dict] = []
        best: dict | None = None
        fail: dict | None = None
        rate = min(start, self.rate_cap)
        while True:
            s = self.step(rate, hosts, echo)
            steps.append(s)
            if s["ok"]:
                best = s
                if fail is not None and fail["offered"] <= rate:
                    fail = None  # a failure at this rate or below, then a pass: the failure was noise
                if rate >= 0.99 * self.rate_cap:
                    break
                rate = min(rate * 2, self.rate_cap)
            else:
                fail = s
                if best is not None or rate < 1_000:
                    break
                rate /= 2
        for _ in range(refine if best and fail else 0):
            s = self.step((best["offered"] + fail["offered"]) / 2, hosts, echo)  # type: ignore[index]
            steps.append(s)
            if s["ok"]:
                best = s
            else:
                fail = s
        return best, fail, steps

    def latency(self, rate: float, cadence_ms: int, echo: Callable[[str], None]) -> dict:
        """One host at `rate` and `cadence_ms`, replayed to the end; latency percentiles (module
        docstring)."""
        x = self.speed(rate)
        pipe = Pipeline(self.work / f"lat{cadence_ms}", self.redis.url, [self.one], [(0, self.symbols)], x,
                        max(50, round(cadence_ms * x)), self.symbols, client=True, tap=True)
        host = pipe.hosts[0]
        try:
            pipe.start()
            # every 0.5 s: a status read of 10,000 symbols costs ~10 ms of CPU, which at 20 a
            # second took a fifth of a core from the pipeline whose latency this measures
            _wait("the end of the replay", pipe.done, 120 + 3 * len(self.ticks) / rate, every=0.5)
            time.sleep(1.0 + 3 * cadence_ms / 1000)  # the last scans' alerts on their way
            got = pipe.alerts()
            tap = pipe.tapped()
            report = json.loads((host.data_dir / f"{host.name}.replay.json").read_text())
        finally:
            pipe.close()
        lat, keep = self.alert_latency_ms(got, report, x)
        # the part after the scan (publisher, Redis, gateway, socket, client) and before it
        after = (got["recv_s"] - got["scan_s"])[keep] * 1e3
        # how far ingest ended behind the pacing (every tick's due time): part of every latency
        lag_ms = ((report["wall_done_ns"] - report["wall_first_ns"])
                  - (report["last_event_ns"] - report["first_event_ns"]) / x) / 1e6
        out = {"rate": round(rate), "alerts": len(lat), "frames": got["frames"], "feed_lag_ms_at_end": round(lag_ms)}
        if len(lat):
            out.update({"p50": round(float(np.percentile(lat, 50)), 2),
                        "p99": round(float(np.percentile(lat, 99)), 2),
                        "max": round(float(lat.max()), 2),
                        "scan_to_client_p50": round(float(np.percentile(after, 50)), 2),
                        "scan_to_client_p99": round(float(np.percentile(after, 99)), 2)})
        # the tap: when each alert left Redis (the publisher's part), and the alerts per scan
        # (the bursts the publisher and the gateway work through), past the same warm-up
        past = tap["scan_s"] >= report["wall_first_ns"] / NS + self.warm_s if tap else np.zeros(0, bool)
        if past.any():
            to_redis = (tap["recv_s"] - tap["scan_s"])[past] * 1e3
            per_scan = np.unique(tap["event_ms"][past], return_counts=True)[1]
            out.update({"scan_to_redis_p50": round(float(np.percentile(to_redis, 50)), 2),
                        "scan_to_redis_p99": round(float(np.percentile(to_redis, 99)), 2),
                        "alerts_per_scan_p50": round(float(np.percentile(per_scan, 50)), 1),
                        "alerts_per_scan_max": int(per_scan.max())})
        echo(f"  latency at {rate:,.0f}/s, cadence {cadence_ms} ms: {out}")
        return out

    def alert_latency_ms(self, got: dict, report: dict, speed: float) -> tuple[np.ndarray, np.ndarray]:
        """Latency per alert past the warm-up (ms), and which received alerts those are."""
        t = self.ticks
        base = int(t["ts_ns"][0])
        keys = (t["sym"].astype(np.int64) << REL_BITS) | (t["ts_ns"] - base)
        keys.sort()
        want = (got["sym"] << REL_BITS) | (got["event_ms"] * 1_000_000 - base)
        pos = np.searchsorted(keys, want, side="right") - 1
        found = (pos >= 0) & ((keys[np.maximum(pos, 0)] >> REL_BITS) == got["sym"])
        tick_ns = (keys[pos[found]] & ((1 << REL_BITS) - 1)) + base
        first = int(report["first_event_ns"])
        arrival_s = report["wall_first_ns"] / NS + (tick_ns - first) / NS / speed
        lat_ms = (got["recv_s"][found] - arrival_s) * 1e3
        warm = arrival_s >= report["wall_first_ns"] / NS + self.warm_s
        keep = np.flatnonzero(found)[warm]
        return lat_ms[warm], keep

    def close(self) -> None:
        self.redis.stop()


def bench_e2e(quick: bool = False, symbols: int = 10_000, ticks: int | None = None, start_rate: float | None = None,
              refine: int | None = None, seed: int = 7, echo: Callable[[str], None] = lambda _l: None) -> dict:
    """Run the benchmark; see the module docstring for the keys. `quick`: a short smoke run
    (fewer ticks, shorter windows, no bisection)."""
    ticks = ticks or (200_000 if quick else 24_000_000)
    start = start_rate or (1e9 if quick else 100_000.0)  # quick: one step, at the file's cap
    refine = (0 if quick else 2) if refine is None else refine
    warm_s, window_s = (1.0, 2.0) if quick else (2.0, 5.0)
    if symbols < 2 or ticks < symbols:
        raise ValueError(f"'symbols' must be >= 2 and 'ticks' >= symbols, were {symbols} and {ticks}")
    cores = len(os.sched_getaffinity(0))
    work = Path(tempfile.mkdtemp(prefix="scanner-e2e-"))
    load0 = os.getloadavg()
    bench = Bench(work, symbols, ticks, warm_s, window_s, seed)
    try:
        echo(f"one host, {symbols} symbols, {len(bench.ticks):,} ticks ({bench.density:,.0f} per event s)")
        best, fail, steps1 = bench.ladder(start, 1, refine, echo)
        if best is None:
            raise RuntimeError(f"no sustained step even at the lowest rate; steps: {steps1}")
        top = best["offered"]
        echo("two hosts, half the symbols each")
        best2, fail2, steps2 = bench.ladder(top if quick else max(top / 2, 1_000), 2, refine, echo)
        lat = {c: bench.latency(top / 2, c, echo) for c in (1000, 100)}
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {
        "benchmark": "e2e", "symbols": symbols, "ticks_in_file": len(bench.ticks), "quick": quick,
        "source": "DBN trades file, replay_speed pacing", "scan_workers": 2, "cores": cores,
        "max_sustained_ticks_per_s": top,
        "latency_ms_p50_1000ms": lat[1000].get("p50"), "latency_ms_p99_1000ms": lat[1000].get("p99"),
        "latency_ms_p50_100ms": lat[100].get("p50"), "latency_ms_p99_100ms": lat[100].get("p99"),
        "latency_alerts_1000ms": lat[1000]["alerts"], "latency_alerts_100ms": lat[100]["alerts"],
        "latency_ms_max_1000ms": lat[1000].get("max"), "latency_ms_max_100ms": lat[100].get("max"),
        **{f"scan_to_client_ms_{q}_{c}ms": lat[c].get(f"scan_to_client_{q}")
           for c in (1000, 100) for q in ("p50", "p99")},
        **{f"scan_to_redis_ms_{q}_{c}ms": lat[c].get(f"scan_to_redis_{q}")
           for c in (1000, 100) for q in ("p50", "p99")},
        **{f"alerts_per_scan_{q}_{c}ms": lat[c].get(f"alerts_per_scan_{q}")
           for c in (1000, 100) for q in ("p50", "max")},
        "feed_lag_ms_at_end_1000ms": lat[1000]["feed_lag_ms_at_end"],
        "feed_lag_ms_at_end_100ms": lat[100]["feed_lag_ms_at_end"],
        "two_host_max_sustained_ticks_per_s": best2["offered"] if best2 else 0,
        "ticks_per_s_per_core": round(top / max(best["cores_used"], 1e-9)),
        "cores_used_at_max": best["cores_used"],
        "rate_capped_by_file": fail is None,
        "bottleneck": next(iter(fail["cpu_pct"])) if fail else None,
        "cpu_pct_at_fail": fail["cpu_pct"] if fail else None,
        "cpu_pct_at_max": best["cpu_pct"],
        "two_host_bottleneck": next(iter(fail2["cpu_pct"])) if fail2 else None,
        "steps_one_host": [{k: s[k] for k in ("offered", "achieved", "ok", "cores_used", "loadavg_1m")}
                           for s in steps1],
        "steps_two_hosts": [{k: s[k] for k in ("offered", "achieved", "ok", "cores_used", "loadavg_1m")}
                            for s in steps2],
        "loadavg_1m_at_start": round(load0[0], 2), "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    out["two_host_ratio"] = round(out["two_host_max_sustained_ticks_per_s"] / top, 2)
    return out
