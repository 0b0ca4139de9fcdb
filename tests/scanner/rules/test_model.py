"""Rule model: the seed's format, the extensions, and validation messages that help."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from scanner.metrics import CATALOGUE, HIST_FIELDS
from scanner.rules.limits import OPERATORS
from scanner.rules.model import (
    Comparison,
    Group,
    Rule,
    parse_rules,
    rule_json_schema,
    rule_metric_names,
    ruleset_json_schema,
)

SPEC = {
    "id": "rv-gt-2",
    "name": "Relative Volume > 2",
    "type": "numeric",
    "metric": "relative_volume",
    "operator": ">",
    "value": 2.0,
}


def one(**kw: object) -> Rule:
    return parse_rules([{"id": "r", **kw}])[0]


def error_text(data: object) -> str:
    with pytest.raises(ValidationError) as exc:
        parse_rules(data)  # type: ignore[arg-type]
    return str(exc.value)


def test_spec_format_accepted_as_is() -> None:
    (r,) = parse_rules(json.dumps(SPEC))
    assert (r.id, r.name, r.type, r.metric, r.operator, r.value) == (
        "rv-gt-2",
        "Relative Volume > 2",
        "numeric",
        "relative_volume",
        ">",
        2.0,
    )
    assert r.enabled and r.alert_mode == "enter" and r.severity == "info" and r.cooldown_seconds == 0
    tree = r.tree()
    assert isinstance(tree, Comparison) and tree.metric == "relative_volume" and tree.value == 2.0
    assert parse_rules(SPEC)[0] == r and parse_rules({"rules": [SPEC]})[0] == r


def test_dump_round_trips() -> None:
    r = one(
        metric="price",
        operator="crosses_above",
        other="vwap",
        universe={"symbols": ["aapl"]},
        window={"start": "09:30", "end": "10:00"},
        tags=["x"],
        cooldown_seconds=5,
    )
    again = parse_rules([r.dump()])[0]
    assert again == r and list(r.dump())[:3] == ["id", "name", "type"]


@pytest.mark.parametrize("op", [">", ">=", "<", "<=", "==", "!=", "crosses_above", "crosses_below"])
def test_every_scalar_operator(op: str) -> None:
    assert one(metric="price", operator=op, value=1).operator == op


def test_wrong_operator_lists_allowed() -> None:
    msg = error_text([{"id": "r", "metric": "price", "operator": "=>", "value": 1}])
    assert "operator" in msg
    for op in OPERATORS:
        assert f"'{op}'" in msg


def test_unknown_metric_names_field_and_lists_metrics() -> None:
    msg = error_text([{"id": "r", "metric": "rvol", "operator": ">", "value": 1}])
    assert "metric" in msg and "unknown metric 'rvol'" in msg
    assert "relative_volume" in msg and "change_pct" in msg


def test_integer_column_is_not_rule_readable() -> None:
    int_metric = next(m.name for m in CATALOGUE.metrics if m.dtype == "i8")
    msg = error_text([{"id": "r", "metric": int_metric, "operator": ">", "value": 1}])
    assert "integer column" in msg and "allowed metrics" in msg


def test_unknown_metric_inside_a_tree_names_its_path() -> None:
    with pytest.raises(ValidationError) as exc:
        parse_rules(
            [
                {
                    "id": "r",
                    "condition": {
                        "any": [
                            {"metric": "price", "operator": ">", "value": 1},
                            {"metric": "nope", "operator": ">", "value": 1},
                        ]
                    },
                }
            ]
        )
    locs = [e["loc"] for e in exc.value.errors()]
    assert any(loc[-1] == "metric" and "any" in loc and 1 in loc for loc in locs)


def test_bad_values() -> None:
    assert "value" in error_text([{"id": "r", "metric": "price", "operator": ">", "value": "high"}])
    assert "valid number" in error_text([{"id": "r", "metric": "price", "operator": ">", "value": True}])
    assert "finite" in error_text([{"id": "r", "metric": "price", "operator": ">", "value": float("inf")}])
    assert "'value' must be [lo, hi]" in error_text(
        [{"id": "r", "metric": "price", "operator": "between", "value": [5, 1]}]
    )
    assert "'value' must be [lo, hi]" in error_text(
        [{"id": "r", "metric": "price", "operator": "between", "value": 5}]
    )
    assert "[lo, hi] is for 'between'" in error_text(
        [{"id": "r", "metric": "price", "operator": ">", "value": [1, 2]}]
    )
    assert "exactly one of 'value' or 'other'" in error_text(
        [{"id": "r", "metric": "price", "operator": ">", "value": 1, "other": "vwap"}]
    )
    assert "exactly one of 'value' or 'other'" in error_text(
        [{"id": "r", "metric": "price", "operator": ">"}]
    )
    assert "'factor' only apply with 'other'" in error_text(
        [{"id": "r", "metric": "price", "operator": ">", "value": 1, "factor": 2}]
    )


def test_between_and_metric_vs_metric() -> None:
    r = one(metric="price", operator="between", value=[1, 20])
    assert r.value == [1.0, 20.0]
    r = one(metric="volume_1m", operator=">", other="avg_volume_1m", factor=3)
    assert r.other == "avg_volume_1m" and r.factor == 3.0
    assert r.refs() == [("volume_1m", 0), ("avg_volume_1m", 0)]
    assert "unknown metric 'avg_vol'" in error_text(
        [{"id": "r", "metric": "volume_1m", "operator": ">", "other": "avg_vol"}]
    )


def test_bars_ago_operands() -> None:
    r = one(metric="price", operator=">", other={"metric": "close", "bars_ago": 3})
    assert r.refs() == [("price", 0), ("close", 3)]
    assert rule_metric_names(r) == ["price", "close[-3]"]
    r = one(metric="close", bars_ago=1, operator=">", value=10)
    assert r.refs() == [("close", 1)]
    msg = error_text([{"id": "r", "metric": "close", "operator": ">", "value": 1}])
    assert "bar-history field" in msg and "bars_ago >= 1" in msg
    msg = error_text(
        [{"id": "r", "metric": "price", "operator": ">", "other": {"metric": "rsi", "bars_ago": 2}}]
    )
    assert "unknown bar-history field 'rsi'" in msg
    for f in HIST_FIELDS:
        assert f in msg
    assert "'bars_ago' must be 0" in error_text(
        [
            {
                "id": "r",
                "metric": "price",
                "operator": "crosses_above",
                "other": {"metric": "close", "bars_ago": 1},
            }
        ]
    )


def test_nested_groups() -> None:
    r = one(
        condition={
            "all": [
                {"metric": "price", "operator": ">", "value": 1},
                {
                    "any": [
                        {"metric": "rsi_14", "operator": "<", "value": 30},
                        {"none": [{"metric": "gap_pct", "operator": ">", "value": 2}]},
                    ]
                },
            ]
        }
    )
    t = r.tree()
    assert r.type == "condition" and isinstance(t, Group) and t.all is not None
    inner = t.all[1]
    assert isinstance(inner, Group) and inner.any is not None and isinstance(inner.any[1], Group)
    assert r.refs() == [("price", 0), ("rsi_14", 0), ("gap_pct", 0)]
    assert "at least one of 'all', 'any', 'none'" in error_text([{"id": "r", "condition": {}}])
    assert "at least 1 item" in error_text([{"id": "r", "condition": {"all": []}}])


def test_rule_shape_errors() -> None:
    assert "either 'metric'" in error_text([{"id": "r"}])
    assert "either 'metric'" in error_text(
        [
            {
                "id": "r",
                "metric": "price",
                "operator": ">",
                "value": 1,
                "condition": {"all": [{"metric": "price", "operator": ">", "value": 1}]},
            }
        ]
    )
    assert "'type' is 'numeric'" in error_text(
        [
            {
                "id": "r",
                "type": "numeric",
                "condition": {"all": [{"metric": "price", "operator": ">", "value": 1}]},
            }
        ]
    )
    assert "operater" in error_text([{"id": "r", "metric": "price", "operater": ">", "value": 1}])
    msg = error_text([{"id": "r", "metric": "price", "operator": ">", "value": 1, "alert_mode": "always"}])
    assert "alert_mode" in msg and "'once_per_day'" in msg and "'enter_exit'" in msg
    assert "duplicate rule id(s): a" in error_text([SPEC | {"id": "a"}, SPEC | {"id": "a"}])
    assert "id" in error_text([SPEC | {"id": "has space"}])


def test_window_and_universe() -> None:
    r = one(
        metric="price",
        operator=">",
        value=1,
        window={"start": "09:30", "end": "11:15"},
        universe={
            "min_price": 1,
            "max_price": 20,
            "min_day_volume": 1e5,
            "symbols": ["AAPL"],
            "exclude_symbols": ["TSLA"],
        },
    )
    assert r.window is not None and r.window.minutes() == (570, 675)
    assert r.universe is not None and r.universe.bounds() == [
        ("price", ">=", 1.0),
        ("price", "<=", 20.0),
        ("day_volume", ">=", 1e5),
    ]
    assert r.refs() == [("price", 0), ("day_volume", 0)]
    assert "start" in error_text([SPEC | {"window": {"start": "9:30", "end": "10:00"}}])
    assert "must differ" in error_text([SPEC | {"window": {"start": "10:00", "end": "10:00"}}])
    assert "'min_price' must be <= 'max_price'" in error_text(
        [SPEC | {"universe": {"min_price": 5, "max_price": 1}}]
    )
    assert "cooldown_seconds" in error_text([SPEC | {"cooldown_seconds": -1}])
    assert "severity" in error_text([SPEC | {"severity": "urgent"}])


def test_metric_names_cap_at_alert_values() -> None:
    leaves = [
        {"metric": m, "operator": ">", "value": 0}
        for m in ("price", "vwap", "rsi_14", "sma_20", "ema_9", "ema_20", "atr_14")
    ]
    r = one(condition={"all": leaves})
    assert rule_metric_names(r) == ["price", "vwap", "rsi_14", "sma_20", "ema_9", "ema_20"]


def test_json_schema_published() -> None:
    s = rule_json_schema()
    assert {
        "id",
        "metric",
        "operator",
        "value",
        "other",
        "condition",
        "universe",
        "window",
        "alert_mode",
    } <= set(s["properties"])
    text = json.dumps(s)
    assert "crosses_above" in text and "once_per_bar" in text
    assert ruleset_json_schema()["type"] == "array"


def nested(depth: int) -> dict[str, object]:
    """A condition tree `depth` levels deep (the comparison at the bottom is the last level)."""
    node: dict[str, object] = {"metric": "price", "operator": ">", "value": 1}
    for _ in range(depth - 1):
        node = {"all": [node]}
    return node


def test_size_limits_name_the_field() -> None:
    from scanner.rules.limits import MAX_DEPTH, MAX_LEAVES, MAX_RULES, MAX_SYMBOLS, MAX_TAGS

    assert one(condition=nested(MAX_DEPTH)).type == "condition"
    for depth in (MAX_DEPTH + 1, 128, 250, 5000):  # refused before pydantic recurses (no RecursionError)
        with pytest.raises(ValidationError) as exc:
            parse_rules([{"id": "r", "condition": nested(depth)}])
        (err,) = exc.value.errors()
        assert err["loc"] == (0, "condition") and f"more than {MAX_DEPTH} levels deep" in err["msg"]
    wide = {"any": [{"metric": "price", "operator": ">", "value": i} for i in range(MAX_LEAVES)]}
    assert one(condition=wide).type == "condition"
    wide2 = {"all": [wide, {"metric": "price", "operator": "<", "value": 1}]}
    assert f"more than {MAX_LEAVES} comparisons" in error_text([{"id": "r", "condition": wide2}])
    leaf = {"metric": "price", "operator": ">", "value": 1}
    assert "at most" in error_text([{"id": f"r{i}", **leaf} for i in range(MAX_RULES + 1)])
    syms = [f"S{i}" for i in range(MAX_SYMBOLS + 1)]
    assert "universe.symbols" in error_text([{"id": "r", **leaf, "universe": {"symbols": syms}}])
    long_sym = {"exclude_symbols": ["X" * 33]}
    assert "universe.exclude_symbols.0" in error_text([{"id": "r", **leaf, "universe": long_sym}])
    assert "tags" in error_text([{"id": "r", **leaf, "tags": [f"t{i}" for i in range(MAX_TAGS + 1)]}])
    for field in ("name", "description"):
        assert field in error_text([{"id": "r", **leaf, field: "x" * 5000}])
    assert "metric" in error_text([{"id": "r", **leaf, "metric": "m" * 100_000}])
    assert "id" in error_text([{"id": "r" * 100, **leaf}])
    assert "value" in error_text([{"id": "r", **leaf, "operator": "between", "value": [1, 2, 3]}])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_refused_everywhere(bad: float) -> None:
    leaf = {"metric": "price", "operator": ">", "value": 1}
    for rule in ({**leaf, "value": bad}, {**leaf, "operator": "between", "value": [0, bad]},
                 {**leaf, "value": None, "other": "vwap", "factor": bad}, {**leaf, "cooldown_seconds": bad},
                 {**leaf, "universe": {"min_price": bad}}):
        assert "finite" in error_text([{"id": "r", **rule}])


def test_schema_says_comparison_or_condition() -> None:
    """The JSON Schema (and so the OpenAPI document) says what `_shape` enforces."""
    import jsonschema

    schema = rule_json_schema()
    assert [b["title"] for b in schema["oneOf"]] == ["comparison", "condition tree"]
    ok = [SPEC, {"id": "a", "metric": "price", "operator": ">", "other": "vwap", "factor": 2},
          {"id": "b", "condition": {"all": [{"metric": "price", "operator": ">", "value": 1}]}},
          {"id": "c", "metric": "price", "operator": ">", "value": 1, "other": None}]
    bad = [{"id": "d"}, {"id": "e", "metric": "price", "operator": ">"},
           {"id": "f", "metric": "price", "operator": ">", "value": 1, "other": "vwap"},
           {"id": "g", "metric": "price", "operator": ">", "value": 1, "factor": 2},
           {"id": "h", "condition": {"all": [{"metric": "price", "operator": ">", "value": 1}]}, "value": 1},
           {"id": "i", "condition": {"all": [{"metric": "price", "operator": ">", "value": 1}]}, "type": "numeric"}]
    for rule in ok:
        parse_rules([rule])
        jsonschema.validate(rule, schema)
    for rule in bad:
        with pytest.raises(ValidationError):
            parse_rules([rule])
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(rule, schema)


def test_ids_that_are_api_paths_are_reserved() -> None:
    for rid in ("schema", "validate"):
        assert "is reserved" in error_text([{"id": rid, "metric": "price", "operator": ">", "value": 1}])


def test_schema_lists_the_metric_names() -> None:
    leaf = rule_json_schema()["$defs"]["Comparison"]["properties"]["metric"]
    assert "relative_volume" in leaf["enum"] and "close" in leaf["enum"]
