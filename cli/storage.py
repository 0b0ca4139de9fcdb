"""`scanner migrate` and `scanner archive`: typer-compatible commands handing off to `procs.storage`.

Registered by cli/app.py (`app.command("migrate")(migrate_command)`, `app.command("archive")(archive_command)`).
Storage problems (`StorageError`) end in one line on stderr and exit code 1 (`cli.common.guard`).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from cli.common import ConfigOpt, DataDirOpt, InstanceOpt, JsonOpt, guard, settings_from

if TYPE_CHECKING:
    from scanner.config import Settings


def _logging() -> None:
    from procs.runtime import setup_logging

    setup_logging("%(asctime)s %(name)s %(levelname)s %(message)s", [logging.StreamHandler(sys.stderr)])


def run_migrations(s: Settings) -> dict:
    """Apply PostgreSQL and/or ClickHouse migrations for the configured sinks."""
    from scanner.config import reveal
    from scanner.storage import StorageError

    if not (s.database_url or s.clickhouse_url):
        raise StorageError("nothing to migrate: set database_url and/or clickhouse_url")
    out: dict = {}
    if s.database_url:
        from procs.storage.pg import migrate

        out["postgresql"] = migrate(reveal(s.database_url) or "", flavor=s.storage_flavor,
                                    retention_days=s.bar_retention_days, compress_after_days=s.bar_compress_after_days)
    if s.clickhouse_url:
        from procs.storage.ch import client
        from procs.storage.ch import migrate as ch_migrate

        ch = client(reveal(s.clickhouse_url) or "")
        try:
            out["clickhouse"] = ch_migrate(ch)
        finally:
            ch.close()
    return out


def migrate_command(
    config: ConfigOpt = None,
    instance: InstanceOpt = None,
    data_dir: DataDirOpt = None,
    database_url: Annotated[Optional[str], typer.Option(help="PostgreSQL URL (default: the setting).")] = None,
    clickhouse_url: Annotated[Optional[str], typer.Option(help="ClickHouse URL (default: the setting).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Apply the database migrations (versioned, idempotent, recorded in schema_migrations)."""
    _logging()
    with guard():
        s = settings_from(config, instance, data_dir, database_url=database_url, clickhouse_url=clickhouse_url)
        out = run_migrations(s)
    if as_json:
        typer.echo(json.dumps(out))
        return
    for engine, r in out.items():
        applied = ", ".join(r["applied"]) or "nothing new"
        flavor = f" ({r['flavor']})" if "flavor" in r else ""
        typer.echo(f"{engine}{flavor}: at version {r['current']}; applied {applied}")


def archive_command(
    date: Annotated[str, typer.Option("--date", help="Trading day, YYYY-MM-DD.")],
    restore: Annotated[bool, typer.Option("--restore", help="Load the archived day back into ClickHouse.")] = False,
    config: ConfigOpt = None,
    instance: InstanceOpt = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Archive a day's bars (and trades) to S3 as Parquet with a manifest, or restore one."""
    _logging()
    with guard():
        from procs.storage.s3 import archive_day, restore_day
        from scanner.storage.archive import iso_day, parse_day

        s = settings_from(config, instance, data_dir)
        day = parse_day(date)
        if restore:
            out: dict = {"restored": restore_day(s, day), "date": iso_day(day)}
            msg = f"restored {iso_day(day)} into ClickHouse: " + ", ".join(
                f"{t} {n} rows" for t, n in out["restored"].items())
        else:
            manifest = archive_day(s, day)
            out = manifest or {"date": iso_day(day), "files": []}
            msg = (f"archived {iso_day(day)}: " + ", ".join(f"{f['table']} {f['rows']} rows -> s3://{s.s3_bucket}/"
                                                            f"{f['key']}" for f in out["files"])
                   if manifest else f"no bars for {iso_day(day)}: nothing archived")
    typer.echo(json.dumps(out) if as_json else msg)
