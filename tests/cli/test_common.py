"""The CLI's shared pieces: light imports (what keeps `status`/`stop`/`rules list` fast), the one
error path, tables, the gateway port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import pytest
import typer
from typer.testing import CliRunner

from cli.common import ScannerError, fail, gateway_port, guard
from tests.support import REPO

HEAVY = ("numpy", "numba", "fastapi", "redis", "psycopg", "uvicorn", "pyarrow", "boto3", "polars")


def _loaded_after(code: str, heavy: tuple[str, ...] = HEAVY, env: dict[str, str] | None = None) -> list[str]:
    """The `heavy` top-level modules loaded by a fresh interpreter (environment `env`, default
    ours) after running `code`."""
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))))")
    r = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_engine() -> None:
    assert _loaded_after("import cli.app") == []


@pytest.mark.parametrize("args", [["status"], ["stop"], ["rules", "list"]])
def test_commands_on_a_stopped_instance_load_no_engine(args: list[str], tmp_path: Path) -> None:
    argv = [*args, "--instance", f"light{os.getpid()}", "--data-dir", str(tmp_path)]
    code = ("from typer.testing import CliRunner\nimport cli.app\n"
            f"r = CliRunner().invoke(cli.app.app, {argv!r})\n"
            "assert r.exit_code in (0, 1), r.output\n"
            "assert 'not running' in r.output or 'rules' in r.output, r.output")
    assert _loaded_after(code) == []


@pytest.mark.parametrize("args", [["status"], ["stop"], ["rules", "list"]])
def test_commands_on_a_stopped_instance_load_no_pydantic(args: list[str], tmp_path: Path) -> None:
    """typer converts option values through pydantic; `cli.plainparams` spares these commands
    that import (what brings them under 150 ms of CPU, `scanner bench cli`)."""
    argv = [*args, "--instance", f"light{os.getpid()}", "--data-dir", str(tmp_path)]
    code = ("import sys\nimport cli.app\n"
            f"sys.argv = ['scanner', *{argv!r}]\n"
            "try:\n    cli.app.main()\nexcept SystemExit as e:\n    assert e.code in (0, 1, None), e.code")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SCANNER_")}  # no setting: the quick path
    assert _loaded_after(code, ("pydantic", "pydantic_core", "pydantic_settings"), env) == []


def test_plain_options_convert_as_typer_does(tmp_path: Path) -> None:
    """str, Path and bool options through `cli.plainparams` (installed by `cli.common`, imported
    above): typer's values and typer's checks."""
    seen: dict[str, object] = {}
    app = typer.Typer()

    @app.command()
    def cmd(name: Annotated[Optional[str], typer.Option()] = None,
            where: Annotated[Optional[Path], typer.Option()] = None,
            must: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False)] = None,
            flag: Annotated[bool, typer.Option("--flag")] = False,
            n: Annotated[int, typer.Option()] = 1) -> None:
        seen.update(name=name, where=where, must=must, flag=flag, n=n)

    f = tmp_path / "f.txt"
    f.write_text("x")
    r = CliRunner().invoke(app, ["--name", "x", "--where", "rel/dir", "--must", str(f), "--flag", "--n", "3"])
    assert r.exit_code == 0, r.output
    assert seen == {"name": "x", "where": Path("rel/dir"), "must": f, "flag": True, "n": 3}
    assert all(type(seen[k]) is type(Path()) for k in ("where", "must"))
    for arg, why in ((tmp_path / "missing", "does not exist"), (tmp_path, "is a directory")):
        r = CliRunner().invoke(app, ["--must", str(arg)])
        assert r.exit_code == 2 and why in " ".join(r.output.replace("│", " ").split()), r.output
    r = CliRunner().invoke(app, ["--n", "three"])  # not a plain kind: typer's own conversion
    assert r.exit_code == 2


def test_guard_turns_project_errors_into_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from scanner.rules.store import RuleStoreError

    for exc in (ScannerError("bad thing"), RuleStoreError("bad rule")):
        with pytest.raises(typer.Exit) as ei, guard():
            raise exc
        assert ei.value.exit_code == 1
        assert capsys.readouterr().err == f"error: {exc}\n"
    with pytest.raises(KeyError), guard():  # a bug is not a user error: it keeps its traceback
        raise KeyError("x")
    with pytest.raises(typer.Exit):
        fail("plain")
    assert capsys.readouterr().err == "error: plain\n"


def test_a_broken_rule_store_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "rules.json").write_text('[{"id": "x", "type": "numeric"')
    r = subprocess.run([sys.executable, "-m", "cli.app", "rules", "list", "--data-dir", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_rules_list_prints_a_table(tmp_path: Path) -> None:
    rule = {"id": "gap-up-4", "name": "Gap up 4%", "type": "numeric", "metric": "gap_pct", "operator": ">",
            "value": 4.0}
    (tmp_path / "rules.json").write_text(json.dumps([rule]))
    r = subprocess.run([sys.executable, "-m", "cli.app", "rules", "list", "--data-dir", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    header, row, count = r.stdout.splitlines()
    assert header.split() == ["id", "on", "severity", "mode", "name"]
    assert row.split()[:2] == ["gap-up-4", "on"] and row.endswith("Gap up 4%")
    assert count == "1 rules"


def test_gateway_port() -> None:
    assert gateway_port(None, 8701) == 8701
    assert gateway_port(9000, 8701) == 9000
    port = gateway_port(0, 8701)
    assert port not in (0, 8701)
    with socket.socket() as s:  # free now: it binds
        s.bind(("127.0.0.1", port))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for k in list(os.environ):
        if k.upper().startswith("SCANNER_"):
            monkeypatch.delenv(k)
    return monkeypatch


@pytest.mark.parametrize(("env", "instance", "data_dir"), [
    ({}, None, None),
    ({}, "east", Path("/srv/scan")),
    ({"SCANNER_INSTANCE": "west", "SCANNER_DATA_DIR": "rel/dir"}, None, None),
    ({"SCANNER_INSTANCE": "west", "SCANNER_DATA_DIR": "rel/dir", "SCANNER_LOG_LEVEL": "DEBUG"}, "east", Path("x")),
])
def test_quick_paths_agree_with_the_settings(clean_env: pytest.MonkeyPatch, env: dict[str, str],
                                             instance: str | None, data_dir: Path | None) -> None:
    from cli.common import quick_paths, settings_from

    for k, v in env.items():
        clean_env.setenv(k, v)
    quick = quick_paths(None, instance, data_dir)
    assert quick is not None
    s = settings_from(None, instance, data_dir)
    assert quick == s.paths()
    assert (quick.pidfile(), quick.rules_file(), quick.run_dir()) == (s.pidfile(), s.rules_file(), s.run_dir())


@pytest.mark.parametrize(("env", "config", "instance"), [
    ({}, Path("scanner.toml"), None),  # a configuration file may set anything
    ({"SCANNER_CONFIG": "scanner.toml"}, None, None),
    ({"SCANNER_SYMBOLS": "lots"}, None, None),  # a setting: only the settings class reads (and refuses) it
    ({"scanner_instance": "west"}, None, None),  # another spelling pydantic-settings accepts
    ({}, None, "no/slash"),  # a bad name: the settings class says why
])
def test_quick_paths_defer_when_unsure(clean_env: pytest.MonkeyPatch, env: dict[str, str], config: Path | None,
                                       instance: str | None) -> None:
    from cli.common import quick_paths

    for k, v in env.items():
        clean_env.setenv(k, v)
    assert quick_paths(config, instance, None) is None


def test_quick_and_full_answers_are_the_same(tmp_path: Path) -> None:
    def run(*args: str, **env: str) -> tuple[int, str, str]:
        e = {k: v for k, v in os.environ.items() if not k.upper().startswith("SCANNER_")}
        r = subprocess.run([sys.executable, "-m", "cli.app", *args, "--instance", "gone", "--data-dir", str(tmp_path)],
                           cwd=REPO, capture_output=True, text=True, timeout=120, env={**e, **env})
        return r.returncode, r.stdout, r.stderr

    full = {"SCANNER_FEED_SEED": "7"}  # a setting (its default value): forces the settings class
    for args in (["status"], ["stop"], ["rules", "list"], ["rules", "list", "--json"]):
        assert run(*args) == run(*args, **full)
