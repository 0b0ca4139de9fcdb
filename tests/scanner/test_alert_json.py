"""Alerts name their rule by a stable key (issue 10.8): adding or deleting rules between the scan
and the encoding never relabels an alert, and an unknown key is never taken for another rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scanner.alert_json import AlertEncoder
from scanner.records import rule_key
from scanner.rules.engine import ScanEngine
from scanner.rules.model import parse_rules

KEYS = ["AAA", "BBB"]
A = {"id": "a-price", "name": "Price over 5", "metric": "price", "operator": ">", "value": 5}
B = {"id": "b-change", "name": "Big mover", "metric": "change_pct", "operator": ">", "value": 3}
C = {"id": "c-price", "name": "Price over 1", "metric": "price", "operator": ">", "value": 1}


def _scan(rules: list[dict]) -> np.ndarray:
    """One real scan: BBB moves 6 % at price 2 (only B matches), at generation 1."""
    eng = ScanEngine(parse_rules(rules), KEYS, lo=0, worker_id=0, generation=1)
    snap = np.full((len(eng.f8_cols), len(KEYS)), 0.5)
    snap[eng.compiled.f8_names.index("change_pct"), 1] = 6.0
    snap[eng.compiled.f8_names.index("price")] = 2.0
    return eng.cycle(snap, None, 1, 1, 600, 1, 1).copy()


def test_rule_key_is_stable() -> None:
    assert rule_key("b-change") == rule_key("b-change") != rule_key("b-chang")
    assert 0 <= rule_key("x") < 2**64


def test_a_rule_added_and_deleted_before_encoding_keeps_the_alert_on_its_rule(tmp_path: Path) -> None:
    store = tmp_path / "rules.json"
    store.write_text(json.dumps([A, B]))
    recs = _scan([A, B])
    assert len(recs) == 1  # B at row 1
    # before the encoder reads the store: A is deleted and C is added in front, so B's position moves
    store.write_text(json.dumps([C, B]))
    enc = AlertEncoder(KEYS, store, host="h")
    (alert,) = enc.to_dicts(recs)
    assert (alert["rule"], alert["rule_name"], alert["symbol"]) == ("b-change", "Big mover", "BBB")
    assert list(alert["values"]) == ["change_pct"] and alert["values"]["change_pct"] == 6.0
    assert enc.unknown == 0


def test_a_rule_deleted_after_the_encoder_saw_it_is_still_named(tmp_path: Path) -> None:
    store = tmp_path / "rules.json"
    store.write_text(json.dumps([A, B]))
    enc = AlertEncoder(KEYS, store, host="h")
    enc.watch(1)  # the publisher reads each generation as soon as it is bumped
    recs = _scan([A, B])
    store.write_text(json.dumps([A]))  # B deleted at generation 2, before its alert is encoded
    enc.watch(2)
    ((rule_id, payload),) = enc.encode(recs)
    assert rule_id == "b-change" and json.loads(payload)["rule_name"] == "Big mover"


def test_an_unknown_key_is_never_another_rule(tmp_path: Path) -> None:
    store = tmp_path / "rules.json"
    store.write_text(json.dumps([A, B]))
    recs = _scan([A, B])
    store.write_text(json.dumps([A, C]))  # B gone before the encoder ever saw it
    enc = AlertEncoder(KEYS, store, host="h")
    (alert,) = enc.to_dicts(recs)
    assert alert["rule"] == f"#{rule_key('b-change'):016x}" and alert["rule"] == alert["rule_name"]
    assert enc.unknown == 1


def test_a_rule_added_after_the_generation_was_read_is_found(tmp_path: Path) -> None:
    """A worker may run a newer store than the generation it labels: one re-read finds it."""
    store = tmp_path / "rules.json"
    store.write_text(json.dumps([A]))
    enc = AlertEncoder(KEYS, store, host="h")
    enc.watch(1)
    store.write_text(json.dumps([A, B]))
    (alert,) = enc.to_dicts(_scan([A, B]))
    assert alert["rule"] == "b-change" and enc.unknown == 0
