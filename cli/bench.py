"""`scanner bench NAME [--json]`: benchmarks that report ratios against a same-run baseline.

Each prints a human summary and, with --json, one JSON object on its last line (the keys the
issues name are a contract read by outside checks).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import JsonOpt, table

app = typer.Typer(no_args_is_help=True, help="Benchmarks (same-run baselines, medians).")

QuickOpt = Annotated[bool, typer.Option("--quick", help="Smaller sizes (smoke test).")]


@app.callback()
def _setup() -> None:
    """In-process benchmarks run the kernels with the malloc settings of the pipeline's
    processes (`procs.malloc`), as `procs.run` applies them."""
    from procs.malloc import tune_malloc

    tune_malloc()


def emit(result: dict, as_json: bool) -> None:
    """The result as one JSON object (the contract), or as a two-column table for people."""
    if as_json:
        typer.echo(json.dumps(result))
        return
    table(("result", "value"), result.items(), right={"value"})


@app.command()
def engine(as_json: JsonOpt = False, quick: QuickOpt = False) -> None:
    """Seqlock snapshot (10k x 32), tick ring (1 producer, 2 consumers), batched ingest."""
    from procs.bench.engine import bench_engine

    emit(bench_engine(quick=quick), as_json)


@app.command()
def feed(as_json: JsonOpt = False, quick: QuickOpt = False) -> None:
    """Alpaca and Polygon trade frames (1-1,000 trades each) decoded to tick columns vs stdlib json."""
    from procs.bench.feed import bench_feed

    emit(bench_feed(quick=quick), as_json)


@app.command()
def bars(
    as_json: JsonOpt = False,
    symbols: Annotated[int, typer.Option(help="Symbols in the table.")] = 10_000,
    ticks: Annotated[int, typer.Option(help="Ticks to aggregate.")] = 2_000_000,
    nautilus: Annotated[bool, typer.Option(help="Run nautilus_trader side by side when installed.")] = True,
) -> None:
    """Ticks/s through bar aggregation + live indicators, minute close time, nautilus_trader peer."""
    from procs.bench.bars import bench_bars

    emit(bench_bars(symbols=symbols, ticks=ticks, nautilus=nautilus), as_json)


@app.command()
def scan(
    as_json: JsonOpt = False,
    symbols: Annotated[int, typer.Option(help="Symbols in the table.")] = 10_000,
    rules: Annotated[int, typer.Option(help="Rules in the set.")] = 200,
) -> None:
    """Full scan: our compiled engine vs a pure-Python loop vs one polars select (same matches)."""
    from procs.bench.scan import bench_scan

    emit(bench_scan(symbols=symbols, rules=rules), as_json)


@app.command()
def fanout(
    as_json: JsonOpt = False,
    clients: Annotated[int, typer.Option(help="Concurrent WebSocket clients.")] = 500,
    seconds: Annotated[float, typer.Option(help="Measurement window.")] = 15.0,
    large: Annotated[int, typer.Option(help="Clients of the second run (latency_ms_p99_N); 0 = skip.")] = 2000,
    load_procs: Annotated[int, typer.Option(help="Load-generator processes; 0 = one per spare core.")] = 0,
    block_shares: Annotated[float, typer.Option(
        help="Steady load: a rule alerting on every print of this many shares or more; 0 = default pack only.",
    )] = 1500.0,
) -> None:
    """Scan match -> WebSocket client latency with N clients in separate load-generator
    processes, gateway CPU per delivery; publisher alerts/s into Redis."""
    from procs.bench.fanout import bench_fanout

    emit(bench_fanout(clients=clients, seconds=seconds, large=large, load_procs=load_procs,
                      block_shares=block_shares), as_json)


@app.command()
def storage(
    as_json: JsonOpt = False,
    symbols: Annotated[int, typer.Option(help="Bars per minute close.")] = 10_000,
    minutes: Annotated[int, typer.Option(help="Minute closes timed (median).")] = 20,
    s3_minutes: Annotated[int, typer.Option(help="Minutes of bars in the Parquet file sent to S3.")] = 120,
) -> None:
    """PostgreSQL COPY+upsert minute close, ClickHouse (chdb) rows/s, Parquet to S3 (moto) MB/s."""
    from procs.bench.storage import bench_storage

    emit(bench_storage(symbols=symbols, minutes=minutes, s3_minutes=s3_minutes), as_json)


@app.command()
def faults(
    as_json: JsonOpt = False,
    redis_s: Annotated[float, typer.Option(help="Seconds Redis stays stopped.")] = 30.0,
    pg_s: Annotated[float, typer.Option(help="Seconds PostgreSQL stays stopped.")] = 20.0,
    full_s: Annotated[float, typer.Option(help="Seconds the spool's file system stays full.")] = 10.0,
    symbols: Annotated[int, typer.Option(help="Synthetic universe size.")] = 1000,
    rate: Annotated[float, typer.Option(help="Synthetic ticks per second.")] = 20_000.0,
) -> None:
    """Fault injection (kill -9 of every process, Redis/PostgreSQL outages, disk full): recovery
    time and data lost per fault (docs/reliability.md)."""
    from procs.bench.faults import bench_faults

    result = bench_faults(symbols=symbols, feed_rate=rate, redis_s=redis_s, pg_s=pg_s, full_s=full_s,
                          echo=(lambda _line: None) if as_json else typer.echo)
    if as_json:
        typer.echo(json.dumps(result))


@app.command()
def backtest(
    as_json: JsonOpt = False,
    symbols: Annotated[int, typer.Option(help="Symbols in the synthetic session.")] = 10_000,
    minutes: Annotated[int, typer.Option(help="Event minutes replayed (from the open).")] = 20,
    rate: Annotated[float, typer.Option(help="Ticks per event second, all symbols together.")] = 5_000.0,
    workers: Annotated[int, typer.Option(help="Scanner processes (0 = cores).")] = 0,
) -> None:
    """A synthetic session replayed through the processes with 1 s event-time scans, at two batch sizes."""
    from procs.bench.backtest import bench_backtest

    emit(bench_backtest(symbols=symbols, minutes=minutes, rate=rate, workers=workers), as_json)


@app.command()
def boot(
    as_json: JsonOpt = False,
    rounds: Annotated[int, typer.Option(help="Alternated rounds of each mode (medians).")] = 3,
    symbols: Annotated[int, typer.Option(help="Symbols of the instance started.")] = 600,
) -> None:
    """An instance's start and a child's restart, with the fork server and with fresh interpreters."""
    from procs.bench.boot import bench_boot

    emit(bench_boot(rounds=rounds, symbols=symbols), as_json)


@app.command()
def cli(
    as_json: JsonOpt = False,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds (medians).")] = 11,
) -> None:
    """CPU time of `status`, `stop`, `rules list` on a stopped instance vs the interpreter's start-up."""
    from procs.bench.cli import bench_cli

    emit(bench_cli(rounds=rounds), as_json)


@app.command()
def e2e(
    as_json: JsonOpt = False,
    quick: QuickOpt = False,
    symbols: Annotated[int, typer.Option(help="Symbols (two hosts: half each).")] = 10_000,
    ticks: Annotated[int, typer.Option(help="Ticks in the replayed file (0 = 24 M, quick 200 k).")] = 0,
    start_rate: Annotated[float, typer.Option(help="First offered ticks/s (0 = 100 k; quick: the file's cap).")] = 0.0,
) -> None:
    """The whole pipeline (DBN replay at a set rate -> ingest ... gateway -> WebSocket client in
    its own process): highest sustained ticks/s on one host and on two, and tick-to-client latency
    at half that rate with 1,000 ms and 100 ms scans."""
    from procs.bench.e2e import bench_e2e

    emit(bench_e2e(quick=quick, symbols=symbols, ticks=ticks or None, start_rate=start_rate or None,
                   echo=lambda line: typer.echo(line, err=as_json)), as_json)
