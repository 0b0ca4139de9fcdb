"""`scanner`: start, stop, status, demo, rules, replay, bench, migrate.

User errors (`ScannerError`, a bad setting, an instance already running) end in one line on
stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from cli.common import ConfigOpt, DataDirOpt, InstanceOpt, ScannerError, fail, settings_from
from procs.status import pid_alive
from scanner.config import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Real-time stock market scanner (shared-memory engine).")
SUPERVISOR_SETTINGS_ENV = "SCANNER_SUPERVISOR_SETTINGS"


def _setup_logging(logfile: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    logging.basicConfig(level=os.environ.get("SCANNER_LOG_LEVEL", "INFO"), handlers=handlers,
                        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")


def run_foreground(settings: Settings, on_ready: object = None) -> int:
    from procs.instance import SupervisorError
    from procs.supervisor import Supervisor
    from shm.platform import UnsupportedPlatform

    _setup_logging()
    try:
        return Supervisor(settings, on_ready=on_ready).run()
    except (SupervisorError, UnsupportedPlatform) as exc:
        raise ScannerError(str(exc)) from None


@app.command()
def start(
    config: ConfigOpt = None,
    instance: InstanceOpt = None,
    data_dir: DataDirOpt = None,
    foreground: Annotated[bool, typer.Option("--foreground", help="Stay in the foreground (systemd).")] = False,
    symbols: Annotated[Optional[int], typer.Option(help="Synthetic universe size.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Scanner processes (0 = cores).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Gateway HTTP port.")] = None,
) -> None:
    """Start an instance: supervisor plus all worker processes."""
    try:
        env_json = os.environ.pop(SUPERVISOR_SETTINGS_ENV, None)
        if env_json:
            settings = Settings.model_validate_json(env_json)
        else:
            settings = settings_from(config, instance, data_dir, symbols=symbols, scan_workers=workers,
                                     http_port=port)
        if foreground:
            raise typer.Exit(run_foreground(settings))
        daemonize(settings)
    except ScannerError as exc:
        fail(str(exc))


def daemonize(settings: Settings) -> None:
    """Start the supervisor detached (own session, output to the log file), wait until it
    is up or has failed, and say which."""
    from procs.instance import read_pid

    run_dir = settings.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    pid = read_pid(settings.pidfile())
    if pid and pid_alive(pid):
        raise ScannerError(f"instance {settings.instance!r} is already running (pid {pid})")
    log = open(settings.logfile(), "ab")
    env = dict(os.environ)
    env[SUPERVISOR_SETTINGS_ENV] = settings.model_dump_json()
    proc = subprocess.Popen([sys.executable, "-m", "cli.app", "start", "--foreground"], env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    from procs.status import collect

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = settings.logfile().read_text(errors="replace").splitlines()[-5:]
            raise ScannerError(f"supervisor exited with code {proc.returncode}: {' | '.join(tail)}")
        try:
            st = collect(settings)
            if st["processes"] and all(p["alive"] and p["state"] == "running" for p in st["processes"]):
                typer.echo(f"instance {settings.instance!r} started (supervisor pid {proc.pid}); "
                           f"dashboard http://{settings.http_host}:{settings.http_port}/ ; "
                           f"log {settings.logfile()}")
                return
        except FileNotFoundError:
            pass
        time.sleep(0.2)
    raise ScannerError(f"instance did not come up within 60 s; see {settings.logfile()}")


@app.command()
def stop(config: ConfigOpt = None, instance: InstanceOpt = None, data_dir: DataDirOpt = None) -> None:
    """Stop a running instance cleanly (TERM; the supervisor stops its children)."""
    from procs.instance import read_pid

    try:
        settings = settings_from(config, instance, data_dir)
        pid = read_pid(settings.pidfile())
        if not pid or not pid_alive(pid):
            raise ScannerError(f"instance {settings.instance!r} is not running")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + settings.stop_timeout_s + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            raise ScannerError(f"supervisor pid {pid} did not stop within the deadline")
        typer.echo(f"instance {settings.instance!r} stopped")
    except ScannerError as exc:
        fail(str(exc))


@app.command()
def status(
    config: ConfigOpt = None,
    instance: InstanceOpt = None,
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Per-process pid, uptime, heartbeat age, core, rates, scan timings, drops, memory (RSS,
    private, shared); the size of each shared-memory segment."""
    from procs.status import collect

    try:
        settings = settings_from(config, instance, data_dir)
        try:
            st = collect(settings)
        except FileNotFoundError as exc:
            raise ScannerError(str(exc)) from None
    except ScannerError as exc:
        fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(st))
        return
    typer.echo(f"instance {st['instance']}  supervisor pid {st['supervisor_pid']}  symbols {st['symbols']}  "
               f"day {st['trading_day']}  rules gen {st['rules_generation']}")
    typer.echo(f"ticks/s {st['ticks_per_s']:.0f}  scan p50 {st['scan_p50_ms']:.3f} ms  "
               f"p99 {st['scan_p99_ms']:.3f} ms  overruns {st['scan_overruns']}  "
               f"alerts/s {st['alerts_per_s']:.2f}  drops {st['drops']}  ring lost {st['ring_lost']}")
    hdr = f"{'process':<12}{'pid':>8}{'alive':>7}{'restarts':>9}{'uptime':>9}{'hb ms':>8}{'core':>5}" \
          f"{'in/s':>11}{'out/s':>10}{'drops':>7}{'p50 ms':>9}{'p99 ms':>9}{'rss MB':>9}{'priv MB':>9}{'shm MB':>9}"
    typer.echo(hdr)
    for p in st["processes"]:
        typer.echo(
            f"{p['name']:<12}{p['pid']:>8}{'yes' if p['alive'] else 'NO':>7}{p['restarts']:>9}"
            f"{(p['uptime_s'] or 0):>9.0f}{(p['heartbeat_age_ms'] or 0):>8.0f}"
            f"{'' if p['core'] is None else p['core']:>5}{p['rate_in']:>11.0f}{p['rate_out']:>10.0f}"
            f"{p['drops']:>7}{p['p50_ms']:>9.3f}{p['p99_ms']:>9.3f}"
            f"{p['rss_mb'] or 0:>9.1f}{p['private_mb'] or 0:>9.1f}{p['shared_mb'] or 0:>9.1f}"
        )
    mem = st["memory"]
    typer.echo(f"memory: {mem['private_mb']:.1f} MB private (sum over processes) + {mem['shared_mb']:.1f} MB "
               f"of segments = {mem['private_mb'] + mem['shared_mb']:.1f} MB")
    typer.echo("segments: " + "  ".join(f"{s['name'].split('.', 2)[-1]} {s['mb']:.1f} MB" for s in st["segments"]))


