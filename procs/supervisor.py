"""The supervisor: allocates the segments, spawns pinned children, watches, restarts, stops.

Modelled on gunicorn's arbiter: signal handlers only queue the signal and wake the loop
(`signal.set_wakeup_fd`); the loop dispatches to one `handle_*` method per signal, reaps
children with `waitpid(-1, WNOHANG)`, restarts dead or stalled ones with backoff, and treats
exit code `EXIT_CANNOT_BOOT` as "stop the instance" rather than a crash loop. Stop = shutdown
flag + TERM, wait until a deadline, KILL, reap once more, checkpoint, unlink the segments.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from procs import checkpoint
from procs.runtime import EXIT_CANNOT_BOOT, SETTINGS_ENV
from procs.scan import match_state
from procs.shared import WRITERS, Shared, instance_segments
from scanner.bars import BarAggregator
from scanner.config import Settings
from scanner.feeds import replay as replay_feed
from scanner.feeds.synthetic import make_universe
from scanner.metrics import CATALOGUE, Owner
from scanner.session import NY, latest_weekday, session_bounds_ns, trading_day
from shm.control import STATE_DEAD, STATE_RUNNING, STATE_STARTING
from shm.platform import check_memory_model
from shm.segment import Segment

log = logging.getLogger("scanner.supervisor")
NS = 1_000_000_000

# Writers whose death may leave odd seqlock counters behind.
WRITER_OF_PROCESS = {"ingest": Owner.INGEST, "bars": Owner.BARS, "indicators": Owner.INDICATORS}


class SupervisorError(RuntimeError):
    """A user-facing reason why the instance cannot start."""


@dataclass
class Child:
    name: str
    slot: int
    core: int | None
    pid: int = 0
    spawned_mono: float = 0.0
    restarts: int = 0
    failures: int = 0  # consecutive quick deaths, for the backoff
    next_start: float = 0.0

    def backoff(self) -> float:
        """Delay before the next restart: 0.1 s, doubling per quick death, capped at 5 s."""
        return min(5.0, 0.1 * (2 ** max(0, self.failures - 1))) if self.failures else 0.0


def process_names(settings: Settings) -> list[str]:
    scans = [f"scan-{i}" for i in range(settings.n_scan_workers())]
    notifier = ["notifier"] if settings.notifier_enabled() else []
    storage = ["storage"] if settings.storage_enabled() else []  # only when a database sink is configured
    n_gw = settings.n_gateway_workers()
    gateways = ["gateway"] if n_gw == 1 else [f"gateway-{i}" for i in range(n_gw)]
    return ["ingest", "bars", "indicators", *scans, "publisher", *storage, *gateways, *notifier]


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


def sd_notify(message: str) -> None:
    """systemd notify protocol (Type=notify): READY=1, WATCHDOG=1, STOPPING=1, STATUS=..."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)


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
        fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                pid = read_pid(self.pid_path)
                raise SupervisorError(
                    f"instance {self.instance!r} is already running (pid {pid or '?'}); "
                    "stop it first with `scanner stop`"
                ) from None
            raise
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


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


