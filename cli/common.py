"""Shared CLI pieces: the user-error type, option aliases, settings loading."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from scanner.config import Settings, load_settings


class ScannerError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML configuration file.")]
InstanceOpt = Annotated[Optional[str], typer.Option("--instance", "-i", help="Instance name (default: 'default').")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Data directory (pidfile, logs, rules).")]


def settings_from(config: Path | None, instance: str | None, data_dir: Path | None, **more: object) -> Settings:
    try:
        return load_settings(config, instance=instance, data_dir=data_dir, **more)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"][:1] if first["loc"][:1] == ("api_keys",) else first["loc"]  # a key is never shown
        field = ".".join(str(p) for p in loc) or "settings"
        raise ScannerError(f"invalid setting {field}: {first['msg']}") from None
    except (OSError, ValueError) as exc:
        raise ScannerError(f"cannot read configuration: {exc}") from None


def fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(1)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn project errors into one line on stderr and exit code 1."""
    from scanner.rules.store import RuleStoreError

    try:
        yield
    except (ScannerError, RuleStoreError) as exc:
        fail(str(exc))
