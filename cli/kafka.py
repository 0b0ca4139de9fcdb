"""`scanner feed-bridge`: one feed connection into the Kafka ticks topic (see procs/feed_bridge.py)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Annotated, Optional

import typer

from cli.common import ConfigOpt, guard, settings_from


def feed_bridge_command(
    config: ConfigOpt = None,
    bootstrap: Annotated[Optional[str], typer.Option("--bootstrap", help="Kafka bootstrap servers.")] = None,
    symbols: Annotated[Optional[int], typer.Option("--symbols", help="Synthetic universe size.")] = None,
    rate: Annotated[Optional[float], typer.Option("--rate", help="Synthetic ticks per second.")] = None,
    seconds: Annotated[Optional[float], typer.Option("--seconds", help="Stop after this long (default: run).")] = None,
) -> None:
    """Produce the feed's ticks to Kafka, keyed by symbol, one partition per symbol range."""
    from procs.feed_bridge import run_bridge

    logging.basicConfig(level=os.environ.get("SCANNER_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    with guard():
        s = settings_from(config, None, None, kafka_bootstrap=bootstrap, symbols=symbols, feed_rate=rate)
        stats = run_bridge(s, lambda: not stopping, seconds)
    typer.echo(f"bridged {stats.ticks} ticks in {stats.messages} messages")