@app.command()
def demo(
    config: ConfigOpt = None,
    instance: InstanceOpt = None,
    data_dir: DataDirOpt = None,
    symbols: Annotated[Optional[int], typer.Option(help="Synthetic universe size.")] = None,
    rate: Annotated[Optional[float], typer.Option(help="Synthetic ticks per second.")] = None,
    port: Annotated[Optional[int], typer.Option(help="Gateway HTTP port.")] = None,
) -> None:
    """Run everything in the foreground on a synthetic feed; Ctrl-C stops it cleanly."""
    try:
        settings = settings_from(config, instance, data_dir, feed="synthetic", symbols=symbols,
                                 feed_rate=rate, http_port=port)

        def ready() -> None:
            typer.echo(f"\n  dashboard: http://{settings.http_host}:{settings.http_port}/\n"
                       f"  status:    scanner status --instance {settings.instance} "
                       f"--data-dir {settings.data_dir}\n  Ctrl-C stops everything.\n", err=True)

        raise typer.Exit(run_foreground(settings, on_ready=ready))
    except ScannerError as exc:
        fail(str(exc))


from cli import bench as _bench  # noqa: E402  (sub-apps register after the commands above)
from cli import rules as _rules  # noqa: E402

app.add_typer(_bench.app, name="bench")
app.add_typer(_rules.app, name="rules")

from cli.replay import replay_command  # noqa: E402

app.command("replay")(replay_command)


from cli.storage import archive_command, migrate_command  # noqa: E402

app.command("migrate")(migrate_command)
app.command("archive")(archive_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
