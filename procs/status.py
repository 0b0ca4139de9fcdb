"""`scanner status`: read the control block of a running instance (no RPC, no locks).

Imports stay light (numpy and the segment classes load inside `collect`, once a control block
exists), so the CLI answers about a stopped instance without loading the engine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shm.segment import SHM_DIR

if TYPE_CHECKING:
    from scanner.config import Settings
    from shm.control import ControlBlock

STATE_NAMES = {0: "empty", 1: "starting", 2: "running", 3: "stopping", 4: "dead", 5: "crash-loop"}


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc/<pid>/task/*/children)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for task in tasks:
        try:  # a thread that ended since the listing is skipped, not the threads after it
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(x) for x in fh.read().split()]
        except OSError:
            continue
    return out


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (possibly owned by another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(path: Path) -> int | None:
    """The pid written in a pidfile, or None (no file, or not a number)."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def live_pid(pidfile: Path) -> int | None:
    """The pid in `pidfile` if that process is alive, else None."""
    pid = read_pid(pidfile)
    return pid if pid and pid_alive(pid) else None


def control_path(instance: str) -> str:
    """The control segment's file (`procs.shared.seg_name(instance, "ctl")` under /dev/shm),
    spelled here so that asking about a stopped instance does not import numpy."""
    return os.path.join(SHM_DIR, f"scanner.{instance}.ctl")


def require_control(instance: str) -> None:
    """FileNotFoundError, saying so, when the instance has no control segment (not running)."""
    if not os.path.exists(control_path(instance)):
        raise FileNotFoundError(f"instance {instance!r} is not running (no control segment "
                                f"{control_path(instance)})")


