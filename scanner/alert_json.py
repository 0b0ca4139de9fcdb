"""Alert records (ALERT_DTYPE) to JSON-able dicts, with rule ids and metric names attached.

A record names its rule by the rule's stable key (`scanner.records.rule_key` of its id), never
by a list position, so adding or deleting a rule between the scan and the encoding cannot
relabel an alert (issue 10.8). The encoder resolves a key through the rules of the record's
generation (the store is re-read when a generation is new to it), then through every rule it
has seen (a rule deleted since keeps its last definition), then by re-reading the store once
(a worker can run a newer store than the generation it labels). A key that is still unknown
is encoded as `#<key in hex>` and counted in `unknown`: never as another rule.
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

from scanner.records import ALERT_ENTER, ALERT_VALUES, rule_key

NS = 1_000_000_000
log = logging.getLogger("scanner.alerts")
_ENCODER = msgspec.json.Encoder()


def rule_metrics(rule: dict[str, Any]) -> list[str]:
    """Metric names a rule reads, in the order they appear (its alert `values` order)."""
    from scanner.rules.model import parse_rules, rule_metric_names

    return rule_metric_names(parse_rules([rule])[0])


class RuleMeta:
    __slots__ = ("id", "name", "severity", "tags", "metrics", "_json")

    def __init__(self, raw: dict[str, Any]) -> None:
        self.id = str(raw.get("id", "?"))
        self.name = str(raw.get("name") or self.id)
        self.severity = str(raw.get("severity", "info"))
        self.tags = list(raw.get("tags", []))
        try:
            self.metrics = rule_metrics(raw)
        except Exception:  # noqa: BLE001 - a rule the current code cannot parse still maps by id
            self.metrics = []
        self._json: _RuleJson | None = None

    def json(self) -> _RuleJson:
        """This rule's constant part of every alert's JSON, encoded once (`AlertEncoder.encode`)."""
        if self._json is None:
            self._json = _RuleJson(self.id, self.name, self.severity, self.tags, self.metrics)
        return self._json


class _RuleJson:
    """The parts of one rule's alerts that do not change from alert to alert: the `rule`..`tags`
    members, and the `values` object as a %-template over the value slots it shows (a name met
    twice keeps its first place and its last value, as the dict of `to_dicts` does)."""

    __slots__ = ("rule_id", "head", "values", "slots")

    def __init__(self, rule_id: str, name: str, severity: str, tags: list[Any], metrics: list[str]) -> None:
        enc = _ENCODER.encode
        self.rule_id = rule_id
        self.head = b'"rule":%b,"rule_name":%b,"severity":%b,"tags":%b' % (enc(rule_id), enc(name), enc(severity),
                                                                           enc(tags))
        last: dict[str, int] = {}
        for j, m in enumerate(metrics[:ALERT_VALUES]):
            last[m] = j
        self.values = b"{" + b",".join(enc(m).replace(b"%", b"%%") + b":%b" for m in last) + b"}"
        self.slots = list(last.values())


class AlertEncoder:
    GENERATIONS = 8  # rule sets kept by generation
    KNOWN = 20_000  # rule definitions kept by key (deleted rules included), least recently used out

    def __init__(self, keys: list[str], rules: Path | Callable[[], list[dict[str, Any]]], host: str = "") -> None:
        """`rules`: the JSON rule file, or a function returning the stored rules as dicts."""
        import socket

        self.keys = keys
        self.load = rules if callable(rules) else (lambda: json.loads(Path(rules).read_text()))
        self.host = host or socket.gethostname()
        self._by_gen: OrderedDict[int, dict[int, RuleMeta]] = OrderedDict()
        self._by_key: OrderedDict[int, RuleMeta] = OrderedDict()
        self._retried: set[tuple[int, int]] = set()
        self.unknown = 0  # alerts whose rule could not be named
        self._symbols = _objects([_ENCODER.encode(k) for k in keys])  # each symbol's JSON string, once
        # an alert's JSON, to_dicts' key order; the host is constant, its % doubled
        host = _ENCODER.encode(self.host).replace(b"%", b"%%")
        self._template = (b'{"seq":%d,%b,"symbol":%b,"kind":%b,"values":%b,"price":%b,"event_ts":%b,"scan_ts":%b,'
                          b'"host":' + host + b',"worker":%d,"generation":%d}')

    def watch(self, generation: int) -> None:
        """Read the rules of `generation` now if not yet read (the publisher calls this every
        pass, so a rule's definition is known before it can be deleted again)."""
        if generation not in self._by_gen:
            self._load(generation)

    def _load(self, generation: int) -> dict[int, RuleMeta]:
        try:
            raw = self.load()
        except Exception as exc:  # noqa: BLE001 - rules seen before still resolve by key
            log.warning("rules for generation %d not readable (%s): alerts resolve by known keys", generation, exc)
            raw = []
        metas = {rule_key(m.id): m for m in (RuleMeta(r) for r in raw if isinstance(r, dict))}
        self._by_gen[generation] = metas
        self._by_gen.move_to_end(generation)
        while len(self._by_gen) > self.GENERATIONS:
            self._by_gen.popitem(last=False)
        for k, m in metas.items():
            self._by_key[k] = m
            self._by_key.move_to_end(k)
        while len(self._by_key) > self.KNOWN:
            self._by_key.popitem(last=False)
        return metas

    def meta(self, key: int, generation: int) -> RuleMeta | None:
        """The rule with stable key `key` as of `generation` (see the module docstring)."""
        metas = self._by_gen.get(generation)
        if metas is None:
            metas = self._load(generation)
        m = metas.get(key) or self._by_key.get(key)
        if m is None and (generation, key) not in self._retried:
            self._retried.add((generation, key))
            if len(self._retried) > self.KNOWN:
                self._retried.clear()
            m = self._load(generation).get(key)
        return m

    def to_dicts(self, recs: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for r in recs.tolist():
            seq, event_ns, scan_ns, sym, gen, worker, kind, key, values, price = r
            meta = self.meta(key, gen)
            if meta is None:
                self.unknown += 1
                label = f"#{key:016x}"
            names = meta.metrics if meta else []
            vals = {n: (v if v == v else None) for n, v in zip(names, values.tolist(), strict=False)}
            out.append({
                "seq": seq,
                "rule": meta.id if meta else label,
                "rule_name": meta.name if meta else label,
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
        """(rule id, JSON bytes) per alert, for Redis: the same bytes as msgspec over `to_dicts`,
        without a dict per alert. Rules are resolved once per (rule, generation) of the batch,
        each float field of the batch is formatted by one msgspec call (NaN and infinities as
        null, as msgspec writes them), and each alert is one %-format of those parts, mapped in C
        over the batch's columns (the `values` objects likewise, per rule): about half the CPU of
        the dicts. An alert burst after a minute close waits on this."""
        n = len(recs)
        if n == 0:
            return []
        rules, which = self._rules_of(recs)
        sym = recs["sym"].astype(np.int64)
        inside = sym < len(self._symbols)
        symbols = self._symbols[np.where(inside, sym, 0)]
        for i in np.flatnonzero(~inside).tolist():
            symbols[i] = _ENCODER.encode(f"#{int(sym[i])}")
        values = np.empty(n, dtype=object)
        for r, rule in enumerate(rules):  # the value slots each rule shows, formatted by one call
            at = np.flatnonzero(which == r)
            if len(at) and rule.slots:
                shown = _json_parts(recs["values"][at][:, rule.slots].ravel().tolist()).reshape(len(at), -1)
                values[at] = list(map(rule.values.__mod__, map(tuple, shown.tolist())))
            elif len(at):
                values[at] = rule.values
        heads = _objects([r.head for r in rules])[which]
        payloads = map(self._template.__mod__, zip(
            recs["seq"].tolist(), heads.tolist(), symbols.tolist(),
            np.where(recs["kind"] == ALERT_ENTER, b'"enter"', b'"exit"').tolist(), values.tolist(),
            _json_parts(recs["price"].tolist()).tolist(),
            _json_parts([t / NS for t in recs["event_ns"].tolist()]).tolist(),
            _json_parts([t / NS for t in recs["scan_ns"].tolist()]).tolist(),
            recs["worker"].tolist(), recs["generation"].tolist(), strict=True))
        return list(zip(_objects([r.rule_id for r in rules])[which].tolist(), payloads, strict=True))

    def _rules_of(self, recs: np.ndarray) -> tuple[list[_RuleJson], np.ndarray]:
        """The rules of a batch (once per (rule key, generation) in it) and each alert's index
        into them; counts the alerts whose rule is unknown."""
        rules: list[_RuleJson] = []
        which = np.empty(len(recs), np.int64)
        gens = recs["generation"]
        for gen in np.unique(gens).tolist():
            at = np.flatnonzero(gens == gen)
            keys, index = np.unique(recs["rule"][at], return_inverse=True)
            which[at] = index.ravel() + len(rules)
            counts = np.bincount(index.ravel(), minlength=len(keys)).tolist()
            for key, count in zip(keys.tolist(), counts, strict=True):
                meta = self.meta(key, gen)
                if meta is None:
                    self.unknown += count
                    label = f"#{key:016x}"
                    rules.append(_RuleJson(label, label, "info", [], []))
                else:
                    rules.append(meta.json())
        return rules, which


def _json_parts(values: list[Any]) -> np.ndarray:
    """Each of `values` (numbers) as its JSON text, from one msgspec call: an object array."""
    return _objects(_ENCODER.encode(values)[1:-1].split(b","))


def _objects(items: list[Any]) -> np.ndarray:
    """`items` in an object array, each element kept as it is (bytes are not split)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out
