"""`scanner replay FILE...`: recorded trades through the whole pipeline, with progress and a summary.

The replay runs as an instance of its own (default name `replay`, data dir `var/replay`, HTTP
port 8701, so it can run beside a live instance): the supervisor is started by
`cli.common.launch_supervisor` (`python -m cli.app start --foreground`, settings in
`SCANNER_SUPERVISOR_SETTINGS`, feed "replay"), the command watches it
(`procs.replay.ReplayWatch`) until the feed is done and drained, prints the summary, then stops
it with TERM and waits for a clean exit. Ctrl-C stops it the same way.
"""

from __future__ import annotations

import glob
import json
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from cli.common import (
    ConfigOpt,
    ScannerError,
    WorkersOpt,
    ensure_stopped,
    gateway_port,
    guard,
    launch_supervisor,
    settings_from,
)

if TYPE_CHECKING:
    from scanner.config import Settings

DEFAULT_INSTANCE = "replay"
DEFAULT_DATA_DIR = Path("var/replay")
DEFAULT_PORT = 8701
SUFFIXES = (".zip", ".dbn", ".dbn.zst", ".csv", ".csv.gz")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# a replay's alerts are its result: ingest waits rather than let the command's consumer be lapped
# (procs.ingest_replay), but one scan of many symbols can raise more than a live-sized ring holds
REPLAY_ALERT_RING = 1 << 18
InstanceOpt = Annotated[Optional[str], typer.Option(
    "--instance", "-i", help=f"Instance name (default: '{DEFAULT_INSTANCE}').")]
DataDirOpt = Annotated[Optional[Path], typer.Option(
    "--data-dir", help=f"Data directory: pidfile, log, report (default: {DEFAULT_DATA_DIR}).")]