class Supervisor:
    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD)

    def __init__(self, settings: Settings, *, on_ready: object = None) -> None:
        self.s = settings
        self.lock = PidLock(settings)
        self.children: dict[str, Child] = {}
        self.by_pid: dict[int, Child] = {}
        self.sig_queue: list[int] = []
        self.stopping = False
        self.fatal: str | None = None
        self.shared: Shared | None = None
        self.on_ready = on_ready
        self._wake_r, self._wake_w = -1, -1
        self._last_checkpoint = time.monotonic()
        self._ckpt_thread: threading.Thread | None = None
        self._replay: replay_feed.ReplayIndex | None = None

    # ------------------------------------------------------------------ setup
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
        else:
            names = make_universe(s.symbols, s.feed_seed, s.feed_rate).names
        end = s.range_end if s.range_end is not None else len(names)
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
                migrate(self.s.database_url or "", retention_days=self.s.bar_retention_days,
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
        if s.feed == "synthetic" and s.feed_preopen_s > 0:
            day = latest_weekday(day)  # a demo on a Sunday plays Friday's session
        shared = Shared.create(
            s.instance, keys=keys, n_workers=s.n_scan_workers(), trading_day=day,
            tick_capacity=s.tick_ring_capacity, bar_capacity=s.bar_ring_capacity,
            alert_capacity=s.alert_ring_capacity, hist_depth=s.bar_history,
            block_shift=s.block_shift(), supervisor_pid=os.getpid(), created_ns=time.time_ns(),
            states={"bars": BarAggregator.new_state(len(keys)),
                    "matches": match_state(len(keys), s.n_scan_workers())},
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
        # a replay's clock stays at 0 until its ingest, which owns it, moves it (procs.ingest_replay)
        shared.control.set_clock(event_ns, time.time_ns(), 0.0 if s.feed == "replay" else s.feed_speed)
        return shared

    def initial_event_time(self, day: int) -> int:
        """Event time the feed starts at: now during the regular session, else the open
        (the synthetic market then runs a session of its own from 09:30)."""
        if self.s.feed == "replay":
            return 0
        now = time.time_ns()
        open_ns = session_bounds_ns(day)["open"]
        if self.s.feed == "synthetic" and self.s.feed_preopen_s > 0:
            return open_ns - int(self.s.feed_preopen_s * NS)
        if self.s.feed == "synthetic" and not open_ns <= now < open_ns + 390 * 60 * NS:
            return open_ns
        return now

    def load_reference(self, shared: Shared) -> None:
        """Reference columns (previous close, average daily volume) before any worker runs:
        the synthetic universe's, or a replay's from daily history (Lean daily files)."""
        lo, n = self.s.range_start, shared.table.n_rows
        if self.s.feed == "synthetic":
            u = make_universe(self.s.symbols, self.s.feed_seed, self.s.feed_rate)
            prev, adv = u.prev_close[lo:lo + n], u.avg_daily_volume[lo:lo + n]
        elif self.s.feed == "replay":
            daily = replay_feed.spec_from_settings(self.s).daily
            prev, adv, found = replay_feed.reference(shared.table.key_list(), self.replay_index().first_day, daily)
            log.info("reference data for %d of %d symbols from %s", found, n, daily or "nowhere (no daily history)")
        else:
            return
        t = shared.table
        w = t.writer(WRITERS[Owner.REFERENCE])
        blocks = w.block_range(0, n)
        w.begin(blocks)
        t.f8[CATALOGUE.f8("prev_close")] = prev
        t.f8[CATALOGUE.f8("avg_daily_volume")] = adv
        w.end(blocks)

    # ------------------------------------------------------------------ children
    def spawn(self, child: Child) -> None:
        assert self.shared is not None
        slot = self.shared.control.slots[child.slot : child.slot + 1]
        env = dict(os.environ)
        env[SETTINGS_ENV] = self.s.model_dump_json()
        argv = [sys.executable, "-m", "procs.run", child.name, "--slot", str(child.slot)]
        slot["name"] = child.name.encode()
        slot["restarts"] = child.restarts
        slot["core"] = -1 if child.core is None else child.core
        slot["state"] = STATE_STARTING
        slot["heartbeat_ns"] = time.monotonic_ns()
        pid = os.posix_spawn(sys.executable, argv, env)
        slot["pid"] = pid
        if child.core is not None:
            try:
                os.sched_setaffinity(pid, {child.core})
            except OSError as exc:
                log.warning("could not pin %s to core %d: %s", child.name, child.core, exc)
        child.pid = pid
        child.spawned_mono = time.monotonic()
        self.by_pid[pid] = child
        log.info("spawned %s pid %d core %s", child.name, pid, child.core)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.by_pid.pop(pid, None)
            if child is None:
                continue
            self.child_exited(child, status)

    def child_exited(self, child: Child, status: int) -> None:
        assert self.shared is not None
        child.pid = 0
        slot = self.shared.control.slots[child.slot : child.slot + 1]
        slot["state"] = STATE_DEAD
        if os.WIFSIGNALED(status):
            how = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
            code = None
        else:
            code = os.WEXITSTATUS(status)
            how = f"exited with code {code}"
        self.repair_writer(child.name)
        if self.stopping:
            log.info("%s %s", child.name, how)
            return
        if code == EXIT_CANNOT_BOOT:
            self.fatal = f"{child.name} cannot boot ({how}); stopping the instance"
            log.error("%s", self.fatal)
            self.stopping = True
            return
        lived = time.monotonic() - child.spawned_mono
        child.failures = child.failures + 1 if lived < 30.0 else 1
        child.restarts += 1
        child.next_start = time.monotonic() + child.backoff()
        log.warning("%s %s after %.1f s; restart #%d in %.1f s", child.name, how, lived,
                    child.restarts, child.backoff())

    def repair_writer(self, name: str) -> None:
        """A writer that died mid-write leaves odd counters: make them even again."""
        assert self.shared is not None
        owner = WRITER_OF_PROCESS.get(name)
        if owner is None:
            return
        n = self.shared.table.writer(WRITERS[owner]).repair()
        if owner is Owner.BARS:
            n += self.shared.history.writer().repair()
        if n:
            log.warning("repaired %d odd seqlock counters left by %s", n, name)

    def check_heartbeats(self) -> None:
        assert self.shared is not None
        slots = self.shared.control.slots
        now_ns = time.monotonic_ns()
        for child in self.children.values():
            if not child.pid:
                continue
            age = (now_ns - int(slots[child.slot]["heartbeat_ns"])) / NS
            booted = int(slots[child.slot]["heartbeat_ns"]) > int(child.spawned_mono * NS)
            limit = self.s.heartbeat_timeout_s if booted else self.s.boot_timeout_s
            if age > limit:
                log.error("%s (pid %d) stalled: no heartbeat for %.1f s; killing it", child.name,
                          child.pid, age)
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def start_due(self) -> None:
        now = time.monotonic()
        for child in self.children.values():
            if not child.pid and child.next_start <= now and not self.stopping:
                self.spawn(child)

    # ------------------------------------------------------------------ signals
    def install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wake_w)
        for sig in self.SIGNALS:
            signal.signal(sig, self._queue_signal)

    def _queue_signal(self, signum: int, frame: object) -> None:
        if len(self.sig_queue) < 8:
            self.sig_queue.append(signum)

    def handle_term(self) -> None:
        log.info("TERM: stopping")
        self.stopping = True

    def handle_int(self) -> None:
        log.info("INT: stopping")
        self.stopping = True

    def handle_quit(self) -> None:
        log.info("QUIT: stopping")
        self.stopping = True

    def handle_hup(self) -> None:
        """HUP: workers reload the rule set (bump the generation)."""
        assert self.shared is not None
        gen = self.shared.control.bump_rules_generation()
        log.info("HUP: rules generation -> %d", gen)

    def handle_chld(self) -> None:
        self.reap()

    def dispatch_signals(self) -> None:
        while self.sig_queue:
            sig = self.sig_queue.pop(0)
            name = signal.Signals(sig).name[3:].lower()
            getattr(self, f"handle_{name}")()

    def sleep(self, timeout: float) -> None:
        try:
            select.select([self._wake_r], [], [], timeout)
            while os.read(self._wake_r, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        check_memory_model()
        self.lock.acquire()
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> int:
        stale = instance_segments(self.s.instance)
        if stale:
            log.warning("removing %d stale segments of a previous run: %s", len(stale), ", ".join(stale))
            for name in stale:
                os.unlink(Segment.path(name))
        self.shared = self.allocate()
        self.prepare_rules()
        self.install_signals()
        self.shared.control.slots[0]["name"] = b"supervisor"
        self.shared.control.slots[0]["pid"] = os.getpid()
        self.shared.control.slots[0]["state"] = STATE_RUNNING
        self.shared.control.slots[0]["core"] = -1
        names = process_names(self.s)
        cores = assign_cores(names, self.s)
        for i, name in enumerate(names, start=1):
            self.children[name] = Child(name, i, cores[name])
        try:
            self.start_due()
            sd_notify("READY=1")
            if callable(self.on_ready):
                self.on_ready()
            while not self.stopping:
                self.dispatch_signals()
                self.reap()
                self.shared.control.slots[0]["heartbeat_ns"] = time.monotonic_ns()
                self.check_heartbeats()
                self.start_due()
                self.maybe_checkpoint()
                sd_notify("WATCHDOG=1")
                self.sleep(0.1)
        finally:
            self.stop()
        return 1 if self.fatal else 0

    def maybe_checkpoint(self) -> None:
        """Periodic checkpoint in a thread: copying and fsyncing a large table and history
        (~130 MB for 5,000 symbols x 400 bars) must not hold up reaping and heartbeat checks."""
        if time.monotonic() - self._last_checkpoint < self.s.checkpoint_interval_s:
            return
        if self._ckpt_thread is not None and self._ckpt_thread.is_alive():
            return
        self._last_checkpoint = time.monotonic()
        self._ckpt_thread = threading.Thread(target=self.checkpoint, name="checkpoint", daemon=True)
        self._ckpt_thread.start()

    def checkpoint(self) -> None:
        assert self.shared is not None
        self._last_checkpoint = time.monotonic()
        try:
            ev = self.shared.control.event_time_ns(time.time_ns())
            size = checkpoint.save(self.shared, self.s.checkpoint_file(), ev)
            log.info("checkpoint written (%d bytes)", size)
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint must not stop trading
            log.error("checkpoint failed: %s", exc)

    def stop(self) -> None:
        """Shutdown flag + TERM, wait until the deadline, KILL, reap, checkpoint, unlink."""
        self.stopping = True
        sd_notify("STOPPING=1")
        if self.shared is None:
            return
        self.shared.control.request_shutdown()
        self._signal_all(signal.SIGTERM)
        if self._ckpt_thread is not None:
            self._ckpt_thread.join()  # the final checkpoint below must not race a periodic one
        deadline = time.monotonic() + self.s.stop_timeout_s
        while self.by_pid and time.monotonic() < deadline:
            self.reap()
            self.sleep(0.05)
        if self.by_pid:
            log.warning("killing %s after %.0f s", ", ".join(c.name for c in self.by_pid.values()),
                        self.s.stop_timeout_s)
            self._signal_all(signal.SIGKILL)
            while self.by_pid:
                try:
                    pid, status = os.waitpid(-1, 0)
                except ChildProcessError:
                    break
                child = self.by_pid.pop(pid, None)
                if child:
                    self.child_exited(child, status)
        self.checkpoint()
        self.shared.close()
        self.shared.unlink()
        self.shared = None
        log.info("stopped")

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.by_pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def _fmt_ns(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, NY).strftime("%Y-%m-%d %H:%M:%S %Z")

