"""The supervisor: spawns pinned children, watches, restarts, stops.

Elsewhere: the instance set-up (`procs.instance`), when a dead child may start again
(`procs.restart_policy`), systemd's notify protocol (`procs.sdnotify`), the seqlock repair after
a writer's death (`procs.shared.Shared.repair_writer`).

Modelled on gunicorn's arbiter: signal handlers only queue the signal and wake the loop
(`procs.sigloop`); the loop dispatches to one `handle_*` method per signal, reaps
children with `waitpid(-1, WNOHANG)`, restarts dead or stalled ones with backoff, and treats
exit code `EXIT_CANNOT_BOOT` as "stop the instance" rather than a crash loop. Stop = shutdown
flag + TERM, wait until a deadline, KILL, reap once more, checkpoint, unlink the segments.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from procs import checkpoint
from procs.forkserver import ForkServer
from procs.instance import (
    InstanceSetup,
    PidLock,
    PortLock,
    assign_cores,
    process_names,
    remove_stale_segments,
    warm_kernels,
)
from procs.restart_policy import RestartPolicy, exit_reason
from procs.runtime import EXIT_CANNOT_BOOT, child_env, write_settings_file
from procs.sdnotify import sd_notify, watchdog_ping
from procs.shared import Shared
from procs.sigloop import SignalQueue
from scanner.config import Settings
from shm.control import STATE_DEAD, STATE_HELD, STATE_RUNNING, STATE_STARTING
from shm.platform import check_memory_model

if TYPE_CHECKING:
    from procs.registry import RegistryThread

log = logging.getLogger("scanner.supervisor")
NS = 1_000_000_000


@dataclass
class Child:
    """One supervised process: its control-block slot, core, pid and restart state."""

    name: str
    slot: int
    core: int | None
    policy: RestartPolicy
    pid: int = 0
    spawned_mono: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    killed: bool = False  # SIGKILL sent for a stall (logged once)
    boot_kills: int = 0  # consecutive kills before a first heartbeat: each doubles the next boot's allowance


class Supervisor:
    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD)

    def __init__(self, settings: Settings, *, on_ready: object = None) -> None:
        self.s = settings
        self.lock = PidLock(settings)
        self.port_lock = PortLock(settings)  # a second instance on our port would share it silently
        self.children: dict[str, Child] = {}
        self.by_pid: dict[int, Child] = {}
        self.stopping = False
        self.fatal: str | None = None
        self.shared: Shared | None = None
        self.on_ready = on_ready
        self.signals = SignalQueue(self.SIGNALS)
        self.checkpoints: checkpoint.Periodic | None = None
        self.setup = InstanceSetup(settings)
        self.registry: RegistryThread | None = None
        self.settings_file = settings.run_dir() / f"{settings.instance}.settings.json"
        self.forks: ForkServer | None = None

    # ------------------------------------------------------------------ children
    def spawn(self, child: Child) -> None:
        assert self.shared is not None
        slot = self.shared.control.slots[child.slot : child.slot + 1]
        argv = [sys.executable, "-m", "procs.run", child.name, "--slot", str(child.slot)]
        slot["restarts"] = child.restarts
        slot["core"] = -1 if child.core is None else child.core
        slot["state"] = STATE_STARTING
        slot["hold_until_ns"] = 0
        slot["heartbeat_ns"] = time.monotonic_ns()
        pid = self.forks.spawn(child.name, child.slot) if self.forks is not None else 0
        if not pid:
            pid = os.posix_spawn(sys.executable, argv, child_env(self.settings_file))
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

    def reap(self, *, block: bool = False) -> None:
        """Reap every child that has exited; `block`: wait until none is left (after a KILL)."""
        if self.forks is not None:
            self.forks.sweep(self.by_pid)
        while self.by_pid or not block:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.by_pid.pop(pid, None)
            if child is not None:
                self.child_exited(child, status)

    def child_exited(self, child: Child, status: int) -> None:
        assert self.shared is not None
        child.pid = 0
        slot = self.shared.control.slots[child.slot : child.slot + 1]
        slot["state"] = STATE_DEAD
        code, how = exit_reason(status)
        n = self.shared.repair_writer(child.name)
        if n:
            log.warning("repaired %d odd seqlock counters left by %s", n, child.name)
        if self.stopping:
            log.info("%s %s", child.name, how)
            return
        if code == EXIT_CANNOT_BOOT:
            self.fatal = f"{child.name} cannot boot ({how}); stopping the instance"
            log.error("%s", self.fatal)
            self.stopping = True
            return
        now = time.monotonic()
        lived = now - child.spawned_mono
        r = child.policy.after_death(lived, now)
        child.restarts += 1
        child.next_start = r.next_start
        if r.held:
            slot["state"] = STATE_HELD
            slot["hold_until_ns"] = time.time_ns() + int((r.next_start - now) * NS)
            slot["restarts"] = child.restarts
            log.error("%s %s after %.1f s: %d restarts in %.0f s, a crash loop; holding it back %.0f s "
                      "(restart #%d)", child.name, how, lived, r.deaths, child.policy.window_s,
                      r.next_start - now, child.restarts)
            return
        log.warning("%s %s after %.1f s; restart #%d in %.1f s", child.name, how, lived, child.restarts, r.delay)

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

    # ------------------------------------------------------------------ signals (procs.sigloop)
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
        for name in self.signals.pending():
            getattr(self, f"handle_{name}")()

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        check_memory_model()
        self.lock.acquire()
        try:
            self.port_lock.acquire()
            return self._run()
        finally:
            self.port_lock.release()
            self.lock.release()

    def _run(self) -> int:
        remove_stale_segments(self.s.instance)
        self.shared = self.setup.allocate()
        self.checkpoints = checkpoint.Periodic(self.shared, self.s.checkpoint_file(), self.s.checkpoint_interval_s)
        self.setup.prepare_rules()
        self.registry = self.setup.join_cluster()
        self.settings_file = write_settings_file(self.s)
        if self.s.fork_server:  # its imports run while the kernels compile; it loads them after
            self.forks = ForkServer(child_env(self.settings_file))
        warm_kernels()
        if self.forks is not None:
            self.forks.kernels_ready()
        self.signals.install()
        self.shared.control.slots[0]["name"] = b"supervisor"
        self.shared.control.slots[0]["pid"] = os.getpid()
        self.shared.control.slots[0]["state"] = STATE_RUNNING
        self.shared.control.slots[0]["core"] = -1
        names = process_names(self.s)
        cores = assign_cores(names, self.s)
        for i, name in enumerate(names, start=1):
            self.children[name] = Child(name, i, cores[name], RestartPolicy.from_settings(self.s))
            # every slot named before the first spawn: a child that boots fast (a fork) finds the
            # others by name at once (a replay's ingest: the scan workers it waits for, bars it rings)
            self.shared.control.slots[i]["name"] = name.encode()
            self.shared.control.slots[i]["state"] = STATE_STARTING
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
                if "ingest" in self.children:
                    self.setup.roll_reference(self.shared, self.children["ingest"].slot)
                watchdog_ping()
                self.signals.sleep(0.1)
        finally:
            self.stop()
        return EXIT_CANNOT_BOOT if self.fatal else 0

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
            self.signals.sleep(0.05)
        if self.by_pid:
            log.warning("killing %s after %.0f s", ", ".join(c.name for c in self.by_pid.values()),
                        self.s.stop_timeout_s)
            self._signal_all(signal.SIGKILL)
            self.reap(block=True)
        if self.forks is not None:
            self.forks.close()
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
