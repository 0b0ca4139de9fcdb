"""`scanner bench fanout`: alert delivery to many WebSocket clients, and publisher throughput.

One run, starting what it needs: a private redis-server (for the publisher figure) and a real
instance (all processes, synthetic feed, 100 ms scan cadence). The clients live in separate
load-generator processes (`procs.bench.fanout_load`), pinned away from the gateway's core where
there are cores to spare; each reads only the frame header (`scan_ts`, `count`). Latency is scan
match (`scan_ts`, stamped by the scanner worker) to receive time, on one host clock. Gateway CPU
is read from /proc (utime + stime) over the window and divided by the deliveries (alerts x
clients that received them). Baseline of the same run: the same measure with one client.
Publisher throughput is alerts/s through `RedisSink` against unpipelined PUBLISH.

The load does not depend on the hour: the synthetic session starts at the open of the latest
weekday (`feed_preopen_s`, as the demo does), so the windows fall in the first minutes of a
session, when the tape runs near three times its mean pace (13-14k ticks/s at `rate` 5,000).
The default pack alone raises few alerts there, in bursts (rules whose window opens at 09:35,
gaps at 09:30), and how many reach a window depended on how late a busy machine ran: 0.1
alerts/s per client on a quiet machine, 60 on a loaded one. So the instance also runs one
steady rule, a large print (`last_size >= block_shares`, enter mode, no cooldown: about 28
alerts/s over 5,000 symbols at the open's pace, 2-3 per 100 ms frame, a busy desk's flow); 0
leaves the default pack alone. `alerts_per_s_per_client` and `alerts_per_frame` say what load a
run had, and `gateway_cpu_us_per_frame` is the gateway's CPU per frame written to one client,
the part a delivery costs whatever the frame holds (one loopback TCP send). The idle figure stays
reported: `gateway_idle_cpu_pct` (the same market, no client) and
`gateway_cpu_us_per_delivery_above_idle` (what the clients add); `gateway_idle_wakeups_per_s`
and `gateway_wakeups_per_s` count the gateway's voluntary context switches (each a sleep and a
wake-up: a poll timer's tick, a ring of the feed bell, a client's data).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from procs.bench.fanout_load import run_load
from procs.bench.services import RedisService, free_port
from procs.redis_out import RedisSink
from procs.shared import instance_segments
from scanner.instance import RULES_FILE
from scanner.rules.store import RuleStore, default_pack

PREOPEN_S = 1.0  # the synthetic session opens this long after the instance starts
BLOCK_SHARES = 1500.0  # the steady large-print rule's threshold (module docstring)


def bench_rules(path: Path, block_shares: float) -> None:
    """Write the instance's rules: the default pack, plus the large-print rule when
    `block_shares` > 0 (module docstring)."""
    rules = [r.dump() for r in default_pack()]
    if block_shares > 0:
        rules.append({"id": "bench-large-print", "name": f"Large print: {block_shares:,.0f} shares or more",
                      "type": "numeric", "metric": "last_size", "operator": ">=", "value": float(block_shares),
                      "alert_mode": "enter", "cooldown_seconds": 0, "severity": "info", "tags": ["bench", "prints"]})
    path.parent.mkdir(parents=True, exist_ok=True)
    RuleStore(path).replace_all(rules)


def _start_instance(tmp: Path, port: int, symbols: int, rate: float) -> subprocess.Popen:
    env = dict(os.environ)
    env.update({"SCANNER_INSTANCE": f"fanout{os.getpid()}", "SCANNER_DATA_DIR": str(tmp / "data"),
                "SCANNER_SYMBOLS": str(symbols), "SCANNER_HTTP_PORT": str(port), "SCANNER_FEED_RATE": str(rate),
                "SCANNER_SCAN_INTERVAL_MS": "100", "SCANNER_GATEWAY_WORKERS": "1",
                "SCANNER_FEED_PREOPEN_S": str(PREOPEN_S),  # the open, at any hour: module docstring
                # a benchmark, not a supervision test: no restarts while a shared machine is slow to boot
                "SCANNER_BOOT_TIMEOUT_S": "180", "SCANNER_HEARTBEAT_TIMEOUT_S": "15"})
    log = open(tmp / "instance.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "cli.app", "start", "--foreground"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _gateway_pid(instance: str, data_dir: Path) -> int:
    from procs.status import collect
    from scanner.config import Settings

    st = collect(Settings(instance=instance, data_dir=data_dir))
    return next(p["pid"] for p in st["processes"] if p["name"].startswith("gateway"))


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wakeups(pid: int) -> int:
    """Voluntary context switches of every thread of a process: how often it went to sleep and
    was woken (polls, timers, arriving data), the cost an idle gateway is made of."""
    n = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as fh:
                n += next(int(line.split()[1]) for line in fh if line.startswith("voluntary_ctxt_switches"))
        except (FileNotFoundError, StopIteration):  # a thread that ended meanwhile
            pass
    return n


def _placement(gw_pid: int) -> tuple[list[int] | None, str]:
    """Gateway on one core, load generators on the others (when there are others)."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, f"1 core: gateway and load generators share core {cores[0]}"
    os.sched_setaffinity(gw_pid, {cores[0]})
    return cores[1:], f"gateway pinned to core {cores[0]}, load generators to {cores[1:]}"


