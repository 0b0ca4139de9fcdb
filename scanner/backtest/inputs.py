"""A backtest's inputs: the rules file (a bad rule is named with its field) and the day files
(a damaged or unreadable file is set aside with the reason, and the rest goes on)."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

from pydantic import ValidationError

from scanner.feeds.dbn import map_raw, split_dbn
from scanner.feeds.replay import name_day
from scanner.rules.model import Rule, RuleSet

MAX_ID_SHOWN = 64  # a rule id in a message is user data: bounded


def parse_rules_file(text: str, source: str) -> list[Rule]:
    """Rules of a rules file (a list, `{"rules": [...]}` or one rule); ValueError naming the
    file, the rule (id and position) and the field of the first problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}: not JSON: {exc}") from None
    if isinstance(data, dict):
        data = data["rules"] if "rules" in data and "id" not in data else [data]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{source}: expected a non-empty list of rules")
    rules = []
    for i, item in enumerate(data, start=1):
        rid = item.get("id") if isinstance(item, dict) else None
        who = f"rule {str(rid)[:MAX_ID_SHOWN]!r} (#{i})" if rid is not None else f"rule #{i}"
        try:
            rules.append(Rule.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(the rule itself)"
            raise ValueError(f"{source}: {who}: field '{field}': {err['msg']}") from None
    try:
        RuleSet.model_validate([r.dump() for r in rules])
    except ValidationError as exc:
        raise ValueError(f"{source}: {exc.errors()[0]['msg']}") from None
    return rules


def check_file(path: Path) -> str | None:
    """None if the whole file reads (zip members, gzip stream, DBN records), else why not."""
    name = path.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
                if bad is not None:
                    return f"damaged zip member {bad}"
        elif name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                while f.read(1 << 20):
                    pass
        elif name.endswith((".dbn", ".dbn.zst")):
            split_dbn(map_raw(path))
        else:
            with open(path, "rb") as f:
                f.read(1)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


def day_of(path: Path) -> int | None:
    """yyyymmdd in the file name (the day the file records), if any."""
    return name_day(path)


def sort_days(files: list[Path]) -> tuple[list[Path], list[tuple[str, str]], list[int]]:
    """(readable files in day order, [(file, reason)] set aside, the days found)."""
    good, bad = [], []
    for f in files:
        why = check_file(f)
        if why is None:
            good.append(f)
        else:
            bad.append((str(f), why))
    good.sort(key=lambda p: (day_of(p) or 0, str(p)))
    days = sorted({d for p in good if (d := day_of(p)) is not None})
    return good, bad, days
