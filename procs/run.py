"""Entry point of every child process: `python -m procs.run NAME --slot N`."""

from __future__ import annotations

import argparse
import importlib
import sys

from procs.runtime import run_child

# process name prefix -> module with `main(ctx)`
MODULES = {
    "ingest": "procs.ingest",
    "bars": "procs.bars",
    "indicators": "procs.indicators",
    "scan": "procs.scan",
    "publisher": "procs.publisher",
    "gateway": "procs.gateway",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="procs.run")
    ap.add_argument("name")
    ap.add_argument("--slot", type=int, required=True)
    args = ap.parse_args(argv)
    kind = args.name.split("-", 1)[0]
    module = importlib.import_module(MODULES[kind])
    return run_child(args.name, args.slot, module.main)


if __name__ == "__main__":
    sys.exit(main())
