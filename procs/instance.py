"""Instance set-up, done by the supervisor before any child runs.

The universe and this host's symbol range, the replay index, the shared-memory segments with
their reference columns (synthetic universe or daily history), the checkpoint restore and the
feed clock, the rule store (default pack, PostgreSQL schema and version watcher), the process
list with its cores, the stale segments of a crashed run, the pidfile lock, the numba warm-up,
and a replay's roll to its next day's reference data. Process management (spawn, reap,
heartbeats, restarts, signals, checkpoints) is `procs.supervisor`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from procs import checkpoint
from procs.feed_stats import new_feed_state
from procs.ingest_kafka import group_ownership, ingest_state
from procs.scan import match_state
from procs.shared import WRITERS, Shared, instance_segments
from procs.status import read_pid
from scanner.bars import BarAggregator
from scanner.config import Settings, reveal
from scanner.daily import reference_columns
from scanner.feeds import replay as replay_feed
from scanner.feeds.synthetic import daily_history, make_universe
from scanner.group_rows import group_rows_state
from scanner.metrics import CATALOGUE, Owner
from scanner.session import NY, latest_weekday, session_bounds_ns, trading_day
from scanner.timeframes import seed_daily
from shm.segment import Segment

if TYPE_CHECKING:
    from procs.registry import RegistryThread

log = logging.getLogger("scanner.supervisor")
NS = 1_000_000_000


class SupervisorError(RuntimeError):
    """A user-facing reason why the instance cannot start."""


class InstanceSetup:
    """What an instance needs before its children start; `allocate()` returns the segments."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.shared: Shared | None = None
        self.rules_watcher: object = None
        self._replay: replay_feed.ReplayIndex | None = None
        self.universe: list[str] = []  # the whole symbol list this host's range is cut from
        self.reference_day: int | None = None  # the trading day the reference columns are for (replay)

    def replay_index(self) -> replay_feed.ReplayIndex:
        """Feed "replay": the symbols in the replay files and their first day (read once)."""
        if self._replay is None:
            try:
                self._replay = replay_feed.index(replay_feed.spec_from_settings(self.s))
            except replay_feed.ReplayError as exc:
                raise SupervisorError(str(exc)) from None
        return self._replay

    def symbols(self) -> list[str]:
        s = self.s
        if s.feed == "replay":
            names = self.replay_index().symbols
        elif s.symbols_file:
            names = [ln.strip() for ln in Path(s.symbols_file).read_text().splitlines() if ln.strip()]
        elif s.live_feed():  # the vendor's active US equities (procs.reference)
            from procs.reference import ReferenceError, live_universe

            try:
                names = live_universe(s, trading_day(time.time_ns()))
            except ReferenceError as exc:
                raise SupervisorError(str(exc)) from None
        else:
            names = make_universe(s.symbols, s.feed_seed, s.feed_rate).names
        self.universe = names
        end = s.range_end if s.range_end is not None else len(names)
        if s.kafka_group and (s.feed != "kafka" or s.range_start != 0 or end != len(names)):
            raise SupervisorError(f"kafka_group {s.kafka_group!r} needs feed 'kafka' and the whole universe "
                                  f"(no range_start / range_end): the group's rebalance assigns the symbols")
        if not 0 <= s.range_start < end <= len(names):
            raise SupervisorError(
                f"symbol range {s.range_start}:{end} is outside the universe of {len(names)} symbols"
            )
        return names[s.range_start:end]

    def prepare_rules(self) -> None:
        """Default pack into an empty store; with the PostgreSQL store, the schema first and a
        watcher that turns a change made through another host into a generation bump here."""
        from procs.rules_admin import bump_generation, install_defaults, open_store

        if self.s.rules_in_postgres():
            import psycopg

            from procs.rules_pg import RulesVersionWatcher
            from procs.storage.pg import migrate

            try:
                migrate(reveal(self.s.database_url) or "", retention_days=self.s.bar_retention_days,
                        compress_after_days=self.s.bar_compress_after_days)
            except (psycopg.Error, OSError) as exc:
                raise SupervisorError(f"the rule store is in PostgreSQL (database_url) and it is not "
                                      f"reachable: {exc}") from None
            control = self.shared.control if self.shared else None
            self.rules_watcher = RulesVersionWatcher(open_store(self.s),  # type: ignore[arg-type]
                                                     lambda: bump_generation(self.s, control))
            self.rules_watcher.start()
        if install_defaults(self.s):
            log.info("no rule store yet: installed the default rule pack")

    def allocate(self) -> Shared:
        s = self.s
        keys = self.symbols()
        day = (self.replay_index().first_day if s.feed == "replay" else None) or trading_day(time.time_ns())
        if s.synthetic_market() and s.feed_preopen_s > 0:
            day = latest_weekday(day)  # a demo on a Sunday plays Friday's session
        shared = Shared.create(
            s.instance, keys=keys, n_workers=s.n_scan_workers(), trading_day=day,
            tick_capacity=s.tick_ring_capacity, bar_capacity=s.bar_ring_capacity,
            alert_capacity=s.alert_ring_capacity, hist_depth=s.bar_history,
            block_shift=s.block_shift(), supervisor_pid=os.getpid(), created_ns=time.time_ns(),
            states={"bars": {**BarAggregator.new_state(len(keys)), **(group_rows_state(len(keys)) if s.kafka_group
                                                                        else {})},
                    "matches": match_state(len(keys), s.n_scan_workers()), "feed": new_feed_state(),
                    **({"ingest": ingest_state(s.kafka_partitions, len(self.universe), s.range_start,
                                               bool(s.kafka_group))} if s.feed == "kafka" else {})},
        )
        t = shared.table
        BarAggregator.init_columns({m.name: (t.f8[m.index] if m.dtype == "f8" else t.i8[m.index])
                                    for m in CATALOGUE.owned_by(Owner.BARS)})
        self.load_reference(shared)
        event_ns = self.initial_event_time(day)
        path = s.checkpoint_file()
        if path.exists() and s.feed != "replay":  # a replay starts from an empty day
            try:
                meta = checkpoint.restore(shared, path, day)
                event_ns = max(event_ns, int(meta["event_ns"]))
                log.info("restored checkpoint %s (feed clock %s)", path, _fmt_ns(event_ns))
            except checkpoint.CheckpointRefused as exc:
                log.warning("%s", exc)
        # a replay's or live feed's clock stays until its ingest, which owns it, moves it
        # (procs.ingest_replay, procs.ingest_live)
        owned = s.feed == "replay" or s.live_feed()
        shared.control.set_clock(event_ns, time.time_ns(), 0.0 if owned else s.feed_speed)
        self.shared = shared
        return shared

    def join_cluster(self) -> RegistryThread | None:
        """With Redis: claim this host's name and symbol range in the host registry (refused with
        a clear message on a conflict) and keep the record fresh; None without Redis."""
        s = self.s
        if not s.redis_url:
            return None
        import redis

        from procs.api.cluster import SYMBOLS_KEY
        from procs.registry import Registry, RegistryConflict, RegistryThread, base_record
        from procs.status import collect
        from scanner.config import reveal

        end = s.range_end if s.range_end is not None else len(self.universe)
        url = s.public_url or f"http://{s.http_host}:{s.http_port}"
        record = base_record(instance=s.instance, universe=self.universe, range_start=s.range_start,
                             range_end=end, url=url, kafka_group=s.kafka_group)
        registry = Registry(reveal(s.redis_url) or "", s.registry_ttl_s)
        try:
            registry.claim(record)
            registry.client.set(SYMBOLS_KEY + s.instance, json.dumps(self.universe[s.range_start:end]))
        except RegistryConflict as exc:
            raise SupervisorError(f"cannot join the cluster: {exc}") from None
        except (redis.RedisError, OSError) as exc:
            log.error("host registry unreachable at start (%s); registering when Redis is back", exc)

        def live() -> dict[str, object]:
            st = collect(s)
            return {"ticks_per_s": st["ticks_per_s"], "scan_p99_ms": st["scan_p99_ms"],
                    "rules_generation": st["rules_generation"], "alerts_per_s": st["alerts_per_s"],
                    "processes_alive": sum(p["alive"] for p in st["processes"]), "symbols": st["symbols"],
                    **(group_ownership(self.shared) if s.kafka_group and self.shared else {})}

        thread = RegistryThread(registry, record, live)
        thread.start()
        return thread

    def initial_event_time(self, day: int) -> int:
        """Event time the feed starts at: now during the regular session, else the open
        (the synthetic market then runs a session of its own from 09:30); with
        `feed_preopen_s`, that long before the open (the demo)."""
        if self.s.feed == "replay" or self.s.live_feed():
            return 0
        now = time.time_ns()
        open_ns = session_bounds_ns(day)["open"]
        if self.s.synthetic_market() and self.s.feed_preopen_s > 0:
            return open_ns - int(self.s.feed_preopen_s * NS)
        if self.s.synthetic_market() and not open_ns <= now < open_ns + 390 * 60 * NS:
            return open_ns
        return now

    def load_reference(self, shared: Shared, day: int | None = None) -> None:
        """Reference columns (previous close/high/low, average daily volume, 52 weeks) and the
        daily timeframe's history before any worker runs: the synthetic universe's generated
        daily history, a replay's (Lean daily files) for its first day, or a live day's
        (PostgreSQL `bars_daily`, then the vendor: `procs.reference`); or, for `day` (a replay
        rolling to its next day: `roll_reference`), that day's reference columns only
        (the indicators process owns the daily ring once it runs)."""
        lo, n = self.s.range_start, shared.table.n_rows
        today = int(shared.control.header["trading_day"])
        tfa = shared.timeframes.arrays  # type: ignore[union-attr]
        ring, head = tfa["ring_1d"], tfa["head_1d"]
        if self.s.synthetic_market():  # chunk by chunk: the daily matrices of 10,000 symbols are big
            u = make_universe(self.s.symbols, self.s.feed_seed, self.s.feed_rate)
            parts = []
            for a in range(0, n, 2048):
                b = min(n, a + 2048)
                m = daily_history(u, today, self.s.feed_seed, rows=(lo + a, lo + b))
                parts.append(reference_columns(m))
                seed_daily(ring[:, a:b], head[a:b], m)  # before any child runs
                del m
            ref = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            ref["prev_close"], ref["avg_daily_volume"] = u.prev_close[lo:lo + n], u.avg_daily_volume[lo:lo + n]
        elif self.s.feed == "replay":
            daily = replay_feed.spec_from_settings(self.s).daily
            first = day is None
            day = day or self.replay_index().first_day
            m, found = replay_feed.daily_history(shared.table.key_list(), day, daily)
            ref = reference_columns(m)
            if first:
                seed_daily(ring, head, m)
            self.reference_day = day
            log.info("reference data for %d of %d symbols from %s", found, n, daily or "nowhere (no daily history)")
        elif self.s.live_feed():
            from procs.reference import ReferenceError, live_daily

            try:
                m = live_daily(self.s, shared.table.key_list(), today)
            except ReferenceError as exc:
                raise SupervisorError(str(exc)) from None
            ref = reference_columns(m)
            seed_daily(ring, head, m)
            del m
        else:
            return
        t = shared.table
        w = t.writer(WRITERS[Owner.REFERENCE])
        blocks = w.block_range(0, n)
        w.begin(blocks)
        for name, values in ref.items():
            t.f8[CATALOGUE.f8(name)] = values
        w.end(blocks)

    def roll_reference(self, shared: Shared, ingest_slot: int) -> None:
        """Replay across days: ingest announces the next trading day (its progress word: the
        day's first tick time) and waits; load that day's reference columns, set the header's
        trading day, then acknowledge in our own word (slot 0). See `procs.ingest_replay`.
        Called by the supervisor on every pass; does nothing for other feeds."""
        if self.s.feed != "replay":
            return
        ctl = shared.control
        want = ctl.progress_of(ingest_slot)
        if want <= ctl.progress_of(0):
            return
        day = trading_day(want)
        if day != self.reference_day:
            self.load_reference(shared, day)
            ctl.header["trading_day"] = day
            log.info("replay rolled to trading day %d: reference data reloaded", day)
        ctl.publish_progress(0, want)


