"""`scanner bench NAME [--json]`: benchmarks that report ratios against a same-run baseline.

Each prints a human summary and, with --json, one JSON object on its last line (the keys the
issues name are a contract read by outside checks).
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Benchmarks (same-run baselines, medians).")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on the last line.")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="Smaller sizes (smoke test).")]


def emit(result: dict, as_json: bool) -> None:
    if not as_json:
        for k, v in result.items():
            typer.echo(f"{k:>28}: {v}")
        return
    typer.echo(json.dumps(result))


@app.command()
def engine(as_json: JsonOpt = False, quick: QuickOpt = False) -> None:
    """Seqlock snapshot (10k x 32), tick ring (1 producer, 2 consumers), batched ingest."""
    from procs.bench_engine import bench_engine

    emit(bench_engine(quick=quick), as_json)
