"""Rules of every bad shape, property-based (hypothesis): arbitrary JSON, valid rules with one
field replaced by anything, deep and wide trees, non-finite numbers. The model either accepts
a rule or raises a ValidationError (the API's 422) whose errors name a field; an accepted rule
compiles, evaluates and survives the store's round trip."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scanner.rules.compiler import compile_rules
from scanner.rules.limits import MAX_DEPTH
from scanner.rules.model import Rule, parse_rules
from scanner.rules.store import parse_stored

HOSTILE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEYS = ["AAA", "BBB", "CCC"]
FIELDS = ["id", "name", "type", "metric", "operator", "value", "other", "factor", "offset", "bars_ago",
          "condition", "all", "any", "none", "universe", "symbols", "window", "start", "end", "enabled",
          "alert_mode", "cooldown_seconds", "tags", "severity", "min_price", "max_price"]
scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                   st.text(max_size=20), st.sampled_from(["price", "vwap", "close", ">", "between", "09:30", "all"]))
json_value = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5)),
    max_leaves=30)
GOOD: list[dict[str, Any]] = [
    {"id": "a", "metric": "price", "operator": ">", "value": 1},
    {"id": "b", "metric": "price", "operator": "between", "value": [1, 5], "universe": {"symbols": ["aaa"]}},
    {"id": "c", "metric": "price", "operator": "<", "other": "vwap", "factor": 1.5, "offset": -1},
    {"id": "d", "condition": {"all": [{"metric": "close", "bars_ago": 2, "operator": ">", "value": 3},
                                      {"any": [{"metric": "rsi_14", "operator": "crosses_above", "value": 70}]}]},
     "window": {"start": "09:30", "end": "10:00"}, "cooldown_seconds": 30, "tags": ["x"]},
]


def check(body: Any) -> None:
    try:
        (rule,) = parse_rules([body])
    except ValidationError as exc:
        errs = exc.errors()
        assert errs and all(isinstance(e["msg"], str) and e["msg"] for e in errs)
        json.dumps([{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in errs], allow_nan=False)
        return
    comp = compile_rules([rule], KEYS, backend="numpy")
    n = len(KEYS)
    snap = np.full((len(comp.f8_cols), n), 2.0)
    hist = np.full((len(comp.hist_refs), n), 2.0) if comp.hist_refs else None
    match = comp.evaluate(snap, snap, hist, 600)
    assert match.shape == (1, n) and match.dtype == np.bool_
    dumped = rule.dump()
    json.dumps(dumped, allow_nan=False)  # storable: no NaN / infinity in it
    again, problems = parse_stored([json.loads(json.dumps(dumped))])
    assert problems == [] and again == [rule]


@HOSTILE
@given(json_value)
def test_any_json_is_a_rule_or_a_field_error(body: Any) -> None:
    check(body)


@HOSTILE
@given(st.sampled_from(GOOD), st.sampled_from(FIELDS), json_value)
def test_a_valid_rule_with_one_field_replaced(good: dict[str, Any], field: str, value: Any) -> None:
    check({**good, field: value})


@HOSTILE
@given(st.sampled_from(GOOD[:3]), st.sampled_from(["value", "factor", "offset", "cooldown_seconds"]),
       st.sampled_from([math.nan, math.inf, -math.inf, 1e308 * 10]))
def test_non_finite_numbers_anywhere_are_refused(good: dict[str, Any], field: str, bad: float) -> None:
    try:
        Rule.model_validate({**good, field: bad})
    except ValidationError as exc:
        assert any(field in e["loc"] for e in exc.errors())
    else:
        raise AssertionError(f"{field}={bad} accepted")


@HOSTILE
@given(st.integers(1, 3 * MAX_DEPTH), st.integers(1, 4), st.sampled_from(["all", "any", "none"]))
def test_trees_of_any_depth_and_width(depth: int, width: int, kind: str) -> None:
    node: dict[str, Any] = {"metric": "price", "operator": ">", "value": 1}
    for _ in range(depth - 1):
        node = {kind: [node] * width}
    leaves = width ** (depth - 1)
    try:
        (rule,) = parse_rules([{"id": "t", "condition": node}])
    except ValidationError as exc:
        assert depth > MAX_DEPTH or leaves > 256, exc
        (err,) = exc.errors()
        assert err["loc"] == (0, "condition")
    else:
        assert depth <= MAX_DEPTH and leaves <= 256
        compile_rules([rule], KEYS, backend="numpy")
