"""The rule store: one JSON file (a list of rules) in the data directory.

Writers take an exclusive `fcntl.flock` on a sidecar lock file (`rules.json.lock`) around
read-modify-write, and replace the file atomically (temp file in the same directory, fsync,
`os.replace`, fsync of the directory), so readers never see a half-written list and need no
lock. The rule index in an alert record is the rule's position in this list, so `add`
replaces a rule with the same id in place and appends new ones at the end. `on_change` is
called with the new list after every successful write (the caller bumps the rules generation
counter in shared memory).

Reading never fails on one bad item: each stored item is validated on its own (`parse_stored`),
and an item the current model refuses (written by an older version, or edited by hand) is
skipped, logged once and reported by `read()`, so one poisoned rule cannot break every read of
the store. The next write drops it (logged as a warning).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scanner.instance import RULES_FILE
from scanner.rules.limits import MAX_RULES
from scanner.rules.model import Rule, parse_rules

RuleList = list[Rule]  # (the store has a method named `list`)
TOO_DEEP = "JSON nested too deeply to parse (a rule's condition may be at most 32 levels deep)"
log = logging.getLogger("scanner.rules")
_warned: set[str] = set()  # problems already logged by this process (reads repeat them)


class RuleStoreError(ValueError):
    """The rule file or a rule given to the store is invalid; the message says why."""


def validate(data: str | bytes | list[Any] | dict[str, Any]) -> list[Rule]:
    """Parse and validate rules (JSON text or parsed JSON); RuleStoreError with pydantic's message."""
    try:
        return parse_rules(data)
    except ValidationError as exc:
        raise RuleStoreError(str(exc)) from None
    except json.JSONDecodeError as exc:
        raise RuleStoreError(f"not JSON: {exc}") from None
    except RecursionError:  # json (and anything recursive) on input nested ~1,000 levels deep
        raise RuleStoreError(TOO_DEEP) from None


def _one_line(exc: ValidationError) -> str:
    """A validation error as one line: `loc: message; loc: message`."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in exc.errors())


def parse_stored(items: list[Any]) -> tuple[RuleList, list[str]]:
    """Stored items validated one by one: (valid rules in store order, one line per skipped
    item). Duplicated ids keep the first; items past MAX_RULES are skipped."""
    rules: RuleList = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        rid = item.get("id") if isinstance(item, dict) else None
        label = f"item {i}" + (f" (id {rid[:64]!r})" if isinstance(rid, str) else "")
        if len(rules) >= MAX_RULES:
            problems.append(f"{label}: over the limit of {MAX_RULES} rules per store")
            continue
        try:
            r = Rule.model_validate(item)
        except ValidationError as exc:
            problems.append(f"{label}: {_one_line(exc)}")
            continue
        except RecursionError:
            problems.append(f"{label}: {TOO_DEEP}")
            continue
        if r.id in seen:
            problems.append(f"{label}: duplicate rule id")
            continue
        seen.add(r.id)
        rules.append(r)
    return rules, problems


def load_items(text: str | bytes) -> list[Any]:
    """The stored list from JSON text; RuleStoreError when the text is no JSON list at all."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RuleStoreError(f"not JSON: {exc}") from None
    except RecursionError:
        raise RuleStoreError(TOO_DEEP) from None
    if not isinstance(data, list):
        raise RuleStoreError(f"expected a JSON list of rules, found {type(data).__name__}")
    return data


def default_pack() -> list[Rule]:
    """The shipped default rule pack (`scanner/rules/default_pack.json`)."""
    return validate(resources.files("scanner.rules").joinpath("default_pack.json").read_text())


class RuleStore:
    """List / add / remove rules in `path` (a JSON list), safely against concurrent writers."""

    def __init__(self, path: str | Path, on_change: Callable[[RuleList], None] | None = None) -> None:
        self.path = Path(path)
        self.on_change = on_change

    @classmethod
    def in_dir(cls, data_dir: str | Path, on_change: Callable[[RuleList], None] | None = None) -> RuleStore:
        return cls(Path(data_dir) / RULES_FILE, on_change)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def read(self) -> tuple[RuleList, list[str]]:
        """(valid stored rules in order, one line per skipped item); ([], []) when the file does
        not exist yet. RuleStoreError only when the file is not a JSON list at all."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return [], []
        try:
            return parse_stored(load_items(text))
        except RuleStoreError as exc:
            raise RuleStoreError(f"{self.path}: {exc}") from None

    def list(self) -> RuleList:
        """The valid stored rules in order; skipped items are logged (once per process)."""
        rules, problems = self.read()
        self.report(problems)
        return rules

    def report(self, problems: list[str]) -> None:
        """Log skipped items, each once per process (every read finds them again)."""
        for p in problems:
            if p not in _warned and len(_warned) < 10_000:
                _warned.add(p)
                log.warning("rule store %s: skipped invalid %s", self.path, p)

    validate = staticmethod(validate)

    def get(self, rule_id: str) -> Rule | None:
        return next((r for r in self.list() if r.id == rule_id), None)

    def _write(self, rules: RuleList) -> None:
        text = json.dumps([r.dump() for r in rules], indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _modify(self, fn: Callable[[RuleList], RuleList | None]) -> RuleList | None:
        """Read, apply `fn`, write if it returned a list; on_change after the lock is released."""
        with self._locked():
            old, problems = self.read()
            new = fn(old)
            if new is None:
                return None
            for p in problems:
                log.warning("rule store %s: dropping invalid %s", self.path, p)
            validate([r.dump() for r in new])  # unique ids, still valid as a whole
            self._write(new)
        if self.on_change is not None:
            self.on_change(new)
        return new

    def add(self, rule: Rule | dict[str, Any]) -> Rule:
        """Add a rule, or replace the rule with the same id in place; returns the stored rule."""
        r = rule if isinstance(rule, Rule) else validate([rule])[0]

        def put(rules: RuleList) -> RuleList:
            for i, old in enumerate(rules):
                if old.id == r.id:
                    return rules[:i] + [r] + rules[i + 1:]
            return rules + [r]

        self._modify(put)
        return r

    def remove(self, rule_id: str) -> bool:
        """Remove the rule with this id; False (and no write) when there is none."""

        def drop(rules: RuleList) -> RuleList | None:
            kept = [r for r in rules if r.id != rule_id]
            return kept if len(kept) != len(rules) else None

        return self._modify(drop) is not None

    def replace_all(self, rules: RuleList | Sequence[dict[str, Any]]) -> RuleList:
        """Replace the whole list (validated first)."""
        parsed = validate([r.dump() if isinstance(r, Rule) else r for r in rules])
        self._modify(lambda _: parsed)
        return parsed


def install_default_pack(path: str | Path) -> bool:
    """Write the default pack to `path` if no rule file exists there yet; True if written."""
    store = RuleStore(path)
    with store._locked():
        if store.path.exists():
            return False
        store._write(default_pack())
    return True
