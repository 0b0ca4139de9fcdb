"""The supervisor: spawns pinned children, watches, restarts, stops (set-up: `procs.instance`).

Modelled on gunicorn's arbiter: signal handlers only queue the signal and wake the loop
(`signal.set_wakeup_fd`); the loop dispatches to one `handle_*` method per signal, reaps
children with `waitpid(-1, WNOHANG)`, restarts dead or stalled ones with backoff, and treats
exit code `EXIT_CANNOT_BOOT` as "stop the instance" rather than a crash loop. Stop = shutdown
flag + TERM, wait until a deadline, KILL, reap once more, checkpoint, unlink the segments.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from procs import checkpoint
from procs.instance import InstanceSetup, PidLock, assign_cores, process_names, remove_stale_segments
from procs.orphan import PARENT_ENV
from procs.runtime import EXIT_CANNOT_BOOT, SETTINGS_ENV, SETTINGS_FILE_ENV, write_settings_file
from procs.shared import WRITERS, Shared
from scanner.backoff import Backoff
from scanner.config import Settings
from scanner.metrics import Owner
from scanner.session import trading_day
from shm.control import STATE_DEAD, STATE_HELD, STATE_RUNNING, STATE_STARTING
from shm.partitioned import PartitionedMatrix
from shm.platform import check_memory_model

if TYPE_CHECKING:
    from procs.registry import RegistryThread

log = logging.getLogger("scanner.supervisor")
NS = 1_000_000_000

# Writers whose death may leave odd seqlock counters behind.
WRITER_OF_PROCESS = {"ingest": Owner.INGEST, "bars": Owner.BARS, "indicators": Owner.INDICATORS}


@dataclass
class Child:
    name: str
    slot: int
    core: int | None
    pid: int = 0
    spawned_mono: float = 0.0
    restarts: int = 0
    backoff: Backoff = field(default_factory=Backoff)  # consecutive quick deaths pace restarts
    next_start: float = 0.0
    deaths: deque[float] = field(default_factory=deque)  # monotonic times of recent restarts (breaker)
    killed: bool = False  # SIGKILL sent for a stall (logged once)
    boot_kills: int = 0  # consecutive kills before a first heartbeat: each doubles the next boot's allowance


def warm_kernels() -> None:
    """Compile (first start on a machine) or load every numba kernel once, here, before any
    child starts: the children then load them from the cache before their first heartbeat,
    instead of all compiling the same kernels at once on a busy machine (issue 10.1)."""
    from scanner.bars import warm_up as warm_bars
    from scanner.indicators.engine import warm_kernels as warm_indicators
    from scanner.rules.compiler import warm_up as warm_rules

    t0 = time.monotonic()
    warm_bars()
    warm_indicators()
    warm_rules()
    log.info("numba kernels ready in %.1f s", time.monotonic() - t0)


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
        self.checkpoints: checkpoint.Periodic | None = None
        self.setup = InstanceSetup(settings)
        self.registry: RegistryThread | None = None
        self.settings_file = settings.run_dir() / f"{settings.instance}.settings.json"

    # ------------------------------------------------------------------ children
    def spawn(self, child: Child) -> None:
        assert self.shared is not None
        slot = self.shared.control.slots[child.slot : child.slot + 1]
        env = dict(os.environ)
        env.pop(SETTINGS_ENV, None)
        env.pop("NOTIFY_SOCKET", None)  # only the supervisor speaks to systemd
        env[SETTINGS_FILE_ENV] = str(self.settings_file)  # 0600: secrets never in an environment
        env[PARENT_ENV] = str(os.getpid())  # a child checks it is still ours (see procs.run)
        argv = [sys.executable, "-m", "procs.run", child.name, "--slot", str(child.slot)]
        slot["name"] = child.name.encode()
        slot["restarts"] = child.restarts
        slot["core"] = -1 if child.core is None else child.core
        slot["state"] = STATE_STARTING
        slot["hold_until_ns"] = 0
        slot["heartbeat_ns"] = time.monotonic_ns()
        pid = os.posix_spawn(sys.executable, argv, env)
        slot["pid"] = pid
        if child.core is not None:
            try:
                os.sched_setaffinity(pid, {child.core})
            except OSError as exc:
                log.warning("could not pin %s to core %d: %s", child.name, child.core, exc)
        child.pid = pid
        child.killed = False
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
        if lived >= 30.0:  # a long life ends the run of quick deaths
            child.backoff.succeeded()
        delay = child.backoff.failed()
        child.restarts += 1
        child.next_start = child.backoff.retry_at
        now = time.monotonic()
        child.deaths.append(now)
        while child.deaths and now - child.deaths[0] > self.s.crash_loop_window_s:
            child.deaths.popleft()
        if len(child.deaths) >= self.s.crash_loop_restarts:  # crash-loop breaker
            child.next_start = max(child.next_start, now + self.s.crash_loop_hold_s)
            slot["state"] = STATE_HELD
            slot["hold_until_ns"] = time.time_ns() + int((child.next_start - now) * NS)
            slot["restarts"] = child.restarts
            log.error("%s %s after %.1f s: %d restarts in %.0f s, a crash loop; holding it back %.0f s "
                      "(restart #%d)", child.name, how, lived, len(child.deaths), self.s.crash_loop_window_s,
                      child.next_start - now, child.restarts)
            child.deaths.clear()
            return
        log.warning("%s %s after %.1f s; restart #%d in %.1f s", child.name, how, lived,
                    child.restarts, delay)

    def repair_writer(self, name: str) -> None:
        """A writer that died mid-write leaves odd counters: make them even again."""
        assert self.shared is not None
        n = 0
        owner = WRITER_OF_PROCESS.get(name)
        if owner is not None:
            n += self.shared.table.writer(WRITERS[owner]).repair()
        if owner is Owner.BARS:
            n += self.shared.history.writer().repair()
        if name.startswith("scan-") and "matches" in self.shared.state:
            n += PartitionedMatrix(self.shared.state["matches"].arrays).repair(int(name[5:]))
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
            if booted:
                child.boot_kills = 0
            # a machine too busy to boot in time gets more time on each try, not a restart storm
            limit = self.s.heartbeat_timeout_s if booted else self.s.boot_timeout_s * 2 ** min(child.boot_kills, 3)
            if age > limit:
                if not child.killed:  # once: a killed child may take a moment to be reaped
                    if not booted:
                        child.boot_kills += 1
                    log.error("%s (pid %d) %s: no heartbeat for %.1f s; killing it%s", child.name, child.pid,
                              "stalled" if booted else "did not finish booting", age,
                              "" if booted else f" (its next boot may take "
                              f"{self.s.boot_timeout_s * 2 ** min(child.boot_kills, 3):.0f} s)")
                child.killed = True
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
        remove_stale_segments(self.s.instance)
        self.shared = self.setup.allocate()
        self.checkpoints = checkpoint.Periodic(self.shared, self.s.checkpoint_file(), self.s.checkpoint_interval_s)
        self.setup.prepare_rules()
        self.registry = self.setup.join_cluster()
        self.settings_file = write_settings_file(self.s)
        warm_kernels()
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
                self.checkpoints.maybe()
                self.roll_reference()
                sd_notify("WATCHDOG=1")
                self.sleep(0.1)
        finally:
            self.stop()
        return EXIT_CANNOT_BOOT if self.fatal else 0

    def roll_reference(self) -> None:
        """Replay across days: ingest announces the next trading day (its progress word: the
        day's first tick time) and waits; load that day's reference columns, set the header's
        trading day, then acknowledge in our own word (slot 0). See `procs.ingest_replay`."""
        if self.s.feed != "replay" or self.shared is None or "ingest" not in self.children:
            return
        ctl = self.shared.control
        want = ctl.progress_of(self.children["ingest"].slot)
        if want <= ctl.progress_of(0):
            return
        day = trading_day(want)
        if day != self.setup.reference_day:
            self.setup.load_reference(self.shared, day)
            ctl.header["trading_day"] = day
            log.info("replay rolled to trading day %d: reference data reloaded", day)
        ctl.publish_progress(0, want)

    def stop(self) -> None:
        """Shutdown flag + TERM, wait until the deadline, KILL, reap, checkpoint, unlink."""
        self.stopping = True
        sd_notify("STOPPING=1")
        if self.shared is None:
            return
        self.shared.control.request_shutdown()
        self._signal_all(signal.SIGTERM)
        if self.checkpoints is not None:
            self.checkpoints.join()  # the final checkpoint below must not race a periodic one
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
        if self.checkpoints is not None:
            self.checkpoints.save()
        if self.registry is not None:
            self.registry.stop()
        self.shared.close()
        self.shared.unlink()
        self.shared = None
        self.settings_file.unlink(missing_ok=True)
        log.info("stopped")

    def _signal_all(self, sig: int) -> None:
        for pid in list(self.by_pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
