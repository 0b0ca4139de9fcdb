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


def test_encode_gives_the_bytes_of_the_dicts(tmp_path: Path) -> None:
    """The publisher's encoding (pre-encoded parts, one float format per batch) is byte for byte
    msgspec over `to_dicts`: NaN and infinities, a metric named twice in a rule (volume-spike),
    a rule without values, a key no rule has, a symbol row beyond the universe, two generations,
    enter and exit, in the batch's order."""
    import msgspec

    from scanner.records import ALERT_DTYPE, ALERT_VALUES

    spike = {"id": "spike", "name": "Vol \"spike\" 100%", "type": "condition", "severity": "medium",
             "tags": ["volume", "ü"], "condition": {"all": [
                 {"metric": "volume_1m", "operator": ">", "other": "avg_volume_1m", "factor": 3},
                 {"metric": "volume_1m", "operator": ">=", "value": 5000}]}}
    store = tmp_path / "rules.json"
    store.write_text(json.dumps([A, B, spike, {"id": "odd", "metric": "no_such_metric"}]))
    enc = AlertEncoder(KEYS, store, host="h\"1")
    rng = np.random.default_rng(3)
    n = 400
    recs = np.zeros(n, ALERT_DTYPE)
    recs["seq"] = np.arange(n) + 10**12
    recs["event_ns"] = 1_795_617_016_090_000_000 + rng.integers(0, 10**12, n)
    recs["scan_ns"] = recs["event_ns"] + rng.integers(0, 10**9, n)
    recs["sym"] = rng.integers(0, len(KEYS) + 2, n)
    recs["generation"] = rng.integers(1, 3, n)
    recs["worker"] = rng.integers(0, 3, n)
    recs["kind"] = rng.integers(0, 2, n)
    keys = [rule_key(r) for r in ("a-price", "b-change", "spike", "odd", "gone")]
    recs["rule"] = np.array(keys, np.uint64)[rng.integers(0, len(keys), n)]
    vals = rng.normal(0, 1e3, (n, ALERT_VALUES)) * 10.0 ** rng.integers(-9, 12, (n, ALERT_VALUES))
    vals[rng.random((n, ALERT_VALUES)) < 0.1] = np.nan
    vals[rng.random((n, ALERT_VALUES)) < 0.05] = np.inf
    recs["values"] = vals
    recs["price"] = np.where(rng.random(n) < 0.1, np.nan, rng.uniform(0, 1e4, n))
    want = [(d["rule"], msgspec.json.encode(d)) for d in AlertEncoder(KEYS, store, host="h\"1").to_dicts(recs)]
    got = enc.encode(recs)
    assert got == want
    assert enc.unknown == int(np.count_nonzero(recs["rule"] == keys[-1])) > 0
    spikes = [json.loads(p) for r, p in got if r == "spike"]
    assert spikes and all(list(a["values"]) == ["volume_1m", "avg_volume_1m"] for a in spikes)
    assert enc.encode(recs[:0]) == []
