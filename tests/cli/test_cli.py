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


def test_empty_short_or_bad_api_keys_are_refused_without_showing_them(tmp_path: Path) -> None:
    for keys, why in (({"": "write"}, "API key #1 is empty"), ({"short-key-1": "read"}, "11 characters"),
                      ({"long-enough-key-0001": "read", "with space in the key": "write"}, "#2 contains whitespace"),
                      ({"a-secret-key-for-admins": "admin"}, "read")):
        r = run("status", "--data-dir", str(tmp_path), env={"SCANNER_API_KEYS": json.dumps(keys)})
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("error: invalid setting api_keys:") and why in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert not any(k and k in r.stderr for k in keys)


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
    deep = tmp_path / "deep.json"  # deeper than Python's json parser can go: a one-line error
    leaf = '{"metric": "price", "operator": ">", "value": 1}'
    deep.write_text('{"id": "d", "condition": ' + '{"all": [' * 5000 + leaf + "]}" * 5000 + "}")
    r = run("rules", "validate", str(deep))
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "nested too deeply" in r.stderr
    deep.write_text(json.dumps({"id": "d", "condition": nested(200)}))
    r = run("rules", "validate", str(deep))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "more than 32 levels deep" in r.stderr
    assert run("rules", "add", str(good), *d).returncode == 0
    listed = run("rules", "list", "--json", *d)
    assert [x["id"] for x in json.loads(listed.stdout)] == ["gap-up-4"]
    assert run("rules", "rm", "gap-up-4", *d).returncode == 0
    r = run("rules", "rm", "gap-up-4", *d)
    assert r.returncode == 1 and "no rule with id 'gap-up-4'" in r.stderr


def nested(depth: int) -> dict:
    node: dict = {"metric": "price", "operator": ">", "value": 1}
    for _ in range(depth - 1):
        node = {"all": [node]}
    return node


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
