"""What a rule may say, and how big it may be: the operator and alert-mode vocabularies, the
size limits, the metric-name checks, and the JSON-Schema fragments that state the model's
cross-field rules (`scanner.rules.model` builds the pydantic classes on these).

Size limits: a rule is user data that every worker compiles and every reader parses, so its
size is bounded in the model, before anything recursive (pydantic, json, the compiler) sees it.
A tree 200 levels deep once passed validation and then broke every later read.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, Field

from scanner.metrics import CATALOGUE, HIST_FIELDS

Operator = Literal[">", ">=", "<", "<=", "==", "!=", "between", "crosses_above", "crosses_below"]
AlertMode = Literal["enter", "enter_exit", "once_per_bar", "once_per_day"]
Severity = Literal["info", "low", "medium", "high", "critical"]
Side = Literal["long", "short"]
OPERATORS: tuple[str, ...] = get_args(Operator)
COMPARE_OPS: tuple[str, ...] = (">", ">=", "<", "<=", "==", "!=")
CROSS_OPS: tuple[str, ...] = ("crosses_above", "crosses_below")
ALERT_MODES: tuple[str, ...] = get_args(AlertMode)
MAX_BARS_AGO = 5000  # the largest configurable bar-history depth; deeper than the ring reads NaN
# size limits (see the module docstring)
MAX_DEPTH = 32  # levels of a `condition` tree (a comparison at the top is level 1)
MAX_LEAVES = 256  # comparisons in one rule
MAX_RULES = 2000  # rules in one store
MAX_SYMBOLS = 10_000  # symbols in one universe list
MAX_TAGS = 32
SYMBOL_MAX_LEN = 32
NAME_MAX_LEN = 64  # metric and history field names

FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]  # numbers only: no "2", no true
Ref = tuple[str, int]  # (metric or history field, bars_ago); bars_ago 0 = the live table value

HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
Symbol = Annotated[str, Field(min_length=1, max_length=SYMBOL_MAX_LEN)]
GROUP_KEYS = ("all", "any", "none")  # the lists of a condition group
RESERVED_IDS = frozenset({"schema", "validate"})  # paths under /api/rules: such a rule could not be read


def _metric_name_schema(schema: dict[str, Any]) -> None:
    # the schema lists the names a rule may read (live metrics, then history fields); which of
    # them a given `bars_ago` allows is checked by the model (422 naming the field)
    schema["enum"] = list(dict.fromkeys([*rule_metrics(), *HIST_FIELDS]))


MetricName = Annotated[str, Field(max_length=NAME_MAX_LEN, json_schema_extra=_metric_name_schema)]


def rule_metrics() -> list[str]:
    """Metric names a rule may read now (the catalogue's float columns, catalogue order)."""
    return [m.name for m in CATALOGUE.metrics if m.dtype == "f8"]


def check_metric(name: str, bars_ago: int) -> str:
    """`name` if readable with that `bars_ago`, else ValueError listing the allowed names."""
    if bars_ago == 0:
        allowed = rule_metrics()
        if name in allowed:
            return name
        if name in CATALOGUE:
            why = f"metric {name!r} is an integer column, not readable by rules"
        elif name in HIST_FIELDS:
            why = f"{name!r} is a bar-history field: give it with bars_ago >= 1"
        else:
            why = f"unknown metric {name!r}"
        raise ValueError(f"{why}; allowed metrics: {', '.join(allowed)}")
    if name in HIST_FIELDS:
        return name
    raise ValueError(f"unknown bar-history field {name!r} (bars_ago={bars_ago}); "
                     f"allowed with bars_ago >= 1: {', '.join(HIST_FIELDS)}")


def ref_name(ref: Ref) -> str:
    """Display name of an operand: `price`, or `close[-3]` for the close three bars back."""
    return ref[0] if ref[1] == 0 else f"{ref[0]}[-{ref[1]}]"


def _children(node: Any) -> list[Any] | None:
    """The sub-conditions of a group (raw dict or Group); None for a comparison."""
    if isinstance(node, dict):
        if {"metric", "operator"} & node.keys():
            return None
        parts: list[Any] = [node.get(k) for k in GROUP_KEYS]
    elif isinstance(node, BaseModel) and all(k in type(node).model_fields for k in GROUP_KEYS):  # a Group
        parts = [getattr(node, k) for k in GROUP_KEYS]
    else:
        return None
    return [c for p in parts if isinstance(p, list) for c in p]


def check_tree_size(node: Any) -> Any:
    """`node` unchanged if its tree is at most MAX_DEPTH deep with at most MAX_LEAVES
    comparisons, else ValueError. Iterative and stopping at the first excess, so a tree
    thousands of levels deep is refused without recursion and without walking all of it."""
    leaves = 0
    stack = [(node, 1)]
    while stack:
        n, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"the condition tree is nested more than {MAX_DEPTH} levels deep")
        kids = _children(n)
        if kids is None:
            leaves += 1
            if leaves > MAX_LEAVES:
                raise ValueError(f"the condition tree has more than {MAX_LEAVES} comparisons")
        else:
            stack.extend((k, depth + 1) for k in kids)
    return node


def present(f: str) -> dict[str, Any]:
    return {"required": [f], "properties": {f: {"not": {"type": "null"}}}}


def absent(f: str) -> dict[str, Any]:
    return {"properties": {f: {"type": "null"}}}  # absent, or null (= absent to the model)


def unset(*fields: str) -> dict[str, Any]:
    return {"not": {"anyOf": [{"required": [f]} for f in fields]}}


RIGHT_OPERAND = {"oneOf": [
    {"title": "metric op value", "allOf": [present("value"), absent("other"), unset("factor", "offset")]},
    {"title": "metric op factor * other + offset", "allOf": [present("other"), absent("value")]},
]}


def comparison_schema(schema: dict[str, Any]) -> None:
    """What `_check_leaf` enforces, said in the JSON Schema: exactly one of value / other."""
    schema["allOf"] = [RIGHT_OPERAND]


def rule_schema(schema: dict[str, Any]) -> None:
    """What `Rule._shape` enforces, said in the JSON Schema (the OpenAPI document shows it):
    either a top-level comparison (metric, operator, value or other) or a condition tree."""
    schema["oneOf"] = [
        {"title": "comparison", "allOf": [
            present("metric"), present("operator"), absent("condition"), RIGHT_OPERAND,
            {"properties": {"type": {"enum": ["numeric", None]}}}]},
        {"title": "condition tree", "allOf": [
            present("condition"), absent("metric"),
            unset("bars_ago", "operator", "value", "other", "factor", "offset"),
            {"properties": {"type": {"enum": ["condition", None]}}}]},
    ]
