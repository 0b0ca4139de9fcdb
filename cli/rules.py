"""`scanner rules list|add FILE|rm ID|validate FILE|schema`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.common import (
    ConfigOpt,
    DataDirOpt,
    InstanceOpt,
    ScannerError,
    fail,
    guard,
    quick_paths,
    settings_from,
    table,
)

if TYPE_CHECKING:
    from scanner.rules.model import Rule

app = typer.Typer(no_args_is_help=True, help="Manage the rule store (changes reach the workers within a cycle).")


def _load_file(path: Path) -> list[Rule]:
    """The rules in a JSON file; a missing file or an invalid rule ends the command (`fail`)."""
    from scanner.rules.store import RuleStoreError, validate

    try:
        text = path.read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc}")
    try:
        return validate(text)
    except RuleStoreError as exc:
        text = str(exc)  # one line (JSON errors, too deep) or pydantic's list of field errors
        fail(f"{path}: invalid rules:{chr(10) if chr(10) in text else ' '}{text}")


@app.command("list")
def list_rules(config: ConfigOpt = None, instance: InstanceOpt = None, data_dir: DataDirOpt = None,
               as_json: Annotated[bool, typer.Option("--json", help="Full rules as JSON.")] = False) -> None:
    """List the stored rules."""
    quick = quick_paths(config, instance, data_dir)
    if quick is not None and not quick.rules_file().exists():
        # no database configured (quick_paths saw no setting), so the store is this file: none yet
        typer.echo("[]" if as_json else "0 rules")
        return
    from procs.rules_admin import rule_summary, store_for

    with guard():
        rules, problems = store_for(settings_from(config, instance, data_dir)).read()
    for p in problems:
        typer.echo(f"warning: skipped invalid stored {p}", err=True)
    if as_json:
        typer.echo(json.dumps([r.dump() for r in rules], indent=2))
        return
    rows = [rule_summary(r) for r in rules]
    if rows:
        table(("id", "on", "severity", "mode", "name"),
              ([s["id"], "on" if s["enabled"] else "off", s["severity"], s["alert_mode"], s["name"]] for s in rows))
    typer.echo(f"{len(rules)} rules")


@app.command("add")
def add(file: Annotated[Path, typer.Argument(help="JSON file: one rule or a list of rules.")],
        config: ConfigOpt = None, instance: InstanceOpt = None, data_dir: DataDirOpt = None) -> None:
    """Add rules (a rule with an existing id replaces it in place)."""
    from procs.rules_admin import store_for

    rules = _load_file(file)
    with guard():
        store = store_for(settings_from(config, instance, data_dir))
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
    from procs.rules_admin import store_for

    with guard():
        if not store_for(settings_from(config, instance, data_dir)).remove(rule_id):
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
    from scanner.rules.limits import rule_metrics
    from scanner.rules.model import rule_json_schema

    doc = rule_json_schema()
    doc["x-metrics"] = [{"name": n, "unit": CATALOGUE[n].unit, "description": CATALOGUE[n].description}
                        for n in rule_metrics()]
    doc["x-history-fields"] = list(HIST_FIELDS)
    typer.echo(json.dumps(doc, indent=2))
