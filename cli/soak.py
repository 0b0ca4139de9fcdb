"""`scanner soak --minutes M`: run the pipeline at a high tick rate and report memory per
process, scan p99 and drops over time (see procs/bench/soak.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def soak_command(
    minutes: Annotated[float, typer.Option(help="How long to run.")] = 30.0,
    symbols: Annotated[int, typer.Option(help="Synthetic universe size.")] = 5000,
    rate: Annotated[float, typer.Option(help="Synthetic ticks per second.")] = 50_000.0,
    interval: Annotated[float, typer.Option(help="Seconds between samples (0: about 20 samples).")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on the last line.")] = False,
) -> None:
    """Soak test: the whole pipeline for M minutes; RSS per process, scan p99 and drops over time."""
    from procs.bench.soak import soak

    result = soak(minutes, symbols=symbols, feed_rate=rate, interval_s=interval or None, echo=typer.echo)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for k, v in result.items():
        if k != "series":
            typer.echo(f"{k:>22}: {v}")