def warm_kernels() -> None:
    """Compile (first start on a machine) or load every numba kernel once, before any child
    starts: the children then load them from the cache before their first heartbeat, instead
    of all compiling the same kernels at once on a busy machine (issue 10.1)."""
    from procs.ingest_live import warm_vendor_kernels
    from scanner.bars import warm_up as warm_bars
    from scanner.indicators import live_rows
    from scanner.indicators.engine import warm_kernels as warm_indicators
    from scanner.indicators.timeframes import warm_kernels as warm_timeframes
    from scanner.rules.compiler import warm_up as warm_rules
    from scanner.ticks import warm_up as warm_ticks
    from shm.history_read import warm_up as warm_history_read

    t0 = time.monotonic()
    warm_ticks()
    warm_history_read()
    warm_bars()
    warm_indicators()
    warm_timeframes()
    live_rows.warm_kernels()
    warm_rules()
    warm_vendor_kernels()
    log.info("numba kernels ready in %.1f s", time.monotonic() - t0)


def process_names(settings: Settings) -> list[str]:
    scans = [f"scan-{i}" for i in range(settings.n_scan_workers())]
    storage = ["storage"] if settings.storage_enabled() else []  # only when a database sink is configured
    publisher: list[str] = []
    gateways: list[str] = []
    notifier: list[str] = []
    if settings.serve:  # else a replay that only computes: nothing delivers alerts (Settings.serve)
        publisher = ["publisher"]
        notifier = ["notifier"] if settings.notifier_enabled() else []
        # the first is always "gateway" (what status, soak and the fault bench name), then gateway-1..
        gateways = ["gateway", *(f"gateway-{i}" for i in range(1, settings.n_gateway_workers()))]
    return ["ingest", "bars", "indicators", *scans, *publisher, *storage, *gateways, *notifier]


