"""`scanner backtest --rules FILE.json DAYS...`: what each rule would have caught, and was it worth it.

The days (files, or folders of them) are checked first: a damaged or unreadable file is set
aside and counted, the rest is replayed in day order through the real pipeline as one replay
instance (`cli.replay`: scans on event time, the day rolls between days, reference data per
day). While it runs, `procs.backtest.Collector` scores each completed day's alerts from the
replay's own bars and drops the day's bars, so memory holds one day at a time. Ctrl-C stops
the replay cleanly and still writes what was scored (the last, partial day with the horizons
its data covers). Output: a table on the terminal, the files in `--out` (alerts with their
returns and the statistics as Parquet, a self-contained HTML report, the summary JSON) and the
summary as one JSON object on the last line.
"""

from __future__ import annotations

import json
import signal
import time
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
    table,
)
from cli.replay import (
    REPLAY_ALERT_RING,
    STOP_SIGNALS,
    DataDirOpt,
    InstanceOpt,
    _interrupt,
    _log_reason,
    _Progress,
    _stop,
    expand,
    hold_signals,
    restore_signals,
)

if TYPE_CHECKING:
    from scanner.config import Settings

DEFAULT_INSTANCE = "backtest"
DEFAULT_DATA_DIR = Path("var/backtest")
DEFAULT_OUT = Path("backtest-report")


