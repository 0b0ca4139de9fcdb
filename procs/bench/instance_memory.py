"""Whole-instance memory, sampled: `python -m procs.bench.instance_memory --instance NAME`.

Private memory is the sum of `Pss_Anon` in `/proc/<pid>/smaps_rollup` over the supervisor and
its children (`procs.status.process_memory`: children forked from the fork server share its
pages copy-on-write, so each counts its share; USS would also count shared-memory pages that
only one process has touched);
shared memory is the allocated size (`st_blocks`) of the instance's `/dev/shm` segments. One
JSON line per sample: the time, each process's private MB, the sums and the whole instance.
Used for the issue-15 memory figures in docs/benchmarks.md (steady state and during the
supervisor's checkpoints: sample across a few `checkpoint_interval_s`).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from procs.status import children
from scanner.instance import InstancePaths
from shm.segment import SHM_DIR


def anonymous_mb(pid: int) -> float | None:
    """The process's private MB as `scanner status` counts it (`procs.status.process_memory`:
    its proportional share of anonymous memory; None: gone)."""
    from procs.status import process_memory

    return process_memory(pid)["private_mb"]


def sample(instance: str, supervisor: int) -> dict[str, object]:
    procs = {}
    for pid in [supervisor, *children(supervisor)]:
        mb = anonymous_mb(pid)
        if mb is not None:
            procs[str(pid)] = round(mb, 1)
    segs = {}
    prefix = f"scanner.{instance}."
    for name in os.listdir(SHM_DIR):
        if name.startswith(prefix):
            try:
                segs[name[len(prefix):]] = round(os.stat(os.path.join(SHM_DIR, name)).st_blocks * 512 / 2**20, 1)
            except OSError:
                continue
    private, shared = sum(procs.values()), sum(segs.values())
    return {"t": time.strftime("%H:%M:%S"), "private_mb_by_pid": procs, "private_mb": round(private),
            "segments_mb": round(shared), "whole_mb": round(private + shared), "segments": segs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instance", default="default")
    ap.add_argument("--data-dir", default=None, help="where the instance's pidfile is (default: settings)")
    ap.add_argument("--samples", type=int, default=60)
    ap.add_argument("--interval", type=float, default=2.0)
    a = ap.parse_args()
    if a.data_dir is None:
        from scanner.config import Settings

        data_dir = Settings(instance=a.instance).data_dir
    else:
        data_dir = a.data_dir
    pid = int(InstancePaths(a.instance, data_dir).pidfile().read_text().split()[0])
    for i in range(a.samples):
        print(json.dumps(sample(a.instance, pid)), flush=True)
        if i + 1 < a.samples:
            time.sleep(a.interval)


if __name__ == "__main__":
    main()
