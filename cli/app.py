"""`scanner`: start, stop, status, demo, rules, replay, backtest, bench, migrate, archive.

User errors (`ScannerError`, a bad setting, an instance already running) end in one line on
stderr and exit code 1 through `cli.common.guard`, never a traceback. Every command imports the
engine inside its body, so `status`, `stop` and `rules list` start without numpy, numba,
FastAPI, redis or psycopg.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cli.backtest import backtest_command
from cli.bench import app as bench_app
from cli.common import (
    SUPERVISOR_SETTINGS_ENV,
    ConfigOpt,
    DataDirOpt,
    InstanceOpt,
    JsonOpt,
    PortOpt,
    ScannerError,
    SymbolsOpt,
    WorkersOpt,
    ensure_stopped,
    fail,
    guard,
    launch_supervisor,
    quick_paths,
    running_pid,
    settings_from,
    table,
)
from cli.kafka import feed_bridge_command
from cli.replay import replay_command
from cli.rules import app as rules_app
from cli.soak import soak_command
from cli.storage import archive_command, migrate_command

if TYPE_CHECKING:
    from scanner.config import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Real-time stock market scanner (shared-memory engine).")


def _setup_logging() -> None:
    from procs.runtime import setup_logging  # every handler redacts secrets in URLs

    setup_logging("%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s", [logging.StreamHandler(sys.stderr)])


def run_foreground(settings: Settings, on_ready: object = None) -> int:
    """Run the supervisor in this process until it stops; its exit code (EXIT_CANNOT_BOOT, 3, when
    restarting cannot help: an unsupported platform, or a child that cannot boot)."""
    from procs.runtime import EXIT_CANNOT_BOOT, prepare_numba_cache, private_data_dir

    private_data_dir(settings)  # umask 077: nothing the instance writes is world-readable
    prepare_numba_cache(settings)  # before anything imports numba
    from procs.supervisor import Supervisor
    from shm.platform import UnsupportedPlatform

    _setup_logging()
    try:
        return Supervisor(settings, on_ready=on_ready).run()
    except UnsupportedPlatform as exc:
        fail(str(exc), EXIT_CANNOT_BOOT)


@app.command()
def start(
    config: ConfigOpt = None,
    instance: InstanceOpt = None,
    data_dir: DataDirOpt = None,
    foreground: Annotated[bool, typer.Option("--foreground", help="Stay in the foreground (systemd).")] = False,
    symbols: SymbolsOpt = None,
    workers: WorkersOpt = None,
    port: PortOpt = None,
    feed: Annotated[Optional[str], typer.Option(
        help="Market data: synthetic, alpaca or polygon (keys from SCANNER_ALPACA_KEY_ID / "
             "SCANNER_ALPACA_SECRET_KEY or SCANNER_POLYGON_API_KEY).")] = None,
) -> None:
    """Start an instance: supervisor plus all worker processes."""
    with guard():
        settings_file = os.environ.pop(SUPERVISOR_SETTINGS_ENV, None)
        try:
            if settings_file:  # from `launch_supervisor`: a 0600 file, secrets never in the environment
                from procs.runtime import read_settings_file

                settings = read_settings_file(Path(settings_file))
            else:
                settings = settings_from(config, instance, data_dir, symbols=symbols, scan_workers=workers,
                                         http_port=port, feed=feed)
        except ScannerError as exc:
            if foreground:  # bad configuration: EXIT_CANNOT_BOOT, so systemd does not restart in a loop
                from procs.runtime import EXIT_CANNOT_BOOT

                fail(str(exc), EXIT_CANNOT_BOOT)
            raise
        if foreground:
            raise typer.Exit(run_foreground(settings))
        daemonize(settings)


START_WAIT_S = 60.0  # from the children's start to all of them running
WARM_WAIT_S = 900.0  # for the supervisor's set-up and kernel warm-up (a cold numba cache compiles)


def daemonize(settings: Settings) -> None:
    """Start the supervisor detached (own session, output to the log file), wait until it
    is up or has failed, and say which."""
    from procs.instance import process_names
    from procs.status import collect

    ensure_stopped(settings)
    expected = {"supervisor", *process_names(settings)}
    proc, _ = launch_supervisor(settings)
    t0 = time.monotonic()
    children_seen = 0.0  # when the supervisor first listed its children (after the kernel warm-up)
    told = False
    while True:
        now = time.monotonic()
        if proc.poll() is not None:
            tail = settings.logfile().read_text(errors="replace").splitlines()[-5:]
            raise ScannerError(f"supervisor exited with code {proc.returncode}: {' | '.join(tail)}")
        try:
            st = collect(settings)
        except FileNotFoundError:
            st = {"processes": []}
        if [p for p in st["processes"] if p["name"] != "supervisor"]:
            children_seen = children_seen or now
            running = {p["name"] for p in st["processes"] if p["alive"] and p["state"] == "running"}
            if expected <= running:
                typer.echo(f"instance {settings.instance!r} started (supervisor pid {proc.pid}); "
                           f"dashboard http://{settings.http_host}:{settings.http_port}/ ; "
                           f"log {settings.logfile()}")
                return
            if now - children_seen > START_WAIT_S:
                raise ScannerError(f"instance did not come up within {START_WAIT_S:.0f} s of starting its "
                                   f"processes; see {settings.logfile()}")
        elif now - t0 > WARM_WAIT_S:
            raise ScannerError(f"the supervisor did not start its processes within {WARM_WAIT_S:.0f} s; "
                               f"see {settings.logfile()}")
        elif now - t0 > 5 and not told:
            typer.echo("compiling the numba kernels (the first start after an install or upgrade takes a "
                       "minute or more) ...")
            told = True
        time.sleep(0.2)


@app.command()
def stop(config: ConfigOpt = None, instance: InstanceOpt = None, data_dir: DataDirOpt = None) -> None:
    """Stop a running instance cleanly (TERM; the supervisor stops its children)."""
    from procs.status import live_pid, pid_alive

    quick = quick_paths(config, instance, data_dir)
    if quick is not None and not live_pid(quick.pidfile()):
        fail(f"instance {quick.instance!r} is not running")  # answered without loading the settings
    with guard():
        settings = settings_from(config, instance, data_dir)
        pid = running_pid(settings)
        if not pid:
            raise ScannerError(f"instance {settings.instance!r} is not running")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + settings.stop_timeout_s + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            raise ScannerError(f"supervisor pid {pid} did not stop within the deadline")
    typer.echo(f"instance {settings.instance!r} stopped")


@app.command()
def status(
    config: ConfigOpt = None,
    instance: InstanceOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
    every_host: Annotated[bool, typer.Option("--all", help="Every host of the cluster (registry in Redis).")] = False,
) -> None:
    """Per-process pid, uptime, heartbeat age, core, rates, scan timings, drops, memory (RSS,
    private, shared); the size of each shared-memory segment."""
    from procs.status import collect, require_control

    if every_host:
        with guard():
            settings = settings_from(config, instance, data_dir)
        return cluster_status(settings, as_json)
    quick = quick_paths(config, instance, data_dir)
    if quick is not None:
        try:
            require_control(quick.instance)
        except FileNotFoundError as exc:
            fail(str(exc))  # answered without loading the settings
    with guard():
        settings = settings_from(config, instance, data_dir)
        try:
            st = collect(settings)
        except FileNotFoundError as exc:
            raise ScannerError(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(st))
        return
    typer.echo(f"instance {st['instance']}  supervisor pid {st['supervisor_pid']}  symbols {st['symbols']}  "
               f"day {st['trading_day']}  rules gen {st['rules_generation']}")
    typer.echo(f"ticks/s {st['ticks_per_s']:.0f}  scan p50 {st['scan_p50_ms']:.3f} ms  "
               f"p99 {st['scan_p99_ms']:.3f} ms  overruns {st['scan_overruns']}  "
               f"alerts/s {st['alerts_per_s']:.2f}  drops {st['drops']}  ring lost {st['ring_lost']}")
    feed = st.get("feed")
    if feed and (feed["connects"] or feed["disconnects"]):  # a live vendor feed
        typer.echo(f"feed {'connected' if feed['connected'] else 'DISCONNECTED'}  disconnects {feed['disconnects']}  "
                   f"seconds lost {feed['seconds_lost']:.1f}  repaired bars {feed['repaired_bars']}  "
                   f"malformed {feed['malformed']}  corrections {feed['corrections']} "
                   f"({feed['corrections_applied']} applied)  halts {feed['halts']}")
    columns = ("process", "pid", "alive", "restarts", "uptime s", "hb ms", "core", "in/s", "out/s", "drops",
               "p50 ms", "p99 ms", "rss MB", "priv MB", "shm MB")
    table(columns, ([p["name"], p["pid"], "yes" if p["alive"] else "NO", p["restarts"], f"{p['uptime_s'] or 0:.0f}",
                     f"{p['heartbeat_age_ms'] or 0:.0f}", p["core"], f"{p['rate_in']:.0f}", f"{p['rate_out']:.0f}",
                     p["drops"], f"{p['p50_ms']:.3f}", f"{p['p99_ms']:.3f}", f"{p['rss_mb'] or 0:.1f}",
                     f"{p['private_mb'] or 0:.1f}", f"{p['shared_mb'] or 0:.1f}"] for p in st["processes"]),
          right=set(columns) - {"process", "alive"})
    mem = st["memory"]
    typer.echo(f"memory: {mem['private_mb']:.1f} MB private (sum over processes) + {mem['shared_mb']:.1f} MB "
               f"of segments = {mem['private_mb'] + mem['shared_mb']:.1f} MB")
    typer.echo("segments: " + "  ".join(f"{s['name'].split('.', 2)[-1]} {s['mb']:.1f} MB" for s in st["segments"]))


def cluster_status(settings: Settings, as_json: bool) -> None:
    """`status --all`: every registered host, a missing or stale one marked."""
    with guard():
        if not settings.redis_url:
            raise ScannerError("status --all reads the host registry: set redis_url")
        import redis

        from procs.registry import Registry
        from scanner.config import reveal

        reg = Registry(reveal(settings.redis_url) or "", settings.registry_ttl_s)
        try:
            hosts = reg.hosts()
        except (redis.RedisError, OSError) as exc:
            raise ScannerError(f"cannot read the host registry: {exc}") from None
        finally:
            reg.close()
    if as_json:
        typer.echo(json.dumps({"hosts": hosts}))
        return
    from procs.registry import ownership_text

    columns = ("instance", "state", "host", "range", "symbols", "ticks/s", "scan p99 ms", "rules gen", "version",
               "age s", "owns")
    table(columns, ([h["instance"], h["state"] if h["state"] == "ok" else h["state"].upper(), h.get("host", ""),
                     f"{h['range_start']}:{h['range_end']}" if "range_start" in h else "",
                     f"{h.get('first_symbol', '')}..{h.get('last_symbol', '')}" if "range_start" in h else "",
                     f"{h.get('ticks_per_s', 0):.0f}", f"{h.get('scan_p99_ms', 0):.3f}", h.get("rules_generation", ""),
                     h.get("version", ""), h.get("age_s") if h.get("age_s") is not None else "",
                     ownership_text(h)] for h in hosts),
          right={"ticks/s", "scan p99 ms", "rules gen", "age s"})


@app.command()
def demo(
    config: ConfigOpt = None,
    instance: InstanceOpt = None,
    data_dir: DataDirOpt = None,
    symbols: SymbolsOpt = None,
    rate: Annotated[Optional[float], typer.Option(
        help="Synthetic ticks per second, session average (the open runs ~2.7x faster).")] = 8000.0,
    preopen: Annotated[float, typer.Option(
        help="Start this many seconds before the open of the latest weekday (0: now, or at the open).")] = 180.0,
    port: PortOpt = None,
) -> None:
    """Run everything in the foreground on a synthetic market that opens a few minutes after
    the start, with a synthetic history (average volumes, gaps); Ctrl-C stops it cleanly."""
    with guard():
        settings = settings_from(config, instance, data_dir, feed="synthetic", symbols=symbols,
                                 feed_rate=rate, http_port=port, feed_preopen_s=preopen)

        def ready() -> None:
            typer.echo(f"\n  dashboard: http://{settings.http_host}:{settings.http_port}/\n"
                       f"  status:    scanner status --instance {settings.instance} "
                       f"--data-dir {settings.data_dir}\n  Ctrl-C stops everything.\n", err=True)

        raise typer.Exit(run_foreground(settings, on_ready=ready))


# Sub-apps and commands of their own modules, registered after the commands above.
app.add_typer(bench_app, name="bench")
app.add_typer(rules_app, name="rules")
app.command("replay")(replay_command)
app.command("backtest")(backtest_command)
app.command("feed-bridge")(feed_bridge_command)
app.command("migrate")(migrate_command)
app.command("archive")(archive_command)
app.command("soak")(soak_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
