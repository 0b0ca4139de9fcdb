"""The `scanner` command: user errors are one line + exit 1; config from TOML and env; rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scanner.config import load_settings


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "cli.app", *args], capture_output=True, text=True, env=e,
                          timeout=120)


def test_status_of_a_stopped_instance_is_one_line(tmp_path: Path) -> None:
    r = run("status", "--instance", "nosuch", "--data-dir", str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error: instance 'nosuch' is not running")
    assert "Traceback" not in r.stderr


def test_bad_setting_names_the_field(tmp_path: Path) -> None:
    r = run("status", "--data-dir", str(tmp_path), env={"SCANNER_SYMBOLS": "lots"})
    assert r.returncode == 1 and "invalid setting symbols" in r.stderr and "Traceback" not in r.stderr
    r = run("status", "--data-dir", str(tmp_path), env={"SCANNER_TICK_RING_CAPACITY": "1000"})
    assert r.returncode == 1 and "power of two" in r.stderr


def test_toml_then_env_then_explicit(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "scanner.toml"
    cfg.write_text('instance = "east"\nsymbols = 1234\nscan_interval_ms = 250\ncpu_map = { ingest = 0 }\n')
    monkeypatch.setenv("SCANNER_SCAN_INTERVAL_MS", "100")
    s = load_settings(cfg, symbols=77)
    assert s.instance == "east" and s.scan_interval_ms == 100 and s.symbols == 77 and s.cpu_map == {"ingest": 0}


def test_rules_add_list_rm_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"id": "gap-up-4", "name": "Gap up 4%", "type": "numeric", "metric": "gap_pct",
                                 "operator": ">", "value": 4.0}]))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"id": "x", "type": "numeric", "metric": "price", "operator": "=>", "value": 1}))
    d = ["--data-dir", str(tmp_path / "data"), "--instance", "clitest"]
    assert run("rules", "validate", str(good)).returncode == 0
    r = run("rules", "validate", str(bad))
    assert r.returncode == 1 and "operator" in r.stderr and ">=" in r.stderr  # names field + allowed values
    assert run("rules", "add", str(good), *d).returncode == 0
    listed = run("rules", "list", "--json", *d)
    assert [x["id"] for x in json.loads(listed.stdout)] == ["gap-up-4"]
    assert run("rules", "rm", "gap-up-4", *d).returncode == 0
    r = run("rules", "rm", "gap-up-4", *d)
    assert r.returncode == 1 and "no rule with id 'gap-up-4'" in r.stderr


def test_daemon_start_status_stop(tmp_path: Path) -> None:
    from procs.shared import instance_segments
    from tests.support import free_port

    name = f"dmn{os.getpid()}"
    d = ["--data-dir", str(tmp_path), "--instance", name]
    env = {"SCANNER_SYMBOLS": "300", "SCANNER_SCAN_WORKERS": "1", "SCANNER_HTTP_PORT": str(free_port())}
    try:
        r = run("start", *d, env=env)
        assert r.returncode == 0, r.stderr
        assert "started" in r.stdout and "dashboard http://127.0.0.1:" in r.stdout
        st = json.loads(run("status", "--json", *d).stdout)
        assert st["instance"] == name and all(p["alive"] for p in st["processes"])
        again = run("start", *d, env=env)
        assert again.returncode == 1 and "already running" in again.stderr
        r = run("stop", *d)
        assert r.returncode == 0 and "stopped" in r.stdout
        assert instance_segments(name) == []
        assert not (tmp_path / f"{name}.pid").exists()
    finally:
        run("stop", *d)
        for seg in instance_segments(name):
            os.unlink(f"/dev/shm/{seg}")


def test_rules_schema_lists_every_rule_metric_with_unit_and_description() -> None:
    from scanner.metrics import CATALOGUE

    r = run("rules", "schema")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    listed = {m["name"]: m for m in doc["x-metrics"]}
    assert set(listed) == {m.name for m in CATALOGUE.metrics if m.dtype == "f8"}
    for name in ("change_15m_pct", "or_low_30m", "pct_from_sma_200_1d", "atr_14_60m", "new_lod_count"):
        assert listed[name]["unit"] == CATALOGUE[name].unit and listed[name]["description"]
    assert "close" in doc["x-history-fields"]
