"""What every child process shares: attach, pin, heartbeat from the work loop, stop on TERM.

A child is started by the supervisor as `python -m procs.run NAME --slot N`; its settings come
from a 0600 file named in `SCANNER_CHILD_SETTINGS_FILE` (secrets never in the environment).
Exit code `EXIT_CANNOT_BOOT` tells the supervisor not to restart it (configuration or platform
error) but to stop the instance.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from procs.orphan import PARENT_ENV
from procs.shared import Shared
from scanner.config import Settings, redact
from shm.control import BUCKETS_US, STATE_RUNNING, STATE_STARTING, STATE_STOPPING

EXIT_CANNOT_BOOT = 3
SETTINGS_ENV = "SCANNER_CHILD_SETTINGS"  # settings JSON (older supervisors)
SETTINGS_FILE_ENV = "SCANNER_CHILD_SETTINGS_FILE"  # path of the 0600 settings file (see write_settings_file)

log = logging.getLogger("scanner")


class RedactingFormatter(logging.Formatter):
    """Masks URL passwords and password/token parameters in every formatted line (the
    message, its arguments and any traceback): drivers put connection URLs in their errors."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(fmt: str, handlers: list[logging.Handler] | None = None) -> None:
    """Root logging at `SCANNER_LOG_LEVEL` (INFO) with `fmt`, every handler redacting."""
    logging.basicConfig(level=os.environ.get("SCANNER_LOG_LEVEL", "INFO"), format=fmt, handlers=handlers)
    for h in logging.getLogger().handlers:
        h.setFormatter(RedactingFormatter(fmt))


