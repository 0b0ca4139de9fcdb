"""`scanner rules list|add FILE|rm ID|validate FILE|schema`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import ConfigOpt, DataDirOpt, InstanceOpt, settings_from
from scanner.config import Settings

app = typer.Typer(no_args_is_help=True, help="Manage the rule store (changes reach the workers within a cycle).")



def _settings(config: Path | None, instance: str | None, data_dir: Path | None) -> Settings:
    return settings_from(config, instance, data_dir)


def _load_file(path: Path) -> list:
    from scanner.rules.store import RuleStoreError, validate

    try:
        text = path.read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None
    try:
        return validate(text)
    except RuleStoreError as exc:
        typer.echo(f"error: {path}: invalid rules:\n{exc}", err=True)
        raise typer.Exit(1) from None


@app.command("list")
def list_rules(config: ConfigOpt = None, instance: InstanceOpt = None, data_dir: DataDirOpt = None,
               as_json: Annotated[bool, typer.Option("--json", help="Full rules as JSON.")] = False) -> None:
    """List the stored rules."""
    from cli.common import guard
    from procs.rules_admin import rule_summary, store_for

    with guard():
        rules = store_for(_settings(config, instance, data_dir)).list()
    if as_json:
        typer.echo(json.dumps([r.dump() for r in rules], indent=2))
        return
    for r in rules:
        s = rule_summary(r)
        typer.echo(f"{s['id']:<28} {'on ' if s['enabled'] else 'off'} {s['severity']:<8} {s['alert_mode']:<13} "
                   f"{s['name']}")
    typer.echo(f"{len(rules)} rules")


@app.command("add")
def add(file: Annotated[Path, typer.Argument(help="JSON file: one rule or a list of rules.")],
        config: ConfigOpt = None, instance: InstanceOpt = None, data_dir: DataDirOpt = None) -> None:
    """Add rules (a rule with an existing id replaces it in place)."""
    from cli.common import guard
    from procs.rules_admin import store_for

    rules = _load_file(file)
    with guard():
        settings = _settings(config, instance, data_dir)
        store = store_for(settings)
        current = store.list()
        by_id = {r.id: i for i, r in enumerate(current)}
        for r in rules:
            if r.id in by_id:
                current[by_id[r.id]] = r
            else:
                by_id[r.id] = len(current)
                current.append(r)
        store.replace_all(current)
    typer.echo(f"stored {len(rules)} rule(s): {', '.join(r.id for r in rules)}")


@app.command("rm")
def rm(rule_id: Annotated[str, typer.Argument(help="Rule id.")], config: ConfigOpt = None,
       instance: InstanceOpt = None, data_dir: DataDirOpt = None) -> None:
    """Remove a rule by id."""
    from cli.common import ScannerError, guard
    from procs.rules_admin import store_for

    with guard():
        if not store_for(_settings(config, instance, data_dir)).remove(rule_id):
            raise ScannerError(f"no rule with id {rule_id!r}")
    typer.echo(f"removed {rule_id}")


@app.command("validate")
def validate_file(file: Annotated[Path, typer.Argument(help="JSON file to check.")]) -> None:
    """Validate a rule file without storing it (errors name the field and the allowed values)."""
    rules = _load_file(file)
    typer.echo(f"{file}: {len(rules)} valid rule(s)")


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of a rule, with the metrics a rule may name (`x-metrics`: name, unit,
    description, from the catalogue) and the bar-history fields for `bars_ago` operands."""
    from scanner.metrics import CATALOGUE, HIST_FIELDS
    from scanner.rules.model import rule_json_schema, rule_metrics

    doc = rule_json_schema()
    doc["x-metrics"] = [{"name": n, "unit": CATALOGUE[n].unit, "description": CATALOGUE[n].description}
                        for n in rule_metrics()]
    doc["x-history-fields"] = list(HIST_FIELDS)
    typer.echo(json.dumps(doc, indent=2))