def replay_command(
    files: Annotated[list[str], typer.Argument(
        help="Trade files: Lean tick zips, Databento trades .dbn[.zst], CSV / vendor .csv.gz; "
             "globs and folders expand.", show_default=False)],
    speed: Annotated[Optional[float], typer.Option(help="Pace: event seconds per wall second (1 = real time).")] = None,
    max_speed: Annotated[bool, typer.Option("--max", help="As fast as the pipeline takes it.")] = False,
    symbols: Annotated[Optional[str], typer.Option(help="Only these symbols, comma-separated.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="auto, lean, dbn, csv or flat (vendor .csv.gz).")] = "auto",
    daily: Annotated[Optional[Path], typer.Option(
        help="Lean daily/ folder for previous close and average volume (default: next to Lean tick files).")] = None,
    symbol_col: Annotated[Optional[str], typer.Option(help="CSV: symbol column (default 'symbol').")] = None,
    ts_col: Annotated[Optional[str], typer.Option(help="CSV: timestamp column (default 'ts').")] = None,
    price_col: Annotated[Optional[str], typer.Option(help="CSV: price column (default 'price').")] = None,
    size_col: Annotated[Optional[str], typer.Option(help="CSV: size column (default 'size').")] = None,
    ts_unit: Annotated[Optional[str], typer.Option(help="CSV: auto, iso, s, ms, us or ns.")] = None,
    bars_out: Annotated[Optional[Path], typer.Option(help="Write every closed bar to this .npz or .csv file.")] = None,
    alerts_out: Annotated[Optional[Path], typer.Option(help="Write every alert to this .csv or .parquet file.")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Ticks per decoded batch (same alerts at any size).")] = None,
    scan_interval: Annotated[Optional[int], typer.Option(
        "--scan-interval-ms", help="Scan cadence in event time (default: the configured scan_interval_ms).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    port: Annotated[Optional[int], typer.Option(
        help=f"Gateway HTTP port (default {DEFAULT_PORT}; 0 = any free port).")] = None,
    workers: WorkersOpt = None,
    serve: Annotated[bool, typer.Option(
        "--serve/--no-serve", help="Run the publisher and the gateway (dashboard, REST, WebSocket); off: the "
                                   "replay only computes (alerts still go to --alerts-out and the summary).")] = True,
    sinks: Annotated[bool, typer.Option(
        "--sinks/--no-sinks", help="Keep the configured Redis/database/archive sinks (off: a replay stays local).")
    ] = False,
    config: ConfigOpt = None,
    instance: InstanceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Replay recorded trades through the full pipeline (ingest, bars, indicators, scanners, and with
    --serve the publisher and gateway)."""
    with guard():
        if speed is not None and max_speed:
            raise ScannerError("--speed and --max exclude each other")
        if bars_out is not None and bars_out.suffix not in (".npz", ".csv"):
            raise ScannerError(f"--bars-out must end in .npz or .csv, was {bars_out.name!r}")
        if alerts_out is not None and alerts_out.suffix not in (".csv", ".parquet"):
            raise ScannerError(f"--alerts-out must end in .csv or .parquet, was {alerts_out.name!r}")
        layout = {k: v for k, v in (("symbol", symbol_col), ("ts", ts_col), ("price", price_col),
                                    ("size", size_col), ("ts_unit", ts_unit)) if v}
        settings = settings_from(
            config, instance or DEFAULT_INSTANCE, data_dir or DEFAULT_DATA_DIR, feed="replay",
            replay_files=[str(p) for p in expand(files)], replay_max=max_speed or None, replay_speed=speed,
            replay_format=fmt, replay_daily=daily, replay_csv_layout=layout or None,
            replay_symbols=[s.strip() for s in symbols.split(",") if s.strip()] if symbols else None,
            http_port=gateway_port(port, DEFAULT_PORT), scan_workers=workers, replay_batch=batch,
            scan_interval_ms=scan_interval, serve=serve,
        )
        settings = settings.model_copy(update={"alert_ring_capacity": max(settings.alert_ring_capacity,
                                                                           REPLAY_ALERT_RING)})
        if not sinks:  # a replay of old data must not publish alerts or write bars to live systems
            settings = settings.model_copy(update={"redis_url": None, "database_url": None, "clickhouse_url": None,
                                                   "s3_bucket": None})
        code = run_replay(settings, bars_out=bars_out, alerts_out=alerts_out, as_json=as_json)
    raise typer.Exit(code)


def expand(args: list[str]) -> list[Path]:
    """Files named, matched by a glob, or found (by suffix) under a folder; absolute paths."""
    out: list[Path] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(SUFFIXES))
        elif not p.exists() and any(c in a for c in "*?["):
            found = [Path(f) for f in sorted(glob.glob(a, recursive=True)) if Path(f).is_file()]
        else:
            found = [p]
        if not found:
            raise ScannerError(f"no replay files match {a!r}")
        out += found
    return [f.resolve() for f in out]


def run_replay(settings: Settings, *, bars_out: Path | None = None, alerts_out: Path | None = None,
               as_json: bool = False) -> int:
    """Start the replay instance, follow it to the end, print the summary, stop it; exit code."""
    from procs.eventtime import event_mode
    from procs.ingest_replay import report_path
    from procs.replay import read_report
    from scanner.feeds.replay import estimate_rows, spec_from_settings

    spec = spec_from_settings(settings)  # ReplayError: a user error (`guard`)
    ensure_stopped(settings, "; stop it or pass --instance")
    settings.run_dir().mkdir(parents=True, exist_ok=True)
    report_path(settings).unlink(missing_ok=True)
    t0 = time.monotonic()
    proc, log_from = launch_supervisor(settings)
    watch = None
    interrupted = False
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        total = estimate_rows(spec)
        with _Progress(total) as bar:
            while True:
                if proc.poll() is not None:
                    raise ScannerError(f"the replay instance stopped (exit code {proc.returncode}): "
                                       f"{_log_reason(settings.logfile(), log_from)}")
                if watch is None:
                    from procs.replay import ReplayWatch

                    watch = ReplayWatch.attach(settings.instance)
                if watch is not None:
                    snap = watch.poll()
                    bar.update(snap)
                    if watch.finished(snap):
                        break
                time.sleep(0.1)
            if not event_mode(settings):
                # wall-clock scans: one more scan cycle, so the scanners see the final state of the
                # day. On event time (every replay) nothing is due: ingest says "feed done" only
                # after every scan worker scanned the last boundary (procs.ingest_replay.finish),
                # and their alerts are in the rings the watcher drains below.
                deadline = time.monotonic() + settings.scan_interval_ms / 1000 + 0.2
                while time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.05)
            snap = watch.poll()
            bar.update(snap, final=True)
        report = read_report(settings) or {}
        summary = _summary(settings, snap, report, watch.n_collected, watch.bars_lost(), time.monotonic() - t0)
        if bars_out is not None:
            from procs.replay import write_bars

            write_bars(bars_out, watch.bars(), watch.symbols())
            summary["bars_out"] = str(bars_out)
        summary["alerts_lost"] = watch.alerts_lost()
        if alerts_out is not None:
            from procs.replay import write_alerts

            summary["alerts_written"] = write_alerts(alerts_out, watch.alerts(), watch.symbols(), settings)
            summary["alerts_out"] = str(alerts_out)
    except KeyboardInterrupt:
        interrupted = True
        typer.echo(f"interrupted: stopping the replay instance {settings.instance!r}", err=True)
    finally:
        held = hold_signals()
        try:
            if watch is not None:
                watch.close()
        finally:
            rc = _stop(proc, settings)
            restore_signals(held, previous)
    if interrupted:
        return 130
    summary["exit_code"] = rc
    _print_summary(summary, as_json)
    if rc != 0:
        raise ScannerError(f"the replay instance did not stop cleanly (exit code {rc}); "
                           f"see {settings.logfile()}")
    return 0


_UNWINDING: list[int] = []  # the signal whose KeyboardInterrupt is unwinding (until `restore_signals`)


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C, TERM or HUP to this command: stop the replay, once. Every stop signal is ignored
    from here on (`hold_signals`), and one that was already on its way when this handler ran is
    not raised again: a second KeyboardInterrupt raised while the first unwinds (before the
    `finally` that stops the instance holds the signals) killed the command there, exit -2, with
    the pipeline left running."""
    hold_signals()
    if not _UNWINDING:
        _UNWINDING.append(signum)
        raise KeyboardInterrupt


def hold_signals() -> dict[int, Any]:
    """Ignore Ctrl-C, TERM and HUP from now until `restore_signals`: the span in which this
    command takes its last results and stops its instance. The supervisor runs in a session of
    its own, so a second Ctrl-C that killed the command in that span left the whole pipeline
    running with nothing to stop it. Returns the handlers to put back."""
    return {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, *STOP_SIGNALS)}


def restore_signals(held: dict[int, Any], previous: dict[int, Any]) -> None:
    """Put back the handlers from before the command installed its own (`previous` wins over
    what `hold_signals` found, which were the command's)."""
    for sig, handler in {**held, **previous}.items():
        signal.signal(sig, handler)
    _UNWINDING.clear()


def _stop(proc: subprocess.Popen, settings: Settings) -> int:
    """TERM, wait until the stop deadline, KILL if need be (callers hold the signals meanwhile,
    `hold_signals`)."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=settings.stop_timeout_s + 15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _log_reason(logfile: Path, start: int) -> str:
    """The last error line the instance logged in this run."""
    try:
        with open(logfile, "rb") as f:
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return f"see {logfile}"
    errors = [ln for ln in lines if " ERROR " in ln or ln.startswith("error:")]
    last = (errors[-1] if errors else (lines[-1] if lines else "no output")).strip()
    return last.removeprefix("error:").strip() + f" (log {logfile})"


def _fmt_ns(ns: int | None) -> str:
    from scanner.session import NY

    if not ns:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, NY).strftime("%Y-%m-%d %H:%M:%S")


def _summary(settings: Settings, snap: Any, report: dict, collected: int, lost: int, duration: float) -> dict:
    feed_s = max(0.0, (report.get("wall_done_ns", 0) - report.get("wall_start_ns", 0)) / 1e9)
    return {
        "instance": settings.instance, "files": len(settings.replay_files),
        "ticks": snap.ticks, "bars": snap.bars, "alerts": snap.alerts,
        "malformed": int(report.get("malformed", snap.malformed)), "skipped": int(report.get("skipped", 0)),
        "dropped": snap.dropped, "late_ticks": snap.late, "bars_collected": collected, "bars_lost": lost,
        "first_event": _fmt_ns(report.get("first_event_ns")), "last_event": _fmt_ns(report.get("last_event_ns")),
        "duration_s": round(duration, 3), "feed_s": round(feed_s, 3),
        "ticks_per_s": round(snap.ticks / feed_s) if feed_s > 0 else None,
        "bad_lines": report.get("bad_lines", []), "error": report.get("error"),
    }


def _print_summary(s: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(s))
        return
    rate = f"{s['ticks_per_s']:,} ticks/s" if s["ticks_per_s"] else "-"
    typer.echo(f"replay {s['instance']}: {s['files']} files, {s['first_event']} .. {s['last_event']} New York")
    typer.echo(f"  ticks      {s['ticks']:>12,}  ({s['dropped']} dropped, {s['skipped']} skipped, "
               f"{s['late_ticks']} late)")
    typer.echo(f"  bars       {s['bars']:>12,}")
    typer.echo(f"  alerts     {s['alerts']:>12,}")
    typer.echo(f"  malformed  {s['malformed']:>12,}  rows")
    typer.echo(f"  duration   {s['duration_s']:>12.1f}  s (feed {s['feed_s']:.1f} s, {rate})")
    if s.get("alerts_out"):
        typer.echo(f"  alerts out {s['alerts_out']} ({s['alerts_written']:,} alerts, {s['alerts_lost']} lost)")
    if s.get("bars_out"):
        typer.echo(f"  bars out   {s['bars_out']} ({s['bars_collected']:,} bars, {s['bars_lost']} lost)")
    if s["error"]:
        typer.echo(f"  error      {s['error']}")
    for src, line, why in s["bad_lines"]:
        typer.echo(f"  {src}:{line}: {why}")
    if s["malformed"] > len(s["bad_lines"]):
        typer.echo(f"  ... {s['malformed'] - len(s['bad_lines'])} more malformed rows")


class _Progress:
    """A rich progress bar on stderr (only when it is a terminal): rows done of the estimate, the
    replayed time, the time left (also used by `scanner backtest`)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=console,
                                 disable=not console.is_terminal)
        self.task = self.progress.add_task("starting", total=total or None, info="")
        self.total = total

    def __enter__(self) -> _Progress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, snap: Any, final: bool = False) -> None:
        done = snap.ticks + snap.dropped + snap.malformed
        when = f"replay {_fmt_ns(snap.event_ns)} ET" if snap.event_ns else "starting"
        self.progress.update(
            self.task, completed=self.total if final and self.total else min(done, self.total or done),
            description=when, info=f"{snap.ticks:,} ticks {snap.bars:,} bars {snap.alerts:,} alerts")