def write_settings_file(settings: Settings) -> Path:
    """The settings (secrets in clear) in `<data dir>/<instance>.settings.json`, mode 0600,
    written atomically: how the supervisor hands them to its children, instead of an
    environment variable any process of the user can read from /proc/<pid>/environ."""
    path = settings.run_dir() / f"{settings.instance}.settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask, and if the file existed
        os.write(fd, settings.secret_json().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def child_env(settings_file: Path) -> dict[str, str]:
    """The environment the supervisor starts a child with: its own, less what only the
    supervisor may use, plus where the settings are and whose child it is."""
    env = dict(os.environ)
    env.pop(SETTINGS_ENV, None)
    env.pop("NOTIFY_SOCKET", None)  # only the supervisor speaks to systemd
    env[SETTINGS_FILE_ENV] = str(settings_file)  # 0600: secrets never in an environment
    env[PARENT_ENV] = str(os.getpid())  # a child checks it is still ours (see procs.run)
    return env


def read_child_settings() -> Settings:
    """A child's settings: from the file named by `SETTINGS_FILE_ENV` (refused unless it is
    private to this user), else (older supervisors) from `SETTINGS_ENV`."""
    name = os.environ.get(SETTINGS_FILE_ENV)
    if name:
        return read_settings_file(Path(name))
    return Settings.model_validate_json(os.environ[SETTINGS_ENV])


def read_settings_file(path: Path) -> Settings:
    """Settings from a file written by `write_settings_file`; refused unless private (0600)."""
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise BootError(f"settings file {path} is readable by others (mode {mode:o}): refused")
    return Settings.model_validate_json(path.read_bytes())


def private_data_dir(settings: Settings) -> Path:
    """umask 077 for this process and its children (logs, pidfile, checkpoints, spool, segments
    are created readable by this user only), and the data directory itself made 0700."""
    os.umask(0o077)
    path = settings.run_dir()
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def prepare_numba_cache(settings: Settings) -> Path:
    """Put numba's cache of compiled kernels in a known writable place, before numba is imported
    (children inherit the environment): `NUMBA_CACHE_DIR` when set; else numba's default beside
    the sources when that is writable (one cache per install, shared by every instance); else
    `<data_dir>/numba-cache` (a read-only install, e.g. under systemd's ProtectSystem=strict,
    where numba would otherwise fail to import a `cache=True` kernel). Returns the directory."""
    given = os.environ.get("NUMBA_CACHE_DIR")
    if given:
        path = Path(given)
    else:
        src = Path(__file__).resolve().parents[1] / "scanner"
        if os.access(src, os.W_OK) and (not (src / "__pycache__").exists() or os.access(src / "__pycache__", os.W_OK)):
            return src / "__pycache__"
        path = settings.run_dir() / "numba-cache"
        os.environ["NUMBA_CACHE_DIR"] = str(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


class BootError(RuntimeError):
    """The process cannot start with this configuration; restarting would not help."""


class Context:
    """One process's handle on the instance: shared state, its slot, stop flag, counters."""

    def __init__(self, name: str, slot: int, settings: Settings, shared: Shared) -> None:
        self.name = name
        self.slot_index = slot
        self.settings = settings
        self.shared = shared
        self.slot = shared.control.slots[slot : slot + 1]  # 1-element view: field writes go to shm
        self.stopping = False
        self._running = False
        self.parent = os.getppid()
        self._rate_t = time.monotonic()
        self._rate_in = int(self.slot["n_in"][0])
        self._rate_out = int(self.slot["n_out"][0])
        self.cycle_hist = shared.control.cycle_hist[slot]
        self._bucket_bounds = np.array(BUCKETS_US, np.float64)
        self._timings = np.zeros(1024, np.float64)
        self._n_timings = 0

    # -- the work loop calls these
    def beat(self) -> None:
        """Heartbeat: called every pass of the work loop (a stalled loop shows as a stale beat).
        The first beat ends the boot phase (the supervisor allows `boot_timeout_s` until then, so
        slow start-up work such as compiling kernels goes before the loop)."""
        now = time.monotonic_ns()
        if os.getppid() != self.parent:  # the supervisor died: stop (should_run says so too)
            self.stopping = True
        self.slot["heartbeat_ns"] = now
        if not self._running:
            self._running = True
            self.slot["state"] = STATE_RUNNING
        if now / 1e9 - self._rate_t >= 1.0:
            self._update_rates(now / 1e9)

    def count(self, n_in: int = 0, n_out: int = 0, drops: int = 0, errors: int = 0) -> None:
        s = self.slot
        if n_in:
            s["n_in"] += n_in
        if n_out:
            s["n_out"] += n_out
        if drops:
            s["drops"] += drops
        if errors:
            s["errors"] += errors

    def record_cycle(self, seconds: float, overrun: bool = False) -> None:
        """Record one cycle's duration; p50/p99/max of the last 1024 go to the slot."""
        us = seconds * 1e6
        self._timings[self._n_timings % len(self._timings)] = us
        self.cycle_hist[int(np.searchsorted(self._bucket_bounds, us))] += 1
        self.cycle_hist[-1] += int(us)
        self._n_timings += 1
        s = self.slot
        s["cycles"] += 1
        if overrun:
            s["overruns"] += 1

    def _update_rates(self, now: float) -> None:
        s = self.slot
        dt = now - self._rate_t
        n_in, n_out = int(s["n_in"][0]), int(s["n_out"][0])
        s["rate_in"] = (n_in - self._rate_in) / dt
        s["rate_out"] = (n_out - self._rate_out) / dt
        self._rate_in, self._rate_out, self._rate_t = n_in, n_out, now
        if self._n_timings:
            t = self._timings[: min(self._n_timings, len(self._timings))]
            p50, p99 = np.percentile(t, [50, 99])
            s["p50_us"], s["p99_us"], s["max_us"] = p50, p99, t.max()

    def should_run(self) -> bool:
        """False once TERM arrived, the supervisor asked for shutdown, or the supervisor died
        (we were re-parented): an orphan must not keep writing into an abandoned table."""
        return not (self.stopping or self.shared.control.shutdown or os.getppid() != self.parent)

    def sleep_until(self, deadline: float) -> None:
        """Sleep until a time.monotonic() deadline in short steps, staying responsive to TERM."""
        while self.should_run():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def event_now_ns(self) -> int:
        """The feed clock (event time) now, as anchored by the supervisor in the control block."""
        return self.shared.control.event_time_ns(time.time_ns())


def run_child(name: str, slot: int, main: Callable[[Context], None]) -> int:
    """Attach, run `main(ctx)` until stopped, mark the slot; returns the exit code."""
    setup_logging(f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s")
    try:
        settings = read_child_settings()
        from shm.platform import check_memory_model

        check_memory_model()
        shared = Shared.attach(settings.instance)
    except Exception as exc:  # noqa: BLE001 - any boot failure is reported the same way
        log.error("cannot boot: %s", exc)
        return EXIT_CANNOT_BOOT
    ctx = Context(name, slot, settings, shared)

    def on_term(signum: int, frame: object) -> None:
        ctx.stopping = True  # only set a flag: the loop notices it on its next pass

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the supervisor, which sends TERM
    ctx.slot["pid"] = os.getpid()
    ctx.slot["state"] = STATE_STARTING
    ctx.slot["started_ns"] = time.time_ns()
    try:
        main(ctx)
    except BootError as exc:
        log.error("cannot boot: %s", exc)
        return EXIT_CANNOT_BOOT
    finally:
        ctx.slot["state"] = STATE_STOPPING
    return 0
