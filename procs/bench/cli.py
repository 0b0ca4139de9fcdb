"""`scanner bench cli`: CPU time (user + system, from `getrusage`) of the commands that must answer
at once about a stopped instance - `scanner status`, `stop` and `rules list` - each a fresh
interpreter, interleaved round by round with the same-run baseline: the interpreter itself
(`python -c pass`).

Also measured: `import cli.app` alone, and `status` when a `SCANNER_*` setting forces the full
settings class (`cli.common.quick_paths` cannot answer without it).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _cases(data_dir: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    scanner = [sys.executable, "-m", "cli.app"]
    where = ["--instance", f"benchcli{os.getpid()}", "--data-dir", data_dir]
    return {
        "python_startup": ([sys.executable, "-c", "pass"], {}),
        "import_cli": ([sys.executable, "-c", "import cli.app"], {}),
        "status": ([*scanner, "status", *where], {}),
        "stop": ([*scanner, "stop", *where], {}),
        "rules_list": ([*scanner, "rules", "list", *where], {}),
        "status_full_settings": ([*scanner, "status", *where], {"SCANNER_FEED_SEED": "7"}),
    }


def _cpu_ms(argv: list[str], env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, env=env, cwd=REPO, capture_output=True, timeout=120, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return 1000.0 * (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)


def bench_cli(rounds: int = 11) -> dict:
    """Median and minimum CPU ms per command over `rounds` interleaved rounds, and the ratios to
    the interpreter's own start-up."""
    if rounds < 1:
        raise ValueError(f"'rounds' must be positive, was {rounds}")
    base_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SCANNER_")}
    with tempfile.TemporaryDirectory(prefix="benchcli") as tmp:
        cases = _cases(tmp)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, (argv, env) in cases.items():
                samples[name].append(_cpu_ms(argv, {**base_env, **env}))
    out: dict = {"rounds": rounds}
    for name, values in samples.items():
        out[f"{name}_cpu_ms_median"] = round(statistics.median(values), 1)
        out[f"{name}_cpu_ms_min"] = round(min(values), 1)
    startup = max(out["python_startup_cpu_ms_median"], 1e-3)
    for name in ("status", "stop", "rules_list", "status_full_settings"):
        out[f"{name}_vs_python_startup"] = round(out[f"{name}_cpu_ms_median"] / startup, 2)
    return out
