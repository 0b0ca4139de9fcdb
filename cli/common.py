"""Shared CLI pieces: the one error path, option aliases, settings loading, the supervisor
launcher, the gateway port, tables.

This module imports typer and the standard library only, and every command imports the rest of
the project inside its body: `scanner status` of a stopped instance must not pay for numpy,
numba, FastAPI, redis or psycopg (`tests/cli/test_imports.py` holds that line).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer

from cli import plainparams

if TYPE_CHECKING:
    from scanner.config import Settings
    from scanner.instance import InstancePaths


plainparams.install()  # str / Path options without importing pydantic (see the module)


class ScannerError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


# The project's other user-facing error types (module, class): `guard` turns them into `fail`
# too. Only modules already imported are looked at: an error class never loaded was not raised.
USER_ERRORS = (
    ("scanner.rules.store", "RuleStoreError"),
    ("scanner.storage", "StorageError"),
    ("scanner.feeds.replay", "ReplayError"),
    ("procs.instance", "SupervisorError"),
    ("procs.feed_bridge", "BridgeError"),
    ("procs.runtime", "BootError"),
    ("shm.platform", "UnsupportedPlatform"),
)

# The variables `quick_paths` understands (SCANNER_LOG_LEVEL is read by logging set-up, not a
# setting); any other SCANNER_* variable may be a setting, which only the settings class reads.
QUICK_ENV = ("SCANNER_INSTANCE", "SCANNER_DATA_DIR", "SCANNER_LOG_LEVEL")

# The option aliases every command shares (one spelling, one help text).
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML configuration file.")]
InstanceOpt = Annotated[Optional[str], typer.Option("--instance", "-i", help="Instance name (default: 'default').")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Data directory (pidfile, logs, rules).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on the last line.")]
SymbolsOpt = Annotated[Optional[int], typer.Option(help="Synthetic universe size.")]
WorkersOpt = Annotated[Optional[int], typer.Option(help="Scanner processes (0 = cores).")]
PortOpt = Annotated[Optional[int], typer.Option(help="Gateway HTTP port.")]

# The supervisor started by `launch_supervisor` reads its settings from the 0600 file named here,
# not from the command line or the environment, so a replay's or a daemon's settings reach it
# exactly as validated and its secrets never sit in /proc/<pid>/environ.
SUPERVISOR_SETTINGS_ENV = "SCANNER_SUPERVISOR_SETTINGS_FILE"  # path of a 0600 settings file


def fail(msg: str, code: int = 1) -> NoReturn:
    """The one way a command reports a user error: `error: msg` on stderr, exit code 1 (or
    `code`: `start --foreground` gives EXIT_CANNOT_BOOT, 3, so systemd does not restart it)."""
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _user_error_types() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [ScannerError]
    for module, name in USER_ERRORS:
        mod = sys.modules.get(module)
        if mod is not None:
            found.append(getattr(mod, name))
    return tuple(found)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn the project's user errors into `fail` (one line on stderr, exit code 1)."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, _user_error_types()):
            fail(str(exc))
        raise


def settings_from(config: Path | None, instance: str | None, data_dir: Path | None, **more: object) -> Settings:
    """Settings from TOML, env and these options; a bad value is a ScannerError naming the field."""
    from pydantic import ValidationError

    from scanner.config import load_settings

    try:
        return load_settings(config, instance=instance, data_dir=data_dir, **more)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"][:1] if first["loc"][:1] == ("api_keys",) else first["loc"]  # a key is never shown
        field = ".".join(str(p) for p in loc) or "settings"
        raise ScannerError(f"invalid setting {field}: {first['msg']}") from None
    except (OSError, ValueError) as exc:
        raise ScannerError(f"cannot read configuration: {exc}") from None


def quick_paths(config: Path | None, instance: str | None, data_dir: Path | None) -> InstancePaths | None:
    """The instance's paths without loading the settings class (pydantic-settings alone costs more
    than the whole answer should), or None when that cannot be known for sure.

    Sure means: no configuration file (`--config`, `SCANNER_CONFIG`) and no `SCANNER_*` variable
    other than those in `QUICK_ENV`, so every other setting is at its default (valid by
    construction), and the name passes the settings' own pattern. Only "not running" is ever
    answered from this; everything else goes through `settings_from`, which validates it all."""
    import re

    from scanner.instance import DEFAULT_DATA_DIR, DEFAULT_INSTANCE, INSTANCE_PATTERN, InstancePaths

    if config is not None:
        return None
    env = {k: v for k, v in os.environ.items() if k.upper().startswith("SCANNER_")}
    if not set(env) <= set(QUICK_ENV):  # another setting, or a lower-case spelling: let pydantic read it
        return None
    name = instance if instance is not None else env.get("SCANNER_INSTANCE", DEFAULT_INSTANCE)
    if not re.fullmatch(INSTANCE_PATTERN, name):
        return None  # the settings class says what is wrong with it
    if data_dir is None:
        data_dir = Path(env["SCANNER_DATA_DIR"]) if "SCANNER_DATA_DIR" in env else DEFAULT_DATA_DIR
    return InstancePaths(name, data_dir)


def running_pid(settings: Settings) -> int | None:
    """The pid of the instance's live supervisor (from its pidfile), or None."""
    from procs.status import live_pid

    return live_pid(settings.pidfile())


def ensure_stopped(settings: Settings, hint: str = "") -> None:
    """ScannerError when the instance already runs (one supervisor per instance)."""
    pid = running_pid(settings)
    if pid:
        raise ScannerError(f"instance {settings.instance!r} is already running (pid {pid}){hint}")


def launch_supervisor(settings: Settings) -> tuple[subprocess.Popen, int]:
    """Start `python -m cli.app start --foreground` detached: a session of its own (a Ctrl-C
    reaches only this command, which stops it), settings in a 0600 file named by
    `SUPERVISOR_SETTINGS_ENV`, output
    appended to the instance's log. Returns the process and the log offset where this run's
    output starts."""
    from procs.runtime import private_data_dir, write_settings_file

    private_data_dir(settings)  # umask 077 and a 0700 data directory before anything is written
    logfile = settings.logfile()
    log_from = logfile.stat().st_size if logfile.exists() else 0
    env = dict(os.environ)
    env[SUPERVISOR_SETTINGS_ENV] = str(write_settings_file(settings))
    with open(logfile, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cli.app", "start", "--foreground"], env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    return proc, log_from


def gateway_port(port: int | None, default: int) -> int:
    """The HTTP port an option asks for: None = `default`, 0 = any free loopback port now."""
    if port is None:
        return default
    if port:
        return port
    from procs.bench.services import free_port

    return free_port()


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, right: Collection[str] = (),
          title: str | None = None) -> None:
    """Print rows as a rich table on stdout: columns named in `right` right-aligned, cells shown
    with `str()`. Piped output keeps its natural width (no wrapping at 80 columns)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console = Console(soft_wrap=True, width=1000)
    t = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for name in columns:
        t.add_column(name, justify="right" if name in right else "left", no_wrap=True)
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    console.print(t)
