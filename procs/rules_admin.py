"""Rule changes from outside the workers (CLI, REST): write the store, then bump the generation.

The generation counter lives in the running instance's control block. The CLI and each gateway
bump it here, under one file lock, so none of their bumps is lost to a concurrent
read-increment. The supervisor's SIGHUP handler bumps it without that lock: a HUP racing one of
these bumps can lose an increment, and a worker that read the counter between the two writes
then sees the later change only at the next bump. Workers compare the counter every cycle and
reload the store when it moved: a change reaches them within one cycle. When the instance is
not running, the store is simply written (the workers read it when they start).
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from scanner.rules.model import Rule
from scanner.rules.store import RuleStore, install_default_pack

if TYPE_CHECKING:  # the CLI lists rules without loading the engine: segments load in bump_generation
    from scanner.config import Settings
    from shm.control import ControlBlock

log = logging.getLogger("scanner.rules")


def bump_generation(settings: Settings, control: ControlBlock | None = None) -> int | None:
    """Bump the running instance's rules generation; None when the instance is not running."""
    own = control is None
    if control is None:
        from procs.shared import seg_name
        from shm.control import ControlBlock

        try:
            control = ControlBlock.attach(seg_name(settings.instance, "ctl"))
        except Exception:  # noqa: BLE001 - not running: nothing to notify
            return None
    lock = Path(settings.rules_file()).with_name("rules.json.gen.lock")
    try:
        with open(lock, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            gen = control.bump_rules_generation()
        return gen
    finally:
        if own:
            control.close()


def open_store(settings: Settings, on_change=None) -> RuleStore:  # type: ignore[no-untyped-def]
    """The configured rule store: PostgreSQL (shared by every host) or the JSON file."""
    if settings.rules_in_postgres():
        from procs.rules_pg import PgRuleStore
        from scanner.config import reveal

        return PgRuleStore(reveal(settings.database_url) or "", on_change)
    return RuleStore(settings.rules_file(), on_change)


def rules_source(settings: Settings):  # type: ignore[no-untyped-def]
    """A function returning the stored rules as dicts (for the alert encoder)."""
    def load() -> list[dict]:
        return [r.dump() for r in open_store(settings).list()]

    return load


def install_defaults(settings: Settings) -> bool:
    """First start: the default rule pack into an empty store; True if written."""
    store = open_store(settings)
    if hasattr(store, "install_defaults"):
        return store.install_defaults()
    return install_default_pack(settings.rules_file())


def store_for(settings: Settings, control: ControlBlock | None = None) -> RuleStore:
    """The instance's rule store, bumping the generation after every write."""
    return open_store(settings, on_change=lambda _rules: bump_generation(settings, control))


def rule_summary(rule: Rule) -> dict:
    return {"id": rule.id, "name": rule.name, "enabled": rule.enabled, "severity": rule.severity,
            "alert_mode": rule.alert_mode, "tags": list(rule.tags)}