def _stat_start(pid: int) -> float | None:
    """Process start time, seconds since boot (from /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def collect(settings: Settings) -> dict:
    """Status of an instance as one JSON-able dict; raises FileNotFoundError if not running."""
    require_control(settings.instance)
    from procs.shared import seg_name
    from shm.control import ControlBlock

    try:
        ctl = ControlBlock.attach(seg_name(settings.instance, "ctl"))
    except Exception as exc:  # noqa: BLE001 - any attach failure means "not running" here
        raise FileNotFoundError(f"instance {settings.instance!r} is not running ({exc})") from None
    try:
        return _collect(settings, ctl)
    finally:
        ctl.close()


def _collect(settings: Settings, ctl: ControlBlock) -> dict:
    from shm.control import STATE_DEAD, STATE_HELD

    now_mono = time.monotonic_ns()
    now_wall = time.time_ns()
    with open("/proc/uptime") as fh:
        uptime_s = float(fh.read().split()[0])
    procs = []
    slots = ctl.slots.copy()
    ticks_per_s = alerts_per_s = 0.0
    drops = 0
    scan_p50 = scan_p99 = scan_max = 0.0
    overruns = 0
    for _i, s in enumerate(slots):
        name = bytes(s["name"]).decode()
        if not name:
            continue
        pid = int(s["pid"])
        alive = pid_alive(pid) and int(s["state"]) not in (STATE_DEAD, STATE_HELD)
        started = _stat_start(pid) if alive else None
        hb = int(s["heartbeat_ns"])
        procs.append({
            "name": name,
            "pid": pid,
            "alive": alive,
            "state": STATE_NAMES.get(int(s["state"]), "?"),
            "restarts": int(s["restarts"]),
            # crash-loop breaker: wall-clock seconds until the supervisor starts it again
            "held_s": round(max(0.0, (int(s["hold_until_ns"]) - time.time_ns()) / 1e9), 1)
            if int(s["state"]) == STATE_HELD else None,
            "uptime_s": round(uptime_s - started, 1) if started is not None else None,
            "heartbeat_age_ms": round((now_mono - hb) / 1e6, 1) if hb else None,
            "core": int(s["core"]) if int(s["core"]) >= 0 else None,
            "in": int(s["n_in"]),
            "out": int(s["n_out"]),
            "rate_in": round(float(s["rate_in"]), 1),
            "rate_out": round(float(s["rate_out"]), 1),
            "drops": int(s["drops"]),
            "errors": int(s["errors"]),
            "cycles": int(s["cycles"]),
            "overruns": int(s["overruns"]),
            "p50_ms": round(float(s["p50_us"]) / 1e3, 3),
            "p99_ms": round(float(s["p99_us"]) / 1e3, 3),
            "max_ms": round(float(s["max_us"]) / 1e3, 3),
            **(process_memory(pid) if alive else {"rss_mb": None, "private_mb": None, "shared_mb": None}),
        })
        drops += int(s["drops"])
        if name == "ingest":
            ticks_per_s = float(s["rate_in"])
        if name.startswith("scan-"):
            alerts_per_s += float(s["rate_out"])
            scan_p50 = max(scan_p50, float(s["p50_us"]) / 1e3)
            scan_p99 = max(scan_p99, float(s["p99_us"]) / 1e3)
            scan_max = max(scan_max, float(s["max_us"]) / 1e3)
            overruns += int(s["overruns"])
    h = ctl.header
    segs = segment_sizes(settings.instance)
    return {
        "instance": settings.instance,
        "supervisor_pid": int(h["supervisor_pid"]),
        "symbols": int(h["n_symbols"]),
        "trading_day": int(h["trading_day"]),
        "feed_time_ns": ctl.event_time_ns(now_wall),
        "rules_generation": ctl.rules_generation,
        "processes": procs,
        "ticks_per_s": round(ticks_per_s, 1),
        "scan_p50_ms": round(scan_p50, 3),
        "scan_p99_ms": round(scan_p99, 3),
        "scan_max_ms": round(scan_max, 3),
        "scan_overruns": overruns,
        "alerts_per_s": round(alerts_per_s, 2),
        "drops": drops,
        "ring_lost": _ring_lost(settings),
        **_feed(settings),
        "segments": segs,
        "memory": {"private_mb": round(sum(p["private_mb"] or 0 for p in procs), 1),
                   "shared_mb": round(sum(s["mb"] for s in segs), 1)},
    }


def process_memory(pid: int) -> dict[str, float | None]:
    """RSS of a process in MB (/proc/<pid>/status): all of it, its private part and the
    shared-memory pages it touched. Private is the process's proportional share of anonymous
    memory (`Pss_Anon`, /proc/<pid>/smaps_rollup): children forked from the fork server
    (`procs.zygote`) share its heap copy-on-write, and summing each one's whole `RssAnon` would
    count those pages once per child. Kernels without `Pss_Anon` give `RssAnon`."""
    kb: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssShmem"):
                    kb[k] = float(v.split()[0])
    except OSError:
        return {"rss_mb": None, "private_mb": None, "shared_mb": None}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss_Anon:"):
                    kb["Pss_Anon"] = float(line.split()[1])
                    break
    except OSError:
        pass
    private = kb.get("Pss_Anon", kb.get("RssAnon", 0))
    return {"rss_mb": round(kb.get("VmRSS", 0) / 1024, 1), "private_mb": round(private / 1024, 1),
            "shared_mb": round(kb.get("RssShmem", 0) / 1024, 1)}


def segment_sizes(instance: str) -> list[dict[str, object]]:
    """Every shared-memory segment of the instance with its size in MB."""
    out: list[dict[str, object]] = []
    prefix = f"scanner.{instance}."
    for name in sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix)):
        try:
            size = os.stat(os.path.join(SHM_DIR, name)).st_size
        except OSError:
            continue
        out.append({"name": name, "mb": round(size / 2**20, 1)})
    return out


def _ring_lost(settings: Settings) -> dict[str, int]:
    """Records consumers lost to lapping, per ring (should stay 0)."""
    from procs.shared import Shared

    try:
        sh = Shared.attach(settings.instance)
    except Exception:  # noqa: BLE001 - best effort: status must work while starting/stopping
        return {}
    try:
        return {"ticks": int(sh.ticks.consumers["lost"].sum()), "bars": int(sh.bars.consumers["lost"].sum()),
                "alerts": int(sum(int(r.consumers["lost"].sum()) for r in sh.alerts)),
                "feed": int(sh.feed.consumers["lost"].sum())}
    finally:
        sh.close()


def _feed(settings: Settings) -> dict[str, dict]:
    """`feed`: the live feed's counters (connection, disconnects, seconds lost, repaired bars,
    corrections, ...), when the instance has them."""
    from procs.feed_stats import feed_summary
    from procs.shared import Shared

    try:
        sh = Shared.attach(settings.instance)
    except Exception:  # noqa: BLE001 - best effort: status must work while starting/stopping
        return {}
    try:
        feed = feed_summary(sh)
    finally:
        sh.close()
    return {} if feed is None else {"feed": feed}