def measure(port: int, gw_pid: int, clients: int, seconds: float, load_cores: list[int] | None,
            procs: int) -> dict:
    """Connect `clients` in `procs` load processes, measure one window, return the figures."""
    ctx = mp.get_context("spawn")
    pipes, workers = [], []
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    for n in per:
        if n == 0:
            continue
        mine, theirs = ctx.Pipe()
        w = ctx.Process(target=run_load, args=(port, n, load_cores, theirs), daemon=True)
        w.start()
        pipes.append(mine)
        workers.append(w)
    try:
        for p in pipes:
            if not p.poll(180) or p.recv() != "ready":
                raise RuntimeError("load generator did not connect its clients")
        time.sleep(1.0)
        start = time.time() + 0.2
        for p in pipes:
            p.send((start, start + seconds))
        time.sleep(max(0.0, start - time.time()))
        cpu0, wake0 = _cpu_s(gw_pid), _wakeups(gw_pid)
        time.sleep(seconds)
        cpu, wakeups = _cpu_s(gw_pid) - cpu0, _wakeups(gw_pid) - wake0
        results = [p.recv() for p in pipes]
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()
    lat = np.concatenate([r["lat"] for r in results])
    weight = np.concatenate([r["weight"] for r in results])
    alerts = sum(r["alerts"] for r in results)
    frames = sum(r["frames"] for r in results)
    out: dict = {"clients": clients, "frames": frames, "deliveries": alerts,
                 "deliveries_per_s": round(alerts / seconds), "gateway_cpu_s": round(cpu, 3),
                 "gateway_cpu_pct": round(100 * cpu / seconds, 1),
                 "gateway_wakeups_per_s": round(wakeups / seconds),
                 "gateway_cpu_us_per_delivery": round(cpu * 1e6 / alerts, 2) if alerts else None,
                 "gateway_cpu_us_per_frame": round(cpu * 1e6 / frames, 2) if frames else None,
                 "alerts_per_s_per_client": round(alerts / seconds / clients, 1),
                 "alerts_per_frame": round(alerts / frames, 1) if frames else None,
                 "clients_closed": sum(r["closed"] for r in results)}
    if len(lat):
        order = np.argsort(lat)
        cum = np.cumsum(weight[order]) / weight.sum()
        pct = {q: float(lat[order][min(len(lat) - 1, np.searchsorted(cum, q / 100))]) for q in (50, 99)}
        out.update({"latency_ms_p50": round(pct[50], 2), "latency_ms_p99": round(pct[99], 2),
                    "latency_ms_max": round(float(lat.max()), 2)})
    else:
        out.update({"latency_ms_p50": None, "latency_ms_p99": None, "latency_ms_max": None})
    return out


def _wait_http(port: int, timeout: float = 240.0) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("instance did not come up")


def bench_publisher(url: str, workdir: Path, n: int = 100_000) -> dict:
    """Alert records -> JSON -> Redis (the publisher's whole path), vs unpipelined PUBLISH."""
    import redis

    from scanner.alert_json import AlertEncoder
    from scanner.records import ALERT_DTYPE, rule_key
    from scanner.rules.store import install_default_pack

    rules = workdir / "rules.json"
    install_default_pack(rules)
    rule_keys = np.array([rule_key(r["id"]) for r in json.loads(rules.read_text())], np.uint64)
    recs = np.zeros(n, ALERT_DTYPE)
    recs["seq"] = np.arange(n)
    recs["sym"] = np.arange(n) % 1000
    recs["rule"] = rule_keys[np.arange(n) % len(rule_keys)]
    recs["values"] = 1.5
    encoder = AlertEncoder([f"S{i}" for i in range(1000)], rules)
    sink = RedisSink(url, stream_maxlen=n)
    t0 = time.perf_counter()
    for i in range(0, n, 5000):  # publisher-sized batches
        sink.send(encoder.encode(recs[i:i + 5000]))
        sink.flush()
    batched = n / (time.perf_counter() - t0)
    payload = encoder.encode(recs[:1])[0][1]
    client = redis.Redis.from_url(url)
    m = min(n, 5_000)
    t0 = time.perf_counter()
    for _ in range(m):
        client.publish("alerts", payload)
    plain = m / (time.perf_counter() - t0)
    return {"publisher_alerts_per_s": round(batched), "unpipelined_publish_per_s": round(plain),
            "publisher_speedup_vs_unpipelined": round(batched / plain, 1), "publisher_ops_per_alert": 3}


