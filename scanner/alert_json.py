"""Alert records (ALERT_DTYPE) to JSON-able dicts, with rule ids and metric names attached.

The rule index in a record is the rule's position in the rule store's list at the record's
generation; the encoder re-reads the store when it sees a generation it does not know, and
keeps the last few generations so that alerts raised just before a rule change still map.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from scanner.records import ALERT_ENTER

NS = 1_000_000_000
log = logging.getLogger("scanner.alerts")
_ENCODER = msgspec.json.Encoder()


def rule_metrics(rule: dict[str, Any]) -> list[str]:
    """Metric names a rule reads, in the order they appear (its alert `values` order)."""
    from scanner.rules.model import parse_rules, rule_metric_names

    return rule_metric_names(parse_rules([rule])[0])


class RuleMeta:
    __slots__ = ("id", "name", "severity", "tags", "metrics")

    def __init__(self, raw: dict[str, Any]) -> None:
        self.id = str(raw.get("id", "?"))
        self.name = str(raw.get("name", self.id))
        self.severity = str(raw.get("severity", "info"))
        self.tags = list(raw.get("tags", []))
        try:
            self.metrics = rule_metrics(raw)
        except Exception:  # noqa: BLE001 - a rule the current code cannot parse still maps by id
            self.metrics = []


class AlertEncoder:
    def __init__(self, keys: list[str], rules: Path | Callable[[], list[dict[str, Any]]], host: str = "") -> None:
        """`rules`: the JSON rule file, or a function returning the stored rules as dicts."""
        import socket

        self.keys = keys
        self.load = rules if callable(rules) else (lambda: json.loads(Path(rules).read_text()))
        self.host = host or socket.gethostname()
        self._by_gen: OrderedDict[int, list[RuleMeta]] = OrderedDict()

    def _rules(self, generation: int) -> list[RuleMeta]:
        metas = self._by_gen.get(generation)
        if metas is None:
            try:
                raw = self.load()
            except Exception as exc:  # noqa: BLE001 - unknown rules still encode, by index
                log.warning("rules for generation %d not readable (%s): alerts carry rule indices", generation, exc)
                raw = []
            metas = [RuleMeta(r) for r in raw if isinstance(r, dict)]
            self._by_gen[generation] = metas
            while len(self._by_gen) > 4:
                self._by_gen.popitem(last=False)
        return metas

    def to_dicts(self, recs: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for r in recs.tolist():
            seq, event_ns, scan_ns, sym, rule, gen, worker, kind, values, price = r
            metas = self._rules(gen)
            meta = metas[rule] if rule < len(metas) else None
            names = meta.metrics if meta else []
            vals = {n: (v if v == v else None) for n, v in zip(names, values.tolist(), strict=False)}
            out.append({
                "seq": seq,
                "rule": meta.id if meta else f"#{rule}",
                "rule_name": meta.name if meta else f"#{rule}",
                "severity": meta.severity if meta else "info",
                "tags": meta.tags if meta else [],
                "symbol": self.keys[sym] if sym < len(self.keys) else f"#{sym}",
                "kind": "enter" if kind == ALERT_ENTER else "exit",
                "values": vals,
                "price": price if price == price else None,
                "event_ts": event_ns / NS,
                "scan_ts": scan_ns / NS,
                "host": self.host,
                "worker": worker,
                "generation": gen,
            })
        return out

    def encode(self, recs: np.ndarray) -> list[tuple[str, bytes]]:
        """(rule id, JSON bytes) per alert, for Redis."""
        enc = _ENCODER.encode
        return [(d["rule"], enc(d)) for d in self.to_dicts(recs)]