def backtest_command(
    days: Annotated[list[str], typer.Argument(
        help="Recorded days: trade files or folders of them (Lean zips, DBN, CSV); replayed in day order.",
        show_default=False)],
    rules: Annotated[Path, typer.Option("--rules", help="Rules file (JSON list of rules).", show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for report.html, alerts.parquet, stats.parquet, summary.json.")
                   ] = DEFAULT_OUT,
    symbols: Annotated[Optional[str], typer.Option(help="Only these symbols, comma-separated.")] = None,
    daily: Annotated[Optional[Path], typer.Option(
        help="Lean daily/ folder for previous close and average volume (default: next to Lean tick files).")] = None,
    scan_interval: Annotated[Optional[int], typer.Option(
        "--scan-interval-ms", help="Scan cadence in event time (default: the configured scan_interval_ms).")] = None,
    batch: Annotated[Optional[int], typer.Option(help="Ticks per decoded batch.")] = None,
    workers: WorkersOpt = None,
    charts: Annotated[int, typer.Option(help="Price charts per rule (most-alerted symbols).")] = 3,
    serve: Annotated[bool, typer.Option(
        "--serve/--no-serve", help="Also run the publisher and a gateway (to watch the replay in the dashboard); "
                                   "the scores never need them.")] = False,
    port: Annotated[Optional[int], typer.Option(help="Gateway HTTP port with --serve (default: any free port).")] = 0,
    config: ConfigOpt = None,
    instance: InstanceOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Replay recorded days with a rules file; forward returns per rule, a table and an HTML report."""
    from scanner.backtest.inputs import parse_rules_file, sort_days

    with guard():
        try:
            rule_list = parse_rules_file(rules.read_text(), str(rules))
        except OSError as exc:
            raise ScannerError(f"cannot read the rules file: {exc}") from None
        except ValueError as exc:
            raise ScannerError(str(exc)) from None
        files, skipped, day_list = sort_days(expand(days))
        for f, why in skipped:
            typer.echo(f"skipping damaged day file {f}: {why}", err=True)
        if not files:
            raise ScannerError("no readable day files")
        settings = settings_from(
            config, instance or DEFAULT_INSTANCE, data_dir or DEFAULT_DATA_DIR, feed="replay",
            replay_files=[str(p) for p in files], replay_max=True, replay_daily=daily, replay_batch=batch,
            replay_symbols=[s.strip() for s in symbols.split(",") if s.strip()] if symbols else None,
            http_port=gateway_port(port, 0), scan_workers=workers, scan_interval_ms=scan_interval, serve=serve,
        )
        settings = settings.model_copy(update={"redis_url": None, "database_url": None, "clickhouse_url": None,
                                               "s3_bucket": None, "alert_ring_capacity": max(
                                                   settings.alert_ring_capacity, REPLAY_ALERT_RING)})
        code = run_backtest(settings, rule_list, out, skipped=skipped, days=day_list, charts=charts)
    raise typer.Exit(code)


def run_backtest(settings: Settings, rule_list: list, out: Path, *, skipped: list[tuple[str, str]],
                 days: list[int], charts: int = 3) -> int:
    """Replay, score, write and print; 0, or 130 after an interruption (results written anyway)."""
    from procs.backtest import Collector
    from procs.ingest_replay import report_path
    from procs.replay import ReplayWatch, read_report
    from scanner.feeds.replay import estimate_rows, spec_from_settings

    spec = spec_from_settings(settings)  # ReplayError: a user error (`guard`)
    ensure_stopped(settings, "; stop it or pass --instance")
    settings.run_dir().mkdir(parents=True, exist_ok=True)
    settings.rules_file().write_text(json.dumps([r.dump() for r in rule_list]))  # the replay's rule store
    report_path(settings).unlink(missing_ok=True)
    t0 = time.monotonic()
    proc, log_from = launch_supervisor(settings)
    watch: ReplayWatch | None = None
    collector: Collector | None = None
    interrupted, error = False, None
    snap = None
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        with _Progress(estimate_rows(spec)) as bar:
            while True:
                if proc.poll() is not None:
                    raise ScannerError(f"the replay instance stopped (exit code {proc.returncode}): "
                                       f"{_log_reason(settings.logfile(), log_from)}")
                if watch is None:
                    watch = ReplayWatch.attach(settings.instance)
                    if watch is not None:
                        collector = Collector(rule_list, watch.symbols(), charts_per_rule=charts)
                if watch is not None and collector is not None:
                    snap = watch.poll()
                    collector.add(*watch.take())
                    bar.update(snap)
                    if watch.finished(snap):
                        break
                time.sleep(0.1)
    except KeyboardInterrupt:
        interrupted = True
        typer.echo(f"interrupted: stopping the replay instance {settings.instance!r}; writing partial results",
                   err=True)
    except ScannerError as exc:
        error = str(exc)
    finally:
        held = hold_signals()  # until the instance is stopped: a second Ctrl-C must not orphan it
        data_end, alerts_lost = None, 0
        try:
            if watch is not None and collector is not None:
                try:
                    snap = watch.poll()
                    collector.add(*watch.take())
                    data_end = snap.event_ns if interrupted else None
                    alerts_lost = watch.alerts_lost()
                finally:
                    watch.close()  # unmaps the segments: nothing of `watch` may be read after this
        finally:
            rc = _stop(proc, settings)
            restore_signals(held, previous)
    if collector is None:
        raise ScannerError(error or "the replay instance never came up")
    collector.finish(data_end)
    report = read_report(settings) or {}
    meta = {"days": days, "days_scored": collector.days, "files_skipped": len(skipped),
            "ticks": snap.ticks if snap else 0, "bars": snap.bars if snap else 0,
            "alerts_lost": alerts_lost, "malformed": int(report.get("malformed", 0)),
            "interrupted": interrupted, "error": error, "exit_code": rc,
            "duration_s": round(time.monotonic() - t0, 3), "scan_interval_ms": settings.scan_interval_ms}
    summary = write_outputs(out, rule_list, collector, meta, skipped)
    print_table(summary)
    typer.echo(json.dumps(summary))
    if error:
        raise ScannerError(error)
    return 130 if interrupted else 0


def write_outputs(out: Path, rule_list: list, collector: Any, meta: dict, skipped: list[tuple[str, str]]) -> dict:
    """alerts.parquet, stats.parquet, report.html, summary.json in `out`; returns the summary."""
    import numpy as np  # here, not at the top: the CLI starts without numpy (tests/cli/test_common.py)

    from scanner.alert_table import write_table
    from scanner.backtest.report import render
    from scanner.backtest.returns import BUCKET_NAMES
    from scanner.backtest.stats import cumulative_by_day, rule_stats, stats_rows

    out.mkdir(parents=True, exist_ok=True)
    cols = collector.columns()
    ids = [r.id for r in rule_list]
    stats = rule_stats(cols, ids)
    table = dict(cols)
    table["rule"] = np.array([ids[i] if i < len(ids) else "?" for i in cols["rule"].tolist()], dtype=object)
    table["symbol"] = np.array([collector.symbols[i] for i in cols["symbol"].tolist()], dtype=object)
    table["bucket"] = np.array([BUCKET_NAMES[i] if i >= 0 else "overnight" for i in cols["bucket"].tolist()],
                               dtype=object)
    table["side"] = np.array([rule_list[i].side if i < len(rule_list) else "?" for i in cols["rule"].tolist()],
                             dtype=object)
    write_table(out / "alerts.parquet", table)
    rows = stats_rows(stats)
    write_table(out / "stats.parquet", {k: np.array(v, dtype=object if k in ("rule", "group", "horizon") else float)
                                        for k, v in rows.items()})
    cum = cumulative_by_day(cols, len(ids), collector.days)
    html = render({**meta, "rules": len(ids), "alerts scored": len(cols["rule"])},
                  [{"id": r.id, "name": r.name, "side": r.side} for r in rule_list], stats, cols, collector.days,
                  cum, collector.charts)
    (out / "report.html").write_text(html)
    summary = {**meta, "skipped_files": [list(s) for s in skipped], "alerts": int(len(cols["rule"])),
               "rules": stats, "out": {"report": str(out / "report.html"), "alerts": str(out / "alerts.parquet"),
                                       "stats": str(out / "stats.parquet")}}
    (out / "summary.json").write_text(json.dumps(summary))
    return summary


def print_table(summary: dict) -> None:
    """One row per rule (all times of day): the headline numbers."""
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:+.2f}%"

    def hit(s: dict, h: str) -> str:
        return "-" if s[h]["hit_rate"] is None else f"{100 * s[h]['hit_rate']:.0f}%"

    cols = ("rule", "alerts", "symbols", "hit 5m", "mean 5m", "hit 30m", "mean 30m", "median 30m", "mean close",
            "MFE 30m", "MAE 30m")
    rows = [(rid, s["alerts"], s["symbols"], hit(s, "5m"), pct(s["5m"]["mean"]), hit(s, "30m"), pct(s["30m"]["mean"]),
             pct(s["30m"]["median"]), pct(s["close"]["mean"]), pct(s["mfe_30m"]), pct(s["mae_30m"]))
            for rid, s in ((rid, groups["all"]) for rid, groups in summary["rules"].items())]
    table(cols, rows, right=cols[1:], title=f"backtest: {len(summary['days_scored'])} days, {summary['alerts']} "
          f"alerts" + (" (interrupted: partial)" if summary["interrupted"] else ""))
    if summary["skipped_files"]:
        typer.echo(f"{len(summary['skipped_files'])} damaged day files skipped")
