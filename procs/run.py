"""Entry point of every child process: `python -m procs.run NAME --slot N`."""

from __future__ import annotations

from procs.malloc import tune_malloc
from procs.orphan import die_with_parent

if __name__ == "__main__":
    die_with_parent()  # first, before the heavy imports: a dying supervisor takes us with it
    tune_malloc()  # freed cycle buffers stay in the heap (procs.malloc)

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from procs.runtime import EXIT_CANNOT_BOOT, run_child  # noqa: E402

# process name prefix -> module with `main(ctx)`
MODULES = {
    "ingest": "procs.ingest",
    "bars": "procs.bars",
    "indicators": "procs.indicators",
    "scan": "procs.scan",
    "publisher": "procs.publisher",
    "gateway": "procs.gateway",
    "notifier": "procs.notifier.process",
    "storage": "procs.storage.process",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="procs.run")
    ap.add_argument("name")
    ap.add_argument("--slot", type=int, required=True)
    args = ap.parse_args(argv)
    kind = args.name.split("-", 1)[0]
    try:
        module = importlib.import_module(MODULES[kind])
    except Exception:  # noqa: BLE001 - a broken install cannot boot; restarting will not help
        logging.basicConfig()
        logging.getLogger("scanner").exception("cannot boot %s: import of %s failed", args.name, MODULES.get(kind))
        return EXIT_CANNOT_BOOT
    return run_child(args.name, args.slot, module.main)


if __name__ == "__main__":
    sys.exit(main())