def assign_cores(names: list[str], settings: Settings) -> dict[str, int | None]:
    """cpu_map entries first, then round-robin over the cores this process may use."""
    if not settings.pin:
        return {n: None for n in names}
    cores = sorted(os.sched_getaffinity(0))
    out: dict[str, int | None] = {}
    for i, n in enumerate(names):
        core = settings.cpu_map.get(n)
        if core is not None and core not in cores:
            raise SupervisorError(f"cpu_map puts {n!r} on core {core}, but only cores {cores} are available")
        out[n] = core if core is not None else cores[i % len(cores)]
    return out


def try_flock(path: Path, mode: int) -> int | None:
    """Open `path` (created with `mode`) and take an exclusive flock on it without waiting: the
    descriptor, or None when another process holds the lock."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


class PidLock:
    """`<instance>.lock` held with flock for the supervisor's lifetime; `<instance>.pid` written
    atomically beside it. A second start on the same instance finds the lock taken."""

    def __init__(self, settings: Settings) -> None:
        self.lock_path = settings.run_dir() / f"{settings.instance}.lock"
        self.pid_path = settings.pidfile()
        self.fd: int | None = None
        self.instance = settings.instance

    def acquire(self) -> None:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = try_flock(self.lock_path, 0o644)
        if fd is None:
            pid = read_pid(self.pid_path)
            raise SupervisorError(
                f"instance {self.instance!r} is already running (pid {pid or '?'}); "
                "stop it first with `scanner stop`"
            )
        self.fd = fd
        tmp = self.pid_path.with_name(self.pid_path.name + ".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, self.pid_path)

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if read_pid(self.pid_path) == os.getpid():
                self.pid_path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None


class PortLock:
    """`scanner-<uid>/port-<port>.lock` in the system's temporary directory, held with flock for
    the supervisor's lifetime when its gateways serve `http_port`.

    The gateways listen with SO_REUSEPORT so that the processes of one instance share the port,
    and the kernel lets any socket of the same user with that option join: a second instance
    started on a port already served would not fail, but silently take part of the connections
    (clients of one would talk to the other). Every instance of a user takes this lock first, so
    the second start refuses, naming the first. (Another user's process, or one that binds
    without SO_REUSEPORT, already makes the gateway's bind fail.)"""

    def __init__(self, settings: Settings) -> None:
        self.port = settings.http_port if settings.serve and settings.http_port else 0
        self.path = Path(tempfile.gettempdir()) / f"scanner-{os.getuid()}" / f"port-{self.port}.lock"
        self.instance = settings.instance
        self.fd: int | None = None

    def acquire(self) -> None:
        if not self.port:  # nothing served, or an ephemeral port: nobody can share it by mistake
            return
        d = self.path.parent
        try:
            d.mkdir(mode=0o700, exist_ok=True)
        except FileExistsError:  # something else by that name: refused below
            pass
        st = d.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise SupervisorError(f"{d} is not a directory of this user; remove it (it holds the port locks "
                                  f"of this user's instances)")
        while True:
            fd = try_flock(self.path, 0o600)
            if fd is None:
                try:
                    holder = self.path.read_text(errors="replace").strip() or "?"
                except FileNotFoundError:  # released since: the holder's name is gone with its file
                    holder = "?"
                raise SupervisorError(
                    f"port {self.port} is served by another scanner instance of this user ({holder}); its "
                    "gateways would share the port (SO_REUSEPORT) and take part of the connections: set "
                    "another http_port"
                )
            try:  # the file we locked is still the one at the path (a holder unlinks it on release)
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"instance {self.instance!r}, pid {os.getpid()}".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        """Remove the file, then unlock it (`acquire` checks that the file it locked is still there)."""
        if self.fd is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None


def remove_stale_segments(instance: str) -> None:
    """Segments left by a run that died without unlinking them (e.g. a supervisor `kill -9`)."""
    stale = instance_segments(instance)
    if stale:
        log.warning("removing %d stale segments of a previous run: %s", len(stale), ", ".join(stale))
        for name in stale:
            os.unlink(Segment.path(name))


def _fmt_ns(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, NY).strftime("%Y-%m-%d %H:%M:%S %Z")