def _above_idle(run: dict, idle_pct: float, seconds: float) -> float | None:
    """Gateway CPU per delivery beyond what it spends with no client at all."""
    if not run["deliveries"]:
        return None
    extra = max(0.0, run["gateway_cpu_s"] - idle_pct / 100 * seconds)
    return round(extra * 1e6 / run["deliveries"], 2)


def bench_fanout(clients: int = 500, seconds: float = 15.0, symbols: int = 5000, rate: float = 5000.0,
                 large: int = 2000, load_procs: int = 0, block_shares: float = BLOCK_SHARES) -> dict:
    """One client (baseline), `clients`, then `large` clients against one instance."""
    tmp = Path(tempfile.mkdtemp(prefix="scanner-fanout-"))
    redis_srv = RedisService(tmp / "redis")
    port = free_port()
    instance = f"fanout{os.getpid()}"
    bench_rules(tmp / "data" / RULES_FILE, block_shares)
    inst = _start_instance(tmp, port, symbols, rate)
    try:
        _wait_http(port)
        time.sleep(2.0)  # let the first cycles and alerts start
        gw_pid = _gateway_pid(instance, tmp / "data")
        load_cores, placement = _placement(gw_pid)
        procs = load_procs or max(1, len(load_cores or [0]))
        load = os.getloadavg()
        cpu0, wake0 = _cpu_s(gw_pid), _wakeups(gw_pid)  # baseline: the gateway with no client
        time.sleep(5.0)
        idle_pct = (_cpu_s(gw_pid) - cpu0) / 5.0 * 100
        idle_wakeups = (_wakeups(gw_pid) - wake0) / 5.0
        base = measure(port, gw_pid, 1, min(seconds, 5.0), load_cores, 1)
        main = measure(port, gw_pid, clients, seconds, load_cores, procs)
        out: dict = {"benchmark": "fanout", "clients": clients, "seconds": seconds, "symbols": symbols,
                     "feed_ticks_per_s": rate, "block_print_shares": block_shares,
                     "placement": placement, "load_generator_processes": procs,
                     "loadavg_1m_at_start": round(load[0], 2), "cpus": os.cpu_count()}
        out.update({k: v for k, v in main.items() if k != "clients"})
        out["gateway_idle_cpu_pct"] = round(idle_pct, 2)
        out["gateway_idle_wakeups_per_s"] = round(idle_wakeups)
        out["gateway_cpu_us_per_delivery_above_idle"] = _above_idle(main, idle_pct, seconds)
        out.update({"latency_ms_p99_1": base["latency_ms_p99"],
                    "gateway_cpu_us_per_delivery_1": base["gateway_cpu_us_per_delivery"]})
        if large:
            big = measure(port, gw_pid, large, seconds, load_cores, procs)
            out.update({f"latency_ms_p50_{large}": big["latency_ms_p50"],
                        f"latency_ms_p99_{large}": big["latency_ms_p99"],
                        f"deliveries_per_s_{large}": big["deliveries_per_s"],
                        f"alerts_per_s_per_client_{large}": big["alerts_per_s_per_client"],
                        f"gateway_cpu_pct_{large}": big["gateway_cpu_pct"],
                        f"gateway_wakeups_per_s_{large}": big["gateway_wakeups_per_s"],
                        f"gateway_cpu_us_per_delivery_{large}": big["gateway_cpu_us_per_delivery"],
                        f"gateway_cpu_us_per_frame_{large}": big["gateway_cpu_us_per_frame"],
                        f"alerts_per_frame_{large}": big["alerts_per_frame"],
                        f"gateway_cpu_us_per_delivery_above_idle_{large}": _above_idle(big, idle_pct, seconds)})
        if out["latency_ms_p99"] and out["latency_ms_p99_1"]:
            out["p99_ratio_vs_1_client"] = round(out["latency_ms_p99"] / out["latency_ms_p99_1"], 2)
        out["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
        out.update(bench_publisher(redis_srv.url, tmp))
        return out
    finally:
        inst.terminate()
        try:
            inst.wait(timeout=60)
        except subprocess.TimeoutExpired:
            inst.kill()
        for name in instance_segments(instance):
            os.unlink(f"/dev/shm/{name}")
        redis_srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
